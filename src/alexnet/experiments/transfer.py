"""Transfer learning measured without a download (shared/PAPER.md §8: fine-tuning is what people
do with AlexNet today): a source model trained on the first half of a data set's classes, then a
few images per class of the other half, fine-tuned from it against the same recipe from scratch.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data import open_data
from ..errors import AlexNetError
from ..loading import resolve_run
from .runs import train_or_resume
from .spec import Experiment, Metric, Prelude, Variant

SOURCE_EPOCHS = 15  # the source model's budget (cifar10 recipe, cosine over these epochs)
PER_CLASS = 100  # training images per target class (a small photo set's size)
TEST_ACCURACY = Metric("test_accuracy", "test accuracy %")
TRAIN_ERROR = Metric("train_top1_error", "train error % (last epoch)")
# what the study fixes for every run, the source included
STUDY_KEYS = ("data.classes", "data.limit_per_class")


def transfer(per_class: int | str | None = None, source_epochs: int | str | None = None) -> Experiment:
    per_class = int(per_class or PER_CLASS)
    source_epochs = int(source_epochs or SOURCE_EPOCHS)
    if per_class < 2 or source_epochs < 1:
        raise AlexNetError("transfer needs --per-class ≥ 2 (one image is held out) and --source-epochs ≥ 1")
    return Experiment(
        name="transfer",
        title=f"Fine-tuned from a source task against trained from scratch, {per_class} images per class",
        preset="cifar10",
        variants=(
            Variant("from scratch"),
            Variant("fine-tuned"),  # the paper makes no claim about it: the report gives the measurement
        ),
        primary=TEST_ACCURACY,
        metrics=(TRAIN_ERROR, Metric("val_top1_error", "validation error % (last epoch)")),
        sets={"data.limit_per_class": str(per_class), "train.batch_size": "32"},
        epochs=30,
        seeds=5,
        prelude=lambda data, out, sets, progress, say: _source(data, out, sets, progress, say, source_epochs),
        notes=(
            f"Both variants: the cifar10 recipe (kaiming init for what is new, cosine with warm-up, batch "
            f"32) on the first {per_class} training images of each target class, 10 % of them held out for "
            "validation; the fine-tuned runs start from the source model with a new last layer (every "
            "layer trains, at the recipe's rate). Test accuracy is on all test images of the target "
            "classes, ten crops.",
        ),
    )


def _source(data: str, out: Path, sets: dict, progress, say, epochs: int) -> Prelude:
    """Train (or reuse) the source model on the first half of the classes; the runs take the rest."""
    classes = open_data(data).classes
    if len(classes) < 4:
        raise AlexNetError(
            f"transfer needs a data set of at least 4 classes (2 + 2), {data} has {len(classes)}"
        )
    half = len(classes) // 2
    source, target = classes[:half], classes[half:]
    root = out / "runs" / "source"
    own = {k: v for k, v in sets.items() if k not in STUDY_KEYS}
    run = {"data.source": data, "data.classes": ",".join(source), "train.epochs": str(epochs),
           "train.seed": "0", "train.out": str(root)}  # fmt: skip
    config = resolve_run("cifar10", sets={**own, **run})
    say(f"[transfer] source model on {', '.join(source)}: {root}")
    if train_or_resume(config, progress) == "reused":
        say("  finished before: reused")
    final = json.loads((root / "final.json").read_text())
    accuracy = 100.0 - final["top1_error"]
    note = (
        f"Source model: the cifar10 recipe on all training images of {', '.join(source)} for {epochs} epochs "
        f"(seed 0): {accuracy:.2f} % test accuracy on those classes ({final.get('count', '?')} images); "
        f"runs/source. Target classes: {', '.join(target)}."
    )
    return Prelude(
        sets={"data.classes": ",".join(target)},
        variant_sets={"fine-tuned": {"model.weights": str(root)}},
        notes=(note,),
        results={
            "source_classes": source,
            "target_classes": target,
            "source_epochs": epochs,
            "source_test_accuracy": accuracy,
            "source_run": "runs/source",
        },
    )
