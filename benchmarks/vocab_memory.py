"""Peak memory of one `interventions` batch, by vocabulary size: position-chunked log-probs
(pipeline.logprobs) against the whole-tensor float32 computation they replaced, measured in the
same run.

    python benchmarks/vocab_memory.py MODEL_DIR [MODEL_DIR ...] [--batch 8] [--length 128] [--dtype bfloat16]

For each model (a materialised checkpoint: artifacts/model, or a `model` stage's output for
another model) and each implementation, a fresh process loads the model, resets its peak
resident memory (/proc/self/clear_refs), then does what `interventions` does to one batch at the
residual stream of the middle layer: the clean pass and four spliced passes, each scored by KL
and CE. It prints the peak above the loaded model, the size of the logits the model itself
returns (B x T x V in the compute dtype), and the ratio of the two implementations' peaks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
sys.path.insert(0, {root!r})
import torch
from pipeline.config import Hook
from pipeline.models import load_model
from pipeline import splice
from pipeline.splice import PrefixCache, token_kl_and_ce

def rss_mb(field):
    return int([l.split()[1] for l in open("/proc/self/status") if l.startswith(field)][0]) / 1024

def whole_tensor_kl_and_ce(clean_logprobs, logits, ids):  # the implementation before pipeline.logprobs
    other = torch.log_softmax(logits.float(), dim=-1)
    kl = torch.einsum("btv,btv->bt", clean_logprobs.exp(), clean_logprobs - other)
    return kl, -other[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]

model = load_model({model_dir!r}, {dtype!r})
vocab, layers = model.config.vocab_size, model.config.num_hidden_layers
ids = torch.randint(0, vocab, ({batch}, {length}), generator=torch.Generator().manual_seed(0))
cache = PrefixCache(model, Hook("resid_post", layers // 2))
torch.set_grad_enabled(False)
loaded = rss_mb("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
score = token_kl_and_ce
if {implementation!r} == "whole_tensor":
    splice.log_softmax_float32 = lambda logits: torch.log_softmax(logits.float(), dim=-1)
    score = whole_tensor_kl_and_ce
cache.run(ids)
generator = torch.Generator().manual_seed(1)
for _ in range(4):
    noise = torch.randn(cache.activation.shape, generator=generator).to(cache.activation.dtype)
    kl, ce = score(cache.clean_logprobs, cache.splice(cache.activation + noise), ids)
print(json.dumps({{"peak_above_model_mb": rss_mb("VmHWM") - loaded, "vocab": vocab,
                  "logits_mb": {batch} * {length} * vocab * torch.finfo(getattr(torch, {dtype!r})).bits / 8 / 2**20,
                  "kl_mean": kl.mean().item()}}))
"""


def measure(model_dir: Path, implementation: str, batch: int, length: int, dtype: str) -> dict:
    code = CHILD.format(root=str(ROOT), model_dir=str(model_dir), implementation=implementation, batch=batch, length=length, dtype=dtype)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    print(f"one interventions batch of {args.batch} x {args.length} tokens, {args.dtype} compute; peak RSS above the loaded model")
    print(f"{'model':40s} {'vocab':>8s} {'logits':>9s} {'whole-tensor':>13s} {'chunked':>9s} {'ratio':>6s}")
    for model_dir in args.models:
        whole = measure(model_dir, "whole_tensor", args.batch, args.length, args.dtype)
        chunked = measure(model_dir, "chunked", args.batch, args.length, args.dtype)
        assert abs(whole["kl_mean"] - chunked["kl_mean"]) <= 1e-6 * max(1.0, abs(whole["kl_mean"])), (whole, chunked)
        print(f"{str(model_dir):40s} {whole['vocab']:8d} {whole['logits_mb']:7.0f}MB {whole['peak_above_model_mb']:11.0f}MB "
              f"{chunked['peak_above_model_mb']:7.0f}MB {chunked['peak_above_model_mb'] / whole['peak_above_model_mb']:6.2f}")


if __name__ == "__main__":
    main()
