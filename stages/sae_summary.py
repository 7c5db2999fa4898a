"""DVC stage `sae_summary`: validate the SAE set and gather every SAE's test metrics into one table."""

import argparse
import json
from pathlib import Path

from pipeline.params_check import load_checked_params
from pipeline.sae_config import sae_name
from stages.common import run_and_exit, stage, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with stage("sae_summary", reads=["params.yaml:sae", str(args.metrics_dir)], writes=[str(args.out)]):
        cfg = load_checked_params().sae
        table = {}
        hooks = {hook.name: hook for hook in cfg.parsed_hooks()}
        for hook_name, width, k in [(h, w, None) for h, w in cfg.pairs()] + cfg.k_grid():
            hook, name = hooks[hook_name], sae_name(hook_name, width, k)
            metrics = json.loads((args.metrics_dir / f"{name}.json").read_text())
            table[name] = {"hook": hook.name, "site": hook.site, "layer": hook.layer, "width": width, "k": k or cfg.k, **metrics}
        write_json(args.out, {"saes": table})
        for name, row in table.items():
            print(f"{name:40s} FVU {row['fvu']:.4f}  L0 {row['l0']:6.1f}  dead {row['dead_fraction']:.1%}")


if __name__ == "__main__":
    run_and_exit(main)
