"""Scaling analyses (docs/science.md, "Scaling across widths", "Per-token scaling") on data with planted answers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.scaling import BANDS, PowerLaw, error_bands, fit_power_law, per_token_scaling


@pytest.mark.parametrize("c, a, m", [(0.05, 2.0, 0.5), (0.0, 0.8, 0.3), (0.12, 30.0, 0.9)])
def test_power_law_parameters_are_recovered(c, a, m):
    widths = np.array([576, 1152, 2304, 4608, 9216])
    law = fit_power_law(widths, PowerLaw(c, a, m)(widths))
    assert (law.c, law.a, law.m) == pytest.approx((c, a, m), rel=1e-3, abs=1e-5)


def test_power_law_on_noisy_data_is_the_constrained_least_squares_optimum():
    """Not monotone, so no exact law fits: the fit must reach the smallest squared error of any
    c, a, m >= 0, found here independently by a grid over m with non-negative least squares for
    (c, a) at each m."""
    from scipy.optimize import nnls

    widths = np.array([576, 1152, 2304, 4608], dtype=float)
    fvu = np.array([0.27, 0.25, 0.22, 0.23])
    law = fit_power_law(widths, fvu)
    best = min(nnls(np.column_stack([np.ones_like(widths), widths**-m]), fvu)[1] ** 2 for m in np.linspace(0, 5, 5001))
    achieved = float(((law(widths) - fvu) ** 2).sum())
    assert achieved <= best * (1 + 1e-3) + 1e-12, (achieved, best)


def test_power_law_needs_three_widths():
    with pytest.raises(ValueError, match="at least 3 widths"):
        fit_power_law([576, 1152], [0.3, 0.2])


def test_bands_stack_to_the_fvu():
    fvu, nonlinear = np.array([0.30, 0.22, 0.18, 0.12]), np.array([0.10, 0.10, 0.11, 0.11])
    bands = error_bands(fvu, nonlinear, asymptote=0.15)
    np.testing.assert_allclose(sum(bands[b] for b in BANDS), fvu)
    np.testing.assert_allclose(bands["above_asymptote"], [0.15, 0.07, 0.03, 0.0])
    np.testing.assert_allclose(bands["nonlinear"], nonlinear)
    assert (bands["linear_persistent"] >= -1e-12).all()


def test_per_token_scaling_finds_the_planted_dependence():
    """||e_j|| = ||e_i|| + ||n_i|| + noise: ||e_i|| explains part, ||n_i|| most of the rest."""
    rng = np.random.default_rng(0)
    n = 40000
    e_small = rng.gamma(4, 1, n)
    n_small = rng.gamma(4, 1, n)
    e_large = 0.5 * e_small + n_small + 0.5 * rng.normal(size=n)
    r2, gain = per_token_scaling([e_small, e_large], [n_small, np.zeros(n)], split=n // 2)
    var_e, var_n, var_noise = 0.25 * 4, 4.0, 0.25
    expected_r2 = var_e / (var_e + var_n + var_noise)
    expected_gain = var_n / (var_n + var_noise)
    assert r2[0, 1] == pytest.approx(expected_r2, abs=0.02)
    assert gain[0, 1] == pytest.approx(expected_gain, abs=0.02)
    assert np.isnan(r2[1, 0]) and np.isnan(r2[0, 0])


def test_encoder_band_comes_from_pursuit_where_measured():
    fvu, nonlinear = np.array([0.30, 0.22]), np.array([0.10, 0.11])
    pursuit = {1: {"encoder_fvu": 0.22, "pursuit_fvu": 0.17, "pursuit_nonlinear_fvu": 0.09}}
    bands = error_bands(fvu, nonlinear, asymptote=0.15, pursuit=pursuit)
    np.testing.assert_allclose(sum(bands[b] for b in BANDS), fvu)
    np.testing.assert_allclose(bands["encoder"], [0.0, 0.05])
    np.testing.assert_allclose(bands["nonlinear"], [0.10, 0.09])
    np.testing.assert_allclose(bands["above_asymptote"], [0.15, 0.07])


def test_pursuit_on_a_subset_of_test_rows_is_scaled_to_the_widths_fvu():
    """pursuit.test_rows: pursuit's encoder FVU (0.20 on its rows) differs from the SAE's (0.22 on
    all test rows); its bands keep their shares of it: 25% removed, 45% left nonlinear."""
    fvu, nonlinear = np.array([0.22]), np.array([0.11])
    pursuit = {0: {"encoder_fvu": 0.20, "pursuit_fvu": 0.15, "pursuit_nonlinear_fvu": 0.09}}
    bands = error_bands(fvu, nonlinear, asymptote=0.15, pursuit=pursuit)
    np.testing.assert_allclose(bands["encoder"], [0.22 * 0.25])
    np.testing.assert_allclose(bands["nonlinear"], [0.22 * 0.45])
    np.testing.assert_allclose(sum(bands[b] for b in BANDS), fvu)
