"""docs/science.md, "Synthetic activations": a synthetic activation model where the sources of SAE error are planted.

From real activations, x_clean = SAE(acts) is exactly sparse in the SAE's dictionary. Then
- the observed activation is x' = x_clean + sigma_a * s * g_a (dense noise no dictionary holds),
- the "reconstruction" is R = decode(encode(x_clean) * mask) + sigma_r * s * g_r, where the mask
  drops the lowest-activating fraction of latents (features not learned) and g_r is error the
  SAE introduces itself,
with g_a, g_r ~ N(0, I) and s = sqrt(mean per-dimension variance of acts): sigma_a and sigma_r
are in units of the activations' per-dimension standard deviation.

The error x' - R is regressed linearly on x' (train rows); on test rows we report FVU(x', R)
and FVU(x', R + x'W + b). The paper's claim: the linear part tracks the activation noise and
the nonlinear part the introduced noise.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.analysis_config import SyntheticConfig
from pipeline.lstsq import FitScore, NormalEquations
from pipeline.sae_inference import InferenceSAE, encode_decode


@dataclass
class GridPoint:
    activation_noise: float
    introduced_noise: float
    masked_fraction: float
    fvu: float
    """FVU(x', R): the synthetic SAE's error."""
    nonlinear_fvu: float
    """FVU(x', R + x'W + b): what the linear map from x' cannot predict."""

    @property
    def linear_fvu(self) -> float:
        """The part of the FVU that the linear map removes."""
        return self.fvu - self.nonlinear_fvu


@torch.no_grad()
def latent_order(sae: InferenceSAE, x_clean: torch.Tensor) -> torch.Tensor:
    """Latent indices from lowest to highest mean activation (zeros included) on x_clean."""
    latents, _ = encode_decode(sae, x_clean)
    return torch.argsort(latents.mean(0))


def _decode_masked(sae: InferenceSAE, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """decode(encode(x) * mask): encoded afresh for each decode, as an SAE with run-time input
    statistics (normalization, centring: pipeline.sae_inference) pairs every decode with an encode."""
    return sae.decode(sae.encode(x) * mask)


@torch.no_grad()
def run_grid(sae: InferenceSAE, train_acts: np.ndarray, test_acts: np.ndarray, cfg: SyntheticConfig) -> list[GridPoint]:
    """Every (sigma_a, sigma_r, masked fraction) of the config, on the given real activations."""
    generator = torch.Generator().manual_seed(cfg.seed)
    acts = {name: torch.from_numpy(np.asarray(a, dtype=np.float32)).to(sae.device) for name, a in (("train", train_acts), ("test", test_acts))}
    scale = float(acts["train"].cpu().double().var(0).mean().sqrt())
    clean = {name: encode_decode(sae, a)[1] for name, a in acts.items()}
    order = latent_order(sae, clean["train"])
    noise = {  # one draw per split and kind, scaled per grid point: grid points differ only by the planted sizes
        (name, kind): torch.randn(c.shape, generator=generator).to(c.device) for name, c in clean.items() for kind in ("a", "r")
    }
    points = []
    for masked in cfg.masked_fraction:
        mask = torch.ones(sae.cfg.d_sae, device=sae.device)
        mask[order[: int(round(masked * sae.cfg.d_sae))]] = 0
        decoded = {name: _decode_masked(sae, clean[name], mask) for name in clean}
        for sigma_a, sigma_r in itertools.product(cfg.activation_noise, cfg.introduced_noise):
            observed = {name: clean[name] + sigma_a * scale * noise[name, "a"] for name in clean}
            recon = {name: decoded[name] + sigma_r * scale * noise[name, "r"] for name in clean}
            equations = NormalEquations(bias=True)
            equations.update(observed["train"].cpu().numpy(), (observed["train"] - recon["train"]).cpu().numpy())
            linear = equations.solve().predict(observed["test"].cpu().numpy())
            x, r = observed["test"].cpu().double().numpy(), recon["test"].cpu().double().numpy()
            sae_score, nonlinear_score = FitScore(), FitScore()
            sae_score.update(x, r)
            nonlinear_score.update(x, r + linear)
            points.append(GridPoint(sigma_a, sigma_r, masked, sae_score.fvu, nonlinear_score.fvu))
    return points


def _corr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def _within(points: list[GridPoint], held: tuple[str, ...], part: str, varied: str) -> float | None:
    """Mean, over groups of points that share the `held` settings, of the correlation between
    the error `part` and the `varied` setting (None, undefined, when no group varies it)."""
    groups: dict[tuple, list[GridPoint]] = {}
    for p in points:
        groups.setdefault(tuple(getattr(p, h) for h in held), []).append(p)
    values = [_corr([getattr(p, part) for p in g], [getattr(p, varied) for p in g]) for g in groups.values()]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else None


def correlations(points: list[GridPoint]) -> dict[str, float | None]:
    """Pearson correlations between each error part and each planted source. For the noise sizes,
    within each masked fraction (then averaged); for the masked fraction, within each pair of
    noise sizes: one source varies at a time. None (written as null) when a grid axis has a single value."""
    noise = ("activation_noise", "introduced_noise")
    out = {}
    for part, label in (("linear_fvu", "linear"), ("nonlinear_fvu", "nonlinear")):
        out[f"{label}_vs_activation_noise"] = _within(points, ("masked_fraction", "introduced_noise"), part, "activation_noise")
        out[f"{label}_vs_introduced_noise"] = _within(points, ("masked_fraction", "activation_noise"), part, "introduced_noise")
        out[f"{label}_vs_masked_fraction"] = _within(points, noise, part, "masked_fraction")
    return out


def linear_share_of_added_error(points: list[GridPoint]) -> dict[str, float | None]:
    """For each source alone (the others at their smallest setting): of the FVU it adds going from
    its smallest to its largest setting, the share that is linear. None (null) for a single-valued
    axis, or one along which the FVU does not rise."""
    axes = ("activation_noise", "introduced_noise", "masked_fraction")
    low = {a: min(getattr(p, a) for p in points) for a in axes}
    high = {a: max(getattr(p, a) for p in points) for a in axes}

    def at(settings):
        return next(p for p in points if all(getattr(p, a) == settings[a] for a in axes))

    base = at(low)
    out = {}
    for axis in axes:
        top = at({**low, axis: high[axis]})
        added = top.fvu - base.fvu
        out[axis] = float((top.linear_fvu - base.linear_fvu) / added) if high[axis] > low[axis] and added > 0 else None
    return out
