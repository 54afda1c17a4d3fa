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
        ax.set_title(title, fontsize=10)
        if key != "lr" and all(r[key] == 0 for rows in runs.values() for r in rows):
            # top-5 error with 5 classes or fewer: a flat line at 0 would look like a result
            ax.text(0.5, 0.5, "0 in every epoch", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for name, rows in runs.items():
            ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], marker=".", label=name)
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


def figure1_curves(curves: dict[tuple[str, int], list[tuple[float, float]]], target: float):
    """Fig. 1: training error against epochs, one line per (activation, seed): solid for ReLU,
    dashed for the other activation, one colour per activation, and the target error as a rule."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    names = sorted({name for name, _ in curves}, key=lambda n: (n != "ReLU", n))
    for i, name in enumerate(names):
        for (variant, seed), points in sorted(curves.items()):
            if variant != name:
                continue
            ax.plot([e for e, _ in points], [v for _, v in points], color=f"C{i}", alpha=0.85,
                    linestyle="-" if i == 0 else "--", label=name if seed == 0 else None)  # fmt: skip
    ax.axhline(target, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("epochs")
    ax.set_ylabel("training error rate (%)")
    ax.set_ylim(0, None)
    ax.legend()
    fig.tight_layout()
    return fig


def variant_dots(rows: Sequence[tuple[str, Sequence[float | None]]], label: str):
    """One row per variant: a bar at the mean over seeds and a dot per seed; the first row (the
    baseline) is repeated as a dashed vertical rule."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    for i, (_, values) in enumerate(rows):
        known = [v for v in values if v is not None]
        if not known:
            continue
        ax.barh(i, sum(known) / len(known), color="C0" if i else "C1", alpha=0.35)
        ax.plot(known, [i] * len(known), "o", color="black", markersize=3)
        if i == 0:
            ax.axvline(sum(known) / len(known), color="C1", linestyle="--", linewidth=1)
    values = [v for _, vs in rows for v in vs if v is not None]
    if values:
        span = max(values) - min(values)
        ax.set_xlim(max(0.0, min(values) - span - 1), max(values) + span * 0.2 + 1)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    fig.tight_layout()
    return fig


def tower_score_strips(scores: dict[int, np.ndarray | Sequence[float]]):
    """Every conv1 kernel's colour score, one strip per (seed, tower)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(scores) + 1.4))
    for row, (_, values) in enumerate(sorted(scores.items())):
        values = np.asarray(values, dtype=float)
        half = len(values) // 2
        for tower, part in enumerate((values[:half], values[half:])):
            y = row + (tower - 0.5) * 0.3
            ax.plot(part, np.full(len(part), y), "|", color=f"C{tower}", markersize=9,
                    label=f"tower {tower + 1}" if row == 0 else None)  # fmt: skip
    ax.set_yticks(range(len(scores)), [f"seed {s}" for s in sorted(scores)])
    ax.set_xlim(0, 1)
    ax.set_xlabel("colour score (0: grey kernel, 1: no luminance)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def signal_figure(signals: Sequence[dict]):
    """Mean and std of each ReLU layer's output at initialisation, one line per init."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for s in signals:
        means = [m for m, _ in s["relu_mean_std"]]
        stds = [d for _, d in s["relu_mean_std"]]
        axes[0].plot(range(1, len(means) + 1), means, marker="o", label=s["init"])
        axes[1].plot(range(1, len(stds) + 1), stds, marker="o", label=s["init"])
    for ax, title in zip(axes, ("mean of the ReLU output", "std over images and units"), strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("ReLU layer (conv1 … fc7)")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def study_curves(runs: dict[str, list[dict]]):
    """The small-data study's three figures side by side: test accuracy, test loss and train loss
    against epochs, one line per run (its rows' val_* are the test split's when it validates)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = (
        (lambda r: 100.0 - r["val_top1_error"], "test accuracy (%)"),
        (lambda r: r["val_loss"], "test loss"),
        (lambda r: r["train_loss"], "train loss (mean per image)"),
    )
    for ax, (value, title) in zip(axes, panels, strict=True):
        for name, rows in runs.items():
            ax.plot([r["epoch"] for r in rows], [value(r) for r in rows], marker=".", label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
