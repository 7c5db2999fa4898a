"""DVC stage `probes_summary`: figures over all SAEs' probe metrics (docs/science.md, "Dark matter"): error-vector and
error-norm R^2 and nonlinear FVU by width, norm baselines, and component-norm predictability."""

import argparse
import json
from pathlib import Path

import numpy as np

from pipeline.norm_baselines import BASELINES
from pipeline.plots import new_figure, save
from pipeline.published import published_text
from pipeline.probes import COMPONENTS
from pipeline.params_check import load_checked_params
from pipeline.sae_config import sae_name
from stages.common import run_and_exit, stage, write_json


def by_width(table: dict, hooks: list[str], widths: list[int], path: Path) -> Path:
    fig, axes = new_figure(14, 4, ncols=3)
    panels = (
        ("error_vector_r2", "error-vector R² (1 − FVU(e, ê))"),
        ("error_norm_r2", "error-norm R² (‖e‖ from x)"),
        ("nonlinear_fvu", "nonlinear FVU: FVU(x, x̂ + ê)"),
    )
    for ax, (key, label) in zip(axes, panels):
        note = f"published: {published_text(key)}"
        for hook in hooks:
            ax.plot(widths, [table[sae_name(hook, w)][key] for w in widths], "o-", label=hook)
        ax.set_xscale("log")
        ax.set_xlabel("SAE width (latents, log scale)")
        ax.set_ylabel(label)
        ax.set_title(note, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle("Linear predictability of the SAE error, test tokens", fontsize=10)
    return save(fig, path)


def baselines(table: dict, path: Path) -> Path:
    names = list(table)
    fig, ax = new_figure(max(7, 0.45 * len(names)), 4.2)
    series = {"linear probe on x": [table[n]["error_norm_r2"] for n in names]}
    series.update({b: [table[n]["error_norm_baseline_r2"][b] for n in names] for b in BASELINES})
    width = 0.8 / len(series)
    for j, (label, values) in enumerate(series.items()):
        ax.bar(np.arange(len(names)) + (j - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("test R² predicting ‖e‖")
    ax.set_title("Error-norm probe against one-feature baselines", fontsize=10)
    ax.legend(fontsize=7, ncols=3)
    return save(fig, path)


def component_norms(table: dict, path: Path) -> Path:
    fig, ax = new_figure(7, 4)
    data = [[row["component_sq_norm_r2"][c] for row in table.values()] for c in COMPONENTS]
    ax.boxplot(data, tick_labels=["x̂", "e", "n", "x̂ + n", "ê", "x"])
    ax.set_ylabel("test R² of a linear probe from x to ‖component‖²")
    ax.set_title(f"Norm predictability of components over {len(table)} SAEs", fontsize=10)
    return save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics-dir", type=Path, required=True)
    parser.add_argument("--figures", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with stage("probes_summary", reads=["params.yaml:sae", str(args.metrics_dir)], writes=[str(args.figures), str(args.out)]):
        cfg = load_checked_params().sae
        widths = sorted(cfg.widths)
        # The two grids at sae.k (the width x k grid's SAEs, at other L0s, are the contours stage's).
        table = {sae_name(h, w): json.loads((args.metrics_dir / f"{sae_name(h, w)}.json").read_text()) for h, w in cfg.pairs()}
        by_width(table, cfg.hooks, widths, args.figures / "by_width.png")  # the width sweep: the first grid
        baselines(table, args.figures / "norm_baselines.png")
        component_norms(table, args.figures / "component_norms.png")
        keys = ("error_vector_r2", "error_norm_r2", "nonlinear_fvu", "sae_fvu")
        write_json(args.out, {name: {k: row[k] for k in keys} for name, row in table.items()})


if __name__ == "__main__":
    run_and_exit(main)
