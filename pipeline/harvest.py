"""One forward pass per batch captures every configured hook and streams it into Zarr stores.

The pass stops after the deepest hook fires. Batches are fixed slices of contexts, so a resumed
run recomputes exactly the same batches and its stores are identical to an uninterrupted run.

The stores are written in a scratch folder (`.scratch/harvest`, which neither git nor DVC
touches) and moved into the output folder once all are complete. DVC deletes a stage's outputs
before rerunning it, and `dvc exp run` first checks out the committed ones; partial stores in the
output folder would be lost either way, so a killed harvest resumes under both.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from pipeline.activation_store import ActivationWriter, store_path
from pipeline.code_deps import code_hash
from pipeline.config import HarvestConfig, Hook, LmConfig
from pipeline.devices import resolve_device
from pipeline.models import checkpoint_fingerprint, checkpoint_info, load_model, load_model_config
from pipeline.sites import architecture, capturing, forward_until_captured, validate_hooks
from pipeline.tokens import TokenStore


@dataclass
class HarvestResult:
    n_rows: int
    rows_computed: int
    resumed_from_row: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.rows_computed / self.seconds if self.seconds > 0 else float("nan")


def validate(cfg: HarvestConfig, lm: LmConfig, model_dir: Path) -> list[Hook]:
    """All checks that need no weights: hook names, layers, architecture, device."""
    hooks = cfg.parsed_hooks()
    hf_config = load_model_config(model_dir)
    architecture(hf_config.model_type)
    validate_hooks(hooks, hf_config.num_hidden_layers)
    resolve_device(lm.device, "lm.device")
    return hooks


def _fingerprint(model_dir: Path, tokens: TokenStore, hook: Hook, cfg: HarvestConfig, lm: LmConfig) -> str:
    identity = {
        "code": code_hash("stages.harvest"),  # a partial store written by other code is not resumed
        "model": checkpoint_fingerprint(model_dir),
        "tokens": tokens.content_hash,
        "hook": hook.name,
        "compute_dtype": lm.compute_dtype,
        "store_dtype": cfg.store_dtype,
        "batch_size": lm.batch_size,
        "chunk_rows": cfg.chunk_rows,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _widths(model, hooks: list[Hook], bos_id: int, device: torch.device) -> dict[str, int]:
    """Activation width per hook, from a two-token forward pass (works for any architecture)."""
    with capturing(model, hooks) as captured:
        forward_until_captured(model, torch.tensor([[bos_id, bos_id]], device=device))
        return {name: int(t.shape[-1]) for name, t in captured.items()}


def _rows(acts: torch.Tensor, scored: torch.Tensor, dtype: torch.dtype, name: str) -> np.ndarray:
    """(B, T, d) activations -> (scored tokens, d) rows in token-index order, on the CPU.

    Fails on a value that is not finite in the store's dtype: float16 ends at 65504, which the
    residual stream of late layers can pass (Gemma 3 270M: 8.9e4 at scored tokens by layer 13).
    """
    rows = acts[scored]
    stored = rows.to(dtype)
    if not torch.isfinite(stored).all():
        largest = rows.float().abs().max().item()
        where = "the model's output" if not torch.isfinite(rows).all() else f"{dtype} (|x| up to {largest:.4g})"
        raise ValueError(
            f"harvest: {name} has values that are not finite in {where}; "
            f"set harvest.store_dtype=float32 (or lm.compute_dtype=float32 if the model itself overflows)"
        )
    return stored.cpu().numpy()


def _append_all(writers: dict[str, ActivationWriter], blocks: dict[str, np.ndarray]) -> None:
    for name, block in blocks.items():
        writers[name].append(block)


def _move_into_place(scratch: Path, out_dir: Path, stores: list[Path]) -> None:
    """Replace `out_dir` by the finished stores (renames, where the scratch folder is on the same disk).
    Each loses its fingerprint first: it names the code and only guards resuming, and without it a
    finished store's bytes depend on its data alone (a rerun after a refactor reruns nothing downstream)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    for store in stores:
        del zarr.open_array(store, mode="r+").attrs["fingerprint"]
        shutil.move(store, out_dir / store.name)
    shutil.rmtree(scratch, ignore_errors=True)


def harvest(
    model_dir: Path,
    token_store: Path,
    out_dir: Path,
    cfg: HarvestConfig,
    lm: LmConfig,
    scratch: Path,
    progress: bool = True,
) -> HarvestResult:
    """Write one store per hook into `out_dir`, building them in `scratch` (kept across kills)."""
    model_dir, out_dir, scratch = Path(model_dir), Path(out_dir), Path(scratch)
    hooks = validate(cfg, lm, model_dir)
    tokens = TokenStore.open(token_store)
    device = resolve_device(lm.device, "lm.device")
    model = load_model(model_dir, lm.compute_dtype, device)
    model_name = checkpoint_info(model_dir)["model"]["name"]

    scratch.mkdir(parents=True, exist_ok=True)
    wanted = {store_path(scratch, h).name for h in hooks}
    for stale in scratch.iterdir():
        if stale.name not in wanted:  # a hook dropped from the config
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()

    widths = _widths(model, hooks, tokens.bos_token_id, device)
    writers = {
        h.name: ActivationWriter(
            store_path(scratch, h),
            n_rows=tokens.n_rows,
            width=widths[h.name],
            dtype=cfg.store_dtype,
            chunk_rows=cfg.chunk_rows,
            fingerprint=_fingerprint(model_dir, tokens, h, cfg, lm),
            attrs={
                "model": model_name,
                "hook": h.name,
                "site": h.site,
                "layer": h.layer,
                "compute_dtype": lm.compute_dtype,
                "store_dtype": cfg.store_dtype,
                "token_store_hash": tokens.content_hash,
                **tokens.split.as_attrs(),
            },
        )
        for h in hooks
    }
    resume_row = min(w.committed_rows for w in writers.values())
    for writer in writers.values():
        writer.rewind(resume_row)

    # Resume at the batch holding the first uncommitted row; drop the rows before it.
    batch_starts = tokens.context_row_starts[: tokens.n_contexts : lm.batch_size]
    first_batch = int(np.searchsorted(batch_starts, resume_row, side="right")) - 1
    skip = resume_row - int(batch_starts[first_batch])
    first_context = first_batch * lm.batch_size if resume_row < tokens.n_rows else tokens.n_contexts
    mask = torch.from_numpy(tokens.mask)
    store_dtype = getattr(torch, cfg.store_dtype)

    started = time.perf_counter()
    bar = tqdm(
        total=tokens.n_rows, initial=resume_row, unit="tok", unit_scale=True, desc="harvest", disable=not progress
    )
    # Writes run on one background thread, overlapping the next forward pass; waiting on the
    # previous batch's writes first keeps at most one batch in flight (bounded memory, in order).
    with ThreadPoolExecutor(max_workers=1) as io, capturing(model, hooks) as captured, torch.inference_mode():
        pending = None
        for start in range(first_context, tokens.n_contexts, lm.batch_size):
            ids = torch.from_numpy(tokens.contexts[start : start + lm.batch_size]).to(device=device, dtype=torch.long)
            captured.clear()
            forward_until_captured(model, ids)
            scored = mask[start : start + lm.batch_size].to(device)
            blocks = {name: _rows(captured[name], scored, store_dtype, name)[skip:] for name in writers}
            if pending is not None:
                pending.result()
            pending = io.submit(_append_all, writers, blocks)
            bar.update(int(scored.sum()) - skip)
            skip = 0
        if pending is not None:
            pending.result()
    for writer in writers.values():
        writer.close()
    bar.close()
    seconds = time.perf_counter() - started
    _move_into_place(scratch, out_dir, [store_path(scratch, h) for h in hooks])
    return HarvestResult(
        n_rows=tokens.n_rows, rows_computed=tokens.n_rows - resume_row, resumed_from_row=resume_row, seconds=seconds
    )
