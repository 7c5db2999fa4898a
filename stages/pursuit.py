"""DVC stage `pursuit` (one per SAE in pursuit.hooks x pursuit.widths, docs/science.md, "Gradient pursuit"): re-encode test
tokens by gradient pursuit at each token's encoder L0; FVU, L0 and nonlinear FVU beside the encoder's."""

from pathlib import Path

from pipeline.activation_store import open_store, store_path
from pipeline.devices import resolve_device
from pipeline.params_check import load_checked_params
from pipeline.pursuit import pursuit_metrics
from pipeline.row_split import RowSplit
from pipeline.sae_files import check_fits, read_decoder
from pipeline.sae_inference import read_sae_config
from pipeline.sae_output_store import SaeOutputs
from stages.common import per_sae_arguments, run_and_exit, stage, write_json


def main() -> None:
    args = per_sae_arguments(__doc__, extra=(("--sae-outputs", Path),), store_out=False)
    store = store_path(args.activations, args.hook)
    reads = ["params.yaml:pursuit,probes,sae", str(store), str(args.sae), str(args.sae_outputs)]
    with stage("pursuit", reads=reads, writes=[str(args.metrics)]):
        params = load_checked_params()
        cfg, probes = params.pursuit, params.probes
        acts = open_store(store)
        decoder = read_decoder(args.sae)
        outputs = SaeOutputs(args.sae_outputs)
        outputs.check_rows(RowSplit.of(acts))
        # The widths must agree: the stored encoder outputs must be this SAE's.
        check_fits(decoder[0].shape[1], decoder[0].shape[0], acts.shape[1], outputs.d_sae, f"--sae {args.sae} (--sae-outputs {args.sae_outputs})")
        device = resolve_device(cfg.device, "pursuit.device")
        metrics = pursuit_metrics(decoder, outputs, acts, cfg, probes.bias, probes.ridge, device,
                                  center_input=read_sae_config(args.sae).center_input)
        write_json(args.metrics, metrics)
        print(f"pursuit {Path(args.sae).name}: FVU {metrics['encoder_fvu']:.4f} -> {metrics['pursuit_fvu']:.4f}, "
              f"nonlinear FVU {metrics['encoder_nonlinear_fvu']:.4f} -> {metrics['pursuit_nonlinear_fvu']:.4f}, "
              f"L0 {metrics['encoder_l0']:.1f} -> {metrics['pursuit_l0']:.1f}, "
              f"pursuit better on {metrics['share_of_tokens_pursuit_better']:.1%} of tokens")


if __name__ == "__main__":
    run_and_exit(main)
