"""The `error_saes` stage on the smoke DAG: each SAE trains on the component it claims."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from pipeline.activation_store import open_store
from pipeline.error_saes import COMPONENTS, score
from pipeline.sae_inference import load_sae
from stages.common import METRIC_RTOL

pytestmark = pytest.mark.slow

NAME = "blocks.2.hook_resid_post-512"


def test_components_are_the_probe_decomposition_of_the_error(smoke_repo):
    acts = open_store(smoke_repo / "artifacts/activations/blocks.2.hook_resid_post.zarr")
    group = zarr.open_group(smoke_repo / f"artifacts/error_saes/{NAME}/components.zarr", mode="r")
    start = int(group.attrs["first_store_row"])
    assert start == int(acts.attrs["n_sae_rows"])  # the SAE's own training rows are not used
    x = acts[start:].astype(np.float64)
    with torch.no_grad():
        e = x - load_sae(smoke_repo / f"artifacts/saes/{NAME}")(torch.from_numpy(x.astype(np.float32))).double().numpy()
    probes = zarr.open_group(smoke_repo / f"artifacts/probes/{NAME}.zarr", mode="r")
    linear = x @ probes["probe_weight"][:] + probes["probe_bias"][:]
    np.testing.assert_allclose(group["error"][:], e, atol=1e-4)
    np.testing.assert_allclose(group["linear_error"][:], linear, atol=1e-3)
    np.testing.assert_allclose(group["linear_error"][:] + group["nonlinear_error"][:], group["error"][:], atol=1e-4)


def test_each_sae_reconstructs_its_own_component_best(smoke_repo):
    """An SAE trained on component c explains c's test rows better than the other components'."""
    group = zarr.open_group(smoke_repo / f"artifacts/error_saes/{NAME}/components.zarr", mode="r")
    n_fit = int(group.attrs["n_fit_rows"])
    metrics = json.loads((smoke_repo / f"metrics/error_saes/{NAME}.json").read_text())
    for component in ("linear_error", "nonlinear_error"):
        sae = load_sae(smoke_repo / f"artifacts/error_saes/{NAME}/{component}")
        own = score(sae, group[component], n_fit, 512).fvu
        other = score(sae, group["nonlinear_error" if component == "linear_error" else "linear_error"], n_fit, 512).fvu
        assert own < other, component
        assert metrics[f"fvu_on_{component}"] == pytest.approx(own, rel=METRIC_RTOL)
    assert set(metrics) >= {f"fvu_on_{c}" for c in COMPONENTS}
    for component in COMPONENTS:
        assert metrics["by_component"][component]["l0"] == pytest.approx(16.0)  # same k as the SAE
