"""DVC stage `error_saes` (one per SAE in error_saes.hooks x error_saes.widths, docs/science.md, "SAEs trained on the error components"): train SAEs
of the same architecture, width and k on the linear error, nonlinear error and error of an SAE, and
compare them on test tokens."""

from dataclasses import asdict, fields
from pathlib import Path


from pipeline.activation_store import open_store, store_path
from pipeline.error_saes import COMPONENTS, judge_score, score, write_components
from pipeline.judge import load_judge
from pipeline.models import load_tokenizer
from pipeline.params_check import load_checked_params
from pipeline.plots import new_figure, save
from pipeline.row_split import RowSplit
from pipeline.sae_output_store import SaeOutputs
from pipeline.saes import CurvePoint, save_sae, train_sae
from pipeline.store_integrity import open_checked
from pipeline.tokens import TokenStore
from stages.common import per_sae_arguments, run_and_exit, stage, write_csv, write_json


def draw(curves: dict[str, list[CurvePoint]], metrics: dict, name: str, path: Path) -> Path:
    fig, axes = new_figure(11, 4, ncols=2)
    for component, curve in curves.items():
        axes[0].plot([p.tokens for p in curve], [p.explained_variance for p in curve], label=component)
    axes[0].set_xlabel("training samples")
    axes[0].set_ylabel("explained variance of the batch")
    axes[0].set_title("learning curves", fontsize=9)
    axes[0].legend(fontsize=8)
    axes[1].bar(list(metrics), [metrics[c]["fvu"] for c in metrics], color=["C0", "C1", "C2"])
    axes[1].set_ylabel("FVU on test tokens of its own target")
    axes[1].set_title("equal width and L0", fontsize=9)
    fig.suptitle(f"SAEs trained on the error components of {name}", fontsize=10)
    return save(fig, path)


def main() -> None:
    extra = (("--sae-outputs", Path), ("--probes", Path), ("--model", Path), ("--tokens", Path), ("--curves", Path), ("--figure", Path))
    args = per_sae_arguments(__doc__, extra=extra, sae=False)
    store = store_path(args.activations, args.hook)
    reads = ["params.yaml:error_saes,sae,train_sae", str(store), str(args.sae_outputs), str(args.probes)]
    with stage("error_saes", reads=reads, writes=[str(args.out), str(args.metrics), str(args.curves), str(args.figure)]):
        params = load_checked_params()
        cfg, sae_set, train = params.error_saes, params.sae, params.train_sae
        acts = open_store(store)
        outputs = SaeOutputs(args.sae_outputs)
        outputs.check_rows(RowSplit.of(acts))
        d_sae, name = outputs.d_sae, args.sae_outputs.stem
        probes = open_checked(args.probes)
        args.out.mkdir(parents=True, exist_ok=True)
        group = write_components(outputs, acts, probes["probe_weight"][:], probes["probe_bias"][:], args.out / "components.zarr", cfg.block_rows)
        n_fit = int(group.attrs["n_fit_rows"])
        judge = load_judge(cfg.judge) if cfg.judge else None
        if judge:
            tokens, tokenizer = TokenStore.open(args.tokens), load_tokenizer(args.model)
        results, curves = {}, {}
        for component in COMPONENTS:
            metadata = {"hook_name": f"{args.hook}:{component}_of_{name}"}
            trained, curves[component] = train_sae(group[component], n_fit, d_sae, sae_set, train, metadata)
            save_sae(trained, args.out / component)
            results[component] = asdict(score(trained, group[component], n_fit, cfg.block_rows))
            if judge:
                results[component]["judge_score"] = judge_score(
                    trained, group[component], n_fit, int(group.attrs["first_store_row"]), tokens.contexts, tokens.mask,
                    tokenizer.decode, judge, cfg,
                )
            print(f"error_saes {name} {component}: FVU {results[component]['fvu']:.4f}, "
                  f"L0 {results[component]['l0']:.1f}, dead {results[component]['dead_fraction']:.1%}")
        header = [f.name for f in fields(CurvePoint)]
        for component, curve in curves.items():
            write_csv(args.curves / f"{component}.csv", header, ([getattr(p, h) for h in header] for p in curve))
        write_json(args.metrics, {f"fvu_on_{c}": results[c]["fvu"] for c in COMPONENTS} | {"by_component": results})
        draw(curves, results, name, args.figure)


if __name__ == "__main__":
    run_and_exit(main)
