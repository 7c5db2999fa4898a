"""The synthetic activation model (docs/science.md, "Synthetic activations") on a dictionary where every answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

from pipeline.analysis_config import SyntheticConfig
from pipeline.synthetic import correlations, linear_share_of_added_error, run_grid

D, D_SAE, K = 32, 16, 3


def orthonormal_sae() -> TopKSAE:
    """A TopK SAE whose 16 decoder rows are orthonormal: it reconstructs any non-negative
    combination of at most K of them exactly."""
    sae = TopKSAE(TopKSAEConfig(d_in=D, d_sae=D_SAE, k=K))
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        sae.W_dec.copy_(q[:D_SAE])
        sae.W_enc.copy_(q[:D_SAE].T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def sparse_activations(sae: TopKSAE, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = np.zeros((n, D_SAE), dtype=np.float32)
    for row in codes:
        row[rng.choice(D_SAE, K, replace=False)] = rng.uniform(1, 3, K)
    return codes @ sae.W_dec.detach().numpy()


SIGMAS = (0.0, 0.15, 0.3)


@pytest.fixture(scope="module")
def grid():
    sae = orthonormal_sae()
    cfg = SyntheticConfig(activation_noise=list(SIGMAS), introduced_noise=list(SIGMAS), masked_fraction=[0.0])
    train, test = sparse_activations(sae, 20000, 1), sparse_activations(sae, 10000, 2)
    scale2 = train.astype(np.float64).var(0).mean()  # sigma units: per-dimension variance of x
    total_var = test.astype(np.float64).var(0).sum()
    return {(p.activation_noise, p.introduced_noise): p for p in run_grid(sae, train, test, cfg)}, scale2, total_var


def closed_form(sigma_a: float, sigma_r: float, scale2: float, total_var: float) -> tuple[float, float]:
    """(FVU, nonlinear FVU) when x lies in a D_SAE-dimensional subspace with about equal variance
    in every direction (orthonormal atoms, i.i.d. codes), x' = x + sigma_a noise and R = x + sigma_r
    noise (noise of per-dimension variance sigma^2 scale2). Off the subspace x' is pure activation
    noise, which a linear map of x' predicts exactly; on it the best linear map leaves
    v a / (v + a) per direction (v the direction's variance of x, a that of the noise); the
    introduced noise is independent of x', so none of it is linear."""
    a, r = sigma_a**2 * scale2, sigma_r**2 * scale2
    v = total_var / D_SAE
    denominator = total_var + D * a
    return D * (a + r) / denominator, (D_SAE * v * a / (v + a) + D * r) / denominator


def test_every_grid_point_matches_the_closed_form(grid):
    points, scale2, total_var = grid
    for (sigma_a, sigma_r), p in points.items():
        fvu, nonlinear = closed_form(sigma_a, sigma_r, scale2, total_var)
        assert p.fvu == pytest.approx(fvu, rel=0.03, abs=1e-9), (sigma_a, sigma_r)
        assert p.nonlinear_fvu == pytest.approx(nonlinear, rel=0.05, abs=1e-9), (sigma_a, sigma_r)


def test_correlations_match_those_of_the_closed_form(grid):
    points, scale2, total_var = grid
    corr = correlations(list(points.values()))

    def part_of(settings: tuple[float, float], part: str) -> float:
        fvu, nonlinear = closed_form(*settings, scale2, total_var)
        return fvu - nonlinear if part == "linear" else nonlinear

    def expected(part: str, varied: str) -> float:
        """Mean over the grid's rows (the other source held) of the correlation with the varied source."""
        rows = [[(s, held) if varied == "activation" else (held, s) for s in SIGMAS] for held in SIGMAS]
        return float(np.mean([np.corrcoef([part_of(k, part) for k in row], SIGMAS)[0, 1] for row in rows]))

    assert corr["linear_vs_activation_noise"] == pytest.approx(expected("linear", "activation"), abs=0.02)
    assert corr["nonlinear_vs_introduced_noise"] == pytest.approx(expected("nonlinear", "introduced"), abs=0.02)
    assert corr["nonlinear_vs_activation_noise"] == pytest.approx(expected("nonlinear", "activation"), abs=0.02)
    assert 0.9 < corr["nonlinear_vs_introduced_noise"] < 0.999  # three values per axis: not a trivial +-1


def test_masking_latents_adds_error():
    sae = orthonormal_sae()
    cfg = SyntheticConfig(activation_noise=[0.0], introduced_noise=[0.0], masked_fraction=[0.0, 0.25, 0.5])
    points = run_grid(sae, sparse_activations(sae, 5000, 3), sparse_activations(sae, 2000, 4), cfg)
    fvus = [p.fvu for p in points]
    assert fvus[0] < 1e-10 < fvus[1] < fvus[2]


def test_linear_share_of_each_source(grid):
    points, scale2, total_var = grid
    shares = linear_share_of_added_error(list(points.values()))
    assert shares["introduced_noise"] == pytest.approx(0.0, abs=0.02)  # independent of x': none linear
    fvu, nonlinear = closed_form(0.3, 0.0, scale2, total_var)
    assert shares["activation_noise"] == pytest.approx((fvu - nonlinear) / fvu, abs=0.03)
    assert shares["masked_fraction"] is None  # a single masked fraction in this grid: undefined, written as null
