"""The pathological-error experiment for one SAE (docs/science.md, "Pathological errors").

For a batch of test contexts: one clean forward pass (cached up to the site, `pipeline.splice`),
then for each replacement only the rest of the network. Per scored token it records KL(P_clean
|| P_int) and the CE of the next token; then summarises them with bootstrap intervals, the KL
ratio of substitution to epsilon_random, sae-lens-style CE/KL scores, repeated-draw z-scores
and the single-position mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from pipeline.activation_store import iter_row_blocks
from pipeline.analysis_config import InterventionsConfig
from pipeline.config import Hook
from pipeline.replacements import INTERVENTIONS, ActivationStats, epsilon_random, replacement
from pipeline.row_split import RowSplit
from pipeline.sae_inference import InferenceSAE, encode_decode
from pipeline.splice import PrefixCache, token_kl_and_ce


def activation_stats(acts: zarr.Array, block_rows: int = 4096) -> ActivationStats:
    """Mean and covariance factor of the train rows, streamed in float64."""
    d = acts.shape[1]
    total, outer, n, shift = np.zeros(d), np.zeros((d, d)), 0, None
    train_rows = RowSplit.of(acts).train_rows
    for _, block in iter_row_blocks(acts, train_rows.start, train_rows.stop, rows=block_rows):
        x = np.asarray(block, dtype=np.float64)
        shift = x.mean(0) if shift is None else shift
        centred = x - shift
        total += centred.sum(0)
        outer += centred.T @ centred
        n += len(x)
    mean = total / n
    cov = outer / n - np.outer(mean, mean)
    cov += 1e-8 * np.trace(cov) / d * np.eye(d)  # positive definite for the Cholesky factor
    return ActivationStats(mean=torch.from_numpy(mean + shift), cov_factor=torch.linalg.cholesky(torch.from_numpy(cov)))


@dataclass
class TokenResults:
    """Per scored token (rows in context order): KL and next-token CE per intervention."""

    kl: dict[str, np.ndarray]
    ce: dict[str, np.ndarray]
    clean_ce: np.ndarray
    draws_kl: np.ndarray
    """(n_draws, n_tokens) KL of independent epsilon_random draws."""
    single_kl: dict[str, np.ndarray]
    """{substitution, epsilon_random}: (n_contexts, window + 1) KL at p .. p + window."""


def _splice_rows(cache: PrefixCache, mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    full = cache.activation.clone()
    full[mask] = rows.to(full.dtype)
    return cache.splice(full)


@torch.no_grad()
def run_interventions(
    model, sae: InferenceSAE, hook: Hook, contexts: np.ndarray, scored: np.ndarray, stats: ActivationStats, cfg: InterventionsConfig, progress: bool = True
) -> TokenResults:
    """Every intervention on `contexts` (n, T) at the `scored` positions (n, T bool)."""
    device = next(model.parameters()).device
    kl = {name: [] for name in INTERVENTIONS}
    ce = {name: [] for name in INTERVENTIONS}
    clean_ce, draws, single = [], [], {"substitution": [], "epsilon_random": []}
    cache = PrefixCache(model, hook)
    for batch_index, start in enumerate(tqdm(range(0, len(contexts), cfg.batch_size), desc=f"interventions {hook.name}", disable=not progress)):
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + batch_index)  # per batch: resumable, order-free
        ids = torch.from_numpy(contexts[start : start + cfg.batch_size]).long().to(device)
        mask = torch.from_numpy(scored[start : start + cfg.batch_size]).to(device)
        cache.run(ids)
        x = cache.activation[mask].float()
        _, x_hat = encode_decode(sae, x.to(sae.device))
        x_hat = x_hat.float().to(x.device)
        _, ce_clean = token_kl_and_ce(cache.clean_logprobs, cache.clean_logprobs, ids)
        clean_ce.append(ce_clean[mask].cpu().numpy())
        for name in INTERVENTIONS:
            logits = _splice_rows(cache, mask, replacement(name, x, x_hat, stats, generator))
            token_kl, token_ce = token_kl_and_ce(cache.clean_logprobs, logits, ids)
            kl[name].append(token_kl[mask].cpu().numpy())
            ce[name].append(token_ce[mask].cpu().numpy())
        batch_draws = []
        for _ in range(cfg.n_draws):
            token_kl, _ = token_kl_and_ce(cache.clean_logprobs, _splice_rows(cache, mask, epsilon_random(x, x_hat, generator)), ids)
            batch_draws.append(token_kl[mask].cpu().numpy())
        draws.append(np.stack(batch_draws) if batch_draws else np.zeros((0, int(mask.sum()))))
        if cfg.single_position is not None:
            p, stop = cfg.single_position, min(cfg.single_position + cfg.window + 1, ids.shape[1])
            at_p = torch.zeros_like(mask)
            at_p[:, p] = True
            x_p = cache.activation[at_p].float()
            _, x_hat_p = encode_decode(sae, x_p.to(sae.device))
            x_hat_p = x_hat_p.float().to(x_p.device)
            for name, rows in (("substitution", x_hat_p), ("epsilon_random", epsilon_random(x_p, x_hat_p, generator))):
                token_kl, _ = token_kl_and_ce(cache.clean_logprobs, _splice_rows(cache, at_p, rows), ids)
                single[name].append(token_kl[:, p:stop].cpu().numpy())
    return TokenResults(
        kl={k: np.concatenate(v) for k, v in kl.items()},
        ce={k: np.concatenate(v) for k, v in ce.items()},
        clean_ce=np.concatenate(clean_ce),
        draws_kl=np.concatenate(draws, axis=1),
        single_kl={k: np.concatenate(v) for k, v in single.items() if v},
    )


def bootstrap_mean_ci(values: np.ndarray, resamples: int, rng: np.random.Generator, level: float = 0.95) -> tuple[float, float]:
    """The `level` percentile interval of the mean of the finite `values`, from `resamples`
    resamples of them with replacement (drawn from `rng`)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise ValueError("bootstrap_mean_ci: no finite values to resample")
    means = np.array([values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)])
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None (undefined, written as null) when the denominator is 0."""
    return float(numerator / denominator) if denominator != 0 else None


def summarise(results: TokenResults, cfg: InterventionsConfig) -> dict:
    """The metrics JSON of one SAE.

    Documented edge values: a ratio whose denominator is 0 (e.g. an epsilon_random KL of 0,
    which a perfect SAE gives, or a single position with nothing after it) is undefined and
    written as null (`ratio`); the z-score keys are present only with `n_draws` >= 2 (the config
    refuses 1). Every per-token KL must be finite: a NaN or inf (an overflowing forward pass)
    raises, naming the intervention."""
    for name, kl in results.kl.items():
        bad = int((~np.isfinite(kl)).sum())
        if bad:
            raise ValueError(f"interventions: {bad} of {len(kl)} per-token KL values of {name!r} are not finite; "
                             "the spliced forward pass overflowed (try lm.compute_dtype=float32)")
    if not np.isfinite(results.clean_ce).any():
        raise ValueError("interventions: no scored token has a next token (every clean CE is NaN)")
    rng = np.random.default_rng(cfg.seed)
    has_next = np.isfinite(results.clean_ce)
    clean_ce = float(results.clean_ce[has_next].mean())
    per_intervention = {}
    for name in INTERVENTIONS:
        kl, ce_increase = results.kl[name], results.ce[name] - results.clean_ce
        kl_low, kl_high = bootstrap_mean_ci(kl, cfg.bootstrap, rng)
        ce_low, ce_high = bootstrap_mean_ci(ce_increase, cfg.bootstrap, rng)
        per_intervention[name] = {
            "kl": float(kl.mean()),
            "kl_ci_low": kl_low,
            "kl_ci_high": kl_high,
            "ce_increase": float(ce_increase[has_next].mean()),
            "ce_increase_ci_low": ce_low,
            "ce_increase_ci_high": ce_high,
        }
    kl_sae, kl_eps = results.kl["substitution"], results.kl["epsilon_random"]
    ratios = []
    for _ in range(cfg.bootstrap):
        idx = rng.integers(0, len(kl_sae), len(kl_sae))
        ratios.append(ratio(kl_sae[idx].mean(), kl_eps[idx].mean()))
    defined = [r for r in ratios if r is not None]
    ce_sae = float(results.ce["substitution"][has_next].mean())
    ce_zero = float(results.ce["zero"][has_next].mean())
    metrics = {
        "kl_ratio_substitution_vs_epsilon_random": ratio(kl_sae.mean(), kl_eps.mean()),
        "kl_ratio_ci_low": float(np.quantile(defined, 0.025)) if defined else None,
        "kl_ratio_ci_high": float(np.quantile(defined, 0.975)) if defined else None,
        "kl_ratio_substitution_vs_cov_random": ratio(kl_sae.mean(), results.kl["cov_random"].mean()),
        "clean_ce": clean_ce,
        "ce_score": ratio(ce_zero - ce_sae, ce_zero - clean_ce),
        "kl_score": ratio(results.kl["zero"].mean() - kl_sae.mean(), results.kl["zero"].mean()),
        "n_tokens": int(len(kl_sae)),
        "interventions": per_intervention,
    }
    if results.draws_kl.shape[0] >= 2:
        z = (kl_sae - results.draws_kl.mean(0)) / results.draws_kl.std(0, ddof=1).clip(1e-30)
        metrics["z_score_median"] = float(np.median(z))
        metrics["z_score_share_above_2"] = float((z > 2).mean())
    if results.single_kl:
        sub, eps = results.single_kl["substitution"].mean(0), results.single_kl["epsilon_random"].mean(0)
        metrics["single_position"] = {
            "kl_ratio_at_p": ratio(sub[0], eps[0]),
            "kl_ratio_after_p": ratio(sub[1:].sum(), eps[1:].sum()) if len(sub) > 1 else None,
        }
    return metrics
