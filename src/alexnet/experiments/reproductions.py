"""The reproductions people write about (shared/PAPER.md §6) as experiments on any ImageFolder:
sweeps of epochs, batch size and learning rate, and AlexNet against other torchvision networks.

Both follow the published small-data study: torchvision's AlexNet recipe (RandomResizedCrop and
flips, ImageNet mean/std, SGD with momentum 0.9 and weight decay 1e-4), a constant learning rate,
and the test split evaluated after every epoch, as the study plots it. Nothing is chosen on the
test split: the rate does not react to it and the final model is what the tables report.
"""

from __future__ import annotations

from pathlib import Path

from ..analysis import figures
from ..data import open_data
from ..errors import AlexNetError
from ..models.registry import MODEL_DESCRIPTIONS, is_torchvision_classifier
from .spec import Experiment, Metric, Prelude, Variant
from .studies import MACS, PARAMS, model_cost

TEST_ACCURACY = Metric("test_accuracy", "test accuracy %")
TEST_LOSS = Metric("test_loss", "test loss", 4)
TRAIN_LOSS = Metric("train_loss", "train loss (mean per image, last epoch)", 4)

SWEEP_KEYS = {"epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "optim.lr"}
BASE_BATCH = 64  # the sweeps' and the comparison's batch; the batch-size sweep's lr scales from it
SMALL_DATA = {  # data.val_split: the data's test split, else its val split (the prelude below)
    "data.ten_crop": "false",
    "schedule.name": "constant",
    "train.batch_size": str(BASE_BATCH),
}
NOTES = (
    "Every run reads one store, prepared from the folder on first use (in $ALEXNET_CACHE/stores): no "
    "image is decoded again per run.",
    "As in the study, the evaluated split is evaluated after every epoch for the curves; nothing is "
    "chosen on it (constant learning rate, the final model reported).",
    "Train loss is the mean cross-entropy per image over the last epoch; the study's train losses "
    "(e.g. 13.41) look like sums over an epoch's batches.",
)


def _curves_figure(results: dict, out: Path) -> list[str]:
    curves: dict[str, list[dict]] = {}
    for r in results["runs"]:
        label = r["variant"] if results["seeds"] == 1 else f"{r['variant']} (seed {r['seed']})"
        curves[label] = r["history"]
    figures.save(figures.study_curves(curves), out / "curves.png")
    return [
        "![test accuracy, test loss and train loss against epochs](curves.png)",
        "",
        "Test accuracy, test loss and train loss against epochs, one line per run "
        "(the study's three figures).",
    ]


def sweep(param: str | None = None, values: str | None = None, scale_lr: bool = False) -> Experiment:
    """One run per value of ``param`` (epochs, batch_size or lr), torchvision's AlexNet at 112 px."""
    if param not in SWEEP_KEYS:
        raise AlexNetError(f"sweep needs --param, one of {', '.join(SWEEP_KEYS)}")
    items = [v.strip() for v in (values or "").split(",") if v.strip()]
    if len(items) < 2:
        raise AlexNetError(
            "sweep needs --values with at least two comma-separated values, e.g. 0.001,0.01,0.1"
        )
    variants = []
    for value in items:
        sets = {SWEEP_KEYS[param]: value}
        if param == "batch_size" and scale_lr:  # the linear scaling rule (Goyal et al. 2017)
            try:
                sets["optim.lr"] = f"{0.01 * int(value) / BASE_BATCH:g}"
            except ValueError:
                raise AlexNetError(f"--values for batch_size must be whole numbers, got {value!r}") from None
        variants.append(Variant(f"{param}={value}", sets))
    lr_note = (
        f"The learning rate scales with the batch: 0.01 × batch / {BASE_BATCH}."
        if scale_lr
        else "The learning rate is held at 0.01 for every batch size, as the study did."
    )
    return Experiment(
        name="sweep",
        title=f"Sweep of {param}: torchvision's AlexNet on a small photo set",
        preset="torchvision",
        variants=tuple(variants),
        primary=TEST_ACCURACY,
        metrics=(TEST_LOSS, TRAIN_LOSS),
        sets={**SMALL_DATA, "data.size": "128", "data.crop": "112"},
        epochs=10,
        seeds=1,
        notes=(
            "Images stored at 128 px; training on 112-px RandomResizedCrops, testing on the centre 112 px.",
            *NOTES,
            *((lr_note,) if param == "batch_size" else ()),
        ),
        figures=_curves_figure,
        prelude=reported_split,
    )


def reported_split(data: str, out: Path, sets: dict, progress, say) -> Prelude:
    """The study reports (and plots every epoch) the data's test split; a folder with only train/
    and val/ (PyTorch's tutorial's layout) is reported on val, and the report says which."""
    splits = open_data(data).splits
    name = "test" if "test" in splits else "val" if "val" in splits else None
    if name is None:
        raise AlexNetError(f"{data} has no test or val split to report on; give a folder with test/ or val/")
    said = "its test split" if name == "test" else "its val split (it has no test split)"
    return Prelude(sets={"data.val_split": name}, notes=(f"Accuracy and loss are on {said}.",),
                   results={"reported_split": name})  # fmt: skip


def compare(models: str | None = None, input_size: int | None = None) -> Experiment:
    """The same data, augmentation, schedule and budget for each torchvision architecture."""
    names = [m.strip() for m in (models or "alexnet,googlenet,vgg11,resnet18").split(",") if m.strip()]
    for name in names:
        if name not in MODEL_DESCRIPTIONS and not is_torchvision_classifier(name):
            raise AlexNetError(
                f"unknown model {name!r}: not a torchvision classification model "
                "(torchvision.models.list_models() names them, e.g. resnet18, vgg11, googlenet)"
            )
    side = input_size or 224
    if side < 32:
        raise AlexNetError(f"--input-size must be at least 32 pixels, got {side}")
    stored = round(side * 256 / 224)  # torchvision's proportion: resize 256, crop 224
    return Experiment(
        name="compare",
        title=f"AlexNet against {', '.join(n for n in names if n != 'alexnet')} at {side} px, from scratch",
        preset="torchvision",
        variants=tuple(Variant(name, {"model.name": name}) for name in names),
        primary=TEST_ACCURACY,
        metrics=(TEST_LOSS, TRAIN_LOSS, PARAMS, MACS),
        sets={**SMALL_DATA, "data.size": str(stored), "data.crop": str(side)},
        epochs=10,
        seeds=1,
        notes=(
            f"Images stored at {stored} px; training on {side}-px RandomResizedCrops, testing on the "
            f"centre {side} px. Every model is torchvision's own definition with num_classes set to the "
            "data's, trained from scratch (no downloaded weights), channels_last, with the engine's "
            "precision policy.",
            "GoogLeNet's (and Inception's) auxiliary heads are switched off: one output, one loss.",
            "Multiply-adds per image are at the input size above (torch's FlopCounterMode / 2); at 224 px "
            "they equal torchvision's published GFLOPS for these models (tests/test_reproductions.py).",
            *NOTES,
        ),
        per_run=model_cost,
        figures=_curves_figure,
        prelude=reported_split,
    )
