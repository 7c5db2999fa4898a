"""Checkpoints of one SAE's training, so that a killed `train_sae` resumes instead of restarting.

A checkpoint holds everything the next step depends on: the training SAE's weights, the
trainer's state (Adam moments, learning-rate schedule, step and sample counters, firing
statistics, activation scaler; sae-lens's own `save_trainer_state`), torch's RNG state, how
many batches the data stream has handed out, and the training curve so far. Resuming from it
gives the same SAE, bit for bit, as an uninterrupted run.

Checkpoints live outside DVC's outputs (DVC deletes a stage's outputs before rerunning it),
in a folder keyed by everything that determines the run (`run_key`): a checkpoint of another
configuration, store, code, library version or device is never resumed, and is deleted. (On a
GPU, resuming gives the same SAE only as far as its kernels are deterministic.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import zarr

from pipeline.code_deps import code_hash

STATE_FILE = "state.pt"


def store_content(store: zarr.Array) -> str:
    """What the SAE trains on: the chunk manifest (each chunk's size and CRC32, written when a store
    is sealed; pipeline.store_integrity) of the sealed store holding `store`, so a store rewritten
    in place with other data never resumes an old checkpoint. An unsealed store: its path."""
    root = zarr.open(store=store.store_path.store, mode="r")
    manifest = root.attrs.get("chunk_manifest")
    if manifest is None:
        return str(store.store_path)
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def run_key(store: zarr.Array, n_train_rows: int, width: int, cfg, train, metadata: dict, device: str) -> str:
    """What determines the trained SAE: the data, the settings, the code, the libraries and the device."""
    import sae_lens

    settings = {k: v for k, v in asdict(train).items() if k != "checkpoint_every"}
    identity = {
        "versions": [torch.__version__, sae_lens.__version__],
        "device": device,
        "store": store_content(store),
        "n_train_rows": n_train_rows,
        "width": width,
        "sae": asdict(cfg),
        "train": settings,
        "metadata": metadata,
        "code": code_hash("stages.train_sae"),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Checkpoint:
    path: Path
    batches_consumed: int

    def restore(self, trainer) -> list[dict]:
        """Load the state into `trainer` (built as for a fresh run); returns the curve so far."""
        # On the CPU: torch's RNG states must stay CPU byte tensors; load_state_dict copies the
        # weights onto the parameters' device.
        state = torch.load(self.path / STATE_FILE, map_location="cpu", weights_only=False)
        trainer.sae.load_state_dict(state["sae"])
        trainer.load_trainer_state(self.path)
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return state["curve"]


class Checkpoints:
    """The checkpoint folder of one training run: `<root>/<run key>/step-<n>`, only the newest kept."""

    def __init__(self, root: Path, key: str):
        self.root, self.key = Path(root), key
        self.folder = self.root / key
        if self.root.exists():  # checkpoints of another configuration or code
            for other in self.root.iterdir():
                if other.name != key:
                    shutil.rmtree(other, ignore_errors=True)

    def latest(self) -> Checkpoint | None:
        if not self.folder.exists():
            return None
        done = sorted(
            (p for p in self.folder.glob("step-*") if not p.name.endswith(".partial") and (p / "position.json").exists()),
            key=lambda p: int(p.name.removeprefix("step-")),
        )
        for partial in self.folder.glob("*.partial"):
            shutil.rmtree(partial, ignore_errors=True)
        if not done:
            return None
        state = json.loads((done[-1] / "position.json").read_text())
        return Checkpoint(done[-1], int(state["batches_consumed"]))

    def save(self, trainer, batches_consumed: int, curve: list[dict]) -> None:
        """Write step-<n> through a temporary folder, then drop the older ones."""
        final = self.folder / f"step-{trainer.n_training_steps}"
        tmp = final.with_name(final.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.save_trainer_state(tmp)
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        torch.save({"sae": trainer.sae.state_dict(), "torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng, "curve": curve},
                   tmp / STATE_FILE)
        (tmp / "position.json").write_text(json.dumps({"batches_consumed": batches_consumed}))
        os.replace(tmp, final)
        for older in self.folder.glob("step-*"):
            if older != final:
                shutil.rmtree(older, ignore_errors=True)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
