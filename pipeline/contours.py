"""The (width, L0) grid of one hook (Engels et al.'s contour figures): the probes' nonlinear FVU
and both R² of every SAE of `sae.widths` x ([sae.k] + sae.ks), read from the metrics files.

L0 is each SAE's measured test L0 (for TopK it equals k; for BatchTopK it varies by token).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.plots import new_figure, save
from pipeline.sae_config import SaeSetConfig, sae_name

QUANTITIES = {
    "nonlinear_fvu": "nonlinear FVU (share of x's variance the linear probe misses)",
    "error_vector_r2": "R² of the error vector e from x",
    "error_norm_r2": "R² of ‖e‖ from x",
}


def grid_names(cfg: SaeSetConfig, hook: str) -> dict[tuple[int, int], str]:
    """(width, k) -> SAE name of every SAE of the hook's width x k grid."""
    names = {(w, cfg.k): sae_name(hook, w) for w in cfg.widths}
    names.update({(w, k): sae_name(hook, w, k) for h, w, k in cfg.k_grid() if h == hook})
    return names


def read_grid(cfg: SaeSetConfig, hook: str, metrics: Path) -> list[dict]:
    """One row per SAE of the hook's grid: width, k, test L0 and the QUANTITIES."""
    rows = []
    for (width, k), name in sorted(grid_names(cfg, hook).items()):
        sae = json.loads((metrics / "sae" / f"{name}.json").read_text())
        probes = json.loads((metrics / "probes" / f"{name}.json").read_text())
        rows.append({"sae": name, "width": width, "k": k, "l0": sae["l0"], **{q: probes[q] for q in QUANTITIES}})
    return rows


def draw_contours(rows: list[dict], hook: str, path: Path) -> Path:
    """Filled contours of each quantity over log2(width) x log2(L0), the SAEs marked and labelled."""
    fig, axes = new_figure(5 * len(QUANTITIES), 4, ncols=len(QUANTITIES))
    x = np.log2([r["width"] for r in rows])
    y = np.log2([r["l0"] for r in rows])
    for ax, (quantity, label) in zip(axes, QUANTITIES.items()):
        z = np.array([r[quantity] for r in rows])
        filled = ax.tricontourf(x, y, z, levels=12, cmap="viridis")
        fig.colorbar(filled, ax=ax)
        ax.plot(x, y, "k.", markersize=4)
        for xi, yi, zi in zip(x, y, z):
            ax.annotate(f"{zi:.3f}", (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("log2 width (latents)")
        ax.set_ylabel("log2 L0")
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"{hook}: SAEs over width x k", fontsize=10)
    return save(fig, path)
