"""bfloat16 autocast for SAE training and encoding on this machine: speed against float32, and what it
changes in the final test FVU, measured in the same run.

    python benchmarks/sae_bf16.py [--hook blocks.15.hook_resid_post] [--width 2304] [--tokens 150000]

Needs a harvested store (`dvc repro harvest`). Trains the same SAE twice with `pipeline.saes.train_sae`
(params.yaml's `sae` and `train_sae` sections, `train_sae.autocast` off then on), saves each in
sae-lens's format, and encodes the test rows of the float32 SAE in float32 and under bfloat16
autocast. Prints tokens/s, the test FVU of each and the relative changes. The project's rule:
bfloat16 becomes a default only where the FVU moves by less than 1% relative.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.activation_store import open_store, store_path  # noqa: E402
from pipeline.params_check import load_checked_params  # noqa: E402
from pipeline.row_split import RowSplit  # noqa: E402
from pipeline.sae_inference import encode_decode, load_sae  # noqa: E402
from pipeline.sae_output_store import MetricAccumulator  # noqa: E402
from pipeline.saes import save_sae, train_sae  # noqa: E402


def fvu_and_rate(sae, test_rows: np.ndarray, autocast: bool, block: int = 4096) -> tuple[float, float]:
    """(test FVU, tokens/s) of encode/decode over `test_rows`, optionally under bfloat16 autocast."""
    metrics = MetricAccumulator(test_rows.shape[1], sae.cfg.d_sae)
    started = time.perf_counter()
    for first in range(0, len(test_rows), block):
        x = torch.from_numpy(test_rows[first : first + block])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            latents, x_hat = encode_decode(sae, x)
        err = (x - x_hat.float()).numpy()
        metrics.update(x.numpy(), err, (latents != 0).sum(-1).numpy(), (latents != 0).any(0).numpy())
    seconds = time.perf_counter() - started
    return metrics.result().fvu, len(test_rows) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--activations", type=Path, default=Path("artifacts/activations"))
    parser.add_argument("--hook", default="blocks.15.hook_resid_post")
    parser.add_argument("--width", type=int, default=2304)
    parser.add_argument("--tokens", type=int, help="training samples (default: train_sae.tokens)")
    args = parser.parse_args()

    params = load_checked_params()
    acts = open_store(store_path(args.activations, args.hook))
    split = RowSplit.of(acts)
    test_rows = np.asarray(acts[split.test_rows], dtype=np.float32)
    base = dataclasses.replace(params.train_sae, device="cpu", checkpoint_every=0,
                               **({"tokens": args.tokens} if args.tokens else {}))
    print(f"{args.hook}, width {args.width}, {params.sae.architecture} k={params.sae.k}, {base.steps} steps of "
          f"{base.batch_size}, torch threads {torch.get_num_threads()}, bf16 CPU support: {torch.backends.mkldnn.is_available()}")

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for autocast in (False, True):
            train = dataclasses.replace(base, autocast=autocast)
            started = time.perf_counter()
            sae, _ = train_sae(acts, split.sae_train_rows.stop, args.width, params.sae, train, {}, progress=False)
            rate = train.steps * train.batch_size / (time.perf_counter() - started)
            save_sae(sae, Path(tmp) / f"sae-{autocast}")
            results[autocast] = (rate, load_sae(Path(tmp) / f"sae-{autocast}"))

        fp32_rate, fp32_sae = results[False]
        bf16_rate, bf16_sae = results[True]
        fvu_fp32, enc_fp32 = fvu_and_rate(fp32_sae, test_rows, autocast=False)
        fvu_bf16_trained, _ = fvu_and_rate(bf16_sae, test_rows, autocast=False)
        fvu_bf16_encoded, enc_bf16 = fvu_and_rate(fp32_sae, test_rows, autocast=True)

    print(f"  training   float32 {fp32_rate:8.0f} tokens/s   bf16 autocast {bf16_rate:8.0f} tokens/s   "
          f"speed-up {bf16_rate / fp32_rate:.2f}x")
    print(f"             test FVU {fvu_fp32:.5f} -> {fvu_bf16_trained:.5f} "
          f"({(fvu_bf16_trained - fvu_fp32) / fvu_fp32:+.2%} relative)")
    print(f"  encoding   float32 {enc_fp32:8.0f} tokens/s   bf16 autocast {enc_bf16:8.0f} tokens/s   "
          f"speed-up {enc_bf16 / enc_fp32:.2f}x")
    print(f"             test FVU {fvu_fp32:.5f} -> {fvu_bf16_encoded:.5f} "
          f"({(fvu_bf16_encoded - fvu_fp32) / fvu_fp32:+.2%} relative)")


if __name__ == "__main__":
    main()
