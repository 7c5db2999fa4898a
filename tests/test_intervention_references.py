"""Every number of the interventions half against a reference written here, sharing no code
with `pipeline.splice` or `pipeline.interventions`: per-token KL and CE against torch's
`kl_div` / `cross_entropy`, the splice against weight surgery and against forward hooks
written in this file (on the Llama, GPT-2 and Gemma 2 wirings), and `run_interventions`
end to end on a tiny model against a hook-and-kl_div recomputation at the scored positions."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.analysis_config import InterventionsConfig
from pipeline.config import Hook
from pipeline.interventions import run_interventions
from pipeline.replacements import ActivationStats
from pipeline.splice import PrefixCache, splice_naive, token_kl_and_ce

VOCAB, T, B, LAYER = 97, 12, 3, 1


def tiny_model(arch: str):
    from transformers import AutoModelForCausalLM, Gemma2Config, GPT2Config, LlamaConfig

    config = {
        "llama": lambda: LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64),
        "gpt2": lambda: GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=64),
        "gemma2": lambda: Gemma2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64),
    }[arch]()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    for p in model.parameters():  # random init is small; larger weights make every site matter to the logits
        p.data.normal_(0, 0.3)
    return model


def ids() -> torch.Tensor:
    return torch.randint(1, VOCAB, (B, T), generator=torch.Generator().manual_seed(1))


def block(model, layer: int):
    return model.transformer.h[layer] if model.config.model_type == "gpt2" else model.model.layers[layer]


def zero_down_projection(model, layer: int):
    """Weight surgery: the block's MLP writes zeros (its `mlp_out` site is then 0)."""
    surgery = copy.deepcopy(model)
    b = block(surgery, layer)
    projection = b.mlp.c_proj if surgery.config.model_type == "gpt2" else b.mlp.down_proj
    projection.weight.data.zero_()
    if getattr(projection, "bias", None) is not None:
        projection.bias.data.zero_()
    return surgery


def zero_output_projection_weight(model, layer: int):
    """Weight surgery: attention's output projection ignores its input z (its bias stays)."""
    surgery = copy.deepcopy(model)
    b = block(surgery, layer)
    projection = b.attn.c_proj if surgery.config.model_type == "gpt2" else b.self_attn.o_proj
    projection.weight.data.zero_()
    return surgery


def attn_z_width(model) -> int:
    return model.config.n_embd if model.config.model_type == "gpt2" else model.config.num_attention_heads * model.config.head_dim


def spliced_both_ways(model, hook: Hook, input_ids, replacement):
    cache = PrefixCache(model, hook)
    cache.run(input_ids)
    return cache.splice(replacement), splice_naive(model, hook, input_ids, replacement)


ARCHS = ["llama", "gpt2", "gemma2"]


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_mlp_out_equals_zeroing_the_down_projection(arch):
    model, x = tiny_model(arch), ids()
    expected = zero_down_projection(model, LAYER)(input_ids=x).logits
    d = model.config.hidden_size
    for logits in spliced_both_ways(model, Hook("mlp_out", LAYER), x, torch.zeros(B, T, d)):
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(model(input_ids=x).logits, expected, atol=1e-2)  # the site matters


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_attn_z_equals_zeroing_the_output_projection(arch):
    model, x = tiny_model(arch), ids()
    expected = zero_output_projection_weight(model, LAYER)(input_ids=x).logits
    for logits in spliced_both_ways(model, Hook("attn_z", LAYER), x, torch.zeros(B, T, attn_z_width(model))):
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(model(input_ids=x).logits, expected, atol=1e-2)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("site", ["resid_pre", "resid_post"])
def test_residual_splice_equals_a_forward_hook_written_here(arch, site):
    model, x = tiny_model(arch), ids()
    replacement = torch.randn(B, T, model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    target = block(model, LAYER)
    if site == "resid_pre":
        def pre(_m, args, kwargs):
            return ((replacement, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": replacement})
        handle = target.register_forward_pre_hook(pre, with_kwargs=True)
    else:
        handle = target.register_forward_hook(lambda _m, _a, out: (replacement, *out[1:]) if isinstance(out, tuple) else replacement)
    with torch.no_grad():
        expected = model(input_ids=x).logits
    handle.remove()
    for logits in spliced_both_ways(model, Hook(site, LAYER), x, replacement):
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_token_kl_and_ce_against_torch_kl_div_and_cross_entropy():
    g = torch.Generator().manual_seed(3)
    clean, other = torch.randn(B, T, VOCAB, generator=g) * 2, torch.randn(B, T, VOCAB, generator=g) * 2
    x = ids()
    kl, ce = token_kl_and_ce(torch.log_softmax(clean, -1), other, x)
    # F.kl_div(input=log Q, target=log P, log_target=True) = sum P (log P - log Q) = KL(P || Q)
    expected_kl = F.kl_div(torch.log_softmax(other, -1), torch.log_softmax(clean, -1), reduction="none", log_target=True).sum(-1)
    torch.testing.assert_close(kl, expected_kl, rtol=1e-5, atol=1e-6)
    reverse = F.kl_div(torch.log_softmax(clean, -1), torch.log_softmax(other, -1), reduction="none", log_target=True).sum(-1)
    assert (kl - reverse).abs().max() > 0.1  # the direction is distinguishable on this data
    expected_ce = F.cross_entropy(other[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1), reduction="none").reshape(B, T - 1)
    torch.testing.assert_close(ce[:, :-1], expected_ce, rtol=1e-5, atol=1e-6)
    assert torch.isnan(ce[:, -1]).all()


def _independent_kl_and_ce(model, hook_block: int, input_ids, mask, rows, read=None):
    """Splice `rows` at the `mask` positions of block `hook_block`'s output with a hook written
    here; at the `read` positions (default: `mask`): KL(clean || spliced) via kl_div, next-token
    CE via cross_entropy, and the clean CE."""
    read = mask if read is None else read
    with torch.no_grad():
        clean = model(input_ids=input_ids).logits
        captured = {}
        handle = block(model, hook_block).register_forward_hook(lambda _m, _a, out: captured.__setitem__("x", out[0] if isinstance(out, tuple) else out))
        model(input_ids=input_ids)
        handle.remove()
        full = captured["x"].clone()
        full[mask] = rows

        def put(_m, _a, out):
            return (full, *out[1:]) if isinstance(out, tuple) else full

        handle = block(model, hook_block).register_forward_hook(put)
        spliced = model(input_ids=input_ids).logits
        handle.remove()
    kl = F.kl_div(torch.log_softmax(spliced, -1), torch.log_softmax(clean, -1), reduction="none", log_target=True).sum(-1)
    ce = torch.full((B, T), float("nan"))
    ce[:, :-1] = F.cross_entropy(spliced[:, :-1].reshape(-1, VOCAB), input_ids[:, 1:].reshape(-1), reduction="none").reshape(B, T - 1)
    clean_ce = torch.full((B, T), float("nan"))
    clean_ce[:, :-1] = F.cross_entropy(clean[:, :-1].reshape(-1, VOCAB), input_ids[:, 1:].reshape(-1), reduction="none").reshape(B, T - 1)
    return kl[read].numpy(), ce[read].numpy(), clean_ce[read].numpy(), full[mask]


def tiny_sae(d: int):
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(4)
    sae = TopKSAE(TopKSAEConfig(d_in=d, d_sae=64, k=4))
    for p in sae.parameters():
        p.data.normal_(0, 0.2)
    return sae


def clean_site(model, input_ids) -> torch.Tensor:
    """Block LAYER's output (resid_post) on the clean run, captured by a hook written here."""
    captured = {}
    handle = block(model, LAYER).register_forward_hook(lambda _m, _a, out: captured.__setitem__("x", out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        model(input_ids=input_ids)
    handle.remove()
    return captured["x"]


def scored_mask() -> np.ndarray:
    mask = np.ones((B, T), dtype=bool)
    mask[:, :3] = False  # skipped positions
    mask[1, 6] = False  # a document separator
    return mask


def identity_stats(d: int) -> ActivationStats:
    return ActivationStats(mean=torch.zeros(d, dtype=torch.float64), cov_factor=torch.eye(d, dtype=torch.float64))


def tiny_cfg(**kw) -> InterventionsConfig:
    return InterventionsConfig(**{"hooks": ["blocks.1.hook_resid_post"], "widths": [64], "n_contexts": B, "batch_size": 2,
                                  "n_draws": 2, "positions": ["scored"], "single_position": None, "bootstrap": 10, **kw})


def test_run_interventions_scores_exactly_the_scored_positions_with_the_right_numbers():
    """Substitution and zero ablation at resid_post, end to end, against the hooks above; the
    positions the settings exclude (the first positions, a separator) are never scored; the
    epsilon_random entry is the mean over the draws."""
    model, x = tiny_model("llama"), ids()
    d = model.config.hidden_size
    sae, mask = tiny_sae(d), scored_mask()
    results = run_interventions(model, sae, Hook("resid_post", LAYER), x.numpy(), mask, identity_stats(d), tiny_cfg(n_draws=3), progress=False)
    assert len(results.kl["substitution"]) == mask.sum() == len(results.clean_ce)
    assert results.by_positions["scored"].draws.shape == (3, mask.sum())
    np.testing.assert_array_equal(results.kl["epsilon_random"], results.by_positions["scored"].draws.mean(0))
    np.testing.assert_array_equal(results.by_positions["scored"].substitution, results.kl["substitution"])

    t_mask = torch.from_numpy(mask)
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(clean_site(model, x)[t_mask]))
    for name, rows in (("substitution", x_hat), ("zero", torch.zeros_like(x_hat))):
        kl, ce, clean_ce, _ = _independent_kl_and_ce(model, LAYER, x, t_mask, rows)
        np.testing.assert_allclose(results.kl[name], kl, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(results.ce[name], ce, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(results.clean_ce, clean_ce, rtol=1e-4, atol=1e-5)


def test_all_positions_setting_splices_every_position_and_averages_all_but_the_last():
    """Gurnee's preset: x_hat at every position (BOS and the separator included), KL at every
    position but the last, against the hooks above; the primary setting's numbers do not move
    when the further setting is added (its own random stream)."""
    model, x = tiny_model("llama"), ids()
    d = model.config.hidden_size
    sae, mask = tiny_sae(d), scored_mask()
    run = lambda positions: run_interventions(model, sae, Hook("resid_post", LAYER), x.numpy(), mask, identity_stats(d),  # noqa: E731
                                              tiny_cfg(positions=positions), progress=False)
    both, scored_only = run(["scored", "all"]), run(["scored"])
    every = torch.ones(B, T, dtype=torch.bool)
    all_but_last = every.clone()
    all_but_last[:, -1] = False
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(clean_site(model, x)[every]))
    kl, _, _, _ = _independent_kl_and_ce(model, LAYER, x, every, x_hat, read=all_but_last)
    gurnee = both.by_positions["all"]
    np.testing.assert_allclose(gurnee.substitution, kl, rtol=1e-3, atol=1e-5)
    assert gurnee.draws.shape == (2, B * (T - 1))
    assert (gurnee.draws.reshape(2, B, T - 1)[:, :, 0] > 0).all()  # position 0 (BOS) was perturbed: KL there is causal
    for name in results_names():
        np.testing.assert_array_equal(both.kl[name], scored_only.kl[name])
    np.testing.assert_array_equal(both.by_positions["scored"].draws, scored_only.by_positions["scored"].draws)


def results_names():
    from pipeline.replacements import INTERVENTIONS

    return INTERVENTIONS


def test_single_position_leaves_out_windows_with_a_separator_and_splices_p_alone():
    """p = 4, window 3: context 1 has a separator at 6 and is left out; in the others the KL at
    p .. p + 3 of x_hat at p alone matches the hooks above."""
    model, x = tiny_model("llama"), ids()
    d = model.config.hidden_size
    sae, mask = tiny_sae(d), scored_mask()
    cfg = tiny_cfg(single_position=4, window=3, single_position_draws=2)
    results = run_interventions(model, sae, Hook("resid_post", LAYER), x.numpy(), mask, identity_stats(d), cfg, progress=False)
    single = results.single
    assert single.n_excluded == 1 and single.substitution.shape == (2, 4) and single.draws.shape == (2, 2, 4)
    at_p = torch.zeros(B, T, dtype=torch.bool)
    at_p[[0, 2], 4] = True
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(clean_site(model, x)[at_p]))
    window = torch.zeros(B, T, dtype=torch.bool)
    window[[0, 2], 4:8] = True
    kl, _, _, _ = _independent_kl_and_ce(model, LAYER, x, at_p, x_hat, read=window)
    np.testing.assert_allclose(single.substitution.ravel(), kl, rtol=1e-3, atol=1e-5)
    assert (single.draws > 0).all()


# --- summarise, on hand-built per-token results whose answers are known ---------------------

def hand_built(n: int = 40, draws: int = 3, spread: float = 0.1):
    """Per-token results where substitution's KL is 3x epsilon_random's mean KL on every token;
    the draws are that mean + `spread` x evenly spaced offsets that average to 0."""
    from pipeline.interventions import SettingResults, SinglePositionResults, TokenResults
    from pipeline.replacements import INTERVENTIONS

    rng = np.random.default_rng(5)
    kl = {name: rng.uniform(0.1, 1.0, n) for name in INTERVENTIONS}
    kl["substitution"] = 3.0 * kl["epsilon_random"]  # the ratio is 3 on every resample
    clean_ce = rng.uniform(2.0, 3.0, n)
    clean_ce[-1] = np.nan  # the last position of a context has no next token
    ce = {name: clean_ce + rng.uniform(0.0, 0.5, n) for name in INTERVENTIONS}
    ce["substitution"] = clean_ce + 0.2
    ce["zero"] = clean_ce + 1.0
    draws_kl = np.stack([kl["epsilon_random"] + s for s in np.linspace(-spread, spread, draws)])
    single = SinglePositionResults(substitution=np.array([[0.6, 0.3, 0.2], [0.2, 0.1, 0.0]]),
                                   draws=np.array([[[0.2, 0.1, 0.1], [0.2, 0.1, 0.1]]] * 2), n_excluded=1)
    return TokenResults(kl=kl, ce=ce, clean_ce=clean_ce, by_positions={"scored": SettingResults(kl["substitution"], draws_kl)}, single=single)


def cfg(**kw) -> InterventionsConfig:
    return InterventionsConfig(**{"bootstrap": 200, "seed": 7, "n_draws": 3, **kw})


def test_summarise_ratio_scores_and_single_position_against_closed_forms():
    from pipeline.interventions import summarise

    r = hand_built(spread=0.0)
    m = summarise(r, cfg())
    kl_sub, has_next = r.kl["substitution"], np.isfinite(r.clean_ce)
    assert m["kl_ratio_substitution_vs_epsilon_random"] == pytest.approx(3.0)
    assert m["kl_ratio_ci_low"] == pytest.approx(3.0) and m["kl_ratio_ci_high"] == pytest.approx(3.0)
    assert m["by_positions"]["scored"]["kl_ratio_substitution_vs_epsilon_random"] == m["kl_ratio_substitution_vs_epsilon_random"]
    assert m["positions"] == "scored" and m["n_draws"] == 3
    assert m["kl_ratio_substitution_vs_cov_random"] == pytest.approx(kl_sub.mean() / r.kl["cov_random"].mean())
    clean = r.clean_ce[has_next].mean()
    assert m["clean_ce"] == pytest.approx(clean)
    # CE score: (CE_zero - CE_sae) / (CE_zero - CE_clean) = (1.0 - 0.2) / 1.0
    assert m["ce_score"] == pytest.approx(0.8)
    assert m["kl_score"] == pytest.approx((r.kl["zero"].mean() - kl_sub.mean()) / r.kl["zero"].mean())
    assert m["interventions"]["substitution"]["ce_increase"] == pytest.approx(0.2)
    assert m["interventions"]["zero"]["kl"] == pytest.approx(r.kl["zero"].mean())
    assert m["n_tokens"] == 40
    # single position: mean over contexts (and draws) at p; per-context sums after p
    single = m["single_position"]
    assert single["kl_ratio_at_p"] == pytest.approx(0.4 / 0.2)
    assert single["kl_ratio_after_p"] == pytest.approx((0.5 + 0.1) / 2 / 0.2)
    assert single["n_contexts"] == 2 and single["n_contexts_excluded"] == 1 and single["n_draws"] == 2
    assert single["kl_ratio_at_p_ci_low"] <= single["kl_ratio_at_p"] <= single["kl_ratio_at_p_ci_high"]
    # draws that do not vary: no z-score is defined (documented: null)
    assert m["z_score_median"] is None and m["z_score_median_ci_low"] is None


def test_summarise_z_scores_against_the_draws_mean_and_spread():
    from pipeline.interventions import summarise

    r = hand_built(draws=3)
    m = summarise(r, cfg())
    # draws are eps - 0.1, eps, eps + 0.1: mean eps, sample std 0.1, so z = (3 eps - eps) / 0.1
    z = 2 * r.kl["epsilon_random"] / 0.1
    assert m["z_score_median"] == pytest.approx(np.median(z))
    assert m["z_score_share_above_2"] == pytest.approx((z > 2).mean())
    assert m["z_score_median_half_draws_min"] is None  # halves of 3 draws have no spread


def test_summarise_intervals_are_the_percentiles_of_resampled_means():
    """The KL interval of one intervention recomputed here with the same RNG stream."""
    from pipeline.interventions import summarise
    from pipeline.replacements import INTERVENTIONS

    r = hand_built()
    m = summarise(r, cfg())
    rng = np.random.default_rng(7)
    for name in INTERVENTIONS:
        kl = r.kl[name]
        means = [kl[rng.integers(0, len(kl), len(kl))].mean() for _ in range(200)]
        assert m["interventions"][name]["kl_ci_low"] == pytest.approx(np.quantile(means, 0.025))
        assert m["interventions"][name]["kl_ci_high"] == pytest.approx(np.quantile(means, 0.975))
        ce = r.ce[name] - r.clean_ce
        ce = ce[np.isfinite(ce)]
        ce_means = [ce[rng.integers(0, len(ce), len(ce))].mean() for _ in range(200)]  # the CE interval draws next
        assert m["interventions"][name]["ce_increase_ci_low"] == pytest.approx(np.quantile(ce_means, 0.025))
        assert m["interventions"][name]["ce_increase_ci_high"] == pytest.approx(np.quantile(ce_means, 0.975))


def test_summarise_edge_cases_give_documented_values_or_clear_errors():
    from pipeline.config import ConfigError
    from pipeline.interventions import bootstrap_mean_ci, summarise

    for n_draws in (0, 1):
        with pytest.raises(ConfigError, match=f"interventions.n_draws: {n_draws} draw"):
            cfg(n_draws=n_draws)
    r = hand_built()
    r.kl["epsilon_random"][:] = 0.0
    r.by_positions["scored"].draws[:] = 0.0
    r.single.draws[:] = 0.0
    m = summarise(r, cfg())  # documented: a ratio over 0 is undefined, written as null
    assert m["kl_ratio_substitution_vs_epsilon_random"] is None and m["kl_ratio_ci_low"] is m["kl_ratio_ci_high"] is None
    assert m["single_position"]["kl_ratio_at_p"] is None and m["single_position"]["kl_ratio_after_p_ci_high"] is None
    assert m["kl_ratio_substitution_vs_cov_random"] == pytest.approx(r.kl["substitution"].mean() / r.kl["cov_random"].mean())
    r = hand_built()
    r.kl["cov_random"][3] = np.nan
    with pytest.raises(ValueError, match="1 of 40 per-token KL values of 'cov_random' are not finite"):
        summarise(r, cfg())
    r = hand_built()
    r.by_positions["scored"].draws[1, 2] = np.inf
    with pytest.raises(ValueError, match="1 of 120 per-token KL values of the epsilon_random draws at positions 'scored'"):
        summarise(r, cfg())
    r = hand_built()
    r.clean_ce[:] = np.nan
    with pytest.raises(ValueError, match="no scored token has a next token"):
        summarise(r, cfg())
    with pytest.raises(ValueError, match="no finite values"):
        bootstrap_mean_ci(np.full(5, np.nan), 10, np.random.default_rng(0))
