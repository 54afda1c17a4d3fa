"""Figures: functions that take data and return a matplotlib Figure (the only module that
imports matplotlib). Each figure command also writes the numbers it draws as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import AlexNetError
from ..fileio import reporting_write_errors
from .filters import FilterReport, tile_layout

CURVES = (  # (metrics.jsonl key, panel title)
    ("train_loss", "training loss"),
    ("val_loss", "validation loss"),
    ("train_top1_error", "training top-1 error (%)"),
    ("val_top1_error", "validation top-1 error (%)"),
    ("val_top5_error", "validation top-5 error (%)"),
    ("lr", "learning rate"),
)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise AlexNetError(
            "figures need matplotlib: pip install 'alexnet[viz]' (or pip install matplotlib)"
        ) from None
    return plt


def save(figure, path: str | Path) -> Path:
    path = Path(path)
    with reporting_write_errors(path):
        figure.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return path


def filter_grid(report: FilterReport, per_row: int = 16):
    """Fig. 3: every conv1 kernel as a tile, contrast-stretched on its own, one block per tower."""
    plt = _pyplot()
    layout = tile_layout(report, per_row)
    rows = max(r for _, _, r, _ in layout) + 1
    tiles = report.tiles().numpy()
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 0.55, rows * 0.55 + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, _, r, c in layout:
        tile = tiles[k]
        axes[r][c].imshow(tile[..., 0] if tile.shape[-1] == 1 else tile, cmap="gray", interpolation="nearest")
    scores = report.tower_scores()
    title = f"conv1: {report.weight.shape[0]} kernels {report.weight.shape[2]}×{report.weight.shape[3]}"
    if scores:
        title += " · colour score by tower " + ", ".join(f"{s:.2f}" for s in scores)
    fig.suptitle(title, fontsize=9)
    return fig


def training_curves(runs: dict[str, list[dict]]):
    """Loss, top-1/top-5 error and learning rate against epochs; one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (key, title) in zip(axes.flat, CURVES, strict=True):
        for name, rows in runs.items():
            ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], marker=".", label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        if key == "lr":
            ax.set_yscale("log")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str = ""):
    """The confusion matrix: rows are true classes, columns predicted, counts in the cells."""
    plt = _pyplot()
    m = np.asarray(matrix)
    side = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(m, cmap="Blues")
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=90, fontsize=7)
    ax.set_yticks(ticks, classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        for i in ticks:
            for j in ticks:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] > m.max() / 2 else "black")  # fmt: skip
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def predictions_panel(images: Sequence[np.ndarray], tops: Sequence[list[tuple[str, float]]],
                      truths: Sequence[str | None]):  # fmt: skip
    """Fig. 4 (left): each image above its top-5 bars; the true class's bar in red when known."""
    plt = _pyplot()
    n = len(images)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows * 2, cols, figsize=(3.2 * cols, 4.6 * rows), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2] * rows})  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, top, truth) in enumerate(zip(images, tops, truths, strict=True)):
        r, c = divmod(i, cols)
        axes[2 * r][c].imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        axes[2 * r][c].set_title(truth or "", fontsize=9)
        bars = axes[2 * r + 1][c]
        bars.axis("on")
        names = [name for name, _ in top][::-1]
        probs = [p for _, p in top][::-1]
        colours = ["tab:red" if name == truth else "tab:blue" for name in names]
        bars.barh(range(len(names)), probs, color=colours)
        bars.set_yticks(range(len(names)), names, fontsize=8)
        bars.set_xlim(0, 1)
    fig.tight_layout()
    return fig


def neighbours_panel(queries: Sequence[np.ndarray], neighbours: Sequence[Sequence[np.ndarray]]):
    """Fig. 4 (right): each query image in the first column, its nearest training images after it."""
    plt = _pyplot()
    rows, k = len(queries), max(len(n) for n in neighbours)
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.3 * (k + 1), 1.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (query, found) in enumerate(zip(queries, neighbours, strict=True)):
        for c, image in enumerate([query, *found]):
            axes[r][c].imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        axes[r][0].set_title("query" if r == 0 else "", fontsize=8)
    fig.tight_layout()
    return fig
