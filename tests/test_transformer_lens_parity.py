"""The project's hook sites and splicing against TransformerLens, the reference that pretrained SAEs'
hook names (and sae-lens's evaluations) refer to.

For a tiny random GPT-2 and a tiny random Llama (grouped-query attention, RMSNorm eps and rope
theta off their defaults), saved locally and loaded into TransformerLens from the same weights
with no processing (TL's `from_pretrained_no_processing`):
- the activations the project captures (pipeline.sites.capturing, as harvest does) at
  blocks.L.hook_resid_pre / hook_resid_post / hook_mlp_out / attn.hook_z equal TL's
  `run_with_cache` values (hook_z flattened head-major to heads*d_head, as the project stores it);
- splicing a replacement in (pipeline.splice: PrefixCache, splice_naive, token_kl_and_ce) gives the
  per-token KL to the clean run and CE of the next token that TL's `run_with_hooks` gives.

float32 throughout. Measured (torch 2.13, CPU), against the tolerances asserted:
- activations: max |error| <= 1.1e-6 of the largest |value|; tolerance 1e-5 relative. A wrong TL
  config shows far above it: rope theta 10000 instead of 5000 moves the logits by 8e-2 of their
  largest value, RMSNorm eps 1e-6 for 1e-5 by 2e-3, GPT-2's exact gelu for gelu_new by 2e-4;
- CE per token: <= 2.4e-7 relative; tolerance 2e-6 relative;
- KL per token (0.002 to 0.3 here): <= 7.4e-7 absolute, which is float32 rounding of the
  log-probabilities (|log p| up to ~9) that the KL is a difference of; tolerance 2e-6 absolute
  (1e-3 of the smallest KL).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import Hook
from pipeline.models import load_model
from pipeline.sites import capturing
from pipeline.splice import PrefixCache, splice_naive, token_kl_and_ce
from tests.tl_models import ARCHS, N_LAYERS, VOCAB, save_tiny_model, tl_activation, tl_model

SITES = ("resid_pre", "resid_post", "mlp_out", "attn_z")
RTOL = 1e-5  # activations: relative to the largest |value| (measured: module docstring)
CE_RTOL = 2e-6  # CE per token, relative
KL_ATOL = 2e-6  # KL per token, absolute

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=ARCHS)
def models(request, tmp_path_factory):
    """(arch, the project's HF model, the TL model of the same weights, token ids (B, T))."""
    path = save_tiny_model(request.param, tmp_path_factory.mktemp(request.param) / "model")
    hf = load_model(path, "float32")
    ids = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = 0  # BOS first, as the pipeline's contexts
    return request.param, hf, tl_model(hf), ids


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (NaNs, where both have them, ignored)."""
    both = ~(actual.isnan() & expected.isnan())
    return ((actual - expected)[both].abs().max() / expected[both].abs().max()).item()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float | None = None, atol: float | None = None) -> None:
    """Relative to the largest |expected| (rtol) or absolute (atol); the message gives the measured error."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert actual.isnan().equal(expected.isnan()), what
    if rtol is not None:
        error = relative_error(actual, expected)
        assert error <= rtol, f"{what}: max error {error:.2e} of the largest |value|; tolerance {rtol:.0e}"
    else:
        both = ~actual.isnan()
        error = (actual - expected)[both].abs().max().item()
        assert error <= atol, f"{what}: max |error| {error:.2e}; tolerance {atol:.0e}"


@pytest.mark.parametrize("site", SITES)
def test_activations_match_transformer_lens(models, site):
    arch, hf, tl, ids = models
    hooks = [Hook(site, layer) for layer in range(N_LAYERS)]
    with torch.no_grad(), capturing(hf, hooks, stop_early=False) as captured:
        hf(input_ids=ids, use_cache=False)
    _, cache = tl.run_with_cache(ids, names_filter=[hook.name for hook in hooks])
    for hook in hooks:
        expected = tl_activation(cache, hook.name)
        assert expected.shape == (*ids.shape, tl.cfg.d_model), hook.name  # all 4 sites are d_model wide here
        assert_close(captured[hook.name], expected, f"{arch} {hook.name}", rtol=RTOL)


def _tl_kl_and_ce(tl, ids: torch.Tensor, hook: Hook, replacement: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TL's reference: run_with_hooks replacing the activation, KL(clean || spliced) and next-token CE per token."""
    tl_replacement = replacement.unflatten(-1, (tl.cfg.n_heads, tl.cfg.d_head)) if hook.site == "attn_z" else replacement
    with torch.no_grad():
        clean = tl(ids).float()
        spliced = tl.run_with_hooks(ids, fwd_hooks=[(hook.name, lambda act, hook: tl_replacement.to(act.dtype))]).float()
    clean_lp, spliced_lp = clean.log_softmax(-1), spliced.log_softmax(-1)
    kl = F.kl_div(spliced_lp, clean_lp, log_target=True, reduction="none").sum(-1)
    ce = torch.full(ids.shape, float("nan"))
    ce[:, :-1] = F.cross_entropy(spliced[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view(ids.shape[0], -1)
    return kl, ce


@pytest.mark.parametrize("layer", [0, N_LAYERS - 1])
@pytest.mark.parametrize("site", SITES)
def test_spliced_loss_matches_transformer_lens(models, site, layer):
    """x + noise (a third of the activation's scale) written in at the site: same KL and CE per token."""
    arch, hf, tl, ids = models
    hook = Hook(site, layer)
    cache = PrefixCache(hf, hook)
    cache.run(ids)
    x = cache.activation
    replacement = x + 0.3 * x.std() * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    kl_tl, ce_tl = _tl_kl_and_ce(tl, ids, hook, replacement)
    assert kl_tl[:, 1:].min() > 1e-4, "the perturbation should move the prediction"

    for how, logits in (("PrefixCache.splice", cache.splice(replacement)), ("splice_naive", splice_naive(hf, hook, ids, replacement))):
        kl, ce = token_kl_and_ce(cache.clean_logprobs, logits, ids)
        assert_close(kl, kl_tl, f"{arch} {hook.name} {how}: KL per token", atol=KL_ATOL)
        assert_close(ce, ce_tl, f"{arch} {hook.name} {how}: CE per token", rtol=CE_RTOL)
    # the clean pass, too: the project's clean log-probs are TL's
    assert_close(cache.clean_logprobs, tl(ids).float().log_softmax(-1).detach(), f"{arch} clean log-probs", rtol=RTOL)
