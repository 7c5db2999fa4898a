"""The cost model: its FLOP and disk formulas against the real model and a real run's stores."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import cost_model  # noqa: E402


def test_shape_counts_the_real_models_parameters(lm_repo):
    from pipeline.models import load_model

    model = load_model(lm_repo / "artifacts" / "model", "float32", "cpu")
    real = sum(p.numel() for p in model.parameters() if p.dim() > 1)  # norms and biases are not matmuls
    assert cost_model.SHAPES["smollm2_135m"].params() == real


def test_predicted_store_sizes_match_a_real_run(smoke_repo):
    from pipeline.activation_store import open_store

    params = cost_model.compose("smoke", [])
    costs = {c.name: c for c in cost_model.stage_costs(params, pretrained_l0=32)}
    stores = list((smoke_repo / "artifacts" / "activations").glob("*.zarr"))
    actual = sum(open_store(s).nbytes for s in stores)
    # Predicted from n_contexts x (context - skip); the real stores also drop separator tokens.
    assert costs["harvest"].disk_bytes == pytest.approx(actual, rel=0.1)


@pytest.mark.slow
def test_script_prints_both_scales():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cost_model.py")], capture_output=True, text=True, check=True).stdout
    assert "scale=default: smollm2_135m" in out and "scale=paper: gemma2_2b" in out
    assert "ASSUMED" in out and "GPU-hours" in out
