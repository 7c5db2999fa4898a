"""Inference-time gradient pursuit (docs/science.md, "Gradient pursuit"): re-encode each token with the SAE's
decoder as a dictionary, at the token's own encoder L0, to see how much of the SAE's error is
the encoder's fault.

With s = x - b_dec and D = W_dec (latents x d), per token: repeat
    r = s - w D;  g = r D^T;  add argmax(g) (over atoms not yet chosen) to the support;
    g_S = g restricted to the support;  c = g_S D;  eta = <c, r> / <c, c>;
    w = max(0, w + eta g_S)
until the support holds the token's target L0 atoms. The output is w D + b_dec. Choosing only
new atoms makes the support grow by one per step; the clamp at zero can only drop atoms, so
the L0 never exceeds the target.
"""

from __future__ import annotations


import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from pipeline.activation_store import iter_row_blocks
from pipeline.analysis_config import PursuitConfig
from pipeline.lstsq import FitScore, NormalEquations
from pipeline.row_split import RowSplit
from pipeline.sae_output_store import SaeOutputs


@torch.no_grad()
def gradient_pursuit(s: torch.Tensor, decoder: torch.Tensor, target_l0: torch.Tensor) -> torch.Tensor:
    """Batched pursuit: s (B, d), decoder (m, d), target_l0 (B,) int -> codes w (B, m) >= 0."""
    batch, n_atoms = s.shape[0], decoder.shape[0]
    w = torch.zeros(batch, n_atoms, dtype=s.dtype, device=s.device)
    support = torch.zeros(batch, n_atoms, dtype=torch.bool, device=s.device)
    rows = torch.arange(batch, device=s.device)
    target_l0 = target_l0.to(s.device)
    for step in range(int(target_l0.max()) if batch else 0):
        active = target_l0 > step
        residual = s - w @ decoder
        g = residual @ decoder.T
        chosen = g.masked_fill(support, float("-inf")).argmax(dim=1)
        support[rows[active], chosen[active]] = True
        g_support = torch.where(support, g, torch.zeros((), dtype=g.dtype, device=g.device))
        c = g_support @ decoder
        eta = (c * residual).sum(-1) / (c * c).sum(-1).clamp_min(torch.finfo(s.dtype).tiny)
        updated = torch.clamp_min(w + eta[:, None] * g_support, 0)
        w = torch.where(active[:, None], updated, w)
    return w


def gradient_pursuit_reference(s: np.ndarray, decoder: np.ndarray, target_l0: int) -> np.ndarray:
    """The same algorithm for one token, written as a plain loop (the test's reference)."""
    w = np.zeros(decoder.shape[0])
    support: list[int] = []
    for _ in range(target_l0):
        residual = s - w @ decoder
        g = decoder @ residual
        candidates = [i for i in np.argsort(-g, kind="stable") if i not in support]
        support.append(int(candidates[0]))
        g_support = np.zeros_like(g)
        g_support[support] = g[support]
        c = g_support @ decoder
        denominator = c @ c
        eta = (c @ residual) / denominator if denominator > 0 else 0.0
        w = np.maximum(w + eta * g_support, 0)
    return w


@torch.no_grad()
def pursue(decoder: torch.Tensor, b_dec: torch.Tensor, x: torch.Tensor, l0: torch.Tensor,
           center_input: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat by pursuit at each token's L0 `l0`, pursuit's own L0), with the SAE's decoder as the dictionary.
    With `center_input` (an SAE trained on centred activations: pipeline.sae_inference, "Input
    conventions"), the pursuit runs on x minus its per-token mean, and x_hat gets the mean back."""
    mean = x.mean(-1, keepdim=True) if center_input else None
    w = gradient_pursuit((x - mean if center_input else x) - b_dec, decoder, l0)
    x_hat = w @ decoder + b_dec
    return (x_hat + mean if center_input else x_hat), (w > 0).sum(-1)


def pursuit_metrics(decoder: tuple[np.ndarray, np.ndarray], outputs: SaeOutputs, acts: zarr.Array, cfg: PursuitConfig,
                    probe_bias: bool, probe_ridge: float, device: torch.device, progress: bool = True,
                    center_input: bool = False) -> dict:
    """Encoder vs pursuit on the test rows (the first `cfg.test_rows`): FVU, L0, nonlinear FVU (each error's own linear probe,
    fitted on the first `cfg.fit_rows` fit rows), and the per-token comparison of the two errors.
    `decoder` = (W_dec, b_dec); the encoder's x_hat and L0 are the ones `sae_outputs` stored; `center_input`: see `pursue`."""
    split = RowSplit.of(acts)
    start, n_train = split.fit_rows.start, split.n_train_rows
    stop = min(n_train, start + cfg.fit_rows)
    W_dec, b_dec = (torch.from_numpy(a.astype(np.float32)).to(device) for a in decoder)

    def batches(first: int, last: int, desc: str):
        for row, block in tqdm(iter_row_blocks(acts, first, last, rows=cfg.block_rows), desc=desc, disable=not progress,
                               total=-(-(last - first) // cfg.block_rows)):
            x = torch.from_numpy(np.asarray(block, dtype=np.float32)).to(device)
            end = row + len(block)
            enc = torch.from_numpy(outputs.x_hat(row, end)).to(device)
            enc_l0 = torch.from_numpy(outputs.l0(row, end).astype(np.int64)).to(device)
            yield x, enc, enc_l0, *pursue(W_dec, b_dec, x, enc_l0, center_input)

    probes = {"encoder": NormalEquations(bias=probe_bias), "pursuit": NormalEquations(bias=probe_bias)}
    for x, enc, _, pur, _ in batches(start, stop, "pursuit: fit probes"):
        x_np = x.cpu().numpy()
        probes["encoder"].update(x_np, (x - enc).cpu().numpy())
        probes["pursuit"].update(x_np, (x - pur).cpu().numpy())
    fits = {name: eq.solve(probe_ridge) for name, eq in probes.items()}
    scores = {key: FitScore() for key in ("encoder", "pursuit", "encoder_nonlinear", "pursuit_nonlinear")}
    l0_sum = {"encoder": 0.0, "pursuit": 0.0}
    ratios = []
    test_stop = acts.shape[0] if cfg.test_rows is None else min(acts.shape[0], n_train + cfg.test_rows)
    for x, enc, enc_l0, pur, pur_l0 in batches(n_train, test_stop, "pursuit: score"):
        x_np = x.cpu().double().numpy()
        for name, x_hat in (("encoder", enc), ("pursuit", pur)):
            x_hat = x_hat.cpu().double().numpy()
            scores[name].update(x_np, x_hat)
            scores[f"{name}_nonlinear"].update(x_np, x_hat + fits[name].predict(x.cpu().numpy()))
        l0_sum["encoder"] += float(enc_l0.sum())
        l0_sum["pursuit"] += float(pur_l0.sum())
        ratios.append((((x - pur) ** 2).sum(-1) / ((x - enc) ** 2).sum(-1).clamp_min(1e-30)).cpu().numpy())
    ratios = np.concatenate(ratios)
    n_test = len(ratios)
    return {
        "encoder_fvu": scores["encoder"].fvu,
        "pursuit_fvu": scores["pursuit"].fvu,
        "encoder_nonlinear_fvu": scores["encoder_nonlinear"].fvu,
        "pursuit_nonlinear_fvu": scores["pursuit_nonlinear"].fvu,
        "encoder_l0": l0_sum["encoder"] / n_test,
        "pursuit_l0": l0_sum["pursuit"] / n_test,
        "share_of_tokens_pursuit_better": float((ratios < 1).mean()),
        "per_token_error_ratio": {f"q{q}": float(np.quantile(ratios, q / 100)) for q in (5, 25, 50, 75, 95)},
        "n_test_tokens": n_test,
        "n_fit_tokens": stop - start,
    }
