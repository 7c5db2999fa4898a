"""What a run will cost before you start it: tokens/s, disk, memory and device-hours per stage for
`scale=default` and `scale=paper` (or any other composed config).

    python benchmarks/cost_model.py [--scale default paper] [--gpu-tflops 60] [--measured benchmarks/measured_costs.json]

Each stage's work is counted in FLOPs from the composed configuration (tokens, hooks, widths,
the model's shape). The CPU column divides by the FLOP rates that the benchmarks measured on this
project's CPU (`benchmarks/measured_costs.json`: tokens/s in a known setting, converted to FLOP/s
with the same formulas), so it is a measurement extrapolated by FLOPs. The GPU column divides by
`--gpu-tflops` (an assumption, stated in the output: no GPU was measured for it) and, for the
memory-bound gradient pursuit, by a tenth of it. Disk and memory follow from array shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import Hook  # noqa: E402
from pipeline.logprobs import CHUNK_ELEMENTS  # noqa: E402
from pipeline.sae_config import SaeSetConfig  # noqa: E402


@dataclass(frozen=True)
class Shape:
    """A decoder-only transformer, from its HF config."""

    d: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied_embeddings: bool

    def layer_params(self) -> int:
        attention = self.d * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return attention + 3 * self.d * self.intermediate

    def params(self) -> int:
        return self.layers * self.layer_params() + (1 if self.tied_embeddings else 2) * self.vocab * self.d

    def forward_flops(self, layers: int, context: int, unembed: bool) -> float:
        """FLOPs per token of `layers` blocks (weights + attention over half the context on average)."""
        per_layer = 2 * self.layer_params() + 4 * (context / 2) * self.heads * self.head_dim
        return layers * per_layer + (2 * self.d * self.vocab if unembed else 0)


# From each model's config.json (hidden_size, num_hidden_layers, intermediate_size, vocab_size,
# num_attention_heads, num_key_value_heads, head_dim).
SHAPES = {
    "smollm2_135m": Shape(576, 30, 1536, 49152, 9, 3, 64, True),
    "gpt2": Shape(768, 12, 3072 * 2 // 3, 50257, 12, 12, 64, True),  # GELU MLP of 2 matrices ~ 3 of 2/3 the size
    "gemma2_2b": Shape(2304, 26, 9216, 256000, 8, 4, 256, True),
    "gemma3_270m": Shape(640, 18, 2048, 262144, 4, 1, 256, True),
    "llama31_8b": Shape(4096, 32, 14336, 128256, 32, 8, 128, False),
}


def compose(scale: str, overrides: list[str]) -> OmegaConf:
    from dvc.utils.hydra import compose_and_dump

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        compose_and_dump(str(out), str(ROOT / "conf"), None, "config", str(ROOT), [f"scale={scale}", *overrides])
        return OmegaConf.load(out)


def measured_rates(measured: dict) -> dict[str, float]:
    """FLOP/s of each kind of work, from the benchmarks' tokens/s in their own setting."""
    f, t, i = measured["forward"], measured["sae_train"], measured["sae_inference"]
    n, s, p = measured["normal_equations"], measured["splice"], measured["pursuit"]
    bench_model = SHAPES[f["model"]]
    return {
        "forward": f["tokens_per_s"] * bench_model.forward_flops(f["layers_run"], f["context_length"], False),
        "sae": (t["tokens_per_s"] * 12 * t["d"] * t["width"] + i["tokens_per_s"] * 4 * i["d"] * i["width"]) / 2,
        "lstsq": n["rows_per_s"] * lstsq_flops_per_row(n["d"], n["targets"]),
        "splice": s["token_interventions_per_s"] * SHAPES[s["model"]].forward_flops(s["layers_run"], s["context_length"], True),
        "pursuit": p["tokens_per_s"] * pursuit_flops_per_token(p["d"], p["width"], p["l0"]),
    }


def lstsq_flops_per_row(d: int, targets: int) -> float:
    return d * d + 2 * d * targets + 2 * d * targets  # X'X (symmetric), X'Y, scoring


def pursuit_flops_per_token(d: int, width: int, l0: int) -> float:
    return l0 * (2 * d * width + 4 * d * l0)


@dataclass
class StageCost:
    name: str
    kind: str  # which measured rate applies
    flops: float
    tokens: float  # tokens the stage processes (for tokens/s)
    disk_bytes: float
    memory_bytes: float


def stage_costs(params, pretrained_l0: int) -> list[StageCost]:
    shape = SHAPES[params.model.name]
    tok, harvest = params.tokens, params.harvest
    sae = SaeSetConfig(**OmegaConf.to_container(params.sae))
    context = tok.context_length
    all_tokens = tok.n_contexts * context
    scored = tok.n_contexts * (context - tok.skip_positions)
    test = scored * tok.test_fraction
    fit = (scored - test) * (1 - tok.sae_fraction)
    store_bytes = 2 if harvest.store_dtype in ("float16", "bfloat16") else 4
    hooks = [Hook.parse(h, "harvest.hooks") for h in harvest.hooks]
    d_of = {h.name: (shape.heads * shape.head_dim if h.site == "attn_z" else shape.d) for h in hooks}
    deepest = max(h.layer for h in hooks) + 1
    model_bytes = shape.params() * 4
    batch_bytes = params.lm.batch_size * context * shape.d * 4 * 8  # activations alive in one forward pass
    saes = sae.pairs() + [(h, w) for h, w, _ in sae.k_grid()]

    def logits_bytes(batch: int) -> float:  # one float32 (B, T, V) tensor
        return batch * context * shape.vocab * 4

    chunk_bytes = 3 * 4 * CHUNK_ELEMENTS  # pipeline.logprobs: one chunk of positions' float32 log-probs, with temporaries
    l0 = sae.k if sae.source == "train" else pretrained_l0

    def sae_bytes(hook, width):
        return 2 * d_of[hook] * width * 4

    costs = [
        StageCost("harvest", "forward", all_tokens * shape.forward_flops(deepest, context, False), all_tokens,
                  scored * sum(d_of.values()) * store_bytes, model_bytes + batch_bytes),
        StageCost("lm_loss", "forward", all_tokens * (1 - (1 - tok.test_fraction) * tok.sae_fraction)
                  * shape.forward_flops(shape.layers, context, True), all_tokens, scored * 8,
                  model_bytes + batch_bytes + logits_bytes(params.lm.batch_size) + chunk_bytes),
    ]
    train_flops = sum(params.train_sae.tokens * 12 * d_of[h] * w for h, w in saes) if sae.source == "train" else 0
    costs.append(StageCost("train_sae", "sae", train_flops, params.train_sae.tokens * len(saes) if train_flops else 0,
                           sum(sae_bytes(h, w) for h, w in saes), max(sae_bytes(h, w) for h, w in saes) * 4))
    # sae_outputs encodes the fit and test rows once; the analyses read its x_hat, L0 and ||e||.
    costs.append(StageCost("sae_outputs", "sae", sum((fit + test) * 4 * d_of[h] * w for h, w in saes), (fit + test) * len(saes),
                           sum((fit + test) * (d_of[h] * 4 + 8) for h, _ in saes), max(sae_bytes(h, w) for h, w in saes)))
    costs.append(StageCost("probes", "lstsq", sum((fit + test) * 2 * lstsq_flops_per_row(d_of[h], d_of[h]) for h, _ in saes),
                           (fit + test) * len(saes), sum(test * 2 * d_of[h] * 4 for h, _ in saes),
                           max(8 * (d_of[h] + 1) ** 2 * 3 for h, _ in saes)))
    inter = params.interventions
    # spliced passes per batch (pipeline/interventions.py): every replacement but epsilon_random, its
    # n_draws draws, 1 + n_draws per further position setting, and the single-position mode's.
    n_inter = (8 + inter.n_draws + (1 + inter.n_draws) * (len(inter.positions) - 1)
               + (1 + inter.single_position_draws if inter.single_position is not None else 0))
    splice_tokens = inter.n_contexts * context
    costs.append(StageCost("interventions", "splice", sum(
        splice_tokens * (n_inter * shape.forward_flops(shape.layers - Hook.parse(h, "").layer, context, True)
                         + shape.forward_flops(shape.layers, context, True)) for h in inter.hooks for _ in inter.widths),
        splice_tokens * n_inter * len(inter.hooks) * len(inter.widths), 0,
        # the clean log-probs and one spliced pass's logits, beside the cached prefix
        model_bytes + batch_bytes + 2 * logits_bytes(inter.batch_size) + chunk_bytes))
    purs = params.pursuit
    pursued = (min(test, purs.test_rows) if purs.test_rows else test) + min(fit, purs.fit_rows)
    costs.append(StageCost("pursuit", "pursuit", sum(pursued * pursuit_flops_per_token(d_of[h], w, l0) for h in purs.hooks for w in purs.widths),
                           pursued * len(purs.hooks) * len(purs.widths), 0, max([sae_bytes(h, w) for h in purs.hooks for w in purs.widths] or [0])))
    err = params.error_saes
    costs.append(StageCost("error_saes", "sae", sum(3 * params.train_sae.tokens * 12 * d_of[h] * w for h in err.hooks for w in err.widths),
                           3 * params.train_sae.tokens * len(err.hooks) * len(err.widths),
                           sum((fit + test) * 3 * d_of[h] * 4 + 3 * sae_bytes(h, w) for h in err.hooks for w in err.widths),
                           max([sae_bytes(h, w) * 4 for h in err.hooks for w in err.widths] or [0])))
    costs.append(StageCost("model checkpoint", "forward", 0, 0, model_bytes, model_bytes))
    return costs


def human(n: float, unit: str) -> str:
    for prefix in ("", "K", "M", "G", "T", "P"):
        if abs(n) < 1000:
            return f"{n:.3g} {prefix}{unit}"
        n /= 1000
    return f"{n:.3g} E{unit}"


def tokens_per_s(cost: StageCost, seconds: float) -> str:
    return f"{cost.tokens / seconds:10,.0f}" if seconds > 0 and cost.tokens else f"{'':>10s}"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def report(scale: str, params, rates: dict[str, float], gpu_flops: float, pretrained_l0: int) -> None:
    costs = stage_costs(params, pretrained_l0)
    print(f"\n== scale={scale}: {params.model.name}, {params.tokens.n_contexts} x {params.tokens.context_length} tokens, "
          f"{len(params.harvest.hooks)} hooks, {len(SaeSetConfig(**OmegaConf.to_container(params.sae)).names())} SAEs ({params.sae.source})")
    print(f"{'stage':18s} {'work':>10s} {'CPU time':>10s} {'CPU tok/s':>10s} {'GPU time':>10s} {'GPU tok/s':>10s} {'disk':>10s} {'peak memory':>12s}")
    cpu_total = gpu_total = disk_total = peak = 0.0
    for c in costs:
        cpu_s = c.flops / rates[c.kind]
        gpu_s = c.flops / (gpu_flops / 10 if c.kind == "pursuit" else gpu_flops)
        cpu_total, gpu_total, disk_total, peak = cpu_total + cpu_s, gpu_total + gpu_s, disk_total + c.disk_bytes, max(peak, c.memory_bytes)
        print(f"{c.name:18s} {human(c.flops, 'FLOP'):>10s} {duration(cpu_s):>10s} {tokens_per_s(c, cpu_s)} "
              f"{duration(gpu_s):>10s} {tokens_per_s(c, gpu_s)} "
              f"{human(c.disk_bytes, 'B'):>10s} {human(c.memory_bytes, 'B'):>12s}")
    print(f"{'total':18s} {'':>10s} {duration(cpu_total):>10s} {'':>10s} {duration(gpu_total):>10s} {'':>10s} {human(disk_total, 'B'):>10s} "
          f"{human(peak, 'B'):>12s}")
    print(f"GPU-hours: {gpu_total / 3600:.2f} (one GPU); plus start-up and DVC's bookkeeping on either device: a median "
          "of 1.8 s per stage, 4-6 s for the stages that import sae-lens (benchmarks/dag_overhead.py, default scale).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", nargs="+", default=["default", "paper"])
    parser.add_argument("--override", nargs="*", default=[], help="more Hydra overrides, as for dvc exp run -S")
    parser.add_argument("--measured", type=Path, default=ROOT / "benchmarks" / "measured_costs.json")
    parser.add_argument("--gpu-tflops", type=float, default=60.0, help="ASSUMED effective TFLOP/s of one GPU (not measured)")
    parser.add_argument("--pretrained-l0", type=int, default=80, help="L0 assumed for pretrained SAEs (pursuit cost)")
    args = parser.parse_args()
    measured = json.loads(args.measured.read_text())
    rates = measured_rates(measured)
    print(f"Measured on {measured['device']} ({args.measured.name}): "
          + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in rates.items()))
    print(f"GPU: ASSUMED {args.gpu_tflops:.0f} TFLOP/s effective (pursuit a tenth of it); no GPU was measured for this table.")
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    for scale in args.scale:
        report(scale, compose(scale, args.override), rates, args.gpu_tflops * 1e12, args.pretrained_l0)


if __name__ == "__main__":
    main()
