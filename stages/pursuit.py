"""DVC stage `pursuit` (one per SAE in pursuit.hooks x pursuit.widths, docs/science.md, "Gradient pursuit"): re-encode test
tokens by gradient pursuit at each token's encoder L0; FVU, L0 and nonlinear FVU beside the encoder's."""

from pathlib import Path

from pipeline.activation_store import open_store
from pipeline.harvest import store_path
from pipeline.models import resolve_device
from pipeline.params_check import load_checked_params
from pipeline.pursuit import pursuit_metrics
from pipeline.saes import check_sae_fits, load_sae
from stages.common import per_sae_arguments, stage, write_json


def main() -> None:
    args = per_sae_arguments(__doc__, store_out=False)
    store = store_path(args.activations, args.hook)
    with stage("pursuit", reads=["params.yaml:pursuit,probes,sae", str(store), str(args.sae)], writes=[str(args.metrics)]):
        params = load_checked_params()
        cfg, probes = params.pursuit, params.probes
        acts = open_store(store)
        sae = load_sae(args.sae, device=str(resolve_device(cfg.device, "pursuit.device")))
        check_sae_fits(sae, acts.shape[1], None, f"--sae {args.sae}")
        metrics = pursuit_metrics(sae, acts, cfg, probes.bias, probes.ridge)
        write_json(args.metrics, metrics)
        print(f"pursuit {Path(args.sae).name}: FVU {metrics['encoder_fvu']:.4f} -> {metrics['pursuit_fvu']:.4f}, "
              f"nonlinear FVU {metrics['encoder_nonlinear_fvu']:.4f} -> {metrics['pursuit_nonlinear_fvu']:.4f}, "
              f"L0 {metrics['encoder_l0']:.1f} -> {metrics['pursuit_l0']:.1f}, "
              f"pursuit better on {metrics['share_of_tokens_pursuit_better']:.1%} of tokens")


if __name__ == "__main__":
    main()
