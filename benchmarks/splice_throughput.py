"""The intervention engine (prefix cached once per batch, only the suffix re-run per intervention)
against the naive design (a full forward pass per intervention), same run, same replacements.

    python benchmarks/splice_throughput.py [--hook blocks.15.hook_resid_post] [--contexts 16] [--batch 4] [--draws 4]

Needs `artifacts/model` and `artifacts/tokens.zarr` (`dvc repro tokens`). For each batch it
runs the clean pass and then what the `interventions` stage runs per batch: the 9
interventions and `--draws` extra epsilon_random draws (for the z-scores). Prints token x
interventions per second of both designs, the ratio, and the largest KL difference between them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import Hook  # noqa: E402
from pipeline.replacements import INTERVENTIONS, ActivationStats, replacement  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.splice import PrefixCache, splice_naive, token_kl_and_ce  # noqa: E402
from pipeline.tokens import TokenStore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hook", default="blocks.15.hook_resid_post")
    parser.add_argument("--contexts", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--draws", type=int, default=4, help="extra epsilon_random draws per batch")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model("artifacts/model", "float32", "cpu")
    tokens = TokenStore.open("artifacts/tokens.zarr")
    contexts = torch.from_numpy(tokens.contexts[tokens.n_train_contexts : tokens.n_train_contexts + args.contexts]).long()
    hook = Hook.parse(args.hook, "--hook")
    cache = PrefixCache(model, hook)
    timings = {"engine": 0.0, "naive": 0.0}
    worst = 0.0
    for start in range(0, len(contexts), args.batch):
        ids = contexts[start : start + args.batch]
        began = time.perf_counter()
        cache.run(ids)
        timings["engine"] += time.perf_counter() - began
        x = cache.activation
        x_hat = x + 0.3 * x.norm(dim=-1, keepdim=True) * torch.randn_like(x) / x.shape[-1] ** 0.5  # a stand-in reconstruction
        stats = ActivationStats(mean=x.mean((0, 1)), cov_factor=torch.eye(x.shape[-1]))
        generator = torch.Generator().manual_seed(start)
        names = [*INTERVENTIONS, *["epsilon_random"] * args.draws]
        reps = [replacement(name, x, x_hat, stats, generator) for name in names]
        began = time.perf_counter()
        fast = [token_kl_and_ce(cache.clean_logprobs, cache.splice(r), ids)[0] for r in reps]
        timings["engine"] += time.perf_counter() - began
        began = time.perf_counter()
        clean = torch.log_softmax(model(input_ids=ids, use_cache=False).logits.float(), dim=-1)
        slow = [token_kl_and_ce(clean, splice_naive(model, hook, ids, r), ids)[0] for r in reps]
        timings["naive"] += time.perf_counter() - began
        worst = max(worst, max(float((a - b).abs().max()) for a, b in zip(fast, slow)))
    work = contexts.numel() * (len(INTERVENTIONS) + args.draws)
    print(f"hook {args.hook}, {len(contexts)} contexts x {contexts.shape[1]} tokens, {len(INTERVENTIONS)} interventions "
          f"+ {args.draws} epsilon_random draws, batch {args.batch}")
    for name, seconds in timings.items():
        print(f"  {name:6s} {seconds:7.2f} s  {work / seconds:9.0f} token-interventions/s")
    print(f"  engine / naive speed-up: {timings['naive'] / timings['engine']:.2f}x; largest KL difference {worst:.2e}")


if __name__ == "__main__":
    main()
