"""DVC stage `sae_outputs` (one per SAE): run the SAE once over the fit and test rows; store x̂, L0
and ||e|| for the analyses, and the SAE's test metrics."""

from pipeline.activation_store import open_store, store_path
from pipeline.devices import resolve_device
from pipeline.params_check import load_checked_params
from pipeline.sae_inference import check_sae_fits, load_sae
from pipeline.sae_outputs import write_sae_outputs
from stages.common import per_sae_arguments, run_and_exit, stage, write_json


def main() -> None:
    args = per_sae_arguments(__doc__)
    store = store_path(args.activations, args.hook)
    with stage("sae_outputs", reads=["params.yaml:sae_outputs", str(store), str(args.sae)], writes=[str(args.out), str(args.metrics)]):
        acts = open_store(store)
        cfg = load_checked_params().sae_outputs
        sae = load_sae(args.sae, device=str(resolve_device(cfg.device, "sae_outputs.device")))
        check_sae_fits(sae, acts.shape[1], None, f"--sae {args.sae}")
        attrs = {"sae": str(args.sae), "hook": args.hook, "d_sae": sae.cfg.d_sae, "token_store_hash": acts.attrs["token_store_hash"]}
        metrics, rate = write_sae_outputs(sae, acts, args.out, attrs, block_rows=cfg.block_rows)
        write_json(args.metrics, metrics.as_dict())
        print(f"sae_outputs {args.sae.name}: FVU {metrics.fvu:.4f}, L0 {metrics.l0:.1f}, dead {metrics.dead_fraction:.1%} "
              f"on {metrics.n_test_tokens} test tokens ({rate:.0f} tokens/s) -> {args.out}")


if __name__ == "__main__":
    run_and_exit(main)
