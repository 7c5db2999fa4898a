"""DVC stage `synthetic` (docs/science.md, "Synthetic activations"): the synthetic activation model over its grid of planted noise
sizes and masked latents: FVU table, correlations, figure."""

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline.activation_store import open_store, store_path
from pipeline.analysis_config import SyntheticConfig
from pipeline.devices import resolve_device
from pipeline.params_check import load_checked_params
from pipeline.plots import heatmap, new_figure, save
from pipeline.row_split import RowSplit
from pipeline.sae_config import sae_name
from pipeline.sae_inference import check_sae_fits, load_sae
from pipeline.synthetic import correlations, linear_share_of_added_error, run_grid
from stages.common import run_and_exit, shown, stage, write_csv, write_json


def draw(points, cfg: SyntheticConfig, path: Path) -> Path:
    by_key = {(p.activation_noise, p.introduced_noise, p.masked_fraction): p for p in points}
    unmasked = min(cfg.masked_fraction)
    fig, axes = new_figure(14, 4.2, ncols=3)
    for ax, (title, value) in zip(axes[:2], (("linear part: FVU(R) − FVU(R + ê)", "linear_fvu"), ("nonlinear FVU: FVU(R + ê)", "nonlinear_fvu"))):
        grid = np.array([[getattr(by_key[a, r, unmasked], value) for r in cfg.introduced_noise] for a in cfg.activation_noise])
        heatmap(grid, cfg.activation_noise, cfg.introduced_noise, f"{title}, {unmasked:.0%} masked",
                "introduced noise σ_r (× per-dim std of x)", "activation noise σ_a (× per-dim std of x)", "FVU", ax=ax)
    a0, r0 = min(cfg.activation_noise), min(cfg.introduced_noise)
    fractions = sorted(cfg.masked_fraction)
    ax = axes[2]
    ax.plot(fractions, [by_key[a0, r0, m].fvu for m in fractions], "o-", label="FVU(R)")
    ax.plot(fractions, [by_key[a0, r0, m].nonlinear_fvu for m in fractions], "s-", label="nonlinear FVU")
    ax.set_xlabel("share of latents masked (lowest mean activation)")
    ax.set_ylabel("FVU (test rows)")
    ax.set_title(f"unlearned features, σ_a={a0}, σ_r={r0}", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle(f"Synthetic activations from the {cfg.hook} SAE (width {cfg.width})", fontsize=10)
    return save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for option in ("--activations", "--saes", "--metrics", "--table", "--figure"):
        parser.add_argument(option, type=Path, required=True)
    args = parser.parse_args()
    reads = ["params.yaml:synthetic,sae.hooks,sae.widths", str(args.activations), str(args.saes)]
    with stage("synthetic", reads=reads, writes=[str(args.metrics), str(args.table), str(args.figure)]):
        cfg = load_checked_params().synthetic
        acts = open_store(store_path(args.activations, cfg.hook))
        sae = load_sae(args.saes / sae_name(cfg.hook, cfg.width), device=str(resolve_device(cfg.device, "synthetic.device")))
        check_sae_fits(sae, acts.shape[1], cfg.width, str(args.saes / sae_name(cfg.hook, cfg.width)))
        split = RowSplit.of(acts)
        train = acts[split.fit_rows.start : min(split.fit_rows.start + cfg.train_rows, split.fit_rows.stop)]
        test = acts[split.test_rows.start : min(split.test_rows.start + cfg.test_rows, split.test_rows.stop)]
        points = run_grid(sae, train, test, cfg)

        header = [*asdict(points[0]), "linear_fvu"]
        write_csv(args.table, header, ([*asdict(p).values(), p.linear_fvu] for p in points))
        corr = correlations(points)
        shares = linear_share_of_added_error(points)
        write_json(args.metrics, {**corr, "linear_share_of_added_error": shares, "train_rows": len(train), "test_rows": len(test)})
        draw(points, cfg, args.figure)
        print("synthetic: " + ", ".join(f"{k} {shown(v, 3)}" for k, v in corr.items()))
        print("linear share of the error each source adds: " + ", ".join(f"{k} {shown(v)}" for k, v in shares.items()))


if __name__ == "__main__":
    run_and_exit(main)
