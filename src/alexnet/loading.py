"""A model back from any file it can come in, and a run that starts from one.

- ``load_model(path)``: a trained model ready to evaluate, predict, look inside or export, from a
  run directory (its best.pt, else last.pt), a checkpoint, an ``alexnet export --format
  safetensors`` file, torchvision's weights by name (``"DEFAULT"``) or a torchvision-format file.
  The model comes with its class names and the preprocessing it was trained with.
- ``read_weights(spec)`` / ``load_pretrained``: the weights a training run starts from
  (``model.weights``, fine-tuning): every tensor but the last layer's, loaded exactly.
- ``resolve_run``: a run's config, with the architecture and preprocessing the weights name taken
  between the preset and the user's own values.

Training, evaluation and the analysis commands all load models through this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import NotACheckpoint, load_checkpoint, load_model_state, model_arch, resolve_checkpoint
from .config import IMAGENET_MEAN, IMAGENET_STD, RunConfig, from_dict, preset, resolve
from .data.decode import decode
from .data.store import Split
from .data.transforms import Normalization
from .errors import AlexNetError
from .models import build_model
from .models.registry import MODEL_DESCRIPTIONS, is_torchvision_classifier
from .recipe import Preprocessing, build_for_run, head_keys
from .runtime import autocast, keep_freed_cpu_memory, resolve_device, resolve_precision
from .weights import (
    check_state_fits,
    pretrained_state,
    read_safetensors,
    read_state_file,
    torchvision_model_of,
    torchvision_weights,
)

# The model fields a run takes from the run or export it starts from (not init: the new last
# layer is initialised as the new recipe says; not weights: that is the run itself).
ARCH_FIELDS = ("name", "activation", "lrn", "pool", "groups", "dropout", "drop_layers", "widths")
NO_WEIGHTS = (None, "", "none", "None", "null")


# ---------------------------------------------------------------------------- weights to start from


@dataclass(frozen=True)
class Pretrained:
    """Weights a model can start from, and what they say about the model and its input."""

    source: str  # what they are, for the log
    arch: str | None  # the build_model name they are for, when they name one
    sets: dict  # config values they imply: model architecture and data preprocessing
    classes: list[str] | None  # the classes of their own last layer
    channels: int = 3
    mean_image: torch.Tensor | None = None  # float32 [S, S, C], 0–255: when trained on §2's mean image
    preprocessing: Preprocessing | None = None
    state: dict | None = field(default=None, repr=False)  # the tensors (None: read the metadata only)
    file: str = ""  # the file they were read from (torchvision's: its name in the hub cache)


def _torchvision_name(model_name: str) -> str:
    """The torchvision builder whose weights ``DEFAULT`` means for a run of ``model_name``."""
    return model_name if model_name not in MODEL_DESCRIPTIONS else "alexnet"


def read_weights(spec: str | Path, model_name: str = "torchvision", *, tensors: bool = True) -> Pretrained:
    """What ``model.weights`` names: torchvision's weights by name (for ``model_name``'s builder;
    our own models take torchvision's AlexNet's), a run directory or checkpoint of ours, a
    safetensors export, or any state_dict file (which names no architecture)."""
    text = str(spec)
    named = torchvision_weights(text, _torchvision_name(model_name)) if not Path(text).exists() else None
    if named is not None:
        builder = torchvision_model_of(named)
        arch = "torchvision" if builder == "alexnet" else builder
        crop, size = _torchvision_sizes(named)
        mean, std = tuple(named.transforms().mean), tuple(named.transforms().std)
        preprocessing = Preprocessing(size, 3, crop, None, Normalization(mean=mean, std=std))
        return Pretrained(
            f"torchvision's {named}",
            arch,
            {"model.name": arch, **_data_sets(preprocessing)},
            list(named.meta["categories"]),
            preprocessing=preprocessing,
            state=pretrained_state(named) if tensors else None,
            file=Path(named.url).name,
        )
    path = Path(text).expanduser()
    if not path.exists():
        raise AlexNetError(
            f"weights {text!r}: no such file or folder, and not a torchvision weights name "
            f"(DEFAULT, IMAGENET1K_V1, or e.g. AlexNet_Weights.IMAGENET1K_V1)"
        )
    if path.suffix == ".safetensors":
        return _from_export(path, tensors)
    try:
        state = load_checkpoint(path, mmap=not tensors)
    except NotACheckpoint:
        return Pretrained(str(path), None, {}, None, state=read_state_file(path) if tensors else None)
    return _from_checkpoint(resolve_checkpoint(path), state, tensors)


def _torchvision_sizes(weights) -> tuple[int, int]:
    """(crop, short side) of a torchvision weights' evaluation transform: 224 and 256 for AlexNet."""
    t = weights.transforms()
    first = lambda v: int(v[0] if isinstance(v, (list, tuple)) else v)  # noqa: E731
    return first(t.crop_size), first(t.resize_size)


def _data_sets(p: Preprocessing) -> dict:
    """The data config that prepares images as ``p`` does."""
    sets = {"data.size": p.image_size, "data.crop": p.crop, "data.resize": p.resize}
    if p.normalization.mean_image is not None:
        return {**sets, "data.normalize": "mean_image"}
    return {**sets, "data.normalize": "channel", "data.mean": list(p.normalization.mean),
            "data.std": list(p.normalization.std)}  # fmt: skip


def _arch_sets(config: RunConfig) -> dict:
    return {f"model.{k}": getattr(config.model, k) for k in ARCH_FIELDS}


def _from_checkpoint(path: Path, state: dict, tensors: bool) -> Pretrained:
    config = from_dict(state["config"])
    channels = int(state["arch"].get("in_channels", 3))
    if str(state["arch"].get("name", "")).startswith("custom:"):
        raise AlexNetError(
            f"{path} holds a module of its own ({state['arch']['name'][7:]}); start from it in Python "
            f"(fit(config, model=...) with its weights loaded) instead of model.weights"
        )
    preprocessing = Preprocessing.from_state(state, channels, str(path))
    mean = preprocessing.normalization.mean_image
    return Pretrained(str(path), config.model.name, {**_arch_sets(config), **_data_sets(preprocessing)},
                      list(state["classes"]), channels, mean, preprocessing,
                      state["model"] if tensors else None)  # fmt: skip


def _from_export(path: Path, tensors: bool) -> Pretrained:
    state, extra, meta = read_safetensors(path, tensors=tensors)
    if not meta:  # a safetensors file from elsewhere: weights alone
        return Pretrained(str(path), None, {}, None, state=state if tensors else None)
    try:
        config = from_dict(meta["config"])
        channels = int(meta["arch"]["in_channels"])
        norm = dict(meta["normalization"])
        if norm.get("kind") == "mean_image":
            if tensors and "mean_image" not in extra:
                raise KeyError("the mean image tensor")
            norm["mean_image"] = extra.get(
                "mean_image", torch.zeros(meta["image_size"], meta["image_size"], channels)
            )
        preprocessing = Preprocessing.from_state({**meta, "normalization": norm}, channels, str(path))
        classes = [str(c) for c in meta["classes"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise AlexNetError(f"{path} has incomplete alexnet metadata ({exc}); export it again") from None
    mean = preprocessing.normalization.mean_image if tensors else None
    return Pretrained(str(path), config.model.name, {**_arch_sets(config), **_data_sets(preprocessing)},
                      classes, channels, mean, preprocessing, state if tensors else None)  # fmt: skip


def load_pretrained(model: nn.Module, pretrained: Pretrained) -> list[str]:
    """Load every tensor of ``pretrained`` into ``model`` but the last layer's, which stays new (as
    the recipe initialised it, for the data's classes). Any other tensor that is missing or has
    another shape is an error naming it. Returns the last layer's keys."""
    if pretrained.state is None:
        raise AlexNetError(f"{pretrained.source}: no tensors were read")
    skip = head_keys(model)
    check_state_fits(model, pretrained.state, pretrained.source, skip=skip)
    kept = {k: v for k, v in pretrained.state.items() if k not in skip}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    assert not unexpected and set(missing) == set(skip), (missing, unexpected)
    return list(skip)


def weights_defaults(base: RunConfig, values: dict) -> dict:
    """The config values the weights of a run imply (its architecture and preprocessing), given the
    preset ``base`` and the user's own ``values``: nothing when the run starts from scratch."""
    weights = values.get("model.weights", base.model.weights)
    if weights in NO_WEIGHTS:
        return {}
    model_name = str(values.get("model.name", base.model.name))
    return dict(read_weights(str(weights), model_name, tensors=False).sets)


def resolve_run(
    preset_name: str, *, yaml_file: str | Path | None = None, sets: dict | None = None
) -> RunConfig:
    """A run's config: the preset, the weights' architecture and preprocessing (when it starts from
    weights), the YAML file, then ``sets``; what the user writes always wins."""
    return resolve(preset_name, yaml_file=yaml_file, sets=sets, defaults=weights_defaults)


# ---------------------------------------------------------------------------- a model to use


@dataclass(frozen=True)
class Prediction:
    path: str  # the image file, or split[row] for an image of a data set
    top: list[tuple[str, float]]  # (class name, probability), most likely first
    truth: str | None = None  # the true class, when it is known (an image of a data set)
    row: int | None = None  # its row in the split


@dataclass
class LoadedModel:
    """A trained model in eval mode with everything needed to use it on new images."""

    model: nn.Module
    config: RunConfig
    classes: list[str]
    preprocessing: Preprocessing
    checkpoint: Path  # the file it came from (or torchvision's file name)
    epoch: int
    device: torch.device
    precision: str

    @property
    def image_size(self) -> int:
        return self.preprocessing.image_size

    @property
    def channels(self) -> int:
        return self.preprocessing.channels

    def transform(self, ten_crop: bool = False):
        """The evaluation transform the model was trained with: uint8 [B, S, S, C] → model input."""
        return self.preprocessing.transform(ten_crop)

    def load_images(
        self, paths: Sequence[str | Path]
    ) -> tuple[torch.Tensor, list[str], list[tuple[str, str]]]:
        """(uint8 [N, S, S, C] of the usable images, their paths, (path, reason) of the rest)."""
        images, kept, skipped = [], [], []
        for path in paths:
            pixels = decode(path, self.image_size, self.channels)
            if isinstance(pixels, str):
                skipped.append((str(path), pixels))
                continue
            images.append(torch.from_numpy(np.array(pixels)))  # a writable copy of the decoded pixels
            kept.append(str(path))
        shape = (0, self.image_size, self.image_size, self.channels)
        batch = torch.stack(images) if images else torch.empty(shape)
        return batch.to(torch.uint8), kept, skipped

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, ten_crop: bool = False) -> torch.Tensor:
        """Softmax over the classes for uint8 [B, S, S, C] images (ten crops: averaged, §4.1)."""
        x = self.transform(ten_crop)(images.to(self.device))
        with autocast(self.device, self.precision):
            if x.dim() == 5:
                return sum(self.model(x[:, v]).float().softmax(1) for v in range(x.shape[1])) / x.shape[1]
            return self.model(x).float().softmax(1)

    def top(self, probs: torch.Tensor, names: Sequence[str], topk: int = 5) -> list[Prediction]:
        values, indices = probs.topk(min(topk, len(self.classes)), dim=1)
        return [
            Prediction(
                name, [(self.classes[i], float(p)) for p, i in zip(v.tolist(), ix.tolist(), strict=True)]
            )
            for name, v, ix in zip(names, values, indices, strict=True)
        ]

    def predict_split(
        self, split: Split, classes: Sequence[str], *, limit: int | None = None, topk: int = 5,
        ten_crop: bool = False, batch_size: int = 64,
    ) -> list[Prediction]:  # fmt: skip
        """Top-k classes of ``limit`` evenly spaced images of a data set's split, with their true class."""
        if self.image_size != split.images.shape[1] or self.channels != split.images.shape[-1]:
            raise AlexNetError(
                f"the model takes images prepared at {self.image_size}×{self.image_size}×{self.channels}; "
                f"this data holds {split.images.shape[1]}×{split.images.shape[2]}×{split.images.shape[3]}"
            )
        n = len(split) if limit is None else min(limit, len(split))
        rows = np.unique(np.round(np.linspace(0, len(split) - 1, n)).astype(np.int64)) if n else []
        out: list[Prediction] = []
        for start in range(0, len(rows), batch_size):
            part = rows[start : start + batch_size]
            images = torch.from_numpy(np.array(split.images[part]))
            names = [f"{split.name}[{r}]" for r in part]
            for p, r in zip(self.top(self.probabilities(images, ten_crop), names, topk), part, strict=True):
                out.append(Prediction(p.path, p.top, classes[int(split.labels[r])], int(r)))
        return out

    def predict(
        self, paths: Sequence[str | Path], *, topk: int = 5, ten_crop: bool = False
    ) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Top-k classes of each image file; files that cannot be decoded come back as (path, reason)."""
        images, kept, skipped = self.load_images(paths)
        if not kept:
            return [], skipped
        return self.top(self.probabilities(images, ten_crop), kept, topk), skipped


def _model_device(name: str) -> torch.device:
    dev = resolve_device(name)
    if dev.type == "cpu":  # batch after batch of activations reuse the same pages, as in training
        keep_freed_cpu_memory()
    return dev


def _ready(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.float().to(device)  # an fp16- or bf16-saved model runs in fp32 on any device
    return model.to(memory_format=torch.channels_last).eval()


def load_model(path: str | Path, *, device: str = "auto", model: nn.Module | None = None) -> LoadedModel:
    """The model of a run directory (its best.pt, else last.pt) or checkpoint, ready to predict.

    Also an ``alexnet export --format safetensors`` file, and torchvision's ImageNet weights:
    ``"DEFAULT"`` (through torchvision's weights API and cache) or their file, e.g.
    ``alexnet-owt-7be5be79.pth``. ``model``: the module a run of your own trained
    (``fit(config, model=...)``), to load its checkpoint into.
    """
    text = str(path)
    if Path(text).exists() and Path(text).suffix != ".safetensors":
        try:
            state = load_checkpoint(path)
        except NotACheckpoint:
            state = None
        if state is not None:
            return _from_run(resolve_checkpoint(path), state, device, model)
    return _from_weights(read_weights(text, "torchvision"), device)


def _from_run(path: Path, state: dict, device: str, model: nn.Module | None) -> LoadedModel:
    config = from_dict(state["config"])
    dev = _model_device(device)
    classes = list(state["classes"])
    channels = int(state["arch"].get("in_channels", 3))
    arch = str(state["arch"].get("name", config.model.name))
    if model is None:
        if arch.startswith("custom:"):
            raise AlexNetError(
                f"{path} was trained from a module of its own ({arch[7:]}); load it in Python with "
                f"alexnet.load_model(PATH, model={arch[7:]}(...))"
            )
        model = build_for_run(config, len(classes), channels)
    load_model_state(model, state, path)
    # A run trained in fp16 on a GPU is used in fp32 on a CPU (which has no fp16 training)
    asked = "auto" if dev.type == "cpu" and config.train.precision == "fp16" else config.train.precision
    precision, _ = resolve_precision(asked, dev)
    preprocessing = Preprocessing.from_state(state, channels, str(path))
    return LoadedModel(_ready(model, dev), config, classes, preprocessing, path, int(state.get("epoch", 0)),
                       dev, precision)  # fmt: skip


def _from_weights(pretrained: Pretrained, device: str) -> LoadedModel:
    """A model from weights alone: built for their architecture and classes (a bare state_dict is
    taken for torchvision's AlexNet and its ImageNet classes, as torchvision's file is)."""
    arch = pretrained.arch or "torchvision"
    config = preset("torchvision")
    if pretrained.sets:
        config = resolve("torchvision", sets={k: v for k, v in pretrained.sets.items()})
    classes = pretrained.classes
    if classes is None:
        classes = list(torchvision_weights("DEFAULT").meta["categories"])
    preprocessing = pretrained.preprocessing
    if preprocessing is None:  # torchvision's evaluation: Resize(256), CenterCrop(224), mean/std
        preprocessing = Preprocessing(256, 3, 224, None, Normalization(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    if arch in MODEL_DESCRIPTIONS:
        model = build_for_run(config, len(classes), pretrained.channels)
    elif is_torchvision_classifier(arch):
        model = build_model(arch, num_classes=len(classes))
    else:
        raise AlexNetError(f"{pretrained.source}: unknown architecture {arch!r}")
    check_state_fits(model, pretrained.state, pretrained.source)
    model.load_state_dict(pretrained.state)
    dev = _model_device(device)
    return LoadedModel(_ready(model, dev), config, list(classes), preprocessing,
                       Path(pretrained.file or pretrained.source), 0, dev, "fp32")  # fmt: skip


__all__ = ["LoadedModel", "Prediction", "Pretrained", "load_model", "load_pretrained", "model_arch",
           "read_weights", "resolve_run", "weights_defaults"]  # fmt: skip
