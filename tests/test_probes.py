"""The `probes` stage on the smoke DAG, against sklearn fitted on the same train tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from pipeline.activation_store import open_store
from pipeline.sae_inference import load_sae
from stages.common import METRIC_RTOL
from tests.conftest import stages_to_rerun

pytestmark = pytest.mark.slow

NAME = "blocks.2.hook_resid_post-512"


@pytest.fixture(scope="module")
def reference(smoke_repo):
    """(x, x_hat, [e, ||e||^2, ||e||], sklearn's prediction of those from x, fit rows) over all
    rows, sklearn fitted on the fit rows: train rows that no SAE trained on."""
    import torch
    from sklearn.linear_model import LinearRegression

    acts = open_store(smoke_repo / "artifacts/activations/blocks.2.hook_resid_post.zarr")
    n_train = int(acts.attrs["n_train_rows"])
    fit = slice(int(acts.attrs["n_sae_rows"]), n_train)
    assert 0 < fit.start < n_train
    sae = load_sae(smoke_repo / f"artifacts/saes/{NAME}")
    x = acts[:]
    with torch.no_grad():
        x_hat = sae(torch.from_numpy(x)).numpy()
    e = (x - x_hat).astype(np.float64)
    x64 = x.astype(np.float64)
    targets = np.hstack([e, (e**2).sum(1, keepdims=True), np.linalg.norm(e, axis=1, keepdims=True)])
    model = LinearRegression().fit(x64[fit], targets[fit])
    return x64, x_hat.astype(np.float64), targets, model.predict(x64), fit


def r2(y, y_hat, weighted=True):
    from sklearn.metrics import r2_score

    return r2_score(y, y_hat, multioutput="variance_weighted" if weighted else "uniform_average")


def fvu(y, y_hat):
    return ((y - y_hat) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()


def test_probe_metrics_match_sklearn(smoke_repo, reference):
    x, x_hat, targets, predicted = (a[reference[-1].stop :] for a in reference[:-1])
    d = x.shape[1]
    metrics = json.loads((smoke_repo / f"metrics/probes/{NAME}.json").read_text())
    e, e_lin = targets[:, :d], predicted[:, :d]
    assert metrics["error_vector_r2"] == pytest.approx(r2(e, e_lin), abs=1e-6)
    assert metrics["error_vector_r2_dims"] == pytest.approx(r2(e, e_lin, weighted=False), abs=1e-6)
    assert metrics["error_sq_norm_r2"] == pytest.approx(r2(targets[:, d], predicted[:, d]), abs=1e-6)
    assert metrics["error_norm_r2"] == pytest.approx(r2(targets[:, d + 1], predicted[:, d + 1]), abs=1e-6)
    assert metrics["sae_fvu"] == pytest.approx(fvu(x, x_hat), rel=METRIC_RTOL)
    assert metrics["nonlinear_fvu"] == pytest.approx(fvu(x, x_hat + e_lin), rel=2 * METRIC_RTOL)
    assert metrics["linear_share"] == pytest.approx(1 - fvu(x, x_hat + e_lin) / fvu(x, x_hat), rel=1e-5)
    assert 0 < metrics["nonlinear_fvu"] < metrics["sae_fvu"]


def test_component_norm_predictability_matches_sklearn(smoke_repo, reference):
    from sklearn.linear_model import LinearRegression

    x, x_hat, targets, predicted, fit = reference
    n_train = fit.stop
    d = x.shape[1]
    e, e_lin = targets[:, :d], predicted[:, :d]
    n = e - e_lin
    parts = {
        "x_hat": x_hat,
        "error": e,
        "nonlinear_error": n,
        "x_hat_plus_nonlinear": x_hat + n,
        "linear_error": e_lin,
        "x": x,
    }
    norms = np.stack([(p**2).sum(1) for p in parts.values()], axis=1)
    predicted_norms = LinearRegression().fit(x[fit], norms[fit]).predict(x[n_train:])
    got = json.loads((smoke_repo / f"metrics/probes/{NAME}.json").read_text())["component_sq_norm_r2"]
    assert list(got) == list(parts)
    for j, name in enumerate(parts):
        assert got[name] == pytest.approx(r2(norms[n_train:, j], predicted_norms[:, j]), abs=1e-4), name


def test_linear_and_nonlinear_errors_are_written_and_sum_to_the_error(smoke_repo, reference):
    x, _, targets, predicted = (a[reference[-1].stop :] for a in reference[:-1])
    d = x.shape[1]
    group = zarr.open_group(smoke_repo / f"artifacts/probes/{NAME}.zarr", mode="r")
    linear, nonlinear = group["linear_error"][:], group["nonlinear_error"][:]
    np.testing.assert_allclose(linear, predicted[:, :d], atol=2e-3 * np.abs(predicted[:, :d]).max())
    np.testing.assert_allclose(linear + nonlinear, targets[:, :d], atol=1e-3)


def test_probes_param_reruns_only_probes(smoke_repo):
    # (--dry lists the stages whose own inputs changed; the analyses that read probes follow in a real run.)
    ran = stages_to_rerun(smoke_repo, "probes", "ridge", 10.0)
    hooks = ("blocks.2.hook_resid_post", "blocks.2.hook_mlp_out", "blocks.1.hook_resid_post", "blocks.2.attn.hook_z")
    # pursuit refits its own probes with the same bias/ridge settings
    k_grid = {f"probes_k@blocks.2.hook_resid_post-{w}-8" for w in (128, 512)}  # sae.ks: [8] at the smoke hook
    assert ran == {f"probes@{hook}-{w}" for hook in hooks for w in (128, 512)} | k_grid | {"pursuit@blocks.2.hook_resid_post-512"}, ran


def test_norm_baselines_match_an_independent_fit(smoke_repo, reference):
    """Token-id means by hand and one-feature fits by numpy.polyfit, fitted on the fit rows."""
    import torch

    x, _, targets, _, fit = reference
    d = x.shape[1]
    tokens = zarr.open_group(smoke_repo / "artifacts/tokens.zarr", mode="r")["rows/token"][:]
    losses = zarr.open_group(smoke_repo / "artifacts/lm_loss.zarr", mode="r")
    sae = load_sae(smoke_repo / f"artifacts/saes/{NAME}")
    with torch.no_grad():
        l0 = (sae.encode(torch.from_numpy(x.astype(np.float32))) != 0).sum(-1).numpy()
    features = {
        "lm_loss_current": losses["loss_current"][:].astype(np.float64),
        "lm_loss_next": losses["loss_next"][:].astype(np.float64),
        "sae_l0": l0.astype(np.float64),
        "x_norm": np.linalg.norm(x, axis=1),
    }
    got = json.loads((smoke_repo / f"metrics/probes/{NAME}.json").read_text())
    for column, key in ((d, "error_sq_norm_baseline_r2"), (d + 1, "error_norm_baseline_r2")):
        y = targets[:, column]
        train, test = fit, slice(fit.stop, None)
        means = {t: y[train][tokens[train] == t].mean() for t in np.unique(tokens[train])}
        by_token = np.array([means.get(t, y[train].mean()) for t in tokens[test]])
        assert got[key]["token_id_mean"] == pytest.approx(r2(y[test], by_token), abs=1e-6)
        for name, f in features.items():
            finite = np.isfinite(f[train])
            slope, intercept = np.polyfit(f[train][finite], y[train][finite], 1)
            f_test = np.where(np.isfinite(f[test]), f[test], f[train][finite].mean())
            assert got[key][name] == pytest.approx(r2(y[test], slope * f_test + intercept), abs=1e-5), (key, name)
