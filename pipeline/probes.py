"""Linear probes of an SAE's error from the activation (docs/science.md, "Linear error" and "Error norm").

Fit on the fit rows (train tokens no SAE trained on, `RowSplit.fit_rows`), in one
streaming pass, the map x -> [e, ||e||^2, ||e||] (e = x - x̂, x̂ as `sae_outputs` stored it), then in a second pass over
the test tokens score it and write the linear error e_hat = x W + b and the nonlinear error
n = e - e_hat (and W, b, for stages that need e_hat on other tokens).
The norm baselines of `pipeline.norm_baselines` are fitted and scored in the same passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import zarr
from tqdm.auto import tqdm

from pipeline.activation_store import iter_row_blocks
from pipeline.analysis_config import ProbesConfig
from pipeline.lstsq import FitScore, LinearFit, NormalEquations
from pipeline.norm_baselines import BaselineScores, NormBaselines, RowFeatures
from pipeline.row_split import RowSplit
from pipeline.sae_output_store import SaeOutputs
from pipeline.store_integrity import new_group, publish


@dataclass
class ProbeMetrics:
    """Test-token results (leaf keys of the metrics JSON)."""

    error_vector_r2: float
    """1 - FVU(e, e_hat): share of the error's total variance that is linear in x."""
    error_vector_r2_dims: float
    """Mean over dimensions of per-dimension R^2 (what the paper's code reports)."""
    error_sq_norm_r2: float
    error_norm_r2: float
    sae_fvu: float
    nonlinear_fvu: float
    """FVU(x, x_hat + e_hat): what is left once the linear error is added back."""
    linear_share: float
    """(sae_fvu - nonlinear_fvu) / sae_fvu: share of the SAE's FVU that the linear error accounts for."""
    component_sq_norm_r2: dict[str, float]
    """Test R^2 of a linear probe (with bias) from x to the squared norm of each component."""
    error_sq_norm_baseline_r2: dict[str, float]
    """Test R^2 of each baseline (`pipeline.norm_baselines`) predicting ||e||^2."""
    error_norm_baseline_r2: dict[str, float]
    """The same for ||e||."""


COMPONENTS = ("x_hat", "error", "nonlinear_error", "x_hat_plus_nonlinear", "linear_error", "x")
"""docs/science.md, "Norm predictability of components": the components whose squared-norm predictability is compared."""


def component_sq_norms(x: np.ndarray, x_hat: np.ndarray, err: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """(rows, len(COMPONENTS)) squared norms of x_hat, e, n, x_hat + n, e_hat and x."""
    nonlinear = err - linear
    parts = (x_hat, err, nonlinear, x_hat + nonlinear, linear, x)
    return np.stack([np.einsum("ij,ij->i", p, p) for p in (np.asarray(q, dtype=np.float64) for q in parts)], axis=1)


def _baseline_inputs(rows: RowFeatures, first: int, x: np.ndarray, l0: np.ndarray) -> tuple[np.ndarray, dict]:
    token_ids, features = rows.block(first, first + len(x))
    features.update(sae_l0=l0, x_norm=np.linalg.norm(np.asarray(x, dtype=np.float64), axis=1))
    return token_ids, features


def _targets(err: np.ndarray) -> np.ndarray:
    sq = (err.astype(np.float64) ** 2).sum(1, keepdims=True)
    return np.hstack([err.astype(np.float64), sq, np.sqrt(sq)])


def fit_error_probes(
    outputs: SaeOutputs, acts: zarr.Array, rows: RowFeatures, cfg: ProbesConfig, progress: bool = True
) -> tuple[LinearFit, NormBaselines]:
    """One pass over the fit rows: the joint fit of e, ||e||^2 and ||e|| on x, and the norm baselines."""
    d = acts.shape[1]
    fit_rows = RowSplit.of(acts).fit_rows
    start, stop = fit_rows.start, fit_rows.stop
    equations, baselines = NormalEquations(bias=cfg.bias), NormBaselines()
    blocks = iter_row_blocks(acts, start, stop, rows=cfg.block_rows)
    for first, x in tqdm(blocks, total=-(-(stop - start) // cfg.block_rows), desc="probes: fit", disable=not progress):
        _, err, l0 = outputs.reconstruction(first, x)
        targets = _targets(err)
        equations.update(x, targets)
        baselines.update(*_baseline_inputs(rows, first, x, l0), targets[:, d:])
    baselines.solve()
    return equations.solve(cfg.ridge), baselines


def fit_component_norm_probes(outputs: SaeOutputs, acts: zarr.Array, fit: LinearFit, cfg: ProbesConfig, progress: bool = True) -> LinearFit:
    """A second pass over the fit rows (n needs the fitted map): x -> squared norm of each component."""
    d = acts.shape[1]
    fit_rows = RowSplit.of(acts).fit_rows
    start, stop = fit_rows.start, fit_rows.stop
    equations = NormalEquations(bias=True)
    blocks = iter_row_blocks(acts, start, stop, rows=cfg.block_rows)
    for first, x in tqdm(blocks, total=-(-(stop - start) // cfg.block_rows), desc="probes: norms", disable=not progress):
        x_hat, err, _ = outputs.reconstruction(first, x)
        equations.update(x, component_sq_norms(x, x_hat, err, fit.predict(x)[:, :d]))
    return equations.solve(cfg.ridge)


def score_error_probes(
    outputs: SaeOutputs,
    acts: zarr.Array,
    fit: LinearFit,
    norms_fit: LinearFit,
    rows: RowFeatures,
    baselines: NormBaselines,
    out: Path,
    cfg: ProbesConfig,
    progress: bool = True,
) -> ProbeMetrics:
    """One pass over the test rows: score the probes and baselines, write e_hat, n and the probe's W, b
    (`probe_weight`, `probe_bias`) to the Zarr group `out`."""
    d = acts.shape[1]
    split = RowSplit.of(acts)
    n_train, n_test = split.n_train_rows, split.n_test_rows
    out = Path(out)
    tmp, group = new_group(out)
    arrays = {name: group.create_array(name, shape=(n_test, d), chunks=(acts.chunks[0], d), dtype="float32") for name in ("linear_error", "nonlinear_error")}
    error, sq_norm, norm, sae_recon, with_linear = (FitScore() for _ in range(5))
    component_scores = {name: FitScore() for name in COMPONENTS}
    baseline_scores = BaselineScores()
    blocks = iter_row_blocks(acts, n_train, rows=cfg.block_rows)
    for first, x in tqdm(blocks, total=-(-n_test // cfg.block_rows), desc="probes: score", disable=not progress):
        x_hat, err, l0 = outputs.reconstruction(first, x)
        pred = fit.predict(x)
        linear, (pred_sq, pred_norm) = pred[:, :d], pred[:, d:].T
        target = _targets(err)
        error.update(err, linear)
        sq_norm.update(target[:, d], pred_sq)
        norm.update(target[:, d + 1], pred_norm)
        sae_recon.update(x, x_hat)
        with_linear.update(x, x_hat + linear)
        norms, predicted_norms = component_sq_norms(x, x_hat, err, linear), norms_fit.predict(x)
        for j, name in enumerate(COMPONENTS):
            component_scores[name].update(norms[:, j], predicted_norms[:, j])
        baseline_scores.update(target[:, d:], baselines.predict(*_baseline_inputs(rows, first, x, l0)))
        written = slice(first - n_train, first - n_train + len(x))
        arrays["linear_error"][written] = linear.astype(np.float32)
        arrays["nonlinear_error"][written] = (err - linear).astype(np.float32)
    metrics = ProbeMetrics(
        error_vector_r2=error.r2,
        error_vector_r2_dims=error.r2_dims,
        error_sq_norm_r2=sq_norm.r2,
        error_norm_r2=norm.r2,
        sae_fvu=sae_recon.fvu,
        nonlinear_fvu=with_linear.fvu,
        linear_share=(sae_recon.fvu - with_linear.fvu) / sae_recon.fvu,
        component_sq_norm_r2={name: score.r2 for name, score in component_scores.items()},
        error_sq_norm_baseline_r2=baseline_scores.r2(0),
        error_norm_baseline_r2=baseline_scores.r2(1),
    )
    group.create_array("probe_weight", data=fit.W[:, :d].astype(np.float64), chunks=(d, d))
    group.create_array("probe_bias", data=fit.b[:d].astype(np.float64), chunks=(d,))
    group.attrs.update({"first_store_row": n_train, "n_test_rows": n_test, "probes": asdict(cfg), "metrics": asdict(metrics)})
    publish(tmp, out)
    return metrics
