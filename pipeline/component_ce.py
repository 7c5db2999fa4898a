"""The downstream loss of each error component (docs/science.md, "Downstream loss of the components").

At the scored positions of test contexts, splice x_hat, x_hat + e_hat (linear error added back)
and x_hat + n (nonlinear error added back), and compare the CE recovered with the share of
variance each restores and its share of the error norm. "Proportional" means the nonlinear
error costs CE in proportion to its size.
"""

from __future__ import annotations


import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.config import Hook
from pipeline.sae_inference import InferenceSAE, encode_decode
from pipeline.splice import PrefixCache, token_kl_and_ce

SETTINGS = ("sae", "sae_plus_linear_error", "sae_plus_nonlinear_error")


@torch.no_grad()
def component_ce(
    model, sae: InferenceSAE, hook: Hook, probe_weight: np.ndarray, probe_bias: np.ndarray, contexts: np.ndarray, scored: np.ndarray, batch_size: int, progress: bool = True
) -> dict[str, float]:
    """CE recovered (%) by x_hat + e_hat and x_hat + n, the variance each restores (%) and each
    component's share of the squared error norm (%), over the scored tokens of `contexts`."""
    device = next(model.parameters()).device
    weight = torch.from_numpy(probe_weight).float()
    bias = torch.from_numpy(probe_bias).float()
    ce = {name: [] for name in ("clean", *SETTINGS)}
    sums = dict.fromkeys(("err", "left_with_linear", "left_with_nonlinear", "x_sq", "n", "lin_norm", "nonlin_norm"), 0.0)
    sum_x = None
    cache = PrefixCache(model, hook)
    for start in tqdm(range(0, len(contexts), batch_size), desc=f"component_ce {hook.name}", disable=not progress):
        ids = torch.from_numpy(contexts[start : start + batch_size]).long().to(device)
        mask = torch.from_numpy(scored[start : start + batch_size]).to(device)
        cache.run(ids)
        x = cache.activation[mask].float()
        _, x_hat = encode_decode(sae, x.to(sae.device))
        x_hat = x_hat.float().to(x.device)
        err = x - x_hat
        linear = x @ weight.to(x.device) + bias.to(x.device)
        nonlinear = err - linear
        has_next = torch.zeros_like(mask)
        has_next[:, :-1] = True
        keep = has_next[mask]
        _, clean = token_kl_and_ce(cache.clean_logprobs, cache.clean_logprobs, ids)
        ce["clean"].append(clean[mask][keep].cpu().numpy())
        for name, rows in (("sae", x_hat), ("sae_plus_linear_error", x_hat + linear), ("sae_plus_nonlinear_error", x_hat + nonlinear)):
            full = cache.activation.clone()
            full[mask] = rows.to(full.dtype)
            _, token_ce = token_kl_and_ce(cache.clean_logprobs, cache.splice(full), ids)
            ce[name].append(token_ce[mask][keep].cpu().numpy())
        x64, e64, lin64, non64 = (t.cpu().double().numpy() for t in (x, err, linear, nonlinear))
        sum_x = x64.sum(0) if sum_x is None else sum_x + x64.sum(0)
        sums["x_sq"] += float((x64**2).sum())
        sums["n"] += len(x64)
        sums["err"] += float((e64**2).sum())
        sums["left_with_linear"] += float(((e64 - lin64) ** 2).sum())  # x - (x_hat + e_hat) = n
        sums["left_with_nonlinear"] += float(((e64 - non64) ** 2).sum())  # x - (x_hat + n) = e_hat
        sums["lin_norm"] += float(np.linalg.norm(lin64, axis=1).sum())
        sums["nonlin_norm"] += float(np.linalg.norm(non64, axis=1).sum())
    mean_ce = {name: float(np.concatenate(parts).mean()) for name, parts in ce.items()}
    gap = mean_ce["sae"] - mean_ce["clean"]
    total_var = sums["x_sq"] - float(sum_x @ sum_x) / sums["n"]
    fvu = {name: sums[key] / total_var for name, key in zip(SETTINGS, ("err", "left_with_linear", "left_with_nonlinear"))}
    return {
        "clean_ce": mean_ce["clean"],
        "sae_ce": mean_ce["sae"],
        "ce_recovered_linear_error": 100 * (mean_ce["sae"] - mean_ce["sae_plus_linear_error"]) / gap,
        "ce_recovered_nonlinear_error": 100 * (mean_ce["sae"] - mean_ce["sae_plus_nonlinear_error"]) / gap,
        "variance_recovered_linear_error": 100 * (fvu["sae"] - fvu["sae_plus_linear_error"]) / fvu["sae"],
        "variance_recovered_nonlinear_error": 100 * (fvu["sae"] - fvu["sae_plus_nonlinear_error"]) / fvu["sae"],
        "error_norm_share_linear_error": 100 * sums["lin_norm"] / (sums["lin_norm"] + sums["nonlin_norm"]),
        "error_norm_share_nonlinear_error": 100 * sums["nonlin_norm"] / (sums["lin_norm"] + sums["nonlin_norm"]),
        "n_tokens": int(sums["n"]),
    }
