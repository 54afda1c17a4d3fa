"""What the inspection commands compute: each returns the numbers (JSON-ready) and, where asked,
draws its figure through ``figures``. The CLI only parses arguments and calls these."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..checkpoint import check_classes
from ..data import open_data
from ..data.decode import image_files
from ..data.store import Split, Store
from ..errors import AlexNetError
from ..fileio import write_atomic
from ..loading import LoadedModel
from . import figures
from .features import DEFAULT_LAYER, Features, extract, layer_activations, nearest
from .filters import conv1_report, tile_layout

FIGURE_QUERIES = 8  # rows of the neighbours figure


def feature_path(loaded: LoadedModel, split: str, layer: str) -> Path:
    """Where a run keeps a split's features: RUN/features/<split>-<layer>-epoch<E>.npy."""
    return loaded.checkpoint.parent.parent / "features" / f"{split}-{layer}-epoch{loaded.epoch}.npy"


def split_features(loaded: LoadedModel, store: Store, split: str, layer: str = DEFAULT_LAYER, out=None,
                   progress=None) -> Features:  # fmt: skip
    check_classes(loaded.classes, store.classes, str(store.root), loaded.checkpoint)
    path = Path(out) if out else feature_path(loaded, split, layer)
    data = {"store": str(store.root.resolve()), "source": store.meta.get("source"),
            "fingerprint": store.meta.get("fingerprint")}  # fmt: skip
    return extract(loaded, store.split(split), layer, path, progress=progress, data=data)


def neighbours(loaded: LoadedModel, data, query: list[str], *, k: int = 6, layer: str = DEFAULT_LAYER,
               base_split: str = "train", figure: str | Path | None = None) -> dict:  # fmt: skip
    """Fig. 4 (right): the ``k`` training images nearest each query in the layer's Euclidean space.

    ``query`` is one split name of the data (every image of it, with labels) or image files. The
    report's ``same_class_fraction`` is the share of neighbours whose class is the query's.
    """
    store = open_data(data)
    base = split_features(loaded, store, base_split, layer)
    if len(query) == 1 and query[0] in store.splits:
        q = split_features(loaded, store, query[0], layer)
        q_values, q_labels, names = (
            np.asarray(q.values),
            q.labels,
            [f"{query[0]}[{i}]" for i in range(len(q.labels))],
        )
        q_images = store.split(query[0]).images
    else:
        files = image_files(query)
        images, names, skipped = loaded.load_images(files)
        if skipped:
            raise AlexNetError(f"{skipped[0][0]}: {skipped[0][1]}")
        q_values, q_labels, q_images = layer_activations(loaded, images, layer).numpy(), None, images.numpy()
    distances, indices = nearest(q_values, base.values, k)
    found_labels = base.labels[indices]
    rows = [
        {"query": name, "label": None if q_labels is None else loaded.classes[int(q_labels[i])],
         "neighbours": indices[i].tolist(), "distances": distances[i].tolist(),
         "neighbour_labels": [loaded.classes[int(c)] for c in found_labels[i]]}
        for i, name in enumerate(names)
    ]  # fmt: skip
    same = None if q_labels is None else float((found_labels == np.asarray(q_labels)[:, None]).mean())
    report = {"layer": layer, "k": int(indices.shape[1]), "base": f"{base_split} ({len(base.labels)} images)",
              "same_class_fraction": same, "queries": rows}  # fmt: skip
    if figure:
        # evenly spaced queries: a split is sorted by class, so its first rows are all one class
        shown = np.unique(np.linspace(0, len(names) - 1, min(FIGURE_QUERIES, len(names))).round().astype(int))
        train_images = store.split(base_split).images
        fig = figures.neighbours_panel(
            [np.asarray(q_images[i]) for i in shown],
            [[np.asarray(train_images[j]) for j in indices[i]] for i in shown],
        )
        figures.save(fig, figure)
        drawn = {**report, "queries": [rows[i] for i in shown]}  # the numbers of the drawn rows
        write_atomic(Path(figure).with_suffix(".json"), json.dumps(drawn))
    return report


def filters(loaded: LoadedModel, out: str | Path) -> dict:
    """Fig. 3: the conv1 kernels as a grid (PNG) and the numbers behind it (JSON beside it)."""
    report = conv1_report(loaded.model)
    figures.save(figures.filter_grid(report), out)
    numbers = {**report.as_dict(), "layout": tile_layout(report)}
    write_atomic(Path(out).with_suffix(".json"), json.dumps(numbers))
    return numbers


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise AlexNetError(f"{run_dir} has no metrics.jsonl; give run directories of `alexnet train`")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_runs(run_dirs: list[str | Path], out: str | Path) -> dict:
    """Curves of several runs (one PNG), the first run's confusion matrix (a second PNG, from its
    final.json), and the numbers of both (JSON beside the first)."""
    out = Path(out)
    runs = {Path(r).name or str(r): read_history(Path(r)) for r in run_dirs}
    figures.save(figures.training_curves(runs), out)
    numbers: dict = {"runs": runs}
    final_path = Path(run_dirs[0]) / "final.json"
    if final_path.is_file():
        final = json.loads(final_path.read_text())
        if "confusion" in final and "classes" in final:
            confusion_out = out.with_name(out.stem + "-confusion.png")
            title = f"{Path(run_dirs[0]).name}: final model on {final.get('split', '?')}"
            figures.save(figures.confusion_figure(final["confusion"], final["classes"], title), confusion_out)
            numbers["confusion"] = {
                "classes": final["classes"],
                "matrix": final["confusion"],
                "png": str(confusion_out),
            }
    write_atomic(out.with_suffix(".json"), json.dumps(numbers))
    return numbers


def prediction_figure(loaded: LoadedModel, predictions, out: str | Path, split: Split | None = None) -> None:
    """Fig. 4 (left) for the first images: each with its top-5 bars, the true class (known for a data
    set's images; for a file, its folder's name when that is a class) in red."""
    shown = predictions[:FIGURE_QUERIES]
    if split is not None:
        images = np.stack([np.asarray(split.images[p.row]) for p in shown])
        truths = [p.truth for p in shown]
    else:
        decoded, _, _ = loaded.load_images([p.path for p in shown])
        images = decoded.numpy()
        truths = [
            Path(p.path).parent.name if Path(p.path).parent.name in loaded.classes else None for p in shown
        ]
    fig = figures.predictions_panel(list(images), [p.top for p in shown], truths)
    figures.save(fig, out)
    drawn = [{"path": p.path, "truth": t, "top": [{"class": c, "probability": q} for c, q in p.top]}
             for p, t in zip(shown, truths, strict=True)]  # fmt: skip
    write_atomic(Path(out).with_suffix(".json"), json.dumps({"predictions": drawn}))
