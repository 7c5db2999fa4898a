"""SAE training and sae_outputs throughput against bare torch loops of the same architecture, same run.

    python benchmarks/sae_throughput.py [--hook blocks.15.hook_resid_post] [--width 2304] [--k 32]

Needs a harvested store (`dvc repro harvest`). Prints tokens/s of:
  train    pipeline.saes.train_sae: sae-lens TopK SAE + SAETrainer, batches streamed from Zarr;
  bare     the same TopK SAE written plainly (sae-lens's decoder-norm rescaling and AuxK loss, MSE,
           Adam, gradient clipping at 1) on in-memory batches;
  outputs  pipeline.sae_outputs.write_sae_outputs: the default run's SAE of that hook and width
           (or the one just trained), loaded by pipeline.sae_inference, over the fit and test rows,
           read from and written to Zarr;
  bare     the same encode/decode over the same rows held in memory, nothing written;
and the ratios pipeline / bare.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.activation_store import open_store, store_path  # noqa: E402
from pipeline.row_split import RowSplit  # noqa: E402
from pipeline.sae_config import SaeSetConfig, TrainSaeConfig  # noqa: E402
from pipeline.sae_inference import encode_decode, load_sae  # noqa: E402
from pipeline.sae_outputs import write_sae_outputs  # noqa: E402


class BareTopK(torch.nn.Module):
    """The TopK SAE sae-lens trains (TopKTrainingSAEConfig defaults), written plainly: activations
    scaled by the decoder row norms before the top-k and divided by them before decoding, and the
    AuxK loss (the top d_in / 2 dead latents reconstruct the residual)."""

    def __init__(self, d: int, width: int, k: int):
        super().__init__()
        self.k = k
        self.W_enc = torch.nn.Parameter(torch.randn(d, width) / d**0.5)
        self.b_enc = torch.nn.Parameter(torch.zeros(width))
        self.W_dec = torch.nn.Parameter(self.W_enc.detach().T.clone())
        self.b_dec = torch.nn.Parameter(torch.zeros(d))

    def loss(self, x: torch.Tensor, dead: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        norms = self.W_dec.norm(dim=-1)
        pre = ((x - self.b_dec) @ self.W_enc + self.b_enc) * norms
        top = pre.topk(self.k, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        x_hat = (acts / norms) @ self.W_dec + self.b_dec
        loss = (x_hat - x).pow(2).sum(-1).mean()
        n_dead = int(dead.sum())
        if n_dead:
            k_aux = min(x.shape[1] // 2, n_dead)
            aux = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1)
            aux_acts = torch.zeros_like(pre).scatter(-1, aux.indices, aux.values.relu())
            residual = (x - x_hat).detach()
            aux_loss = ((aux_acts / norms) @ self.W_dec - residual).pow(2).sum(-1).mean()
            loss = loss + min(n_dead / (x.shape[1] // 2), 1.0) * aux_loss
        return loss, acts


def bare_training(x: torch.Tensor, width: int, k: int, steps: int, batch: int, dead_window: int) -> float:
    """Adam with gradient clipping at 1 (as sae-lens's trainer), on in-memory batches."""
    torch.manual_seed(0)
    sae = BareTopK(x.shape[1], width, k)
    optimizer = torch.optim.Adam(sae.parameters(), lr=2e-3)
    since_fired = torch.zeros(width)
    started = time.perf_counter()
    for _ in range(steps):
        xb = x[torch.randint(0, len(x), (batch,))]
        loss, acts = sae.loss(xb, since_fired > dead_window)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        since_fired += 1
        since_fired[(acts > 0).any(0)] = 0
    return steps * batch / (time.perf_counter() - started)


def bare_outputs(sae, x: torch.Tensor, block: int) -> float:
    started = time.perf_counter()
    for first in range(0, len(x), block):
        encode_decode(sae, x[first : first + block])
    return len(x) / (time.perf_counter() - started)


def measure_outputs(sae_dir: Path, acts) -> tuple[float, float]:
    """(sae_outputs tokens/s, bare encode/decode tokens/s): alternating, best of 3 each (a few seconds
    apiece, so noise matters)."""
    sae = load_sae(sae_dir)
    rows = torch.from_numpy(np.asarray(acts[RowSplit.of(acts).fit_rows.start :], dtype=np.float32))
    outputs_rates, bare_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(3):
            _, rate = write_sae_outputs(sae, acts, Path(tmp) / f"out-{repeat}.zarr", {}, progress=False)
            outputs_rates.append(rate)
            bare_rates.append(bare_outputs(sae, rows, 4096))
    return max(outputs_rates), max(bare_rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--activations", type=Path, default=Path("artifacts/activations"))
    parser.add_argument("--saes", type=Path, default=Path("artifacts/saes"))
    parser.add_argument("--hook", default="blocks.15.hook_resid_post")
    parser.add_argument("--width", type=int, default=2304)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--outputs-only", type=Path, help=argparse.SUPPRESS)  # the subprocess above: this SAE's outputs only
    args = parser.parse_args()
    if args.outputs_only:
        print(*measure_outputs(args.outputs_only, open_store(store_path(args.activations, args.hook))))
        return
    from pipeline.saes import save_sae, train_sae  # sae-lens: not in the --outputs-only process

    acts = open_store(store_path(args.activations, args.hook))
    n_train = RowSplit.of(acts).sae_train_rows.stop
    cfg = SaeSetConfig(hooks=[args.hook], widths=[args.width], k=args.k)
    train = TrainSaeConfig(tokens=args.steps * args.batch, batch_size=args.batch, device="cpu", log_every=10**9)
    print(
        f"{args.hook}, width {args.width}, k {args.k}, {args.steps} steps of {args.batch}, torch threads {torch.get_num_threads()}"
    )

    # sae_outputs is measured in a process that imports what the stage imports (no sae-lens, no
    # transformers): in this one, after those imports and the training, the bare loop ran 25-40%
    # faster than in the stage's own process, and the pipeline's reader and writer threads did not.
    saved = args.saes / f"{args.hook}-{args.width}"
    outputs_rate = bare_outputs_rate = None
    if (saved / "cfg.json").exists():
        command = [sys.executable, __file__, "--outputs-only", str(saved), "--activations", str(args.activations), "--hook", args.hook]
        outputs_rate, bare_outputs_rate = map(float, subprocess.run(command, check=True, capture_output=True, text=True).stdout.split())

    started = time.perf_counter()
    sae, _ = train_sae(acts, n_train, args.width, cfg, train, {}, progress=False)
    train_rate = train.steps * train.batch_size / (time.perf_counter() - started)
    bare_train_rate = bare_training(torch.from_numpy(acts[:n_train]), args.width, args.k, args.steps, args.batch,
                                    train.dead_feature_window)
    if outputs_rate is None:
        with tempfile.TemporaryDirectory() as tmp:
            save_sae(sae, Path(tmp) / "sae")
            outputs_rate, bare_outputs_rate = measure_outputs(Path(tmp) / "sae", acts)

    rows = [
        ("train_sae (sae-lens, streamed from Zarr)", train_rate, "incl. norm estimate and b_dec init"),
        ("bare torch loop, same TopK SAE and optimiser", bare_train_rate, "in-memory batches"),
        ("sae_outputs (encode/decode + Zarr writes)", outputs_rate, "best of 3"),
        ("bare torch encode/decode, nothing written", bare_outputs_rate, "best of 3"),
    ]
    for name, rate, note in rows:
        print(f"  {name:45s} {rate:9.0f} tokens/s  {note}")
    print(f"  train_sae / bare   = {train_rate / bare_train_rate:.2f}")
    print(f"  sae_outputs / bare = {outputs_rate / bare_outputs_rate:.2f}")


if __name__ == "__main__":
    main()
