"""DVC stage `scaling` (docs/science.md, "Scaling across widths" to "Latent vs probe"): per hook, across SAE widths: the power-law fit of FVU, the
stacked error bands, per-token scaling heatmaps and the latent-vs-probe comparison."""

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import zarr

from pipeline.activation_store import iter_row_blocks
from pipeline.params_check import load_checked_params
from pipeline.plots import heatmap, new_figure, save
from pipeline.row_split import RowSplit
from pipeline.sae_config import sae_name
from pipeline.sae_files import read_decoder
from pipeline.sae_centring import takes_centred_input
from pipeline.sae_output_store import SaeOutputs
from pipeline.scaling import BANDS, error_bands, fit_power_law, latent_vs_probe, per_token_scaling
from pipeline.store_integrity import open_checked
from stages.common import run_and_exit, stage, write_csv, write_json

log = logging.getLogger("stage")


def split_row(tokens: zarr.Group) -> int:
    """The test row (counted from the first test row) where the second half of the test contexts starts."""
    contexts = tokens["rows/context"][RowSplit.of(tokens).test_rows]
    middle = np.unique(contexts)[len(np.unique(contexts)) // 2]
    return int(np.searchsorted(contexts, middle))


def row_norms(array: zarr.Array, block_rows: int) -> np.ndarray:
    return np.concatenate([np.linalg.norm(np.asarray(b, dtype=np.float64), axis=1) for _, b in iter_row_blocks(array, rows=block_rows)])


def draw_bands(hook, widths, fvu, bands, law, path):
    fig, ax = new_figure()
    labels = {
        "nonlinear": "nonlinear error (FVU with ê added back)",
        "encoder": "encoder error (removed by gradient pursuit)",
        "linear_persistent": "linear error below the asymptote c" if law else "linear error (no fit: < 3 widths)",
        "above_asymptote": "above the asymptote (features not yet learned)",
    }
    bottom = np.zeros(len(widths))
    bar_widths = np.asarray(widths) * 0.35  # equal-looking bars on a log axis
    for band in BANDS:
        if band == "encoder" and not bands[band].any():
            continue
        ax.bar(widths, bands[band], bar_widths, bottom=bottom, label=labels[band], alpha=0.8)
        bottom += bands[band]
    ax.plot(widths, fvu, "ko", label="SAE FVU (test tokens)")
    if law:
        grid = np.geomspace(min(widths), max(widths) * 4, 100)
        ax.plot(grid, law(grid), "k--", label=f"fit c + a·W^-m: c={law.c:.3f}, a={law.a:.3g}, m={law.m:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("SAE width W (latents, log scale)")
    ax.set_ylabel("fraction of variance unexplained")
    ax.set_title(f"{hook}: SAE error by width", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    return save(fig, path)


def draw_per_token(hook, widths, r2, gain, path):
    fig, axes = new_figure(10, 4, ncols=2)
    heatmap(r2, widths, widths, "R² of ‖e_j‖ ~ ‖e_i‖", "width j", "width i", "test R²", ax=axes[0])
    heatmap(gain, widths, widths, "share of the rest explained by adding ‖n_i‖", "width j", "width i", "(R²_new − R²)/(1 − R²)", ax=axes[1])
    fig.suptitle(f"{hook}: per-token error scaling", fontsize=10)
    return save(fig, path)


def draw_latent_probe(hook, results: dict, window: int, path):
    fig, axes = new_figure(4.2 * len(results), 3.8, ncols=len(results))
    axes = np.atleast_1d(axes)
    for ax, (width, result) in zip(axes, results.items()):
        fired = np.isfinite(result.mean_activation)
        order = np.argsort(result.mean_activation[fired])
        mean_act, proj = result.mean_activation[fired][order], result.projection[fired][order]
        kernel = np.ones(min(window, len(proj))) / min(window, len(proj))
        smoothed = np.convolve(proj, kernel, mode="valid")  # no zero-padded edges
        ax.plot(mean_act, ".", markersize=2, label="mean activation when active")
        ax.plot(np.arange(len(smoothed)) + (len(kernel) - 1) / 2, smoothed, label=f"a*·W_dec[i], running mean of {len(kernel)}")
        ax.set_xlabel("latents sorted by mean activation")
        ax.set_ylabel("activation (SAE latent units)")
        ax.set_title(f"width {width}: Pearson {result.pearson:.2f}, Spearman {result.spearman:.2f}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{hook}: probe direction for ‖x̂ − b_dec‖² vs latent activations", fontsize=10)
    return save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for option in ("--metrics-dir", "--sae-outputs", "--probes", "--saes", "--tokens", "--out", "--plots", "--figures"):
        parser.add_argument(option, type=Path, required=True)
    args = parser.parse_args()
    reads = ["params.yaml:scaling,sae.hooks,sae.widths,pursuit.hooks,pursuit.widths", str(args.metrics_dir), str(args.sae_outputs), str(args.tokens), str(args.probes), str(args.saes)]
    with stage("scaling", reads=reads, writes=[str(args.out), str(args.plots), str(args.figures)]):
        params = load_checked_params()
        cfg, sae_set = params.scaling, params.sae
        widths = sorted(sae_set.widths)
        tokens = open_checked(args.tokens)
        row_split, half = RowSplit.of(tokens), split_row(tokens)
        results = {}
        for hook in sae_set.hooks:
            names = [sae_name(hook, w) for w in widths]
            sae_metrics = [json.loads((args.metrics_dir / "sae" / f"{n}.json").read_text()) for n in names]
            probe_metrics = [json.loads((args.metrics_dir / "probes" / f"{n}.json").read_text()) for n in names]
            fvu = np.array([m["fvu"] for m in sae_metrics])
            nonlinear = np.array([m["nonlinear_fvu"] for m in probe_metrics])
            law = fit_power_law(widths, fvu) if len(widths) >= cfg.min_widths_for_fit else None
            if law is None:
                log.info("scaling %s: %d widths < scaling.min_widths_for_fit=%d, no power-law fit", hook, len(widths), cfg.min_widths_for_fit)
            outputs = [SaeOutputs(args.sae_outputs / f"{n}.zarr") for n in names]
            for o in outputs:
                o.check_rows(row_split)
            test = row_split.test_rows
            error_norms = [o.error_norm(test.start, test.stop).astype(np.float64) for o in outputs]
            nonlinear_norms = [row_norms(open_checked(args.probes / f"{n}.zarr")["nonlinear_error"], cfg.block_rows) for n in names]
            r2, gain = per_token_scaling(error_norms, nonlinear_norms, half)
            latent = {}
            for width, name, group in zip(widths, names, outputs):
                if takes_centred_input(args.saes / name):
                    # x_hat - b_dec in the SAE's own space needs the per-token mean its input lost, which is not stored
                    log.info("scaling %s: no latent-vs-probe analysis for a centred SAE (docs/science.md, \"SAE input conventions\")", name)
                    continue
                latent[width] = latent_vs_probe(read_decoder(args.saes / name), group, row_split, cfg.block_rows)

            # Only the SAEs this run's pursuit ran on: metrics/pursuit may also hold another run's files.
            pursued = {sae_name(h, w) for h in params.pursuit.hooks for w in params.pursuit.widths}
            pursuit = {i: json.loads((args.metrics_dir / "pursuit" / f"{n}.json").read_text()) for i, n in enumerate(names) if n in pursued}
            bands = error_bands(fvu, nonlinear, law.c if law else np.inf, pursuit)
            write_csv(args.plots / f"{hook}.csv", ["width", "fvu", "fvu_fit", "nonlinear_fvu", *BANDS],
                      ([w, fvu[i], law(w) if law else "", nonlinear[i], *(bands[b][i] for b in BANDS)] for i, w in enumerate(widths)))
            draw_bands(hook, widths, fvu, bands, law, args.figures / f"{hook}-bands.png")
            draw_per_token(hook, widths, r2, gain, args.figures / f"{hook}-per_token.png")
            if latent:
                draw_latent_probe(hook, latent, cfg.smoothing_latents, args.figures / f"{hook}-latent_vs_probe.png")

            pairs = [(i, j) for i in range(len(widths)) for j in range(i + 1, len(widths))]
            results[hook] = {
                **({"power_law": {"c": law.c, "a": law.a, "m": law.m}} if law else {}),
                "per_token_r2": {f"{widths[i]}_to_{widths[j]}": float(r2[i, j]) for i, j in pairs},
                "per_token_nonlinear_gain": {f"{widths[i]}_to_{widths[j]}": float(gain[i, j]) for i, j in pairs},
                "latent_vs_probe": {
                    str(w): {"pearson": r.pearson, "spearman": r.spearman, "norm_probe_r2": r.norm_probe_r2} for w, r in latent.items()
                },
            }
            fit_text = f"c={law.c:.4f} a={law.a:.3g} m={law.m:.3f}" if law else "no fit"
            print(f"scaling {hook}: FVU {np.round(fvu, 4).tolist()} {fit_text}; nonlinear {np.round(nonlinear, 4).tolist()}")
        write_json(args.out, results)


if __name__ == "__main__":
    run_and_exit(main)
