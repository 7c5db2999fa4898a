"""DVC stage `model`: materialise the configured LM as a local safetensors checkpoint."""

import argparse
from pathlib import Path

from pipeline.params_check import load_checked_params
from pipeline.models import materialise
from stages.common import run_and_exit, stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with stage("model", reads=["params.yaml:model"], writes=[str(args.out)]):
        cfg = load_checked_params().model
        info = materialise(cfg, args.out)
        print(
            f"model {cfg.name}: {info['model_type']}, {info['n_layers']} layers, d_model {info['d_model']}, "
            f"{info['n_parameters'] / 1e6:.1f}M parameters -> {args.out}"
        )


if __name__ == "__main__":
    run_and_exit(main)
