"""SAEs through sae-lens: train one on a Zarr activation store, or load a pretrained one.

Every SAE, trained or pretrained, ends up on disk in sae-lens's format (`cfg.json` +
`sae_weights.safetensors`), which `sae_lens.SAE.load_from_disk` and the ecosystem (SAEBench,
sae-dashboard) read.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import zarr
from sae_lens import SAE
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer
from tqdm.auto import tqdm

from pipeline.background import read_ahead
from pipeline.config import ConfigError, Hook
from pipeline.devices import resolve_device
from pipeline.sae_checkpoints import Checkpoints, run_key
from pipeline.sae_inference import check_sae_fits
from pipeline.sae_config import SaeSetConfig, TrainSaeConfig


def build_training_sae(cfg: SaeSetConfig, d_in: int, width: int, dtype: str, device: str):
    common = dict(d_in=d_in, d_sae=width, dtype=dtype, device=device, normalize_activations=cfg.normalize_activations)
    if cfg.architecture == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(k=cfg.k, **common))
    if cfg.architecture == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(k=cfg.k, **common))
    if cfg.architecture == "standard":
        return StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, **common))
    return JumpReLUTrainingSAE(
        JumpReLUTrainingSAEConfig(
            l0_coefficient=cfg.l0_coefficient, jumprelu_init_threshold=cfg.jumprelu_init_threshold, **common
        )
    )


def shuffled_batches(
    store: zarr.Array, n_rows: int, batch_size: int, shuffle_chunks: int, seed: int, skip_batches: int = 0
) -> Iterator[torch.Tensor]:
    """Endless (batch_size, d) batches of rows [0, n_rows), reshuffled every epoch.

    Reads whole chunks in a seeded random order, `shuffle_chunks` at a time, and shuffles rows
    within that buffer: memory is O(shuffle_chunks x chunk rows x d), whatever n_rows is.
    The order depends only on the seed and the sizes, so `skip_batches` resumes the same stream
    after that many batches without reading the skipped rows.
    """
    if n_rows < batch_size:
        raise ValueError(
            f"{store.store_path}: {n_rows} training rows are fewer than one batch of {batch_size} "
            f"(train_sae.batch_size); use more tokens (tokens.n_contexts) or a smaller batch"
        )
    rng = np.random.default_rng(seed)
    chunk = store.chunks[0]
    starts = np.arange(0, n_rows, chunk)
    carry_rows = np.empty(0, dtype=np.int64)
    carry: np.ndarray | None = np.empty((0, store.shape[1]), dtype=store.dtype)  # None: not read (skipped)
    produced = 0
    while True:
        order = rng.permutation(starts)
        for group in range(0, len(order), shuffle_chunks):
            group_starts = order[group : group + shuffle_chunks]
            rows = np.concatenate([carry_rows, *(np.arange(s, min(s + chunk, n_rows)) for s in group_starts)])
            permutation = rng.permutation(len(rows))
            n_full = len(rows) // batch_size * batch_size
            n_batches = n_full // batch_size
            if produced + n_batches <= skip_batches:
                produced += n_batches
                carry_rows, carry = rows[permutation][n_full:], None
                continue
            if carry is None:
                carry = _read_rows(store, carry_rows)
            blocks = [store[s : min(s + chunk, n_rows)] for s in group_starts]
            buffer = np.concatenate([carry, *blocks])[permutation]
            for index in range(n_batches):
                if produced + index >= skip_batches:
                    first = index * batch_size
                    yield torch.from_numpy(np.ascontiguousarray(buffer[first : first + batch_size]))
            produced += n_batches
            carry_rows, carry = rows[permutation][n_full:], buffer[n_full:]


def _read_rows(store: zarr.Array, rows: np.ndarray) -> np.ndarray:
    """store[rows] in the given order (one sorted orthogonal read)."""
    if not len(rows):
        return np.empty((0, store.shape[1]), dtype=store.dtype)
    order = np.argsort(rows)
    out = np.empty((len(rows), store.shape[1]), dtype=store.dtype)
    out[order] = store.oindex[rows[order], :]
    return out


class CountedBatches:
    """An iterator that counts what it has handed out (how far a checkpoint is into the stream)."""

    def __init__(self, batches: Iterator[torch.Tensor], consumed: int = 0):
        self.batches, self.consumed = batches, consumed

    def __iter__(self) -> "CountedBatches":
        return self

    def __next__(self) -> torch.Tensor:
        self.consumed += 1
        return next(self.batches)

    def close(self) -> None:
        close = getattr(self.batches, "close", None)
        if close:
            close()


@dataclass
class CurvePoint:
    step: int
    tokens: int
    loss: float
    explained_variance: float
    l0: float
    dead_fraction: float


def train_sae(
    store: zarr.Array,
    n_train_rows: int,
    width: int,
    cfg: SaeSetConfig,
    train: TrainSaeConfig,
    metadata: dict,
    progress: bool = True,
    checkpoints: Path | None = None,
) -> tuple[SAE, list[CurvePoint]]:
    """Train one SAE on the store's train rows; returns the inference SAE and its training curve.

    With `checkpoints` (a folder) and `train.checkpoint_every` > 0, the state is saved every that
    many steps and a rerun resumes from the last checkpoint, ending with the same SAE."""
    device = str(resolve_device(train.device, key="train_sae.device"))
    torch.manual_seed(train.seed)  # sae-lens does not seed torch
    sae = build_training_sae(cfg, store.shape[1], width, train.dtype, device)
    decay_steps = int(train.steps * train.lr_decay_fraction)
    saver = None
    if checkpoints is not None and train.checkpoint_every > 0:
        saver = Checkpoints(checkpoints, run_key(store, n_train_rows, width, cfg, train, metadata, device))
    resume = saver.latest() if saver else None
    batches = CountedBatches(  # read on a background thread, a few batches ahead of the training step
        read_ahead(shuffled_batches(store, n_train_rows, train.batch_size, train.shuffle_chunks, train.seed,
                                    skip_batches=resume.batches_consumed if resume else 0), depth=4),
        consumed=resume.batches_consumed if resume else 0,
    )
    try:
        trainer = SAETrainer(
            SAETrainerConfig(
                total_training_samples=train.steps * train.batch_size,
                train_batch_size_samples=train.batch_size,
                lr=train.lr,
                lr_end=0.0 if decay_steps else train.lr,
                lr_scheduler_name="constant",
                lr_warm_up_steps=train.lr_warm_up_steps,
                lr_decay_steps=decay_steps,
                device=device,
                autocast=train.autocast,
                dead_feature_window=train.dead_feature_window,
                feature_sampling_window=max(1, train.steps),
                n_batches_for_norm_estimate=min(50, max(1, n_train_rows // train.batch_size)),
            ),
            sae,
            data_provider=batches,
        )
        curve: list[CurvePoint] = []
        if resume:
            curve = [CurvePoint(**point) for point in resume.restore(trainer)]
        else:
            if cfg.normalize_activations == "expected_average_only_in":
                trainer.activation_scaler.estimate_scaling_factor(
                    d_in=sae.cfg.d_in,
                    data_provider=trainer.data_provider,
                    n_batches_for_norm_estimate=trainer.cfg.n_batches_for_norm_estimate,
                )
            if train.init_b_dec == "mean":
                _init_b_dec_to_mean(trainer, n_batches=trainer.cfg.n_batches_for_norm_estimate)
        first_step = trainer.n_training_steps
        steps = tqdm(range(first_step, train.steps), desc=f"train SAE w={width}", unit="step", disable=not progress,
                     initial=first_step, total=train.steps)
        for step in steps:
            out = trainer.step(next(trainer.data_provider))
            trainer.n_training_steps += 1
            if step % train.log_every == 0 or step == train.steps - 1:
                curve.append(_curve_point(trainer, out, step))
            if saver and trainer.n_training_steps % train.checkpoint_every == 0 and trainer.n_training_steps < train.steps:
                saver.save(trainer, batches.consumed, [asdict(point) for point in curve])
    finally:
        batches.close()  # stops the reader thread now, not when the trainer is collected
    if trainer.activation_scaler.scaling_factor is not None:
        sae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
    trainer.set_final_sae_metadata()
    for key, value in metadata.items():
        sae.cfg.metadata[key] = value
    return sae, curve


@torch.no_grad()
def _init_b_dec_to_mean(trainer: SAETrainer, n_batches: int) -> None:
    """Start the decoder bias at the (scaled) data mean. Activations are far from centred (the
    residual mean is most of a token's norm) and sae-lens 6 no longer initialises b_dec itself;
    from zero, Adam needs thousands of steps just to learn the mean."""
    total = sum(trainer.activation_scaler(next(trainer.data_provider)).double().mean(0) for _ in range(n_batches))
    trainer.sae.b_dec.data.copy_((total / n_batches).to(trainer.sae.b_dec.dtype))


@torch.no_grad()
def _curve_point(trainer: SAETrainer, out, step: int) -> CurvePoint:
    x, x_hat = out.sae_in.float(), out.sae_out.float()
    residual = (x - x_hat).pow(2).sum()
    variance = (x - x.mean(0)).pow(2).sum()
    return CurvePoint(
        step=step,
        tokens=trainer.n_training_samples,
        loss=float(out.loss),
        explained_variance=float(1 - residual / variance),
        l0=float((out.feature_acts > 0).float().sum(-1).mean()),
        dead_fraction=float(trainer.dead_neurons.float().mean()),
    )


def save_sae(sae: SAE, out_dir: Path) -> None:
    """Write sae-lens's inference format into `out_dir` via a temporary sibling (never half-written).
    A training SAE is converted; a loaded (pretrained) SAE is already in that format."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(sae, "save_inference_model"):
        sae.save_inference_model(tmp)
    else:
        sae.save_model(tmp)
    # sae-lens writes the keys in a varying order: sorted, an identical SAE gets an identical DVC hash.
    cfg_file = tmp / "cfg.json"
    cfg_file.write_text(json.dumps(json.loads(cfg_file.read_text()), sort_keys=True, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def validate_pretrained(cfg: SaeSetConfig, hook: Hook, width: int) -> tuple[str, str]:
    """(release, id) for one pretrained SAE, checked offline against sae-lens's directory or a local dir."""
    release = cfg.release[hook.site]
    sae_id = cfg.pretrained_id(hook, width)
    local = Path(release).expanduser()
    if local.is_dir():
        if not (local / sae_id / "cfg.json").exists():
            available = sorted(str(p.parent.relative_to(local)) for p in local.rglob("cfg.json"))
            raise ConfigError(f"sae.id_template: {sae_id!r} (for {hook.name}, width {width}) is not under {str(local)!r}; it has {available[:10]}")
        return release, sae_id
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        close = sorted(r for r in directory if release.split("-")[0] in r)[:8]
        raise ConfigError(f"sae.release: {release!r} (site {hook.site}) is neither a local directory nor a sae-lens release; similar: {close}")
    ids = directory[release].saes_map
    if sae_id not in ids:
        layer_ids = sorted(i for i in ids if f"_{hook.layer}/" in i or f".{hook.layer}." in i)[:10]
        raise ConfigError(f"sae.id_template: {sae_id!r} (for {hook.name}, width {width}) is not in release {release!r}; ids at this layer: {layer_ids}")
    return release, sae_id


def load_pretrained(cfg: SaeSetConfig, hook: Hook, width: int, d_in: int, device: str = "cpu") -> SAE:
    release, sae_id = validate_pretrained(cfg, hook, width)
    if Path(release).expanduser().is_dir():
        sae = SAE.load_from_disk(Path(release).expanduser() / sae_id, device=device)
    else:
        sae = SAE.from_pretrained(release, sae_id, device=device)
    check_sae_fits(sae, d_in, width, f"sae.release[{hook.site}] / sae.id_template ({release}: {sae_id})")
    return sae

