"""Run configuration: frozen dataclasses per concern, named presets, and one override path.

``preset(name)`` gives a recipe; ``override(config, {"optim.lr": "0.02"})`` changes fields by dotted
key, parsing strings by the field's type, so ``--set optim.lr=0.02`` and a YAML file (flattened to
the same keys) go through the same code. ``to_dict`` writes the resolved config into every run.

Each field carries its rule where it is defined: its type (a ``Literal`` names the choices), and
through ``rule`` the range it must be in and one line of documentation. ``validate``, the command
line's help (``alexnet train --list-keys``) and ``describe`` all read them from there.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from .errors import AlexNetError
from .fileio import first_line
from .models.alexnet import ACTIVATIONS, INITS, LRN_POSITIONS, POOLS, SWITCH_RULES
from .models.registry import MODEL_DESCRIPTIONS, is_torchvision_classifier
from .runtime import PRECISIONS

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's per-channel statistics, pixels in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of the CIFAR-10 training set, [0, 1]
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# train.freeze's words besides layer names: nothing; conv1…conv5 (torchvision's ``features``);
# everything but the last layer (PyTorch's tutorial's "ConvNet as fixed feature extractor").
FREEZE_WORDS = ("none", "features", "backbone")
MAX_ERROR_VALUE = 80  # characters of a bad value shown in an error line (a YAML alias bomb is MBs)

Activation = Literal[ACTIVATIONS]
Pool = Literal[tuple(POOLS)]
LrnPosition = Literal[LRN_POSITIONS]
Init = Literal[INITS]
Precision = Literal[PRECISIONS]


def rule(default, allowed: str = "", ok: Callable[[typing.Any], bool] | None = None, doc: str = ""):
    """A config field with its range (``ok`` and the words for it) and its documentation beside it."""
    return field(default=default, metadata={"allowed": allowed, "ok": ok, "doc": doc})


def switch_rule(name: str, default, doc: str, optional: bool = False):
    """A model field checked by the model's own rule for that switch (models.alexnet.SWITCH_RULES)."""
    ok, allowed = SWITCH_RULES[name]
    check = (lambda v: v is None or ok(v)) if optional else ok
    return rule(default, allowed, check, doc)


def at_least(low: float, unit: str = "", optional: bool = False):
    """(words, check) for a number ≥ low (``optional``: or None)."""
    words = f"≥ {low:g}{unit}" + (" (or none)" if optional else "")
    return words, (lambda v: (optional and v is None) or (v is not None and v >= low))


def model_name_ok(name: str) -> bool:
    return name in MODEL_DESCRIPTIONS or is_torchvision_classifier(name)


def device_name_ok(name: str) -> bool:
    return name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())


@dataclass(frozen=True)
class ModelConfig:
    name: str = rule(
        "paper",
        "one of " + ", ".join(MODEL_DESCRIPTIONS) + " or a torchvision classification model (resnet18, …)",
        model_name_ok,
        "the network, a build_model name",
    )
    weights: str | None = rule(
        None,
        doc="start from these weights (a new last layer for the data's classes): DEFAULT or a torchvision "
        "weights name, a torchvision-format .pth, a checkpoint or run directory, a safetensors export",
    )
    activation: Activation = rule("relu", doc="§3.1: the nonlinearity")
    lrn: bool | None = rule(None, doc="§3.3: LRN after conv1/conv2; none: the architecture's own")
    lrn_position: LrnPosition | None = rule(
        None,
        doc="§3.4: LRN before the max-pool, or after it (cuda-convnet's CIFAR nets); none: the arch's own",
    )
    pool: Pool = rule("overlapping", doc="§3.4: 3/2 max-pools, or non-overlapping 2/2")
    groups: int | None = switch_rule("groups", None, "§3.2: 2 = the two towers; none: the architecture's own",
                                     optional=True)  # fmt: skip
    dropout: float = switch_rule("dropout", 0.5, "§4.2: drop probability on fc6 and fc7")
    drop_layers: tuple[str, ...] = switch_rule("drop_layers", (), "§7: conv3/conv4/conv5 removed")
    widths: tuple[int, ...] | None = switch_rule(
        "widths", None, "conv1..conv5 output channels", optional=True
    )
    init: Init | None = rule(
        None, doc="paper | caffe | torch | kaiming | xavier; none: the architecture's own"
    )

    def switches(self) -> dict:
        """Keyword arguments for build_model, leaving out what the architecture decides by itself."""
        if self.name not in MODEL_DESCRIPTIONS:  # torchvision's classifiers: as torchvision defines them
            return {}
        out = {"activation": self.activation, "pool": self.pool, "dropout": self.dropout}
        if self.name != "figure1":
            out.update(drop_layers=self.drop_layers, groups=self.groups, init=self.init)
        if self.lrn is not None:
            out["lrn"] = self.lrn
        if self.lrn_position is not None:
            out["lrn_position"] = self.lrn_position
        if self.widths is not None:
            out["widths"] = self.widths
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class DataConfig:
    source: str | None = rule(None, doc="--data: a store, an ImageFolder root or a data set name")
    size: int | None = rule(
        None,
        *at_least(1, " pixel", True),
        "prepare: short side and crop, pixels (none: 256, or smaller sets' own)",
    )
    crop: int = rule(
        227,
        *at_least(1, " pixel"),
        "training and evaluation crop, pixels (§4.1 says 224; Caffe's 227 fits the net)",
    )
    crop_mode: Literal["random", "resized"] = rule(
        "random",
        doc="random: §4.1's crop×crop windows of the stored image; resized: torchvision's RandomResizedCrop "
        "(area 8–100 %, aspect 3/4–4/3) for training and the centre crop for evaluation",
    )
    resize: int | None = rule(
        None,
        *at_least(1, " pixel", True),
        "bilinear resize of the crop to this side on the device (d2l: 28 → 224)",
    )
    flip: bool = rule(True, doc="§4.1: horizontal reflections")
    cutout: int = rule(
        0,
        *at_least(0, " pixel"),
        "Cutout (DeVries & Taylor 2017): zero a square of this side at a random centre of each training "
        "crop; 0: none",
    )
    lighting: Literal["store", "imagenet", "none"] = rule(
        "store", doc="§4.1 PCA lighting: the store's eigenpairs, ImageNet's published ones, or none"
    )
    lighting_std: float = rule(0.1, *at_least(0), "§4.1: α ~ N(0, 0.1)")
    normalize: Literal["mean_image", "channel"] = rule(
        "mean_image",
        doc="§2's per-pixel mean image (the weights' own when starting from weights), or per-channel "
        "mean/std (torchvision)",
    )
    mean: tuple[float, ...] = rule(
        IMAGENET_MEAN,
        "values in [0, 1]",
        lambda v: len(v) >= 1 and all(0 <= x <= 1 for x in v),
        "per-channel mean for normalize=channel, pixels in [0, 1]",
    )
    std: tuple[float, ...] = rule(
        IMAGENET_STD, "positive values", lambda v: len(v) >= 1 and all(x > 0 for x in v), "per-channel std"
    )
    ten_crop: bool = rule(False, doc="§4.1: ten crops at the closing evaluation")
    train_split: str = rule("train", doc="the split to train on")
    val_split: str | None = rule(
        None,
        doc="none: the data's val split, else a held-out part of train; test validates (picks rate drops "
        "and best.pt) only when named here",
    )
    holdout: float = rule(0.1, "in (0, 1)", lambda v: 0 < v < 1,
                          "fraction of train held out for validation when there is no val split")  # fmt: skip
    holdout_seed: int = rule(0, *at_least(0), "the held-out images are the same for every training seed")
    limit_train: int | None = rule(
        None, *at_least(1, "", True), "use only N training images, evenly spaced (slices for quick runs)"
    )
    limit_val: int | None = rule(None, *at_least(1, "", True), "use only N validation and test images")
    classes: tuple[str, ...] | None = rule(
        None,
        "class names of the data",
        lambda v: v is None or (len(v) >= 1 and len(set(v)) == len(v)),
        "use only these classes of the data, labelled in this order",
    )
    limit_per_class: int | None = rule(
        None, *at_least(1, "", True), "at most N training images per class (the first N of each)"
    )
    workers: int | None = rule(None, *at_least(1, "", True), "processes for a first-use prepare")


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["sgd", "paper_sgd", "adam"] = rule(
        "sgd", doc="torch.optim.SGD, §5's rule (learning rate inside the velocity), or Adam"
    )
    lr: float = rule(0.01, "> 0", lambda v: v > 0, "§5: the base learning rate (of the last layer)")
    momentum: float = rule(0.9, "in [0, 1)", lambda v: 0 <= v < 1, "§5")
    weight_decay: float = rule(5e-4, *at_least(0), "§5")
    nesterov: bool = rule(False, doc="Nesterov momentum (torch.optim.SGD)")
    bias_decay: bool = rule(
        True, doc="false: biases without weight decay (cuda-convnet, which the paper used, set none on them)"
    )
    backbone_lr_scale: float = rule(
        1.0, "> 0", lambda v: v > 0,
        "the rate of every layer but the last, relative to optim.lr (e.g. 0.1 for pretrained layers)",
    )  # fmt: skip


@dataclass(frozen=True)
class ScheduleConfig:
    name: Literal["plateau", "step", "cosine", "constant"] = rule("plateau", doc="how the rate changes")
    factor: float = rule(0.1, "in (0, 1)", lambda v: 0 < v < 1, "§5: divide by 10")
    patience: int = rule(2, *at_least(0, " epochs"), "plateau: epochs without a better validation error")
    max_drops: int = rule(3, *at_least(0), "§5: reduced three times prior to termination")
    wait_for_learning: bool = rule(
        True,
        doc="plateau: count no plateau while validation sits at the class prior (the error of always "
        "answering the most common class): the paper lowered the rate after learning had begun",
    )
    step_size: int = rule(30, *at_least(1, " epoch"), "step: epochs between drops")
    warmup_epochs: float = rule(0.0, *at_least(0), "linear warm-up from 0, in epochs")
    min_lr: float = rule(0.0, *at_least(0), "cosine floor")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = rule(90, *at_least(1), "§5: roughly 90 cycles")
    batch_size: int = rule(128, *at_least(1), "§5, global across ranks")
    seed: int = rule(0, *at_least(0), "seed of the weights, the order and the augmentation")
    device: str = rule("auto", "auto, cpu, cuda or cuda:N", device_name_ok, "where to train")
    precision: Precision = rule("auto", doc="auto: bf16 where it is the faster precision, else fp32")
    channels_last: bool = rule(True, doc="channels_last memory format")
    compile: bool = rule(False, doc="torch.compile the model")
    deterministic: bool = rule(False, doc="torch.use_deterministic_algorithms: bit-exact resume on the CPU")
    label_smoothing: float = rule(0.0, "in [0, 1)", lambda v: 0 <= v < 1, "cross-entropy label smoothing")
    checkpoint_every: int = rule(
        0, *at_least(0, " steps"), "steps between mid-epoch checkpoints (0: epoch ends)"
    )
    log_every: int = rule(
        50, *at_least(1, " step"), "steps between plain log lines when stderr is no terminal"
    )
    freeze: tuple[str, ...] = rule(
        (), "none, features, backbone or layer names (conv1, fc6, …)", lambda v: all(t.strip() for t in v),
        "layers kept as loaded, out of the optimiser: features = conv1…conv5, backbone = all but the last",
    )  # fmt: skip
    out: str | None = rule(None, doc="run directory (default runs/<preset>-<date>)")
    two_devices: tuple[str, ...] | None = rule(
        None, "two of cpu, cuda, cuda:N", lambda v: v is None or (len(v) == 2 and all(
            device_name_ok(x) and x != "auto" for x in v)),
        "§3.2: the paper net split over two devices, e.g. cuda:0,cuda:1",
    )  # fmt: skip


@dataclass(frozen=True)
class RunConfig:
    preset: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = ("model", "data", "optim", "schedule", "train")


def _presets() -> dict[str, RunConfig]:
    paper = RunConfig(
        "paper",
        data=DataConfig(ten_crop=True),
        optim=OptimConfig(name="paper_sgd", bias_decay=False),  # §5's rule; biases not decayed
    )
    torchvision = RunConfig(
        "torchvision",
        model=ModelConfig(name="torchvision"),
        data=DataConfig(crop=224, crop_mode="resized", lighting="none", normalize="channel"),
        optim=OptimConfig(weight_decay=1e-4),
        schedule=ScheduleConfig(name="step", step_size=30),
        train=TrainConfig(batch_size=256),
    )
    d2l = RunConfig(
        "d2l",
        model=ModelConfig(name="d2l"),
        data=DataConfig(
            source="fashion-mnist",
            crop=28,  # the whole 28×28 image, stored once at its own size
            resize=224,  # the book's transforms.Resize(224), done on the batch
            flip=False,
            lighting="none",
            normalize="channel",
            mean=(0.0,),  # the book's ToTensor() alone: pixels in [0, 1]
            std=(1.0,),
            # The book trains on all 60,000 images and prints the test accuracy after each epoch;
            # the rate is constant, so nothing is chosen on the test split but best.pt.
            val_split="test",
        ),
        optim=OptimConfig(momentum=0.0, weight_decay=0.0),
        schedule=ScheduleConfig(name="constant"),
        train=TrainConfig(epochs=10, batch_size=128),
    )
    # Fig. 1: no regularisation (§3.1: "no regularization of any kind was employed").
    figure1 = RunConfig(
        "figure1",
        model=ModelConfig(name="figure1", dropout=0.0),
        data=DataConfig(
            crop=32, flip=False, lighting="none", normalize="channel", mean=CIFAR10_MEAN, std=CIFAR10_STD
        ),
        optim=OptimConfig(lr=0.01, weight_decay=0.0),
        schedule=ScheduleConfig(name="constant"),
        train=TrainConfig(epochs=30, batch_size=128),
    )
    # Inputs normalised per channel (std ≈ 1), so weights need He's scale: the paper's fixed N(0, 0.01)
    # was sized for raw 0–255 pixels and leaves no signal here (README, "The paper's init").
    # The budget is 60 min on a 2-core CPU, and the net underfits in it (train error 14.5 % after
    # 15 epochs with dropout 0.5), so the recipe buys epochs and fits faster (README, "CIFAR-10"):
    # §3.2's two groups on conv2/4/5 make a step 1.45× cheaper at the same error per epoch, and
    # dropout 0.25 with lr 0.04 fit faster than 0.5 with 0.02 in 4-epoch trials.
    cifar10 = RunConfig(
        "cifar10",
        model=ModelConfig(name="cifar10", init="kaiming", groups=2, dropout=0.25, lrn_position="after-pool"),
        data=DataConfig(crop=28, normalize="channel", mean=CIFAR10_MEAN, std=CIFAR10_STD, ten_crop=True),
        optim=OptimConfig(lr=0.04, weight_decay=5e-4, nesterov=True),
        schedule=ScheduleConfig(name="cosine", warmup_epochs=1.0),
        train=TrainConfig(epochs=22, batch_size=128, label_smoothing=0.1),
    )
    # The paper's CIFAR-10 figure, 11 % error for its AlexNet-family net (§3.3): the cifar10 recipe
    # at conv1..conv5 widths 96/192/384/384/256 (2,800,970 parameters against 1,375,754), Cutout 12
    # (DeVries & Taylor 2017) so the wider net does not overfit, 120 epochs, all 50,000 training
    # images: the schedule is fixed, so validating on test chooses nothing but best.pt, and the final
    # model is what is reported (docs/results.md, 2 AMX cores, bf16: 89.11 ± 0.07 % ten-crop at 120
    # epochs over seeds 0–2; seed 0 gave 88.96 % at 80, the longer cosine 0.21 points for 1.5× the time).
    cifar10_long = dataclasses.replace(
        cifar10,
        preset="cifar10-long",
        model=dataclasses.replace(cifar10.model, widths=(96, 192, 384, 384, 256)),
        data=dataclasses.replace(cifar10.data, cutout=12, val_split="test"),
        train=dataclasses.replace(cifar10.train, epochs=120),
    )
    # The PaddlePaddle tutorial: CIFAR-10 resized to 224, (x − 127.5)/127.5, Adam with its defaults,
    # batch 128, 50 epochs. Its printed network drops the ReLU after conv3 and conv4; this preset
    # trains the faithful network (torchvision's widths and dropout placement, which the tutorial
    # follows otherwise), since the missing ReLUs make conv3–conv5 one linear map (README).
    paddle = RunConfig(
        "paddle",
        model=ModelConfig(name="torchvision"),
        data=DataConfig(
            source="cifar10",
            crop=32,  # the whole 32×32 image
            resize=224,  # the tutorial's Resize(224), done on the batch
            flip=False,
            lighting="none",
            normalize="channel",
            mean=(0.5, 0.5, 0.5),  # (x/255 − 0.5)/0.5 = (x − 127.5)/127.5
            std=(0.5, 0.5, 0.5),
        ),
        optim=OptimConfig(name="adam", lr=0.001, momentum=0.0, weight_decay=0.0),
        schedule=ScheduleConfig(name="constant"),
        train=TrainConfig(epochs=50, batch_size=128),
    )
    # PyTorch's transfer-learning tutorial ("Transfer Learning for Computer Vision", the ants/bees
    # folder) as people run it on AlexNet: torchvision's ImageNet weights with a new last layer, SGD
    # lr 0.001 momentum 0.9 (no weight decay), StepLR(7, 0.1), 25 epochs, batch 4,
    # RandomResizedCrop(224) + flip for training, Resize(256) + CenterCrop(224) for evaluation,
    # ImageNet mean/std. Where it departs: the short side is resized to 256 once, at prepare (the
    # tutorial's RandomResizedCrop reads the original photo), and the resize of a crop has no
    # antialiasing (one batched grid_sample; see data/transforms.py).
    finetune = RunConfig(
        "finetune",
        model=ModelConfig(name="torchvision", weights="DEFAULT", init="torch"),
        data=DataConfig(size=256, crop=224, crop_mode="resized", lighting="none", normalize="channel"),
        optim=OptimConfig(lr=0.001, momentum=0.9, weight_decay=0.0),
        schedule=ScheduleConfig(name="step", step_size=7, factor=0.1),
        train=TrainConfig(epochs=25, batch_size=4),
    )
    presets = (paper, torchvision, d2l, figure1, cifar10, cifar10_long, paddle, finetune)
    return {c.preset: c for c in presets}


def preset_names() -> list[str]:
    return list(_presets())


def preset(name: str) -> RunConfig:
    presets = _presets()
    if name not in presets:
        raise AlexNetError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    return presets[name]


def short(value) -> str:
    """A value as an error line shows it: its repr, cut to MAX_ERROR_VALUE characters."""
    text = repr(value)
    return text if len(text) <= MAX_ERROR_VALUE else text[: MAX_ERROR_VALUE - 1] + "…"


def choices(annotation) -> tuple | None:
    """The allowed values of a ``Literal`` field (inside ``| None`` too), else None."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = choices(arg)
            if found:
                return found
    return None


def _parse(key: str, text, annotation):
    """A value for a field from a string (--set) or a YAML scalar/list, by the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text is None or (isinstance(text, str) and text.lower() in ("none", "null", "")):
            return None
        inner = next(a for a in args if a is not type(None))
        return _parse(key, text, inner)
    if origin is Literal:
        value = str(text).strip()
        if value not in args:
            raise AlexNetError(f"{key}: {short(value)} is not one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if isinstance(text, (list, tuple)):
            items = text
        elif isinstance(text, str):
            items = [t for t in text.split(",") if t.strip()]
        else:
            items = [text]
        return tuple(_parse(key, item, args[0]) for item in items)
    if isinstance(text, (list, dict)):
        raise AlexNetError(f"{key}: expected one value, got a {type(text).__name__} {short(text)}")
    if annotation is bool:
        if isinstance(text, bool):
            return text
        if str(text).lower() in ("1", "true", "yes", "on"):
            return True
        if str(text).lower() in ("0", "false", "no", "off"):
            return False
        raise AlexNetError(f"{key}: {short(text)} is not true or false")
    try:
        if annotation is int:
            if isinstance(text, float) or (isinstance(text, str) and not text.strip().lstrip("-").isdigit()):
                raise ValueError
            return int(text)
        if annotation is float:
            return float(text)
    except (TypeError, ValueError):
        raise AlexNetError(
            f"{key}: {short(text)} is not {'an integer' if annotation is int else 'a number'}"
        ) from None
    return str(text).strip()


def _section_hints(section) -> dict:
    return typing.get_type_hints(type(section))


def override(config: RunConfig, values: dict) -> RunConfig:
    """``config`` with dotted keys (``optim.lr``) replaced; strings are parsed by the field's type."""
    sections = {name: getattr(config, name) for name in SECTIONS}
    for key, raw in values.items():
        section, _, name = str(key).partition(".")
        if section not in sections or not name:
            raise AlexNetError(
                f"unknown config key {short(key)}; keys look like optim.lr, train.epochs "
                f"(sections: {', '.join(sections)}; alexnet train --list-keys names them all)"
            )
        hints = _section_hints(sections[section])
        if name not in hints:
            raise AlexNetError(f"unknown config key {short(key)}; {section} has {', '.join(hints)}")
        value = _parse(key, raw, hints[name])
        if key == "train.freeze" and value == ("none",):
            value = ()
        sections[section] = dataclasses.replace(sections[section], **{name: value})
    resolved = dataclasses.replace(config, **sections)
    validate(resolved)
    return resolved


def field_rules(config: RunConfig | None = None):
    """(key, annotation, field) for every config field, section by section, in definition order."""
    config = config or RunConfig()
    for section in SECTIONS:
        part = getattr(config, section)
        hints = _section_hints(part)
        for f in dataclasses.fields(part):
            yield f"{section}.{f.name}", hints[f.name], f


def _combinations(config: RunConfig) -> list[tuple[str, bool, str]]:
    """(key, ok, what it must be) for the rules between fields, checked after every field's own."""
    t, o, d, s, m = config.train, config.optim, config.data, config.schedule, config.model
    return [
        ("data.std", len(d.std) == len(d.mean), "as many values as data.mean"),
        ("optim.nesterov", not (o.nesterov and o.name == "paper_sgd"), "false with paper_sgd"),
        ("optim.nesterov", not (o.nesterov and o.momentum == 0), "false without momentum"),
        ("optim.nesterov", not (o.nesterov and o.name == "adam"), "false with adam"),
        ("schedule.warmup_epochs", s.warmup_epochs <= t.epochs, "in [0, train.epochs]"),
        ("schedule.min_lr", s.min_lr < o.lr, "in [0, optim.lr)"),
        (
            "train.two_devices",
            t.two_devices is None or m.name == "paper",
            "set only for the paper model (§3.2)",
        ),
        ("data.cutout", d.cutout == 0 or d.crop_mode == "random", "0 with crop_mode resized"),
        ("train.freeze", "none" not in t.freeze or len(t.freeze) == 1, "none alone, or layers to freeze"),
    ]


def validate(config: RunConfig) -> None:
    """Every field's own rule (its choices and range) first, then the rules between fields."""
    for key, annotation, f in field_rules(config):
        section, _, name = key.partition(".")
        value = getattr(getattr(config, section), name)
        allowed = choices(annotation)
        if allowed and value is not None:
            values = value if isinstance(value, tuple) else (value,)
            bad = [v for v in values if v not in allowed]
            if bad:
                raise AlexNetError(f"{key}: {short(bad[0])} is not one of {', '.join(map(str, allowed))}")
        ok = f.metadata.get("ok")
        if ok is not None and not ok(value):
            raise AlexNetError(f"{key} must be {f.metadata['allowed']}, got {short(value)}")
    for key, ok, allowed in _combinations(config):
        if not ok:
            section, _, name = key.partition(".")
            value = getattr(getattr(config, section), name)
            raise AlexNetError(f"{key} must be {allowed}, got {short(value)}")


def keys_table(config: RunConfig | None = None) -> list[str]:
    """One line per config key: its value in ``config``, what it may be, and what it is for."""
    config = config or RunConfig()
    lines = []
    for key, annotation, f in field_rules(config):
        section, _, name = key.partition(".")
        value = getattr(getattr(config, section), name)
        allowed = choices(annotation)
        what = (
            " | ".join(map(str, allowed)) if allowed else f.metadata.get("allowed") or _type_name(annotation)
        )
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        lines.append(f"{key} = {shown}  [{what}]  {f.metadata.get('doc', '')}".rstrip())
    return lines


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return f"{_type_name(inner[0])} or none"
    if origin is tuple:
        return f"comma-separated {_type_name(typing.get_args(annotation)[0])}s"
    return {int: "integer", float: "number", bool: "true or false", str: "text"}.get(
        annotation, str(annotation)
    )


# What --resume may change without changing the run: how long, where and how fast it runs, and
# the learning rate (the NaN stop suggests a lower one).
RESUME_MAY_CHANGE = frozenset(
    {
        "train.epochs",
        "train.device",
        "train.precision",
        "train.compile",
        "train.channels_last",
        "train.log_every",
        "train.checkpoint_every",
        "train.out",
        "data.source",
        "data.workers",
        "optim.lr",
        "model.weights",  # read only at the start: a resumed run continues from its own checkpoint
    }
)


def config_differences(saved: RunConfig, new: RunConfig) -> list[tuple[str, object, object]]:
    """(key, saved value, new value) for each field a resume may not change."""
    a, b = flatten(to_dict(saved)), flatten(to_dict(new))
    return [(k, a[k], b.get(k)) for k in a if k not in RESUME_MAY_CHANGE and a[k] != b.get(k)]


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.02}} → {"optim.lr": 0.02}"""
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


MAX_YAML_BYTES = 1 << 20  # a config is a few KB; more is not a config


def read_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping, read safely: no aliases (a config has no use for them,
    and an alias bomb expands to gigabytes), at most ``MAX_YAML_BYTES``; any problem is one line."""
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise AlexNetError(f"{what} {path} is {path.stat().st_size:,} bytes, too large for a config")
        text = path.read_text()
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise AlexNetError(
                    f"{what} {path} uses YAML aliases (*name), which a config does not need; "
                    f"write the values out"
                )
        tree = yaml.safe_load(text)
    except FileNotFoundError:
        raise AlexNetError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AlexNetError(f"{what} {path} cannot be read ({first_line(exc)})") from None
    except yaml.YAMLError as exc:
        raise AlexNetError(f"{path} is not valid YAML ({first_line(exc)})") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise AlexNetError(f"{path} must hold a mapping like 'optim: {{lr: 0.02}}'")
    return tree


def load_yaml(path: str | Path) -> dict:
    """A YAML config file as flat overrides; ``preset: NAME`` in it picks the base recipe."""
    path = Path(path)
    if path.is_dir():
        raise AlexNetError(f"--config {path} is a folder; give a YAML file")
    return flatten(read_yaml_mapping(path, "config file"))


def to_dict(config: RunConfig) -> dict:
    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return {
        k: ({f: plain(v) for f, v in s.items()} if isinstance(s, dict) else s)
        for k, s in dataclasses.asdict(config).items()
    }


def from_dict(tree: dict) -> RunConfig:
    """The inverse of ``to_dict`` (e.g. a run's config.yaml or a checkpoint's config)."""
    if not isinstance(tree, dict):
        raise AlexNetError(f"a saved config must be a mapping, not a {type(tree).__name__}")
    flat = flatten({k: v for k, v in tree.items() if k != "preset"})
    return override(preset(str(tree.get("preset", "paper"))), flat)


def resolve(
    preset_name: str,
    *,
    yaml_file: str | Path | None = None,
    sets: dict | None = None,
    defaults: Callable[[RunConfig, dict], dict] | None = None,
) -> RunConfig:
    """Preset, then ``defaults`` (given the preset and the user's values: e.g. the preprocessing of
    the weights a run starts from), then the YAML file, then --set values: the order the CLI
    applies them, so what the user writes always wins."""
    values = load_yaml(yaml_file) if yaml_file else {}
    base = preset(str(values.pop("preset", preset_name)))
    values.update(sets or {})
    if defaults is not None:
        base = override(base, defaults(base, values))
    return override(base, values)


def describe(config: RunConfig) -> str:
    """The recipe in one line, as the README's preset table shows it (a test keeps the two equal)."""
    m, d, o, s, t = config.model, config.data, config.optim, config.schedule, config.train
    update = {"paper_sgd": "§5's SGD rule (learning rate inside the velocity)", "adam": "Adam"}.get(
        o.name, "SGD"
    )
    momentum = (
        f"momentum {o.momentum:g}{' (Nesterov)' if o.nesterov else ''}" if o.momentum else "no momentum"
    )
    if o.name == "adam":
        momentum = "betas 0.9/0.999"
    decay = f"weight decay {o.weight_decay:g}{'' if o.bias_decay else ' (weights only, not biases)'}"
    schedule = {
        "plateau": f"÷{1 / s.factor:g} on a validation plateau (patience {s.patience}) "
        f"at most {s.max_drops} times"
        + (", once validation has left the class prior" if s.wait_for_learning else ""),
        "step": f"÷{1 / s.factor:g} every {s.step_size} epochs",
        "cosine": f"cosine to {s.min_lr:g}",
        "constant": "constant rate",
    }[s.name]
    if s.warmup_epochs:
        schedule += f" after {s.warmup_epochs:g} warm-up epoch(s)"
    crops = f"RandomResizedCrop({d.crop})" if d.crop_mode == "resized" else f"{d.crop}×{d.crop} random crops"
    if d.flip:
        crops += " + flips"
    if d.lighting != "none":
        crops += f" + PCA lighting ({'the store' if d.lighting == 'store' else 'ImageNet'}'s eigenpairs)"
    if d.cutout:
        crops += f" + {d.cutout}×{d.cutout} Cutout"
    if d.resize:
        crops += f", resized to {d.resize}"
    if d.normalize == "mean_image":
        crops += ", minus the per-pixel mean image"
    else:
        crops += f", mean {'/'.join(f'{v:g}' for v in d.mean)} std {'/'.join(f'{v:g}' for v in d.std)}"
    parts = [
        f"{update} lr {o.lr:g}, {momentum}, {decay}",
        f"batch {t.batch_size}, {t.epochs} epochs",
        schedule,
    ]
    if t.label_smoothing:
        parts.append(f"label smoothing {t.label_smoothing:g}")
    model = [
        f"{m.init} init" if m.init else "",
        f"groups {m.groups}" if m.groups else "",
        f"widths {'/'.join(map(str, m.widths))}" if m.widths else "",
        {"after-pool": "LRN after the pools", "before-pool": "LRN before the pools"}.get(m.lrn_position, ""),
        f"dropout {m.dropout:g}",
    ]
    parts += [crops, ", ".join(p for p in model if p)]
    if m.weights:
        start = (
            f"from {'torchvision' if m.weights == 'DEFAULT' else ''} {m.weights} weights, a new last layer"
        )
        parts.insert(0, " ".join(start.split()))
    if t.freeze:
        parts.append(f"frozen: {', '.join(t.freeze)}")
    if o.backbone_lr_scale != 1:
        parts.append(f"layers before the last at ×{o.backbone_lr_scale:g} the rate")
    if d.val_split == "test":
        parts.append("all training images, validated on test")
    parts.append("ten-crop final evaluation" if d.ten_crop else "centre-crop final evaluation")
    return "; ".join(parts)
