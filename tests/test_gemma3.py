"""The second embedded LM, Gemma 3 270M, through the whole smoke DAG (`dvc exp run -S
model=gemma3_270m -S scale=smoke`): its checkpoint, its hook sites against TransformerLens's
Gemma 3 built from the same weights, its loss, and the interventions on a 262k vocabulary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from pipeline.activation_store import open_store, store_path
from pipeline.config import HarvestConfig, load_params, section
from pipeline.models import checkpoint_info, load_model, load_tokenizer
from pipeline.tokens import TokenStore
from tests.conftest import copy_repo, run

pytestmark = pytest.mark.slow

N_CONTEXTS = 4  # contexts compared with TransformerLens


@pytest.fixture(scope="module")
def gemma_repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("gemma3_repo"))
    run(["dvc", "exp", "run", "-S", "model=gemma3_270m", "-S", "scale=smoke"], repo)
    return repo


@pytest.fixture(scope="module")
def params(gemma_repo):
    return load_params(gemma_repo / "params.yaml")


def test_the_checkpoint_is_gemma_3_270m(gemma_repo, params):
    info = checkpoint_info(gemma_repo / "artifacts/model")
    assert params.model.name == "gemma3_270m"
    assert (info["model_type"], info["n_layers"], info["d_model"]) == ("gemma3_text", 18, 640)
    assert info["n_parameters"] == 268_098_176
    assert load_tokenizer(gemma_repo / "artifacts/model").vocab_size == 262_144


def test_sites_equal_transformer_lens_on_the_real_model(gemma_repo, params, monkeypatch):
    """Every harvested site equals TransformerLens's hook of the same name (float32, relative to
    the site's largest value); attn_z is 4 heads x 256 = 1024 wide."""
    from transformer_lens import HookedTransformer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = gemma_repo / "artifacts/model"
    hf = load_model(model_dir, "float32")
    tl = HookedTransformer.from_pretrained_no_processing(
        "google/gemma-3-270m", hf_model=hf, tokenizer=load_tokenizer(model_dir), device="cpu", dtype=torch.float32
    )
    tokens = TokenStore.open(gemma_repo / "artifacts/tokens.zarr")
    contexts = torch.from_numpy(tokens.contexts[:N_CONTEXTS]).long()
    hooks = section(params, "harvest", HarvestConfig).parsed_hooks()
    _, cache = tl.run_with_cache(contexts, names_filter=lambda name: name in {h.name for h in hooks})
    mask = tokens.mask[:N_CONTEXTS]
    n_rows = int(mask.sum())
    for hook in hooks:
        stored = open_store(store_path(gemma_repo / "artifacts/activations", hook))[:n_rows]
        expected = cache[hook.name].flatten(2) if hook.site == "attn_z" else cache[hook.name]
        expected = expected.numpy()[mask]
        assert stored.shape == (n_rows, 1024 if hook.site == "attn_z" else 640), hook.name
        error = np.abs(stored - expected).max() / np.abs(expected).max()
        assert error < 1e-5, (hook.name, error)  # measured 1e-7 (residual) to 1.4e-6 (attn_z)


def test_the_loss_is_that_of_a_working_lm(gemma_repo):
    """Next-token loss on the smoke scale's pydoc contexts: a broken conversion gives ~log(262144) = 12.5 nats."""
    losses = zarr.open_group(gemma_repo / "artifacts/lm_loss.zarr", mode="r")["loss_next"][:]
    mean = float(np.nanmean(losses))
    assert 1.5 < mean < 6.0, mean  # 4.57 nats measured here (64-token contexts); 3.97 at the default scale


def test_interventions_run_on_the_262k_vocabulary(gemma_repo, params):
    for hook in params.interventions.hooks:
        for width in params.interventions.widths:
            m = json.loads((gemma_repo / f"metrics/interventions/{hook}-{width}.json").read_text())
            ratio = m["kl_ratio_substitution_vs_epsilon_random"]
            assert np.isfinite(ratio) and ratio > 0
            assert m["interventions"]["substitution"]["kl"] > 0
    assert "gemma3_270m" in (gemma_repo / "reports/index.html").read_text()
