"""The `sae_outputs` stage's work: run an SAE once over the fit and test rows of its hook's
activation store, store what the analyses read (layout: `pipeline.sae_output_store`) and measure
the SAE's test metrics. Reads run one block ahead and writes one block behind the encoding."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from pipeline.activation_store import iter_row_blocks
from pipeline.background import background_writes, read_ahead
from pipeline.row_split import RowSplit
from pipeline.sae_inference import InferenceSAE, encode_decode
from pipeline.sae_output_store import MetricAccumulator, SaeMetrics, stored_rows
from pipeline.store_integrity import new_group, publish


def _finish_block(arrays: dict[str, zarr.Array], rows: slice, x: np.ndarray, x_hat: np.ndarray, l0: np.ndarray,
                  fired: np.ndarray, metrics: MetricAccumulator | None) -> None:
    """The per-block work that can overlap the next block's encoding: ||e||, the test metrics, the writes."""
    err = np.asarray(x, dtype=np.float32) - x_hat
    arrays["x_hat"][rows] = x_hat
    arrays["l0"][rows] = l0
    arrays["error_norm"][rows] = np.linalg.norm(err, axis=1)
    if metrics is not None:
        metrics.update(x, err, l0, fired)


def write_sae_outputs(
    sae: InferenceSAE, acts: zarr.Array, out: Path, attrs: dict, block_rows: int = 4096, progress: bool = True
) -> tuple[SaeMetrics, float]:
    """Run the SAE over the fit and test rows of `acts`; write the group at `out`; (test metrics, rows/s)."""
    split = RowSplit.of(acts)
    rows = stored_rows(split)
    n_rows, d, d_sae, chunk = rows.stop - rows.start, acts.shape[1], sae.cfg.d_sae, acts.chunks[0]
    tmp, group = new_group(Path(out))
    # Uncompressed: float32 reconstructions compress by under 10%, and zstd would cost the writer thread
    # a good share of the encoding's time.
    arrays = {"x_hat": group.create_array("x_hat", shape=(n_rows, d), chunks=(chunk, d), dtype="float32", compressors=None)}
    for name, dtype in (("l0", "int32"), ("error_norm", "float32")):
        arrays[name] = group.create_array(name, shape=(n_rows,), chunks=(max(chunk, 65536),), dtype=dtype)
    latent_sum = torch.zeros(d_sae, dtype=torch.float64, device=sae.device)
    latent_count = torch.zeros(d_sae, dtype=torch.int64, device=sae.device)
    metrics = MetricAccumulator(d, d_sae)
    # Fit and test rows as two runs of blocks, so each block is the one the analyses used to encode.
    blocks = itertools.chain(iter_row_blocks(acts, split.fit_rows.start, split.fit_rows.stop, rows=block_rows),
                             iter_row_blocks(acts, split.test_rows.start, split.test_rows.stop, rows=block_rows))
    started = time.perf_counter()
    with background_writes() as write, tqdm(total=n_rows, unit="tok", unit_scale=True, desc="sae_outputs", disable=not progress) as bar:
        for first, block in read_ahead(blocks):
            x = torch.from_numpy(np.asarray(block, dtype=np.float32)).to(sae.device)
            latents, x_hat = encode_decode(sae, x)
            # One scan for the active latents (a few per row): L0, the latents that fired, their sums.
            rows_active, cols_active = latents.nonzero(as_tuple=True)
            l0 = torch.bincount(rows_active, minlength=len(block)).int().cpu().numpy()
            fired = torch.bincount(cols_active, minlength=d_sae)
            is_fit = first < split.n_train_rows
            if is_fit:
                latent_sum.index_add_(0, cols_active, latents[rows_active, cols_active].double())
                latent_count += fired
            local = slice(first - rows.start, first - rows.start + len(block))
            write(_finish_block, arrays, local, block, x_hat.float().cpu().numpy(), l0, (fired > 0).cpu().numpy(),
                  None if is_fit else metrics)
            bar.update(len(block))
    seconds = time.perf_counter() - started
    group.create_array("latent_fit_sum", data=latent_sum.cpu().numpy(), chunks=(d_sae,))
    group.create_array("latent_fit_count", data=latent_count.cpu().numpy(), chunks=(d_sae,))
    result = metrics.result()
    group.attrs.update({**attrs, "first_store_row": rows.start, "n_fit_rows": split.n_train_rows - rows.start,
                        "n_test_rows": split.n_test_rows, "metrics": result.as_dict()})
    publish(tmp, out)
    return result, n_rows / seconds if seconds > 0 else float("nan")
