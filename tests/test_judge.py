"""The judge interface, with a stub judge (no LLM can run here; see pipeline/judge.py)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.judge import LatentExamples, load_judge, top_examples
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
    args = ["--hook", "blocks.2.hook_resid_post", "--activations", "artifacts/activations", "--sae", f"artifacts/saes/{name}",
            "--probes", f"artifacts/probes/{name}.zarr", "--model", "artifacts/model", "--tokens", "artifacts/tokens.zarr",
            "--out", str(tmp_path / "out"), "--metrics", "m.json", "--curves", "curves", "--figure", "f.png"]
    run_stage("error_saes", args, tmp_path, params)
    metrics = json.loads((tmp_path / "m.json").read_text())
    for component in ("linear_error", "nonlinear_error", "error"):
        assert 0 < metrics["by_component"][component]["judge_score"] <= 1
