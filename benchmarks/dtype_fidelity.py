"""What the fast dtypes cost in fidelity: bfloat16 compute and float16 storage against float32.

    python benchmarks/dtype_fidelity.py [--contexts 32]

Needs the `model` and `tokens` outputs (`dvc repro tokens`). For each hook, prints the median
per-token relative error ||a - a_ref|| / ||a_ref|| and the error as a fraction of the
activations' variance (the FVU it would add to any reconstruction measured against it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harvest_throughput import subset_token_store  # noqa: E402
from pipeline.activation_store import open_store, store_path  # noqa: E402
from pipeline.config import HarvestConfig, LmConfig  # noqa: E402
from pipeline.harvest import harvest  # noqa: E402
from pipeline.tokens import TokenStore  # noqa: E402

HOOKS = [
    "blocks.3.hook_resid_post",
    "blocks.15.hook_resid_post",
    "blocks.15.hook_mlp_out",
    "blocks.15.attn.hook_z",
    "blocks.22.hook_resid_post",
]
SETTINGS = [("float32", "float32"), ("bfloat16", "float32"), ("float32", "float16")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("artifacts/model"))
    parser.add_argument("--tokens", type=Path, default=Path("artifacts/tokens.zarr"))
    parser.add_argument("--contexts", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokens = subset_token_store(TokenStore.open(args.tokens), args.contexts, work / "tokens.zarr")
        acts = {}
        for compute, store in SETTINGS:
            out = work / f"{compute}-{store}"
            cfg = HarvestConfig(hooks=HOOKS, store_dtype=store)
            harvest(args.model, tokens.path, out, cfg, LmConfig(compute_dtype=compute, device="cpu"), scratch=work / "scratch", progress=False)
            acts[compute, store] = {h: open_store(store_path(out, h))[:].astype(np.float64) for h in HOOKS}
        reference = acts[SETTINGS[0]]
        print(f"{tokens.n_rows} tokens; error against float32 compute + float32 storage")
        for setting in SETTINGS[1:]:
            for hook in HOOKS:
                ref, other = reference[hook], acts[setting][hook]
                relative = np.linalg.norm(other - ref, axis=1) / np.linalg.norm(ref, axis=1)
                fvu = ((other - ref) ** 2).sum() / ((ref - ref.mean(0)) ** 2).sum()
                print(
                    f"  compute {setting[0]:8s} store {setting[1]:7s} {hook:28s} median relative error {np.median(relative):.1e}"
                    f"   error / variance {fvu:.1e}"
                )


if __name__ == "__main__":
    main()
