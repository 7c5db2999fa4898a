"""How an SAE's error scales with its width (docs/science.md: "Scaling across widths", "Per-token scaling", "Latent vs probe"), per hook.

- `fit_power_law`: FVU(W) = c + a W^-m with c, a, m >= 0; c is the error no width removes.
- `error_bands`: split each width's FVU into the nonlinear error, the linear error that
  persists at the asymptote, and the part above the asymptote (features not yet learned).
- `per_token_scaling`: does a token's error at a small width predict its error at a larger
  one, and how much does its nonlinear error add?
- `latent_vs_probe`: the direction a* of a linear probe for ||x_hat - b_dec||^2 against each
  latent's mean activation (fitted on train rows, scored on test rows).

The per-token regressions are fitted on the test rows before `split` (the first half of the
test contexts) and scored on the rest: the per-token arrays they use exist for test tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit
from scipy.stats import pearsonr, spearmanr

from pipeline.lstsq import FitScore, NormalEquations
from pipeline.row_split import RowSplit
from pipeline.sae_output_store import SaeOutputs


@dataclass
class PowerLaw:
    c: float
    a: float
    m: float

    def __call__(self, width) -> np.ndarray:
        return self.c + self.a * np.asarray(width, dtype=np.float64) ** -self.m


def fit_power_law(widths, fvu) -> PowerLaw:
    """Least-squares fit of FVU(W) = c + a W^-m with all three parameters bounded to [0, inf)."""
    w, y = np.asarray(widths, dtype=np.float64), np.asarray(fvu, dtype=np.float64)
    if len(w) < 3:
        raise ValueError(f"a three-parameter power law needs at least 3 widths, got {len(w)}")

    def model(width, c, a, m):
        return c + a * (width / w.min()) ** -m  # scaled width: a stays near the FVU scale

    p0 = (0.5 * y.min(), max(y.max() - 0.5 * y.min(), 1e-6), 0.5)
    (c, a, m), _ = curve_fit(
        model, w, y, p0=p0, bounds=([0, 0, 0], [np.inf, np.inf, np.inf]), maxfev=20000, ftol=1e-14, xtol=1e-14, gtol=1e-14
    )
    return PowerLaw(c=float(c), a=float(a * w.min() ** m), m=float(m))


BANDS = ("nonlinear", "encoder", "linear_persistent", "above_asymptote")


def error_bands(
    fvu: np.ndarray, nonlinear_fvu: np.ndarray, asymptote: float, pursuit: dict[int, dict] | None = None
) -> dict[str, np.ndarray]:
    """Per width, bands that stack to the SAE's FVU exactly: the nonlinear error; the encoder
    error (what gradient pursuit removes, where `pursuit` has the width's metrics: then the
    nonlinear band is pursuit's nonlinear FVU); the rest of the asymptote c (linear error that
    persists); what is above c. `pursuit` maps a width's index to its `pursuit` metrics. Pursuit
    may score a subset of the test rows (`pursuit.test_rows`), so its two bands are taken as shares
    of its own encoder FVU and scaled to this width's FVU over all test rows."""
    fvu = np.asarray(fvu, dtype=np.float64)
    nonlinear = np.array(nonlinear_fvu, dtype=np.float64)
    encoder = np.zeros_like(fvu)
    for i, metrics in (pursuit or {}).items():
        scale = fvu[i] / metrics["encoder_fvu"]
        encoder[i] = scale * (metrics["encoder_fvu"] - metrics["pursuit_fvu"])
        nonlinear[i] = scale * metrics["pursuit_nonlinear_fvu"]
    above = np.clip(fvu - np.maximum(asymptote, nonlinear + encoder), 0, None)
    return {"nonlinear": nonlinear, "encoder": encoder, "linear_persistent": fvu - nonlinear - encoder - above, "above_asymptote": above}


def _r2_split(features: list[np.ndarray], target: np.ndarray, split: int) -> float:
    x = np.stack(features, axis=1)
    equations = NormalEquations(bias=True)
    equations.update(x[:split], target[:split])
    score = FitScore()
    score.update(target[split:], equations.solve().predict(x[split:])[:, 0])
    return score.r2


def per_token_scaling(error_norms: list[np.ndarray], nonlinear_norms: list[np.ndarray], split: int):
    """For widths i < j (lists ordered by width): R^2 of ||e_j|| ~ [||e_i||, 1], and the share of
    the remaining variance explained once ||n_i|| is added, (R^2_new - R^2) / (1 - R^2).
    Two (k, k) matrices, NaN where i >= j."""
    k = len(error_norms)
    r2, gain = np.full((k, k), np.nan), np.full((k, k), np.nan)
    for i in range(k):
        for j in range(i + 1, k):
            base = _r2_split([error_norms[i]], error_norms[j], split)
            new = _r2_split([error_norms[i], nonlinear_norms[i]], error_norms[j], split)
            r2[i, j], gain[i, j] = base, (new - base) / (1 - base)
    return r2, gain


@dataclass
class LatentProbe:
    norm_probe_r2: float
    """Test R^2 of the linear probe of ||x_hat - b_dec||^2 from x_hat - b_dec."""
    pearson: float
    """Correlation, over latents that fired, of a* . W_dec[i] with latent i's mean activation when active."""
    spearman: float
    projection: np.ndarray
    """(d_sae,) a* . W_dec[i]."""
    mean_activation: np.ndarray
    """(d_sae,) mean activation when active; NaN for latents that never fired."""


def latent_vs_probe(decoder: tuple[np.ndarray, np.ndarray], outputs: SaeOutputs, split: RowSplit, block_rows: int) -> LatentProbe:
    """docs/science.md, "Latent vs probe", for one SAE (`decoder` = (W_dec, b_dec)): the probe fitted on the fit rows'
    x_hat and scored on the test rows' x_hat, and the latents' mean activations over the fit rows (all as
    `sae_outputs` stored them)."""
    decoder, b_dec = decoder
    d_sae = decoder.shape[0]
    equations, score = NormalEquations(bias=True), FitScore()
    for _, x_hat in outputs.iter_x_hat(split.fit_rows.start, split.fit_rows.stop, block_rows):
        centred = np.asarray(x_hat, dtype=np.float64) - b_dec
        equations.update(centred, np.einsum("ij,ij->i", centred, centred))
    probe = equations.solve()
    for _, x_hat in outputs.iter_x_hat(split.test_rows.start, split.test_rows.stop, block_rows):
        centred = np.asarray(x_hat, dtype=np.float64) - b_dec
        score.update(np.einsum("ij,ij->i", centred, centred), probe.predict(centred)[:, 0])
    total, count = outputs.latent_fit_stats()
    if len(total) != d_sae:
        raise ValueError(f"{outputs.path}: {len(total)} latents, but the SAE's decoder has {d_sae}")

    fired = count > 0
    mean_activation = np.full(d_sae, np.nan)
    mean_activation[fired] = total[fired] / count[fired]
    projection = decoder @ probe.W[:, 0]
    return LatentProbe(
        norm_probe_r2=score.r2,
        pearson=float(pearsonr(projection[fired], mean_activation[fired]).statistic),
        spearman=float(spearmanr(projection[fired], mean_activation[fired]).statistic),
        projection=projection,
        mean_activation=mean_activation,
    )
