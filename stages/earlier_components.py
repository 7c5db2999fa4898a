"""DVC stage `earlier_components` (docs/science.md, "Earlier components"): test R^2 of predicting the target SAE's e, e_hat and n
from the SAE outputs, activations and errors of earlier components."""

import argparse
from pathlib import Path

from pipeline.earlier_components import TARGETS, fit_and_score, open_inputs
from pipeline.params_check import load_checked_params
from pipeline.plots import grouped_bars
from stages.common import run_and_exit, stage, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for option in ("--activations", "--sae-outputs", "--probes", "--metrics", "--figure"):
        parser.add_argument(option, type=Path, required=True)
    args = parser.parse_args()
    reads = ["params.yaml:earlier_components,sae.hooks,sae.widths", str(args.activations), str(args.sae_outputs), str(args.probes)]
    with stage("earlier_components", reads=reads, writes=[str(args.metrics), str(args.figure)]):
        cfg = load_checked_params().earlier_components
        outputs, stores, target_role, weight, bias = open_inputs(cfg, args.activations, args.sae_outputs, args.probes)
        r2 = fit_and_score(outputs, stores, target_role, weight, bias, cfg)
        write_json(args.metrics, r2)
        title = f"Predicting the error of the {cfg.target} SAE (width {cfg.width}) from earlier components"
        grouped_bars(r2, title, "test R² (1 - FVU)", args.figure)
        for name, values in r2.items():
            print(f"{name:40s} " + "  ".join(f"{t} {values[t]:+.3f}" for t in TARGETS))


if __name__ == "__main__":
    run_and_exit(main)
