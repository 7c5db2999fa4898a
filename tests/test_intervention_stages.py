"""The `interventions`, `layer_sweep` and `component_ce` stages on the smoke DAG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from pipeline.config import Hook
from pipeline.replacements import INTERVENTIONS
from tests.conftest import params_with, run_stage, stages_to_rerun

pytestmark = pytest.mark.slow

NAME = "blocks.2.hook_resid_post-512"


def test_interventions_metrics_are_complete_and_sane(smoke_repo):
    m = json.loads((smoke_repo / f"metrics/interventions/{NAME}.json").read_text())
    assert set(m["interventions"]) == set(INTERVENTIONS)
    for name, row in m["interventions"].items():
        assert row["kl_ci_low"] <= row["kl"] <= row["kl_ci_high"], name
        assert row["kl"] >= 0, name
    assert m["kl_ratio_ci_low"] <= m["kl_ratio_substitution_vs_epsilon_random"] <= m["kl_ratio_ci_high"]
    assert m["interventions"]["zero"]["kl"] > m["interventions"]["substitution"]["kl"]  # the SAE beats ablation
    assert 0 < m["ce_score"] <= 1 and 0 < m["kl_score"] <= 1
    assert np.isfinite(m["z_score_median"]) and 0 <= m["z_score_share_above_2"] <= 1
    assert np.isfinite(m["single_position"]["kl_ratio_at_p"])
    sweep = json.loads((smoke_repo / "metrics/layer_sweep.json").read_text())
    assert sweep[NAME]["kl_ratio"] == m["kl_ratio_substitution_vs_epsilon_random"]


def test_component_ce_matches_naive_splicing(smoke_repo):
    """Recompute % CE recovered with a full forward pass per setting (pipeline.splice.splice_naive)."""
    from pipeline.models import load_model
    from pipeline.sae_inference import load_sae
    from pipeline.splice import splice_naive
    from pipeline.tokens import TokenStore

    got = json.loads((smoke_repo / "metrics/component_ce.json").read_text())[NAME]
    model = load_model(smoke_repo / "artifacts/model", "float32", "cpu")
    tokens = TokenStore.open(smoke_repo / "artifacts/tokens.zarr")
    sae = load_sae(smoke_repo / f"artifacts/saes/{NAME}")
    probes = zarr.open_group(smoke_repo / f"artifacts/probes/{NAME}.zarr", mode="r")
    weight, bias = torch.from_numpy(probes["probe_weight"][:]).float(), torch.from_numpy(probes["probe_bias"][:]).float()
    first = tokens.n_train_contexts
    ids = torch.from_numpy(tokens.contexts[first : first + 4]).long()
    mask = torch.from_numpy(tokens.mask[first : first + 4])
    hook = Hook.parse("blocks.2.hook_resid_post", "t")
    hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[3]  # resid_post of block 2
    x = hidden[mask]
    with torch.no_grad():
        x_hat = sae(x)
    linear = x @ weight + bias
    nonlinear = x - x_hat - linear

    def mean_ce(rows):
        full = hidden.clone()
        full[mask] = rows
        logits = splice_naive(model, hook, ids, full) if rows is not None else model(input_ids=ids).logits
        ce = -torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        return ce[mask[:, :-1]].mean().item()

    with torch.no_grad():
        clean = model(input_ids=ids).logits
        clean_ce = (-torch.log_softmax(clean[:, :-1].double(), -1).gather(-1, ids[:, 1:, None])[..., 0])[mask[:, :-1]].mean().item()
        sae_ce, lin_ce, non_ce = mean_ce(x_hat), mean_ce(x_hat + linear), mean_ce(x_hat + nonlinear)
    assert got["clean_ce"] == pytest.approx(clean_ce, rel=1e-4)
    assert got["ce_recovered_linear_error"] == pytest.approx(100 * (sae_ce - lin_ce) / (sae_ce - clean_ce), abs=0.05)
    assert got["ce_recovered_nonlinear_error"] == pytest.approx(100 * (sae_ce - non_ce) / (sae_ce - clean_ce), abs=0.05)
    lin_norm, non_norm = linear.double().norm(dim=-1).sum().item(), nonlinear.double().norm(dim=-1).sum().item()
    assert got["error_norm_share_linear_error"] == pytest.approx(100 * lin_norm / (lin_norm + non_norm), abs=0.01)
    x64 = x.double()
    total = ((x64 - x64.mean(0)) ** 2).sum().item()
    fvu_sae = ((x64 - x_hat.double()) ** 2).sum().item() / total
    for component, rows in (("linear_error", x_hat + linear), ("nonlinear_error", x_hat + nonlinear)):
        fvu_with = ((x64 - rows.double()) ** 2).sum().item() / total
        assert got[f"variance_recovered_{component}"] == pytest.approx(100 * (fvu_sae - fvu_with) / fvu_sae, abs=0.05)


def test_n_draws_reruns_only_the_intervention_stages(smoke_repo):
    # (--dry lists the stages whose own inputs changed; layer_sweep follows in a real run.)
    assert stages_to_rerun(smoke_repo, "interventions", "n_draws", 5) == {f"interventions@{NAME}"}


def test_single_position_out_of_range_names_the_key(smoke_repo, tmp_path):
    params = params_with(smoke_repo, "interventions", "single_position", 500)
    args = ["--hook", "blocks.2.hook_resid_post", "--activations", "a", "--sae", "s", "--model", "m", "--tokens", "t",
            "--metrics", "x.json", "--figure", "f.png"]
    result = run_stage("interventions", args, tmp_path, params, check=False)
    assert result.returncode == 2
    assert "interventions.single_position: 500" in result.stderr
