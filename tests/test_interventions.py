"""Replacements (docs/science.md, "Pathological errors") on random rows, and the splice engine on the real SmolLM2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import Hook
from pipeline.replacements import INTERVENTIONS, ActivationStats, replacement

D = 48


def rows(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float64) * 3 + 1
    x_hat = 0.8 * x + 0.5 * torch.randn(n, D, generator=g, dtype=torch.float64)
    return x, x_hat


def stats_with_cov(seed=1):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(D, D, generator=g, dtype=torch.float64)
    cov = a @ a.T / D + 0.1 * torch.eye(D, dtype=torch.float64)
    return ActivationStats(mean=torch.full((D,), 2.0, dtype=torch.float64), cov_factor=torch.linalg.cholesky(cov)), cov


def test_epsilon_random_moves_each_token_by_the_sae_error_norm():
    x, x_hat = rows()
    moved = replacement("epsilon_random", x, x_hat, stats_with_cov()[0], torch.Generator().manual_seed(0))
    torch.testing.assert_close((moved - x).norm(dim=-1), (x - x_hat).norm(dim=-1))


def test_theta_random_keeps_the_angle_and_the_norm():
    x, x_hat = rows()
    cos = torch.nn.functional.cosine_similarity(x, x_hat, dim=-1)
    for name, norm in (("theta_random_sae_norm", x_hat.norm(dim=-1)), ("theta_random_true_norm", x.norm(dim=-1))):
        out = replacement(name, x, x_hat, stats_with_cov()[0], torch.Generator().manual_seed(0))
        torch.testing.assert_close(torch.nn.functional.cosine_similarity(x, out, dim=-1), cos)
        torch.testing.assert_close(out.norm(dim=-1), norm)
        assert (out - x_hat).norm(dim=-1).mean() > 0.1 * x_hat.norm(dim=-1).mean()  # not x_hat itself


def test_cov_random_directions_have_the_stated_covariance():
    """With x = x_hat + fixed offset of norm r, cov_random = x + r g/||g||; ||g|| concentrates, so
    the directions' covariance is Sigma / E||g||^2 (= Sigma / trace Sigma) up to sampling error."""
    stats, cov = stats_with_cov()
    n = 200000
    x = torch.zeros(n, D, dtype=torch.float64)
    x_hat = x - 1.0 / np.sqrt(D)  # ||x - x_hat|| = 1
    steps = replacement("cov_random", x, x_hat, stats, torch.Generator().manual_seed(0)) - x
    empirical = steps.T @ steps / n
    expected = cov / torch.trace(cov)
    assert torch.linalg.norm(empirical - expected) / torch.linalg.norm(expected) < 0.05
    torch.testing.assert_close(steps.norm(dim=-1), torch.ones(n, dtype=torch.float64))


def test_norm_and_mean_replacements():
    x, x_hat = rows()
    stats = stats_with_cov()[0]
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(replacement("norm_corrected", x, x_hat, stats, gen).norm(dim=-1), x.norm(dim=-1))
    sae_norm = replacement("sae_norm", x, x_hat, stats, gen)
    torch.testing.assert_close(sae_norm.norm(dim=-1), x_hat.norm(dim=-1))
    torch.testing.assert_close(torch.nn.functional.cosine_similarity(sae_norm, x, dim=-1), torch.ones(len(x), dtype=torch.float64))
    assert (replacement("mean", x, x_hat, stats, gen) == 2.0).all()
    assert (replacement("zero", x, x_hat, stats, gen) == 0).all()
    assert torch.equal(replacement("substitution", x, x_hat, stats, gen), x_hat)


def test_random_replacements_repeat_with_the_seed():
    x, x_hat = rows(100)
    stats = stats_with_cov()[0]
    for name in ("epsilon_random", "cov_random", "theta_random_sae_norm"):
        a = replacement(name, x, x_hat, stats, torch.Generator().manual_seed(5))
        b = replacement(name, x, x_hat, stats, torch.Generator().manual_seed(5))
        c = replacement(name, x, x_hat, stats, torch.Generator().manual_seed(6))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_unknown_intervention_is_named():
    x, x_hat = rows(4)
    with pytest.raises(ValueError, match="unknown intervention 'flip'"):
        replacement("flip", x, x_hat, stats_with_cov()[0], torch.Generator())
    assert len(INTERVENTIONS) == 9


# ---- the splice engine on the real model (materialised by the smoke DAG) ----


@pytest.fixture(scope="module")
def lm(lm_repo):
    from pipeline.models import load_model
    from pipeline.tokens import TokenStore

    model = load_model(lm_repo / "artifacts/model", "float32", "cpu")
    tokens = TokenStore.open(lm_repo / "artifacts/tokens.zarr")
    return model, torch.from_numpy(tokens.contexts[:3]).long()


def perturbed(x, seed=0, size=0.05):
    g = torch.Generator().manual_seed(seed)
    return x + size * x.norm(dim=-1, keepdim=True) * torch.randn(x.shape, generator=g) / x.shape[-1] ** 0.5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["blocks.2.hook_resid_post", "blocks.2.hook_resid_pre", "blocks.2.hook_mlp_out", "blocks.2.attn.hook_z", "blocks.0.hook_resid_pre"])
def test_prefix_reuse_equals_a_full_forward_per_intervention(lm, name):
    from pipeline.splice import PrefixCache, splice_naive, token_kl_and_ce

    model, ids = lm
    hook = Hook.parse(name, "test")
    cache = PrefixCache(model, hook)
    cache.run(ids)
    replaced = perturbed(cache.activation)
    kl_fast, ce_fast = token_kl_and_ce(cache.clean_logprobs, cache.splice(replaced), ids)
    kl_naive, ce_naive = token_kl_and_ce(cache.clean_logprobs, splice_naive(model, hook, ids, replaced), ids)
    torch.testing.assert_close(kl_fast, kl_naive, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ce_fast, ce_naive, atol=1e-5, rtol=1e-5, equal_nan=True)
    assert kl_fast[:, 1:].mean() > 1e-4  # the perturbation did something


@pytest.mark.slow
def test_zero_size_perturbation_gives_zero_kl_and_clean_ce(lm):
    from pipeline.splice import PrefixCache, token_kl_and_ce

    model, ids = lm
    cache = PrefixCache(model, Hook.parse("blocks.2.hook_resid_post", "test"))
    cache.run(ids)
    kl, ce = token_kl_and_ce(cache.clean_logprobs, cache.splice(cache.activation.clone()), ids)
    _, clean_ce = token_kl_and_ce(cache.clean_logprobs, cache.clean_logprobs, ids)
    assert kl.abs().max() < 1e-6
    torch.testing.assert_close(ce, clean_ce, equal_nan=True)


@pytest.mark.slow
def test_identity_sae_substitution_gives_zero_kl(lm):
    """Substitution with x_hat = x (an identity 'SAE') is the clean run."""
    from pipeline.splice import PrefixCache, token_kl_and_ce

    model, ids = lm
    cache = PrefixCache(model, Hook.parse("blocks.2.attn.hook_z", "test"))
    cache.run(ids)
    x = cache.activation
    sub = replacement("substitution", x, x.clone(), stats_with_cov()[0], torch.Generator())
    kl, _ = token_kl_and_ce(cache.clean_logprobs, cache.splice(sub), ids)
    assert kl.abs().max() < 1e-6


@pytest.mark.slow
def test_resid_post_splice_equals_next_resid_pre_splice(lm):
    from pipeline.splice import PrefixCache

    model, ids = lm
    post, pre = PrefixCache(model, Hook.parse("blocks.1.hook_resid_post", "t")), PrefixCache(model, Hook.parse("blocks.2.hook_resid_pre", "t"))
    post.run(ids)
    pre.run(ids)
    torch.testing.assert_close(post.activation, pre.activation)
    replaced = perturbed(post.activation, size=0.2)
    torch.testing.assert_close(post.splice(replaced), pre.splice(replaced), atol=1e-5, rtol=1e-5)


# ---- the KL ratio over every draw, its two-level interval, and the z-scores' uncertainty ----


def setting(kl_sae, draws):
    from pipeline.interventions import SettingResults

    return SettingResults(substitution=np.asarray(kl_sae, dtype=float), draws=np.asarray(draws, dtype=float))


def ratio_metrics(kl_sae, draws, resamples=300, seed=0):
    from pipeline.interventions import ratio_and_z_metrics

    return ratio_and_z_metrics(setting(kl_sae, draws), resamples, np.random.default_rng(seed))


def test_the_ratio_divides_by_the_mean_over_tokens_and_every_draw():
    """Per token, the draws differ; the ratio is mean(kl_sae) / mean over tokens and draws, not a
    ratio over any one draw."""
    kl_sae = np.array([1.0, 2.0, 3.0, 6.0])
    draws = np.array([[0.5, 1.0, 1.0, 2.0], [1.5, 1.0, 3.0, 4.0], [1.0, 4.0, 2.0, 3.0]])
    m = ratio_metrics(kl_sae, draws)
    assert m["kl_ratio_substitution_vs_epsilon_random"] == pytest.approx(3.0 / (24.0 / 12))
    assert m["kl_epsilon_random"] == pytest.approx(2.0) and m["n_draws"] == 3 and m["n_tokens"] == 4
    assert m["kl_ratio_substitution_vs_epsilon_random"] != pytest.approx(kl_sae.mean() / draws[0].mean())


def test_the_two_level_interval_widens_when_the_draws_disagree_more():
    """Same tokens, same per-token draw means; only the spread of the draws around them grows."""
    rng = np.random.default_rng(1)
    n, k = 200, 6
    mean = rng.uniform(0.5, 1.5, n)
    offsets = rng.standard_normal((k, n))
    offsets -= offsets.mean(0)  # per-token means stay `mean`
    widths = []
    for spread in (0.0, 0.2, 0.6):
        m = ratio_metrics(2 * mean, mean + spread * offsets)
        assert m["kl_ratio_substitution_vs_epsilon_random"] == pytest.approx(2.0)
        assert m["kl_ratio_ci_low"] <= 2.0 <= m["kl_ratio_ci_high"]
        widths.append(m["kl_ratio_ci_high"] - m["kl_ratio_ci_low"])
    assert widths[0] < widths[1] < widths[2]
    assert widths[0] == pytest.approx(0.0, abs=1e-12)  # numerator = 2 x denominator per token: only draws vary


def test_z_score_intervals_cover_the_known_z_and_narrow_with_more_draws():
    """Draws ~ N(mu_i, 1) per token and kl_sae = mu_i + 1: every token's z is 1 with infinitely
    many draws. With few draws the point estimate is biased up and its (basic) interval still
    covers 1; more draws narrow the interval; the halves of the draws move the median."""
    rng = np.random.default_rng(2)
    n = 300
    mu = rng.uniform(5, 10, n)
    found = {}
    for k in (4, 32):
        m = ratio_metrics(mu + 1.0, mu + rng.standard_normal((k, n)), resamples=300, seed=3)
        assert m["z_score_median_ci_low"] <= 1.0 <= m["z_score_median_ci_high"], (k, m)
        assert m["z_score_share_above_2_ci_low"] <= m["z_score_share_above_2_ci_high"]
        assert 0.0 <= m["z_score_share_above_2_ci_low"] and m["z_score_share_above_2_ci_high"] <= 1.0
        assert m["z_score_median_half_draws_min"] <= m["z_score_median_half_draws_max"]
        found[k] = m
    width = {k: m["z_score_median_ci_high"] - m["z_score_median_ci_low"] for k, m in found.items()}
    assert width[32] < width[4] / 2
    assert found[4]["z_score_median"] > 1.1  # few draws: |z| inflated by the noisy spread
    assert found[32]["z_score_median"] == pytest.approx(1.0, abs=0.1)


def test_two_level_bootstrap_resamples_each_tokens_own_draws_with_their_variance():
    """A token's resampled draws stay centred on its own draws' mean, with their sample variance
    in expectation (the sqrt(k / (k - 1)) scaling)."""
    from pipeline.interventions import two_level_bootstrap

    draws = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0], [5.0, 15.0]])  # 4 draws of 2 tokens
    stats = two_level_bootstrap(np.zeros(2), draws, 4000, np.random.default_rng(0), {
        "first_token_mean": lambda _num, d: d[:, 0].mean(),
        "spread": lambda _num, d: d.var(0, ddof=1).mean(),
    })
    assert stats["spread"].mean() == pytest.approx(draws.var(0, ddof=1).mean(), rel=0.05)
    first = stats["first_token_mean"]
    assert np.minimum(abs(first - 2.0), abs(first - 12.0)).max() < 4.0  # a token's own draws, never mixed with the other's
    assert first.mean() == pytest.approx((2.0 + 12.0) / 2, rel=0.05)  # tokens are resampled too


def test_single_position_contexts_leave_out_separators_and_unscored_positions():
    from pipeline.interventions import single_position_contexts

    scored = np.ones((4, 12), dtype=bool)
    scored[:, :3] = False
    scored[1, 7] = False  # a separator inside p .. p + window
    scored[2, 9] = False  # a separator after it
    scored[3, 4] = False  # p itself unscored
    assert single_position_contexts(scored, p=4, window=3).tolist() == [True, False, True, False]


def test_single_position_metrics_have_intervals_and_count_the_contexts():
    from pipeline.interventions import SinglePositionResults, single_position_metrics

    rng = np.random.default_rng(4)
    n, k, w = 30, 4, 5
    eps = rng.uniform(0.1, 1.0, (n, w))
    draws = eps[None] * rng.uniform(0.5, 1.5, (k, n, w))
    single = SinglePositionResults(substitution=2 * eps, draws=draws, n_excluded=3)
    m = single_position_metrics(single, 300, np.random.default_rng(0))
    assert m["n_contexts"] == 30 and m["n_contexts_excluded"] == 3 and m["n_draws"] == 4
    assert m["kl_ratio_at_p"] == pytest.approx(2 * eps[:, 0].mean() / draws[:, :, 0].mean())
    assert m["kl_ratio_after_p"] == pytest.approx(2 * eps[:, 1:].sum(1).mean() / draws[:, :, 1:].sum(2).mean())
    for part in ("at_p", "after_p"):
        assert m[f"kl_ratio_{part}_ci_low"] < m[f"kl_ratio_{part}"] < m[f"kl_ratio_{part}_ci_high"]
    empty = single_position_metrics(SinglePositionResults(np.zeros((0, w)), np.zeros((k, 0, w)), n_excluded=7), 10, np.random.default_rng(0))
    assert empty["n_contexts"] == 0 and empty["kl_ratio_at_p"] is None and empty["kl_ratio_after_p_ci_low"] is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"positions": []}, "interventions.positions: needs at least one setting"),
        ({"positions": ["scored", "every"]}, r"interventions.positions\[1\]: 'every' is not one of \['scored', 'all'\]"),
        ({"positions": ["all", "all"]}, "interventions.positions: .* names a setting twice"),
        ({"single_position_draws": 1}, "interventions.single_position_draws: must be >= 2"),
        ({"n_draws": 1}, "interventions.n_draws: 1 draw"),
    ],
)
def test_interventions_config_names_the_bad_key(change, message):
    from pipeline.analysis_config import InterventionsConfig
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        InterventionsConfig(**change)
