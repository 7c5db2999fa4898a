"""DVC stage `lm_loss`: the LM's per-token loss on every scored token (row-aligned with the activation stores)."""

import argparse
from pathlib import Path

from pipeline.params_check import load_checked_params
from pipeline.lm_loss import write_lm_loss
from pipeline.devices import resolve_device
from stages.common import run_and_exit, stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tokens", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with stage("lm_loss", reads=["params.yaml:lm", str(args.model), str(args.tokens)], writes=[str(args.out)]):
        lm = load_checked_params().lm
        write_lm_loss(args.model, args.tokens, args.out, lm.batch_size, str(resolve_device(lm.device, "lm.device")), lm.compute_dtype)


if __name__ == "__main__":
    run_and_exit(main)
