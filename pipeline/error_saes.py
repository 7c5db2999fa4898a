"""docs/science.md, "SAEs trained on the error components": SAEs trained on the error components of an SAE.

For one SAE, the linear error e_hat = x W + b (W, b from `probes`), the nonlinear error
n = e - e_hat and the total error e are written to a Zarr group, fit rows first then test rows.
An SAE of the same architecture, width and k is trained on the fit rows of each (with the
project's own `train_sae`), and scored on the test rows of the component it was trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import zarr

from pipeline.activation_store import iter_row_blocks
from pipeline.analysis_config import ErrorSaesConfig
from pipeline.judge import top_examples
from pipeline.row_split import RowSplit
from pipeline.sae_inference import encode_decode
from pipeline.sae_output_store import MetricAccumulator, SaeMetrics, SaeOutputs
from pipeline.store_integrity import new_group, open_checked, publish

COMPONENTS = ("linear_error", "nonlinear_error", "error")
"""ê = xW + b, n = e − ê and e (docs/science.md, "Notation"): the targets of the three SAEs."""


def components(x: np.ndarray, x_hat: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> dict[str, np.ndarray]:
    """{linear_error: e_hat, nonlinear_error: n, error: e} for rows x with SAE outputs x_hat, float32."""
    x64 = np.asarray(x, dtype=np.float32).astype(np.float64)
    err = x64 - x_hat.astype(np.float64)
    linear = x64 @ weight + bias
    return {"linear_error": linear.astype(np.float32), "nonlinear_error": (err - linear).astype(np.float32), "error": err.astype(np.float32)}


def write_components(outputs: SaeOutputs, acts: zarr.Array, weight: np.ndarray, bias: np.ndarray, out: Path, block_rows: int) -> zarr.Group:
    """The three components over the fit rows then the test rows of `acts` (x_hat as `sae_outputs`
    stored it); attrs `n_fit_rows` (the leading rows, which the component SAEs train on; the rest
    are test rows) and `first_store_row` (the activation-store row of its row 0). Written to a
    temporary sibling first."""
    split = RowSplit.of(acts)
    start, n_train = split.fit_rows.start, split.n_train_rows
    n_rows, d = acts.shape[0] - start, acts.shape[1]
    out = Path(out)
    tmp, group = new_group(out)
    arrays = {name: group.create_array(name, shape=(n_rows, d), chunks=(acts.chunks[0], d), dtype="float32") for name in COMPONENTS}
    for first, x in iter_row_blocks(acts, start, rows=block_rows):
        for name, values in components(x, outputs.x_hat(first, first + len(x)), weight, bias).items():
            arrays[name][first - start : first - start + len(x)] = values
    group.attrs.update({"n_fit_rows": n_train - start, "first_store_row": start})
    publish(tmp, out)
    return open_checked(out)


def score(sae, values: zarr.Array, first_test_row: int, block_rows: int) -> SaeMetrics:
    """FVU, L0 and dead latents of `sae` (a freshly trained sae-lens SAE, or any with encode/decode)
    on rows [first_test_row, end) of `values`."""
    metrics = MetricAccumulator(values.shape[1], sae.cfg.d_sae)
    for _, block in iter_row_blocks(values, first_test_row, rows=block_rows):
        x = torch.from_numpy(np.asarray(block, dtype=np.float32)).to(sae.device)
        latents, x_hat = encode_decode(sae, x)
        active = latents != 0
        metrics.update(block, (x - x_hat).cpu().numpy(), active.sum(-1).cpu().numpy(), active.any(0).cpu().numpy())
    return metrics.result()


@torch.no_grad()
def judge_score(sae, values: zarr.Array, first_test_row: int, first_store_row: int, contexts: np.ndarray,
                scored: np.ndarray, decode, judge, cfg: ErrorSaesConfig) -> float:
    """Mean judge score over the SAE's most active latents, from their top-activating test
    contexts (`contexts` and their `scored` mask locate each store row's token)."""
    rows = np.asarray(values[first_test_row : first_test_row + cfg.judge_rows], dtype=np.float32)
    latents, _ = encode_decode(sae, torch.from_numpy(rows).to(sae.device))
    row_context, row_position = np.nonzero(scored)  # store row -> (context, position)
    store_rows = slice(first_store_row + first_test_row, first_store_row + first_test_row + len(rows))
    examples = top_examples(
        latents.float().cpu().numpy(), row_context[store_rows], row_position[store_rows], contexts,
        decode, cfg.judge_latents, cfg.judge_examples,
    )
    return float(np.mean([judge.score(e) for e in examples]))
