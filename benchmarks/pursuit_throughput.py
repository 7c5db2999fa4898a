"""Batched gradient pursuit against the per-token reference loop, same tokens, same run.

    python benchmarks/pursuit_throughput.py [--hook blocks.15.hook_resid_post] [--width 2304] [--tokens 256]

Needs a trained SAE and its activation store (`dvc repro train_sae`). Prints tokens/s of both,
the ratio, and the largest difference between their codes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.activation_store import open_store  # noqa: E402
from pipeline.pursuit import gradient_pursuit, gradient_pursuit_reference  # noqa: E402
from pipeline.sae_inference import load_sae  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hook", default="blocks.15.hook_resid_post")
    parser.add_argument("--width", type=int, default=2304)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    acts = open_store(f"artifacts/activations/{args.hook}.zarr")
    sae = load_sae(f"artifacts/saes/{args.hook}-{args.width}")
    x = torch.from_numpy(acts[int(acts.attrs["n_train_rows"]) :][: args.tokens])
    with torch.no_grad():
        l0 = (sae.encode(x) != 0).sum(-1)
    s, decoder = x - sae.b_dec.detach(), sae.W_dec.detach()
    started = time.perf_counter()
    batched = gradient_pursuit(s, decoder, l0)
    t_batched = time.perf_counter() - started
    started = time.perf_counter()
    reference = [gradient_pursuit_reference(s[i].double().numpy(), decoder.double().numpy(), int(l0[i])) for i in range(len(s))]
    t_reference = time.perf_counter() - started
    diff = np.abs(batched.double().numpy() - np.stack(reference)).max()
    print(f"{args.hook}-{args.width}, {len(s)} tokens, target L0 {float(l0.float().mean()):.1f}")
    print(f"  batched   {len(s) / t_batched:9.1f} tokens/s")
    print(f"  reference {len(s) / t_reference:9.1f} tokens/s (per-token loop, float64)")
    print(f"  speed-up {t_reference / t_batched:.1f}x; largest code difference {diff:.2e} (float32 vs float64)")


if __name__ == "__main__":
    main()
