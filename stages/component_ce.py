"""DVC stage `component_ce` (docs/science.md, "Downstream loss of the components"): % CE recovered by adding back the linear / nonlinear error,
beside the % variance each restores and its share of the error norm."""

import argparse
from pathlib import Path


from pipeline.component_ce import component_ce
from pipeline.config import Hook
from pipeline.devices import resolve_device
from pipeline.models import load_model
from pipeline.params_check import load_checked_params
from pipeline.plots import grouped_bars
from pipeline.sae_config import sae_name
from pipeline.sae_inference import load_sae
from pipeline.store_integrity import open_checked
from pipeline.tokens import TokenStore
from stages.common import run_and_exit, stage, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for option in ("--model", "--tokens", "--saes", "--probes", "--metrics", "--figure"):
        parser.add_argument(option, type=Path, required=True)
    args = parser.parse_args()
    reads = ["params.yaml:component_ce,lm", str(args.model), str(args.tokens), str(args.saes), str(args.probes)]
    with stage("component_ce", reads=reads, writes=[str(args.metrics), str(args.figure)]):
        params = load_checked_params()
        cfg = params.component_ce
        device = str(resolve_device(params.lm.device, "lm.device"))
        model = load_model(args.model, params.lm.compute_dtype, device)
        tokens = TokenStore.open(args.tokens)
        test_contexts = tokens.split.test_contexts(cfg.n_contexts)
        results = {}
        for hook in cfg.hooks:
            for width in cfg.widths:
                name = sae_name(hook, width)
                probes = open_checked(args.probes / f"{name}.zarr")
                results[name] = r = component_ce(
                    model, load_sae(args.saes / name, device=device), Hook.parse(hook, "component_ce.hooks"),
                    probes["probe_weight"][:], probes["probe_bias"][:], tokens.contexts[test_contexts], tokens.mask[test_contexts],
                    cfg.batch_size,
                )
                print(f"component_ce {name}: CE recovered linear {r['ce_recovered_linear_error']:.1f}% / nonlinear {r['ce_recovered_nonlinear_error']:.1f}%; "
                      f"variance {r['variance_recovered_linear_error']:.1f}% / {r['variance_recovered_nonlinear_error']:.1f}%; "
                      f"error norm {r['error_norm_share_linear_error']:.1f}% / {r['error_norm_share_nonlinear_error']:.1f}%")
        write_json(args.metrics, results)
        bars = {}
        for name, r in results.items():
            for part in ("linear_error", "nonlinear_error"):
                bars[f"{name} + {'ê' if part == 'linear_error' else 'n'}"] = {
                    "% CE recovered": r[f"ce_recovered_{part}"],
                    "% variance recovered": r[f"variance_recovered_{part}"],
                    "% of error norm": r[f"error_norm_share_{part}"],
                }
        grouped_bars(bars, "Adding back one error component to x̂", "percent", args.figure)


if __name__ == "__main__":
    run_and_exit(main)
