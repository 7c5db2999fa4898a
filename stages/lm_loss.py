"""DVC stage `lm_loss`: the LM's per-token loss on every scored token (row-aligned with the activation stores)."""

import argparse
from pathlib import Path

from pipeline.config import HarvestConfig, load_params, section
from pipeline.lm_loss import write_lm_loss
from pipeline.models import resolve_device
from stages.common import stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tokens", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with stage("lm_loss", reads=["params.yaml:harvest.batch_size,harvest.device", str(args.model), str(args.tokens)], writes=[str(args.out)]):
        cfg = section(load_params(), "harvest", HarvestConfig)
        write_lm_loss(args.model, args.tokens, args.out, cfg.batch_size, str(resolve_device(cfg.device)))


if __name__ == "__main__":
    main()
