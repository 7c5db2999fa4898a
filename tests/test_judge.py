"""The judge interface, with a stub judge (no LLM can run here; see pipeline/judge.py)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.judge import LatentExamples, load_judge, top_examples
from stages.common import METRIC_RTOL
from tests.conftest import params_with, run_stage


class StubJudge:
    """Share of a latent's examples whose marked token is its most common one: 1 when the latent
    fires on a single token type. A stand-in for an LLM judge, not a measure of interpretability."""

    def score(self, examples: LatentExamples) -> float:
        marked = [text.rsplit("<<", 1)[1] for text in examples.contexts]
        return Counter(marked).most_common(1)[0][1] / len(marked) if marked else 0.0


def test_top_examples_pick_the_most_active_latents_and_rows():
    contexts = np.arange(40).reshape(4, 10)
    scored = np.zeros((4, 10), dtype=bool)
    scored[:, 2:] = True
    row_context, row_position = np.nonzero(scored)
    latents = np.zeros((len(row_context), 5))
    latents[:, 3] = np.linspace(0, 1, len(row_context))  # fires everywhere but row 0, largest last
    latents[[1, 4], 1] = [5.0, 7.0]
    out = top_examples(latents, row_context, row_position, contexts, lambda ids: " ".join(map(str, ids)), 2, 2, window=2)
    assert [e.latent for e in out] == [3, 1]
    assert out[0].activations == [1.0, latents[-2, 3]]
    assert out[0].contexts[0] == "37 38<<39>>"  # the last row: context 3, position 9
    assert out[1].activations == [7.0, 5.0] and out[1].contexts[0] == "4 5<<6>>"


def test_bad_judge_spec_names_the_key():
    with pytest.raises(ConfigError, match="error_saes.judge"):
        load_judge("no_colon")
    with pytest.raises(ConfigError, match="cannot load"):
        load_judge("tests.test_judge:Missing")
    assert isinstance(load_judge("tests.test_judge:StubJudge"), StubJudge)


@pytest.mark.slow
def test_error_saes_stage_records_the_judge_score(smoke_repo, tmp_path):
    params = params_with(smoke_repo, "error_saes", "judge", "tests.test_judge:StubJudge")
    name = "blocks.2.hook_resid_post-512"
    for src in ("artifacts", ):
        (tmp_path / src).symlink_to(smoke_repo / src)
    args = ["--hook", "blocks.2.hook_resid_post", "--activations", "artifacts/activations", "--sae-outputs", f"artifacts/sae_outputs/{name}.zarr",
            "--probes", f"artifacts/probes/{name}.zarr", "--model", "artifacts/model", "--tokens", "artifacts/tokens.zarr",
            "--out", str(tmp_path / "out"), "--metrics", "m.json", "--curves", "curves", "--figure", "f.png"]
    run_stage("error_saes", args, tmp_path, params)
    metrics = json.loads((tmp_path / "m.json").read_text())
    # Recomputed here from the saved error SAEs with sae-lens, the token store and the tokenizer:
    # the most often active latents on the first judge_rows test rows of each component, their
    # top rows' tokens, and the stub's score (the share of the most common token) averaged.
    import torch
    import zarr
    from sae_lens import SAE
    from transformers import AutoTokenizer

    cfg = params["error_saes"]
    group = zarr.open_group(tmp_path / "out" / "components.zarr", mode="r")
    n_fit, first_store_row = int(group.attrs["n_fit_rows"]), int(group.attrs["first_store_row"])
    row_tokens = zarr.open_group(smoke_repo / "artifacts/tokens.zarr", mode="r")["rows/token"][:]
    tokenizer = AutoTokenizer.from_pretrained(smoke_repo / "artifacts/model")
    for component in ("linear_error", "nonlinear_error", "error"):
        sae = SAE.load_from_disk(str(tmp_path / "out" / component))
        rows = group[component][n_fit : n_fit + cfg["judge_rows"]]
        with torch.no_grad():
            acts = sae.encode(torch.from_numpy(np.asarray(rows, dtype=np.float32))).numpy()
        latents = np.argsort(-(acts > 0).sum(0), kind="stable")[: cfg["judge_latents"]]
        scores = []
        for latent in latents:
            top = np.argsort(-acts[:, latent], kind="stable")[: cfg["judge_examples"]]
            top = top[acts[top, latent] > 0]
            marked = [tokenizer.decode([int(row_tokens[first_store_row + n_fit + row])]) + ">>" for row in top]
            scores.append(Counter(marked).most_common(1)[0][1] / len(marked) if marked else 0.0)
        assert metrics["by_component"][component]["judge_score"] == pytest.approx(np.mean(scores), rel=METRIC_RTOL, abs=1e-12), component
