"""Per-token SAE outputs on the held-out tokens, streamed into a Zarr group, and the SAE's metrics.

Group layout (row i = test row i = activation-store row n_train_rows + i):
- `x_hat`, `error` (n_test, d) float32: reconstruction and e = x - x_hat;
- `l0` (n_test,) int32; `x_norm`, `x_hat_norm`, `error_norm` (n_test,) float32;
- active latents in CSR form: `latent_indptr` (n_test + 1,) int64, `latent_indices` int32 and
  `latent_values` float32 (nnz,): row i's latents are indices[indptr[i]:indptr[i + 1]].
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from sae_lens import SAE
from tqdm.auto import tqdm

from pipeline.activation_store import iter_row_blocks
from pipeline.row_split import RowSplit
from pipeline.store_integrity import new_group, publish


@dataclass
class SaeMetrics:
    """Test-token metrics of one SAE (leaf keys of its metrics JSON)."""

    fvu: float
    explained_variance: float
    l0: float
    dead_fraction: float
    n_test_tokens: int

    def as_dict(self) -> dict:
        return asdict(self)


class MetricAccumulator:
    """Streams FVU = sum ||x - x_hat||^2 / sum ||x - mean x||^2 (float64), mean L0 and dead latents."""

    def __init__(self, d: int, d_sae: int):
        self.n = 0
        self.sum_x = np.zeros(d, dtype=np.float64)
        self.sum_sq_x = 0.0
        self.sum_sq_err = 0.0
        self.sum_l0 = 0
        self.fired = np.zeros(d_sae, dtype=bool)

    def update(self, x: np.ndarray, err: np.ndarray, l0: np.ndarray, fired: np.ndarray) -> None:
        x64 = x.astype(np.float64)
        self.n += len(x)
        self.sum_x += x64.sum(0)
        self.sum_sq_x += float((x64**2).sum())
        self.sum_sq_err += float((err.astype(np.float64) ** 2).sum())
        self.sum_l0 += int(l0.sum())
        self.fired |= fired

    def result(self) -> SaeMetrics:
        total_variance = self.sum_sq_x - float(self.sum_x @ self.sum_x) / self.n
        fvu = self.sum_sq_err / total_variance
        return SaeMetrics(
            fvu=fvu,
            explained_variance=1.0 - fvu,
            l0=self.sum_l0 / self.n,
            dead_fraction=float(1.0 - self.fired.mean()),
            n_test_tokens=self.n,
        )


@torch.no_grad()
def encode_decode(sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    latents = sae.encode(x)
    if latents.is_sparse:
        latents = latents.to_dense()
    return latents, sae.decode(latents)


def write_sae_outputs(
    sae: SAE, acts: zarr.Array, out: Path, attrs: dict, block_rows: int = 4096, progress: bool = True
) -> tuple[SaeMetrics, float]:
    """Run the SAE over the test rows of `acts`; write the group at `out`; (metrics, tokens/s)."""
    out = Path(out)
    n_train_rows = RowSplit.of(acts).n_train_rows
    n_test, d = acts.shape[0] - n_train_rows, acts.shape[1]
    chunk = acts.chunks[0]
    tmp, group = new_group(out)
    dense = {name: group.create_array(name, shape=(n_test, d), chunks=(chunk, d), dtype="float32") for name in ("x_hat", "error")}
    per_token = {
        name: group.create_array(name, shape=(n_test,), chunks=(max(chunk, 65536),), dtype=dtype)
        for name, dtype in (("l0", "int32"), ("x_norm", "float32"), ("x_hat_norm", "float32"), ("error_norm", "float32"))
    }
    indptr = np.zeros(n_test + 1, dtype=np.int64)
    indices = group.create_array("latent_indices", shape=(0,), chunks=(1 << 20,), dtype="int32")
    values = group.create_array("latent_values", shape=(0,), chunks=(1 << 20,), dtype="float32")

    device = sae.device
    metrics = MetricAccumulator(d, sae.cfg.d_sae)
    started = time.perf_counter()
    bar = tqdm(total=n_test, unit="tok", unit_scale=True, desc="sae_outputs", disable=not progress)
    for first, block in iter_row_blocks(acts, start=n_train_rows, rows=block_rows):
        x = torch.from_numpy(np.asarray(block, dtype=np.float32)).to(device)
        latents, x_hat = encode_decode(sae, x)
        err = x - x_hat
        active = latents != 0
        rows, cols = active.nonzero(as_tuple=True)
        lo, hi = first - n_train_rows, first - n_train_rows + len(block)
        l0 = active.sum(-1)
        for name, value in (("x_hat", x_hat), ("error", err)):
            dense[name][lo:hi] = value.float().cpu().numpy()
        per_token["l0"][lo:hi] = l0.int().cpu().numpy()
        for name, value in (("x_norm", x), ("x_hat_norm", x_hat), ("error_norm", err)):
            per_token[name][lo:hi] = value.float().norm(dim=-1).cpu().numpy()
        indptr[lo + 1 : hi + 1] = indptr[lo] + np.cumsum(l0.cpu().numpy())
        indices.append(cols.int().cpu().numpy())
        values.append(latents[rows, cols].float().cpu().numpy())
        metrics.update(block, err.cpu().numpy(), l0.cpu().numpy(), active.any(0).cpu().numpy())
        bar.update(len(block))
    bar.close()
    seconds = time.perf_counter() - started
    group.create_array("latent_indptr", data=indptr, chunks=(max(1, len(indptr)),))
    result = metrics.result()
    group.attrs.update({**attrs, "n_test_rows": n_test, "first_store_row": n_train_rows, "metrics": result.as_dict()})
    publish(tmp, out)
    return result, n_test / seconds if seconds > 0 else float("nan")
