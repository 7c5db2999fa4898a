"""Matplotlib helpers shared by the analysis stages: every figure is a PNG, axes labelled."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: stages run under DVC, often on machines with no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def new_figure(width: float = 6.4, height: float = 4.0, ncols: int = 1):
    """(figure, axes): one Axes, or an array of `ncols` of them."""
    return plt.subplots(1, ncols, figsize=(width, height), constrained_layout=True)


def save(fig, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def grouped_bars(values: dict[str, dict[str, float]], title: str, ylabel: str, path: Path | str) -> Path:
    """One group of bars per outer key, one bar per inner key (same inner keys in every group)."""
    groups = list(values)
    series = list(next(iter(values.values())))
    fig, ax = new_figure(max(6.4, 0.55 * len(groups) * len(series) / 2 + 2), 4.2)
    width = 0.8 / len(series)
    positions = np.arange(len(groups))
    for j, name in enumerate(series):
        ax.bar(positions + (j - (len(series) - 1) / 2) * width, [values[g][name] for g in groups], width, label=name)
    ax.set_xticks(positions, groups, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize=8)
    return save(fig, path)


def heatmap(matrix: np.ndarray, row_labels: list, col_labels: list, title: str, xlabel: str, ylabel: str, colorbar: str, ax=None):
    """Annotated heatmap on `ax`; NaN cells are left blank."""
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", origin="lower")
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white", fontsize=8)
    ax.figure.colorbar(image, ax=ax, label=colorbar)
