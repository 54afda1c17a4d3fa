"""Run configuration: frozen dataclasses per concern, named presets, and one override path.

``preset(name)`` gives a recipe; ``override(config, {"optim.lr": "0.02"})`` changes fields by dotted
key, parsing strings by the field's type, so ``--set optim.lr=0.02`` and a YAML file (flattened to
the same keys) go through the same code. ``to_dict`` writes the resolved config into every run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import AlexNetError
from .models.alexnet import DROPPABLE_LAYERS, INITS, POOLS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of the CIFAR-10 training set, [0, 1]
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "paper"  # a build_model name
    activation: str = "relu"  # §3.1
    lrn: bool | None = None  # §3.3; None: the architecture's own choice
    pool: str = "overlapping"  # §3.4: 3/2, or non-overlapping 2/2
    groups: int | None = None  # §3.2: 2 = the two towers; None: the architecture's own
    dropout: float = 0.5  # §4.2, on fc6 and fc7
    drop_layers: tuple[str, ...] = ()  # §7: conv3/conv4/conv5 removed
    widths: tuple[int, ...] | None = None  # conv1..conv5 output channels
    init: str | None = None  # paper | caffe | torch; None: the architecture's own

    def switches(self) -> dict:
        """Keyword arguments for build_model, leaving out what the architecture decides by itself."""
        from .models.registry import MODEL_DESCRIPTIONS

        if self.name not in MODEL_DESCRIPTIONS:  # torchvision's classifiers: as torchvision defines them
            return {}
        out = {"activation": self.activation, "pool": self.pool, "dropout": self.dropout}
        if self.name != "figure1":
            out.update(drop_layers=self.drop_layers, groups=self.groups, init=self.init)
        if self.lrn is not None:
            out["lrn"] = self.lrn
        if self.widths is not None:
            out["widths"] = self.widths
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class DataConfig:
    source: str | None = None  # --data: a store, an ImageFolder root or a torchvision set name
    size: int | None = None  # prepare: short side and crop, pixels (None: 256, or smaller sets' own)
    crop: int = 227  # training and evaluation crop, pixels (§4.1 says 224; Caffe's 227 fits the net)
    # random: §4.1's random crop×crop windows of the stored image; resized: torchvision's
    # RandomResizedCrop (area 8–100 %, aspect 3/4–4/3, resized to crop×crop) for training, and
    # evaluation on the centre crop×crop of the stored image
    crop_mode: str = "random"
    resize: int | None = None  # bilinear resize of the crop to this side on the device (d2l: 28 → 224)
    flip: bool = True  # §4.1 horizontal reflections
    lighting: str = "store"  # §4.1 PCA lighting: store (the training set's eigenpairs), imagenet, none
    lighting_std: float = 0.1  # §4.1: α ~ N(0, 0.1)
    normalize: str = "mean_image"  # §2 per-pixel mean image, or "channel" mean/std (torchvision)
    mean: tuple[float, ...] = IMAGENET_MEAN  # for normalize=channel, pixels in [0, 1]
    std: tuple[float, ...] = IMAGENET_STD
    ten_crop: bool = False  # §4.1 test-time ten crops (evaluation at the end of training)
    train_split: str = "train"
    # None: the data's val split, else a held-out part of train; the test split validates (picks
    # rate drops and best.pt) only when named here
    val_split: str | None = None
    holdout: float = 0.1  # fraction of train held out for validation when there is no val split
    holdout_seed: int = 0  # the held-out images are the same for every training seed
    limit_train: int | None = None  # use only N training images, evenly spaced (slices for quick runs)
    limit_val: int | None = None
    workers: int | None = None  # processes for a first-use prepare


@dataclass(frozen=True)
class OptimConfig:
    # sgd (torch.optim.SGD) | paper_sgd (§5: learning rate inside the velocity) | adam (momentum unused)
    name: str = "sgd"
    lr: float = 0.01  # §5
    momentum: float = 0.9  # §5
    weight_decay: float = 5e-4  # §5
    nesterov: bool = False
    # False: biases in a group of their own without weight decay (cuda-convnet, which the paper
    # used, set no weight cost on biases; §5's rule decays "weights")
    bias_decay: bool = True


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "plateau"  # plateau | step | cosine | constant
    factor: float = 0.1  # §5: divide by 10
    patience: int = 2  # plateau: epochs without a better validation error before a drop
    max_drops: int = 3  # §5: "reduced three times prior to termination"
    step_size: int = 30  # step: epochs between drops
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs
    min_lr: float = 0.0  # cosine floor


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 90  # §5: "roughly 90 cycles"
    batch_size: int = 128  # §5, global across ranks
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 where supported, else fp32) | fp32 | bf16 | fp16
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-exact resume on the CPU
    label_smoothing: float = 0.0
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints (0: only at epoch ends)
    log_every: int = 50  # steps between plain log lines when stderr is not a terminal
    out: str | None = None  # run directory (default runs/<preset>-<date>)
    two_devices: tuple[str, ...] | None = None  # §3.2 split over two devices, e.g. ("cuda:0", "cuda:1")


@dataclass(frozen=True)
class RunConfig:
    preset: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


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
        model=ModelConfig(name="cifar10", init="kaiming", groups=2, dropout=0.25),
        data=DataConfig(crop=28, normalize="channel", mean=CIFAR10_MEAN, std=CIFAR10_STD, ten_crop=True),
        optim=OptimConfig(lr=0.04, weight_decay=5e-4, nesterov=True),
        schedule=ScheduleConfig(name="cosine", warmup_epochs=1.0),
        train=TrainConfig(epochs=22, batch_size=128, label_smoothing=0.1),
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
    return {c.preset: c for c in (paper, torchvision, d2l, figure1, cifar10, paddle)}


def preset_names() -> list[str]:
    return list(_presets())


def preset(name: str) -> RunConfig:
    presets = _presets()
    if name not in presets:
        raise AlexNetError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    return presets[name]


CHOICES = {
    "model.pool": tuple(POOLS),
    "model.init": INITS,
    "data.lighting": ("store", "imagenet", "none"),
    "data.normalize": ("mean_image", "channel"),
    "data.crop_mode": ("random", "resized"),
    "optim.name": ("sgd", "paper_sgd", "adam"),
    "schedule.name": ("plateau", "step", "cosine", "constant"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
}


def _parse(key: str, text, annotation):
    """A value for a field from a string (--set) or a YAML scalar/list, by the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text is None or (isinstance(text, str) and text.lower() in ("none", "null", "")):
            return None
        inner = next(a for a in args if a is not type(None))
        return _parse(key, text, inner)
    if origin is tuple:
        items = text if isinstance(text, (list, tuple)) else [t for t in str(text).split(",") if t.strip()]
        return tuple(_parse(key, item, args[0]) for item in items)
    if annotation is bool:
        if isinstance(text, bool):
            return text
        if str(text).lower() in ("1", "true", "yes", "on"):
            return True
        if str(text).lower() in ("0", "false", "no", "off"):
            return False
        raise AlexNetError(f"{key}: {text!r} is not true or false")
    try:
        if annotation is int:
            if isinstance(text, float) or (isinstance(text, str) and not text.strip().lstrip("-").isdigit()):
                raise ValueError
            return int(text)
        if annotation is float:
            return float(text)
    except (TypeError, ValueError):
        raise AlexNetError(
            f"{key}: {text!r} is not {'an integer' if annotation is int else 'a number'}"
        ) from None
    return str(text).strip()


def override(config: RunConfig, values: dict) -> RunConfig:
    """``config`` with dotted keys (``optim.lr``) replaced; strings are parsed by the field's type."""
    sections = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "preset"}
    for key, raw in values.items():
        section, _, name = key.partition(".")
        if section not in sections or not name:
            raise AlexNetError(
                f"unknown config key {key!r}; keys look like optim.lr, train.epochs "
                f"(sections: {', '.join(sections)})"
            )
        hints = typing.get_type_hints(type(sections[section]))
        if name not in hints:
            raise AlexNetError(f"unknown config key {key!r}; {section} has {', '.join(hints)}")
        value = _parse(key, raw, hints[name])
        if key in CHOICES and value is not None and value not in CHOICES[key]:
            raise AlexNetError(f"{key}: {value!r} is not one of {', '.join(CHOICES[key])}")
        sections[section] = dataclasses.replace(sections[section], **{name: value})
    resolved = dataclasses.replace(config, **sections)
    validate(resolved)
    return resolved


def _ranges(config: RunConfig) -> list[tuple[str, bool, str]]:
    """(key, ok, the range it must be in) for every numeric field and every combination."""
    t, o, d, s, m = config.train, config.optim, config.data, config.schedule, config.model

    def optional_at_least(value, low):
        return value is None or value >= low

    from .models.registry import MODEL_DESCRIPTIONS, is_torchvision_classifier

    return [
        (
            "model.name",
            m.name in MODEL_DESCRIPTIONS or is_torchvision_classifier(m.name),
            f"one of {', '.join(MODEL_DESCRIPTIONS)} or a torchvision classification model (resnet18, …)",
        ),
        ("model.dropout", 0 <= m.dropout < 1, "in [0, 1)"),
        ("model.groups", m.groups in (None, 1, 2), "1 or 2"),
        (
            "model.widths",
            m.widths is None or (len(m.widths) == 5 and min(m.widths) >= 1),
            "5 positive numbers",
        ),
        ("model.drop_layers", set(m.drop_layers) <= DROPPABLE_LAYERS, "a subset of conv3, conv4, conv5"),
        ("data.size", optional_at_least(d.size, 1), "≥ 1 pixel"),
        ("data.crop", d.crop >= 1, "≥ 1 pixel"),
        ("data.resize", optional_at_least(d.resize, 1), "≥ 1 pixel"),
        ("data.lighting_std", d.lighting_std >= 0, "≥ 0"),
        ("data.mean", len(d.mean) >= 1 and all(0 <= v <= 1 for v in d.mean), "values in [0, 1]"),
        (
            "data.std",
            len(d.std) == len(d.mean) and all(v > 0 for v in d.std),
            "as many positive values as mean",
        ),
        ("data.holdout", 0 < d.holdout < 1, "in (0, 1)"),
        ("data.holdout_seed", d.holdout_seed >= 0, "≥ 0"),
        ("data.limit_train", optional_at_least(d.limit_train, 1), "≥ 1 (or none)"),
        ("data.limit_val", optional_at_least(d.limit_val, 1), "≥ 1 (or none)"),
        ("data.workers", optional_at_least(d.workers, 1), "≥ 1 (or none)"),
        ("optim.lr", o.lr > 0, "> 0"),
        ("optim.momentum", 0 <= o.momentum < 1, "in [0, 1)"),
        ("optim.weight_decay", o.weight_decay >= 0, "≥ 0"),
        ("optim.nesterov", not (o.nesterov and o.name == "paper_sgd"), "false with paper_sgd"),
        ("optim.nesterov", not (o.nesterov and o.momentum == 0), "false without momentum"),
        ("optim.nesterov", not (o.nesterov and o.name == "adam"), "false with adam"),
        ("schedule.factor", 0 < s.factor < 1, "in (0, 1)"),
        ("schedule.patience", s.patience >= 0, "≥ 0 epochs"),
        ("schedule.max_drops", s.max_drops >= 0, "≥ 0"),
        ("schedule.step_size", s.step_size >= 1, "≥ 1 epoch"),
        ("schedule.warmup_epochs", 0 <= s.warmup_epochs <= t.epochs, "in [0, train.epochs]"),
        ("schedule.min_lr", 0 <= s.min_lr < o.lr, "in [0, optim.lr)"),
        ("train.epochs", t.epochs >= 1, "≥ 1"),
        ("train.batch_size", t.batch_size >= 1, "≥ 1"),
        ("train.seed", t.seed >= 0, "≥ 0"),
        ("train.label_smoothing", 0 <= t.label_smoothing < 1, "in [0, 1)"),
        ("train.checkpoint_every", t.checkpoint_every >= 0, "≥ 0 steps (0: epoch ends only)"),
        ("train.log_every", t.log_every >= 1, "≥ 1 step"),
        ("train.device", _device_name_ok(t.device), "auto, cpu, cuda or cuda:N"),
        ("train.two_devices", t.two_devices is None or len(t.two_devices) == 2, "two devices, e.g. cpu,cpu"),
        (
            "train.two_devices",
            t.two_devices is None or m.name == "paper",
            "set only for the paper model (§3.2)",
        ),
        (
            "train.two_devices",
            t.two_devices is None or all(_device_name_ok(x) and x != "auto" for x in t.two_devices),
            "two of cpu, cuda, cuda:N",
        ),
    ]


def _device_name_ok(name: str) -> bool:
    return name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())


def validate(config: RunConfig) -> None:
    """Every field's range and the combinations no type can rule out, checked before anything runs."""
    for key, ok, allowed in _ranges(config):
        if not ok:
            section, _, name = key.partition(".")
            value = getattr(getattr(config, section), name)
            raise AlexNetError(f"{key} must be {allowed}, got {value!r}")


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


def load_yaml(path: str | Path) -> dict:
    """A YAML config file as flat overrides; ``preset: NAME`` in it picks the base recipe."""
    path = Path(path)
    if path.is_dir():
        raise AlexNetError(f"--config {path} is a folder; give a YAML file")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise AlexNetError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AlexNetError(f"config file {path} cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        raise AlexNetError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise AlexNetError(f"{path} must hold a mapping like 'optim: {{lr: 0.02}}'")
    return flatten(tree)


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
    flat = flatten({k: v for k, v in tree.items() if k != "preset"})
    return override(preset(tree.get("preset", "paper")), flat)


def resolve(preset_name: str, *, yaml_file: str | Path | None = None, sets: dict | None = None) -> RunConfig:
    """Preset, then the YAML file, then --set values: the order the CLI applies them."""
    values = load_yaml(yaml_file) if yaml_file else {}
    base = preset(values.pop("preset", preset_name))
    values.update(sets or {})
    return override(base, values)


def describe(config: RunConfig) -> str:
    """The recipe in one line, as the README's preset table shows it (a test keeps the two equal)."""
    m, d, o, s, t = config.model, config.data, config.optim, config.schedule, config.train
    rule = {"paper_sgd": "§5's SGD rule (learning rate inside the velocity)", "adam": "Adam"}.get(
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
        f"at most {s.max_drops} times",
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
    if d.resize:
        crops += f", resized to {d.resize}"
    if d.normalize == "mean_image":
        crops += ", minus the per-pixel mean image"
    else:
        crops += f", mean {'/'.join(f'{v:g}' for v in d.mean)} std {'/'.join(f'{v:g}' for v in d.std)}"
    parts = [f"{rule} lr {o.lr:g}, {momentum}, {decay}", f"batch {t.batch_size}, {t.epochs} epochs", schedule]
    if t.label_smoothing:
        parts.append(f"label smoothing {t.label_smoothing:g}")
    model = [
        f"{m.init} init" if m.init else "",
        f"groups {m.groups}" if m.groups else "",
        f"dropout {m.dropout:g}",
    ]
    parts += [crops, ", ".join(p for p in model if p)]
    parts.append("ten-crop final evaluation" if d.ten_crop else "centre-crop final evaluation")
    return "; ".join(parts)
