"""DVC stage `probes` (one per SAE): linear error, nonlinear error and error-norm probes (test R^2),
from the activations and the SAE's stored outputs (numpy only)."""

from dataclasses import asdict
from pathlib import Path

from pipeline.activation_store import open_store, store_path
from pipeline.norm_baselines import RowFeatures
from pipeline.params_check import load_checked_params
from pipeline.probes import fit_component_norm_probes, fit_error_probes, score_error_probes
from pipeline.row_split import RowSplit
from pipeline.sae_output_store import SaeOutputs
from stages.common import per_sae_arguments, run_and_exit, stage, write_json


def main() -> None:
    args = per_sae_arguments(__doc__, extra=(("--sae-outputs", Path), ("--tokens", Path), ("--lm-loss", Path)), sae=False)
    store = store_path(args.activations, args.hook)
    reads = ["params.yaml:probes", str(store), str(args.sae_outputs), str(args.tokens), str(args.lm_loss)]
    with stage("probes", reads=reads, writes=[str(args.out), str(args.metrics)]):
        cfg = load_checked_params().probes
        acts = open_store(store)
        outputs = SaeOutputs(args.sae_outputs)
        outputs.check_rows(RowSplit.of(acts))
        rows = RowFeatures.open(args.tokens, args.lm_loss, acts.shape[0])
        fit, baselines = fit_error_probes(outputs, acts, rows, cfg)
        norms_fit = fit_component_norm_probes(outputs, acts, fit, cfg)
        metrics = score_error_probes(outputs, acts, fit, norms_fit, rows, baselines, args.out, cfg)
        write_json(args.metrics, asdict(metrics))
        print(f"probes {args.sae_outputs.stem}: error R2 {metrics.error_vector_r2:.3f} (dims {metrics.error_vector_r2_dims:.3f}), "
              f"norm R2 {metrics.error_norm_r2:.3f}, FVU {metrics.sae_fvu:.4f} -> nonlinear {metrics.nonlinear_fvu:.4f}")


if __name__ == "__main__":
    run_and_exit(main)
