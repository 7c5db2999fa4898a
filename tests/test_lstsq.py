"""The streaming least-squares engine against known answers and independent solvers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.lstsq import FitScore, NormalEquations


def planted(n: int, d_in: int = 24, d_out: int = 16, noise: float = 0.5, seed: int = 0, offset: float = 50.0):
    """x far from centred (like a residual stream); e = x A + b + noise of known variance."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d_in)) * rng.uniform(0.5, 2.0, d_in) + offset
    A = rng.normal(size=(d_in, d_out)) / np.sqrt(d_in)
    b = rng.normal(size=d_out) * 3
    e = x @ A + b + noise * rng.normal(size=(n, d_out))
    return x, e, A, b


def fit_in_blocks(x, y, bias=True, ridge=0.0, block=1000):
    eq = NormalEquations(bias=bias)
    for i in range(0, len(x), block):
        eq.update(x[i : i + block], y[i : i + block])
    return eq.solve(ridge)


def score_in_blocks(fit, x, y, block=777):
    score = FitScore()
    for i in range(0, len(x), block):
        score.update(y[i : i + block], fit.predict(x[i : i + block]))
    return score


def test_planted_linear_error_is_recovered_with_expected_r2():
    x, e, A, b = planted(60_000, offset=5.0)
    fit = fit_in_blocks(x[:40_000], e[:40_000])
    # Within 5 standard errors: se(W_ij) = noise / (std(x_i) sqrt(n)); b's is larger by the offset.
    se_W = 0.5 / (x[:40_000].std(0)[:, None] * np.sqrt(40_000))
    assert (np.abs(fit.W - A) < 5 * se_W).all()
    se_b = 0.5 * np.sqrt((1 + ((x.mean(0) / x.std(0)) ** 2).sum()) / 40_000)
    assert (np.abs(fit.b - b) < 5 * se_b).all()
    x_test, e_test = x[40_000:], e[40_000:]
    score = score_in_blocks(fit, x_test, e_test)
    signal = ((x_test @ A) - (x_test @ A).mean(0)).var(0)
    expected_dims = np.mean(signal / (signal + 0.25))
    expected = signal.sum() / (signal.sum() + 0.25 * e.shape[1])
    assert score.r2_dims == pytest.approx(expected_dims, abs=0.01)
    assert score.r2 == pytest.approx(expected, abs=0.01)


def test_no_bias_matches_numpy_lstsq():
    x, e, _, _ = planted(5_000, offset=0.0)
    e = e - e.mean(0)  # no intercept in the data
    fit = fit_in_blocks(x, e, bias=False)
    reference = np.linalg.lstsq(x, e, rcond=None)[0]
    np.testing.assert_allclose(fit.W, reference, rtol=1e-8, atol=1e-10)
    assert not fit.b.any()


def test_bias_matches_numpy_lstsq_with_a_ones_column():
    x, e, _, _ = planted(5_000)
    fit = fit_in_blocks(x, e)
    reference = np.linalg.lstsq(np.hstack([x, np.ones((len(x), 1))]), e, rcond=None)[0]
    np.testing.assert_allclose(fit.W, reference[:-1], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fit.b, reference[-1], rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("bias", [True, False])
def test_streaming_equals_one_in_memory_solve(bias):
    x, e, _, _ = planted(9_000)
    one = fit_in_blocks(x, e, bias=bias, block=len(x))
    many = fit_in_blocks(x, e, bias=bias, block=256)
    assert np.linalg.norm(many.W - one.W) <= 1e-8 * np.linalg.norm(one.W)
    assert np.linalg.norm(many.b - one.b) <= 1e-8 * max(np.linalg.norm(one.b), 1e-300)
    s_one, s_many = score_in_blocks(one, x, e, block=len(x)), score_in_blocks(many, x, e, block=100)
    assert s_many.r2 == pytest.approx(s_one.r2, rel=1e-8) and s_many.r2_dims == pytest.approx(s_one.r2_dims, rel=1e-8)


def test_ridge_matches_the_closed_form():
    x, e, _, _ = planted(3_000)
    lam = 250.0
    fit = fit_in_blocks(x, e, ridge=lam)
    xc, ec = x - x.mean(0), e - e.mean(0)
    W = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ ec)
    np.testing.assert_allclose(fit.W, W, rtol=1e-8)
    np.testing.assert_allclose(fit.b, e.mean(0) - x.mean(0) @ W, rtol=1e-8, atol=1e-8)


def test_scores_match_sklearn_definitions():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(3)
    y = rng.normal(size=(4_000, 5)) * [1, 2, 3, 4, 5] + 10
    y_hat = y + rng.normal(size=y.shape)
    score = FitScore()
    for i in range(0, len(y), 333):
        score.update(y[i : i + 333], y_hat[i : i + 333])
    assert score.r2_dims == pytest.approx(r2_score(y, y_hat, multioutput="uniform_average"), rel=1e-10)
    assert score.r2 == pytest.approx(r2_score(y, y_hat, multioutput="variance_weighted"), rel=1e-10)
    assert score.fvu == pytest.approx(((y - y_hat) ** 2).sum() / ((y - y.mean(0)) ** 2).sum(), rel=1e-10)


def test_scoring_on_training_rows_inflates_r2():
    """Why every reported R^2 uses held-out tokens: with few rows per parameter, train R^2 lies."""
    x, e, _, _ = planted(400, d_in=60, d_out=8, noise=2.0)
    fit = fit_in_blocks(x[:200], e[:200])
    train, test = score_in_blocks(fit, x[:200], e[:200]), score_in_blocks(fit, x[200:], e[200:])
    assert train.r2 > test.r2 + 0.1


@pytest.mark.parametrize("bias", [True, False])
def test_column_subset_equals_a_fit_on_those_columns_alone(bias):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 12)) + 2.0
    y = x[:, :5] @ rng.normal(size=(5, 3)) + rng.normal(size=(3000, 3)) + 1.0
    full, alone = NormalEquations(bias=bias), NormalEquations(bias=bias)
    columns = np.array([7, 1, 4])
    for part in np.array_split(np.arange(3000), 4):
        full.update(x[part], y[part])
        alone.update(x[part][:, columns], y[part])
    subset, direct = full.solve(columns=columns), alone.solve()
    np.testing.assert_allclose(subset.W, direct.W, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(subset.b, direct.b, rtol=1e-8, atol=1e-10)


def test_zero_variance_targets_follow_sklearns_convention():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(9)
    y = rng.normal(size=(300, 4))
    y[:, 1] = 2.5  # a target dimension with no variance
    for y_hat in (y + 0.3 * rng.normal(size=y.shape), np.where(np.arange(4) == 1, 2.5, y + 0.3 * rng.normal(size=y.shape))):
        score = FitScore()
        for block in range(0, 300, 128):
            score.update(y[block : block + 128], y_hat[block : block + 128])
        assert score.r2_dims == pytest.approx(r2_score(y, y_hat, multioutput="uniform_average"), abs=1e-12)
        # 1 - FVU keeps the constant dimension's error (sklearn's variance weighting drops it)
        assert score.r2 == pytest.approx(1 - ((y - y_hat) ** 2).sum() / ((y - y.mean(0)) ** 2).sum(), abs=1e-12)
    constant = FitScore()
    constant.update(np.full((10, 2), 3.0), np.full((10, 2), 3.0))
    assert constant.r2 == r2_score(np.full((10, 2), 3.0), np.full((10, 2), 3.0), multioutput="variance_weighted") == 1.0
    constant.update(np.full((10, 2), 3.0), np.full((10, 2), 2.0))
    assert constant.r2 == 0.0 and constant.r2_dims == 0.0


def test_nan_rows_and_empty_splits_fail_with_a_clear_error():
    x, y = np.ones((5, 3)), np.ones((5, 2))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="1 of 5 rows of this block .* hold NaN or inf"):
        NormalEquations().update(x, y)
    with pytest.raises(ValueError, match="no rows were accumulated"):
        NormalEquations().solve()
    with pytest.raises(ValueError, match="no rows were scored"):
        FitScore().r2
