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
