"""The synthetic activation model (docs/science.md, "Synthetic activations") on a dictionary where every answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

from pipeline.synthetic import SyntheticConfig, correlations, linear_share_of_added_error, run_grid

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


@pytest.fixture(scope="module")
def grid():
    sae = orthonormal_sae()
    cfg = SyntheticConfig(activation_noise=[0.0, 0.3], introduced_noise=[0.0, 0.3], masked_fraction=[0.0])
    train, test = sparse_activations(sae, 20000, 1), sparse_activations(sae, 10000, 2)
    scale2 = train.astype(np.float64).var(0).mean()  # sigma units: per-dimension variance of x
    total_var_per_dim = test.astype(np.float64).var(0).mean()
    return {(p.activation_noise, p.introduced_noise): p for p in run_grid(sae, train, test, cfg)}, scale2, total_var_per_dim


def test_exact_dictionary_without_noise_has_no_error(grid):
    points, _, _ = grid
    assert points[0.0, 0.0].fvu < 1e-10
    assert abs(points[0.0, 0.0].nonlinear_fvu) < 1e-10


def test_introduced_noise_is_all_nonlinear_with_its_planted_size(grid):
    points, scale2, var = grid
    expected = 0.3**2 * scale2 / var  # the noise's variance share of x' (= x_clean here)
    p = points[0.0, 0.3]
    assert p.fvu == pytest.approx(expected, rel=0.03)
    assert p.nonlinear_fvu == pytest.approx(expected, rel=0.03)  # independent of x': nothing linear


def test_activation_noise_is_mostly_linear(grid):
    points, scale2, var = grid
    p = points[0.3, 0.0]
    noise_var = 0.3**2 * scale2
    assert p.fvu == pytest.approx(noise_var / (var + noise_var), rel=0.03)
    # the 16 directions off the dictionary hold pure noise, which x' predicts exactly; in the 16 on it
    # the best linear map leaves (clean variance x noise variance) / (their sum) per dimension
    assert p.nonlinear_fvu < 0.5 * p.fvu
    assert p.linear_fvu > 0.5 * p.fvu


def test_correlations_follow_the_planted_sources(grid):
    corr = correlations(list(grid[0].values()))
    assert corr["linear_vs_activation_noise"] > 0.9
    assert corr["nonlinear_vs_introduced_noise"] > 0.9


def test_masking_latents_adds_error():
    sae = orthonormal_sae()
    cfg = SyntheticConfig(activation_noise=[0.0], introduced_noise=[0.0], masked_fraction=[0.0, 0.25, 0.5])
    points = run_grid(sae, sparse_activations(sae, 5000, 3), sparse_activations(sae, 2000, 4), cfg)
    fvus = [p.fvu for p in points]
    assert fvus[0] < 1e-10 < fvus[1] < fvus[2]


def test_linear_share_of_each_source(grid):
    shares = linear_share_of_added_error(list(grid[0].values()))
    assert shares["introduced_noise"] == pytest.approx(0.0, abs=0.02)  # independent of x': none linear
    assert shares["activation_noise"] > 0.5
    assert np.isnan(shares["masked_fraction"])  # a single masked fraction in this grid
