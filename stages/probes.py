"""DVC stage `probes` (one per SAE): linear error, nonlinear error and error-norm probes (test R^2)."""

from dataclasses import asdict
from pathlib import Path

from pipeline.activation_store import open_store
from pipeline.harvest import store_path
from pipeline.models import resolve_device
from pipeline.norm_baselines import RowFeatures
from pipeline.params_check import load_checked_params
from pipeline.probes import fit_component_norm_probes, fit_error_probes, score_error_probes
from pipeline.saes import check_sae_fits, load_sae
from stages.common import per_sae_arguments, stage, write_json


def main() -> None:
    args = per_sae_arguments(__doc__, extra=(("--tokens", Path), ("--lm-loss", Path)))
    store = store_path(args.activations, args.hook)
    reads = ["params.yaml:probes", str(store), str(args.sae), str(args.tokens), str(args.lm_loss)]
    with stage("probes", reads=reads, writes=[str(args.out), str(args.metrics)]):
        cfg = load_checked_params().probes
        acts = open_store(store)
        sae = load_sae(args.sae, device=str(resolve_device(cfg.device, "probes.device")))
        check_sae_fits(sae, acts.shape[1], None, f"--sae {args.sae}")
        rows = RowFeatures.open(args.tokens, args.lm_loss, acts.shape[0])
        fit, baselines = fit_error_probes(sae, acts, rows, cfg)
        norms_fit = fit_component_norm_probes(sae, acts, fit, cfg)
        metrics = score_error_probes(sae, acts, fit, norms_fit, rows, baselines, args.out, cfg)
        write_json(args.metrics, asdict(metrics))
        print(f"probes {args.sae.name}: error R2 {metrics.error_vector_r2:.3f} (dims {metrics.error_vector_r2_dims:.3f}), "
              f"norm R2 {metrics.error_norm_r2:.3f}, FVU {metrics.sae_fvu:.4f} -> nonlinear {metrics.nonlinear_fvu:.4f}")


if __name__ == "__main__":
    main()
