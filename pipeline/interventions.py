"""The pathological-error experiment for one SAE (docs/science.md, "Pathological errors").

For a batch of test contexts: one clean forward pass (cached up to the site, `pipeline.splice`),
then for each replacement only the rest of the network. Per token it records KL(P_clean ||
P_int) and the CE of the next token; then summarises them with bootstrap intervals, the KL
ratio of substitution to epsilon_random (its denominator the mean over every draw, its interval
from a bootstrap over tokens and draws), sae-lens-style CE/KL scores, per-token z-scores against
the draws, and the single-position mode. Each setting of `interventions.positions` says where
the activation is replaced and which tokens are averaged; the first gives every top-level
number, each further one its own KL ratio and z-scores.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

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

HALF_DRAW_SPLITS = 20
"""Random halves of the draws over which the median z-score's spread is measured."""


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


# ---- where the activation is replaced, and which tokens are averaged ------------------------


def splice_positions(setting: str, scored: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: where the activation is replaced under `setting` (an `interventions.positions` entry)."""
    if setting == "scored":
        return scored
    if setting == "all":
        return torch.ones_like(scored)
    raise ValueError(f"interventions.positions: unknown setting {setting!r}")


def averaged_positions(setting: str, scored: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the tokens whose KL and CE are recorded under `setting`."""
    if setting == "scored":
        return scored
    if setting == "all":
        every_but_last = torch.ones_like(scored)
        every_but_last[:, -1] = False
        return every_but_last
    raise ValueError(f"interventions.positions: unknown setting {setting!r}")


def single_position_contexts(scored: np.ndarray, p: int, window: int) -> np.ndarray:
    """(n,) bool: the contexts whose positions p .. p + window are all scored (no document
    separator, no skipped position): a perturbation at p is then followed only within text."""
    return scored[:, p : p + window + 1].all(axis=1)


def _generator(seed: int, batch_index: int, stream: str) -> torch.Generator:
    """The random stream of one batch and one use (a position setting, or the single-position
    mode): a run resumes and batches reorder without changing a number, and adding a position
    setting leaves the other settings' draws as they were."""
    key = np.random.SeedSequence([seed, batch_index, zlib.crc32(stream.encode())]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(key))


# ---- running the replacements ---------------------------------------------------------------


@dataclass
class SettingResults:
    """Per token of one position setting (in context order): KL of the substitution and of each epsilon_random draw."""

    substitution: np.ndarray
    """(n_tokens,)"""
    draws: np.ndarray
    """(n_draws, n_tokens)"""


@dataclass
class SinglePositionResults:
    """KL at p .. p + window (columns) in each context whose window is all scored text (rows)."""

    substitution: np.ndarray
    """(n_contexts, window + 1)"""
    draws: np.ndarray
    """(n_draws, n_contexts, window + 1): epsilon_random at p, drawn independently."""
    n_excluded: int
    """Contexts left out: their window holds a document separator or an unscored position."""


@dataclass
class TokenResults:
    """Everything measured, per token. `kl`, `ce` and `clean_ce` are of the first position
    setting (the primary), one entry per intervention; their epsilon_random entry is the mean
    over the draws in `by_positions[primary].draws`."""

    kl: dict[str, np.ndarray]
    ce: dict[str, np.ndarray]
    clean_ce: np.ndarray
    by_positions: dict[str, SettingResults]
    """Every setting of `interventions.positions`, the primary first."""
    single: SinglePositionResults | None = None


def _spliced(cache: PrefixCache, at: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KL and CE (B, T) of the cached batch with `rows` replacing the activation at `at` (B, T bool)."""
    full = cache.activation.clone()
    full[at] = rows.to(full.dtype)
    return token_kl_and_ce(cache.clean_logprobs, cache.splice(full), cache.input_ids)


class _Splicer:
    """The spliced passes of one batch under one position setting: rows replace the activation
    at `at`; KL and CE are read at `read`."""

    def __init__(self, cache: PrefixCache, at: torch.Tensor, read: torch.Tensor):
        self.cache, self.at, self.read = cache, at, read

    def kl_and_ce(self, rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        kl, ce = _spliced(self.cache, self.at, rows)
        return kl[self.read].cpu().numpy(), ce[self.read].cpu().numpy()


def _epsilon_random_draws(splicer: _Splicer, x: torch.Tensor, x_hat: torch.Tensor, generator: torch.Generator,
                          n_draws: int) -> tuple[np.ndarray, np.ndarray]:
    """KL and CE (n_draws, n_tokens) of independent epsilon_random draws."""
    measured = [splicer.kl_and_ce(epsilon_random(x, x_hat, generator)) for _ in range(n_draws)]
    return np.stack([kl for kl, _ in measured]), np.stack([ce for _, ce in measured])


def _reconstruct(sae: InferenceSAE, x: torch.Tensor) -> torch.Tensor:
    _, x_hat = encode_decode(sae, x.to(sae.device))
    return x_hat.float().to(x.device)


@torch.no_grad()
def run_interventions(
    model, sae: InferenceSAE, hook: Hook, contexts: np.ndarray, scored: np.ndarray, stats: ActivationStats, cfg: InterventionsConfig, progress: bool = True
) -> TokenResults:
    """Every intervention on `contexts` (n, T), with `scored` (n, T bool) the scored positions."""
    device = next(model.parameters()).device
    primary = cfg.positions[0]
    kl = {name: [] for name in INTERVENTIONS}
    ce = {name: [] for name in INTERVENTIONS}
    clean_ce: list[np.ndarray] = []
    substitution = {setting: [] for setting in cfg.positions}
    draws = {setting: [] for setting in cfg.positions}
    single_sub, single_draws, n_excluded = [], [], 0
    cache = PrefixCache(model, hook)
    for batch_index, start in enumerate(tqdm(range(0, len(contexts), cfg.batch_size), desc=f"interventions {hook.name}", disable=not progress)):
        ids = torch.from_numpy(contexts[start : start + cfg.batch_size]).long().to(device)
        batch_scored = scored[start : start + cfg.batch_size]
        mask = torch.from_numpy(batch_scored).to(device)
        cache.run(ids)
        _, ce_clean = token_kl_and_ce(cache.clean_logprobs, cache.clean_logprobs, ids)
        for setting in cfg.positions:
            generator = _generator(cfg.seed, batch_index, setting)
            splicer = _Splicer(cache, splice_positions(setting, mask), averaged_positions(setting, mask))
            x = cache.activation[splicer.at].float()
            x_hat = _reconstruct(sae, x)
            if setting == primary:
                clean_ce.append(ce_clean[splicer.read].cpu().numpy())
                for name in INTERVENTIONS:
                    if name != "epsilon_random":  # from the draws below
                        token_kl, token_ce = splicer.kl_and_ce(replacement(name, x, x_hat, stats, generator))
                        kl[name].append(token_kl)
                        ce[name].append(token_ce)
            draws_kl, draws_ce = _epsilon_random_draws(splicer, x, x_hat, generator, cfg.n_draws)
            draws[setting].append(draws_kl)
            if setting == primary:
                kl["epsilon_random"].append(draws_kl.mean(0))
                ce["epsilon_random"].append(draws_ce.mean(0))
                substitution[setting].append(kl["substitution"][-1])
            else:
                substitution[setting].append(splicer.kl_and_ce(x_hat)[0])
        if cfg.single_position is not None:
            kept = single_position_contexts(batch_scored, cfg.single_position, cfg.window)
            n_excluded += int((~kept).sum())
            sub, eps = _single_position_batch(cache, sae, kept, cfg, _generator(cfg.seed, batch_index, "single_position"))
            single_sub.append(sub)
            single_draws.append(eps)
    return TokenResults(
        kl={k: np.concatenate(v) for k, v in kl.items()},
        ce={k: np.concatenate(v) for k, v in ce.items()},
        clean_ce=np.concatenate(clean_ce),
        by_positions={s: SettingResults(np.concatenate(substitution[s]), np.concatenate(draws[s], axis=1)) for s in cfg.positions},
        single=(SinglePositionResults(np.concatenate(single_sub), np.concatenate(single_draws, axis=1), n_excluded)
                if cfg.single_position is not None else None),
    )


def _single_position_batch(cache: PrefixCache, sae: InferenceSAE, kept: np.ndarray, cfg: InterventionsConfig,
                           generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Substitution and `single_position_draws` epsilon_random draws at p alone, in the `kept`
    contexts of the cached batch; KL at p .. p + window: (n_kept, w) and (draws, n_kept, w)."""
    p = cfg.single_position
    stop = min(p + cfg.window + 1, cache.input_ids.shape[1])
    rows = torch.from_numpy(kept).to(cache.input_ids.device)
    if not kept.any():  # no spliced pass for a batch without a usable context
        return np.zeros((0, stop - p)), np.zeros((cfg.single_position_draws, 0, stop - p))
    at_p = torch.zeros_like(cache.input_ids, dtype=torch.bool)
    at_p[rows, p] = True
    x_p = cache.activation[at_p].float()
    x_hat_p = _reconstruct(sae, x_p)

    def kl_in_window(replaced: torch.Tensor) -> np.ndarray:
        return _spliced(cache, at_p, replaced)[0][rows, p:stop].cpu().numpy()

    eps = [kl_in_window(epsilon_random(x_p, x_hat_p, generator)) for _ in range(cfg.single_position_draws)]
    return kl_in_window(x_hat_p), np.stack(eps)


# ---- statistics -----------------------------------------------------------------------------


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


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
    """The `level` percentile interval of the finite `values` (NaN marks an undefined resample); (None, None) if none is."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None, None
    return float(np.quantile(values, (1 - level) / 2)), float(np.quantile(values, (1 + level) / 2))


def basic_interval(point: float, values: np.ndarray, bounds: tuple[float, float] = (-np.inf, np.inf),
                   level: float = 0.95) -> tuple[float | None, float | None]:
    """The basic (reverse-percentile) bootstrap interval [2 point - q_high, 2 point - q_low] of the
    finite resampled `values`, clipped to `bounds`: unlike the percentile interval it corrects for
    a bias the resamples show. (None, None) if `point` or every resample is undefined."""
    low, high = percentile_interval(values, level)
    if low is None or not np.isfinite(point):
        return None, None
    return float(np.clip(2 * point - high, *bounds)), float(np.clip(2 * point - low, *bounds))


def two_level_bootstrap(
    numerator: np.ndarray, draws: np.ndarray, resamples: int, rng: np.random.Generator,
    statistics: dict[str, Callable[[np.ndarray, np.ndarray], float]],
) -> dict[str, np.ndarray]:
    """Each statistic(numerator (n,), draws (k, n)) over `resamples` resamples: tokens with
    replacement, then, for each resampled token, k of its own draws with replacement. The
    resampled draws' deviations from the token's mean are scaled by sqrt(k / (k - 1)), so that a
    resample's variance has the draws' sample variance as its expectation (the plain bootstrap
    shrinks it by (k - 1) / k, which inflates a z-score from 4 draws by 15%)."""
    k, n = draws.shape
    scale = np.sqrt(k / (k - 1)) if k > 1 else 1.0
    out = {name: np.empty(resamples) for name in statistics}
    for b in range(resamples):
        tokens = rng.integers(0, n, n)
        own = draws[:, tokens]
        centre = own.mean(0)
        resampled = centre + scale * (np.take_along_axis(own, rng.integers(0, k, (k, n)), axis=0) - centre)
        for name, statistic in statistics.items():
            out[name][b] = statistic(numerator[tokens], resampled)
    return out


def mean_ratio(numerator: np.ndarray, draws: np.ndarray) -> float:
    """mean over tokens of the numerator / mean over tokens and draws; NaN (undefined) unless the
    denominator is positive (a mean of KLs; the scaled bootstrap draws can make it <= 0 only
    when it is ~0)."""
    denominator = draws.mean()
    return float(numerator.mean() / denominator) if denominator > 0 else np.nan


def z_scores(kl_sae: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Per token (kl_sae - mean of the draws) / their standard deviation (ddof=1); NaN where the
    draws do not vary (||x - x_hat|| = 0: no perturbation to compare with)."""
    varies = draws.max(0) > draws.min(0)  # exact; a std of equal floats can round to 1e-17
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(varies, (kl_sae - draws.mean(0)) / draws.std(0, ddof=1), np.nan)


def _defined_z_scores(kl_sae: np.ndarray, draws: np.ndarray) -> np.ndarray:
    z = z_scores(kl_sae, draws)
    return z[np.isfinite(z)]


def z_median(kl_sae: np.ndarray, draws: np.ndarray) -> float:
    """The median of the defined per-token z-scores (NaN if none is)."""
    z = _defined_z_scores(kl_sae, draws)
    return float(np.median(z)) if len(z) else np.nan


def z_share_above_2(kl_sae: np.ndarray, draws: np.ndarray) -> float:
    """The share of the defined per-token z-scores above 2 (NaN if none is)."""
    z = _defined_z_scores(kl_sae, draws)
    return float((z > 2).mean()) if len(z) else np.nan


def median_z_over_draw_halves(kl_sae: np.ndarray, draws: np.ndarray, rng: np.random.Generator, splits: int = HALF_DRAW_SPLITS) -> np.ndarray:
    """The median z-score from each of `splits` random halves of the draws (empty with < 4
    draws): how far the median z moves with the draws drawn, at half their number."""
    k = draws.shape[0]
    if k < 4:
        return np.zeros(0)
    return np.array([z_median(kl_sae, draws[rng.permutation(k)[: k // 2]]) for _ in range(splits)])


def _none_if_nan(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def ratio_and_z_metrics(setting: SettingResults, resamples: int, rng: np.random.Generator) -> dict:
    """The KL ratio of one position setting (substitution over the mean of every epsilon_random
    draw) with its 95% percentile interval over tokens and draws, and the per-token z-scores'
    median and share above 2, each with a basic interval: a z-score from few draws is biased up
    (its spread's estimate is noisy), the two-level bootstrap shows that bias and the basic
    interval removes it, so a point estimate above its interval says n_draws is too small."""
    kl_sae, draws = setting.substitution, setting.draws
    boot = two_level_bootstrap(kl_sae, draws, resamples, rng,
                               {"ratio": mean_ratio, "z_median": z_median, "z_share": z_share_above_2})
    ratio_low, ratio_high = percentile_interval(boot["ratio"])
    median, share = z_median(kl_sae, draws), z_share_above_2(kl_sae, draws)
    median_low, median_high = basic_interval(median, boot["z_median"])
    share_low, share_high = basic_interval(share, boot["z_share"], bounds=(0.0, 1.0))
    halves = median_z_over_draw_halves(kl_sae, draws, rng)
    halves = halves[np.isfinite(halves)]
    return {
        "kl_ratio_substitution_vs_epsilon_random": ratio(kl_sae.mean(), draws.mean()),
        "kl_ratio_ci_low": ratio_low,
        "kl_ratio_ci_high": ratio_high,
        "kl_substitution": float(kl_sae.mean()),
        "kl_epsilon_random": float(draws.mean()),
        "z_score_median": _none_if_nan(median),
        "z_score_median_ci_low": median_low,
        "z_score_median_ci_high": median_high,
        "z_score_share_above_2": _none_if_nan(share),
        "z_score_share_above_2_ci_low": share_low,
        "z_score_share_above_2_ci_high": share_high,
        "z_score_median_half_draws_min": float(halves.min()) if len(halves) else None,
        "z_score_median_half_draws_max": float(halves.max()) if len(halves) else None,
        "n_tokens": int(len(kl_sae)),
        "n_draws": int(draws.shape[0]),
    }


def single_position_metrics(single: SinglePositionResults, resamples: int, rng: np.random.Generator) -> dict:
    """The KL ratio at p and summed over p + 1 .. p + window, with 95% intervals over contexts and draws."""
    n_contexts, width = single.substitution.shape
    metrics = {"n_contexts": int(n_contexts), "n_contexts_excluded": int(single.n_excluded), "n_draws": int(single.draws.shape[0])}
    parts = {"at_p": (single.substitution[:, 0], single.draws[:, :, 0])}
    if width > 1:
        parts["after_p"] = (single.substitution[:, 1:].sum(1), single.draws[:, :, 1:].sum(2))
    for part in ("at_p", "after_p"):
        point, low, high = None, None, None
        if part in parts and n_contexts:
            numerator, draws = parts[part]
            point = ratio(numerator.mean(), draws.mean())
            low, high = percentile_interval(two_level_bootstrap(numerator, draws, resamples, rng, {"ratio": mean_ratio})["ratio"])
        metrics.update({f"kl_ratio_{part}": point, f"kl_ratio_{part}_ci_low": low, f"kl_ratio_{part}_ci_high": high})
    return metrics


def _check_finite(what: str, values: np.ndarray) -> None:
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise ValueError(f"interventions: {bad} of {values.size} per-token KL values of {what} are not finite; "
                         "the spliced forward pass overflowed (try lm.compute_dtype=float32)")


def summarise(results: TokenResults, cfg: InterventionsConfig) -> dict:
    """The metrics JSON of one SAE.

    Documented edge values: a ratio whose denominator is 0 (e.g. an epsilon_random KL of 0,
    which a perfect SAE gives, or a single position with nothing after it or no usable context)
    is undefined and written as null (`ratio`), and so is an interval none of whose resamples is
    defined; a z-score is undefined for a token whose draws do not vary, and the z-score keys are
    null when no token has one. Every per-token KL must be finite: a NaN or inf (an overflowing
    forward pass) raises, naming the intervention."""
    for name, kl in results.kl.items():
        _check_finite(repr(name), kl)
    for setting, values in results.by_positions.items():
        _check_finite(f"substitution at positions {setting!r}", values.substitution)
        _check_finite(f"the epsilon_random draws at positions {setting!r}", values.draws)
    if results.single is not None:
        _check_finite("the single-position mode", np.concatenate([results.single.substitution.ravel(), results.single.draws.ravel()]))
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
    by_positions = {setting: ratio_and_z_metrics(values, cfg.bootstrap, rng) for setting, values in results.by_positions.items()}
    primary = next(iter(by_positions.values()))
    kl_sae = results.kl["substitution"]
    ce_sae = float(results.ce["substitution"][has_next].mean())
    ce_zero = float(results.ce["zero"][has_next].mean())
    metrics = {
        "kl_ratio_substitution_vs_epsilon_random": primary["kl_ratio_substitution_vs_epsilon_random"],
        "kl_ratio_ci_low": primary["kl_ratio_ci_low"],
        "kl_ratio_ci_high": primary["kl_ratio_ci_high"],
        "kl_ratio_substitution_vs_cov_random": ratio(kl_sae.mean(), results.kl["cov_random"].mean()),
        "clean_ce": clean_ce,
        "ce_score": ratio(ce_zero - ce_sae, ce_zero - clean_ce),
        "kl_score": ratio(results.kl["zero"].mean() - kl_sae.mean(), results.kl["zero"].mean()),
        "n_tokens": int(len(kl_sae)),
        "positions": next(iter(results.by_positions)),
        "n_draws": primary["n_draws"],
        "interventions": per_intervention,
        **{key: primary[key] for key in primary if key.startswith("z_score")},
        "by_positions": by_positions,
    }
    if results.single is not None:
        metrics["single_position"] = single_position_metrics(results.single, cfg.bootstrap, rng)
    return metrics
