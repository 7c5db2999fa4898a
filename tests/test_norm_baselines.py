"""Norm baselines on synthetic rows where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.norm_baselines import SCALAR_BASELINES, BaselineScores, NormBaselines


def _rows(rng, n, token_effect):
    token_ids = rng.integers(0, len(token_effect), n)
    features = {name: rng.normal(size=n) for name in SCALAR_BASELINES}
    return token_ids, features


def _fit_and_score(target_fn, token_effect, seed=0, n_train=20000, n_test=10000, blocks=7):
    rng = np.random.default_rng(seed)
    baselines = NormBaselines()
    train_ids, train_features = _rows(rng, n_train, token_effect)
    train_targets = target_fn(rng, train_ids, train_features)
    for part in np.array_split(np.arange(n_train), blocks):
        baselines.update(train_ids[part], {k: v[part] for k, v in train_features.items()}, train_targets[part])
    baselines.solve()
    test_ids, test_features = _rows(rng, n_test, token_effect)
    test_targets = target_fn(rng, test_ids, test_features)
    scores = BaselineScores()
    scores.update(test_targets, baselines.predict(test_ids, test_features))
    return scores, baselines


def test_planted_token_effect_is_found_only_by_the_token_mean():
    token_effect = np.random.default_rng(1).normal(size=50)

    def target(rng, ids, features):  # variance: 1 from the token effect (about), 0.25 noise
        y = token_effect[ids] + 0.5 * rng.normal(size=len(ids))
        return np.stack([y, 2 * y], axis=1)

    scores, _ = _fit_and_score(target, token_effect)
    expected = token_effect.var() / (token_effect.var() + 0.25)
    for column in (0, 1):
        r2 = scores.r2(column)
        assert r2["token_id_mean"] == pytest.approx(expected, abs=0.02)
        for name in SCALAR_BASELINES:
            assert abs(r2[name]) < 0.01, name


def test_planted_linear_feature_is_recovered_with_its_r2():
    def target(rng, ids, features):
        y = 3.0 * features["x_norm"] + 1.0 + rng.normal(size=len(ids))
        return y[:, None]

    scores, baselines = _fit_and_score(target, np.zeros(10))
    assert scores.r2(0)["x_norm"] == pytest.approx(9 / 10, abs=0.01)
    assert baselines.fits["x_norm"].W[0, 0] == pytest.approx(3.0, abs=0.03)
    assert baselines.fits["x_norm"].b[0] == pytest.approx(1.0, abs=0.03)


def test_nan_feature_rows_are_left_out_of_the_fit_and_imputed():
    def target(rng, ids, features):
        y = 2.0 * np.nan_to_num(features["lm_loss_next"]) + 0.1 * rng.normal(size=len(ids))
        features["lm_loss_next"][::10] = np.nan  # e.g. a context's last position
        return y[:, None]

    scores, baselines = _fit_and_score(target, np.zeros(10))
    assert baselines.fits["lm_loss_next"].W[0, 0] == pytest.approx(2.0, abs=0.01)
    assert 0.85 < scores.r2(0)["lm_loss_next"] < 0.95  # the NaN tenth is predicted by the mean


def test_unseen_token_gets_the_global_train_mean():
    baselines = NormBaselines()
    ids = np.array([0, 0, 1, 1])
    baselines.update(ids, {name: np.arange(4.0) for name in SCALAR_BASELINES}, np.array([[1.0], [3.0], [5.0], [7.0]]))
    baselines.solve()
    predicted = baselines.predict(np.array([0, 1, 9]), {name: np.zeros(3) for name in SCALAR_BASELINES})
    np.testing.assert_allclose(predicted["token_id_mean"][:, 0], [2.0, 6.0, 4.0])
