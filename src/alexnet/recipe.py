"""What a run's config means for its model and its transforms; shared by training and evaluation.

How a model's input is made (``Preprocessing``: the size images are prepared at, the crop, the
resize and the normalisation) is saved in its checkpoint and rebuilt from there, so a checkpoint
is evaluated, used for prediction and exported exactly as it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import RunConfig
from .data.store import Store
from .data.transforms import (
    IMAGENET_EIGVALS,
    IMAGENET_EIGVECS,
    EvalTransform,
    Normalization,
    Resized,
    ResizedCropTransform,
    TrainTransform,
)
from .errors import AlexNetError
from .models import AlexNet, TwoTowerAlexNet, build_model

FREEZE_FEATURES = ("conv1", "conv2", "conv3", "conv4", "conv5")  # torchvision's ``features``
# A training crop this much smaller than the stored images sees only a corner of each (the cifar10
# recipe's 28-pixel crops of 256-pixel photos see 1 % of each image): say so.
SMALL_CROP_FRACTION = 0.5


def build_for_run(config: RunConfig, num_classes: int, in_channels: int) -> nn.Module:
    """The config's model for data of ``num_classes`` classes and ``in_channels`` channels."""
    m = config.model
    side = config.data.resize or config.data.crop
    return build_model(
        m.name, num_classes=num_classes, in_channels=in_channels, input_size=side, **m.switches()
    )


def place_model(config: RunConfig, model: nn.Module, device: torch.device) -> tuple[nn.Module, torch.device]:
    """The model on its device(s) (§3.2's two towers on two devices when train.two_devices names
    them), and the device its inputs go to."""
    t = config.train
    if t.two_devices:
        model = TwoTowerAlexNet.from_grouped(model, devices=t.two_devices)
        device = model.devices[0]
    else:
        model = model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, device


@dataclass(frozen=True)
class Transforms:
    train: TrainTransform | ResizedCropTransform | Resized
    center: EvalTransform | Resized
    ten_crop: EvalTransform | Resized
    saved: dict  # the normalisation, as the checkpoint keeps it


def head(model: nn.Module) -> nn.Module:
    """The last layer, the one a new task replaces: fc8 of our nets, else the last nn.Linear
    (torchvision's classifiers: alexnet classifier.6, resnet fc, vgg classifier.6, …)."""
    if isinstance(model, AlexNet):
        return model.layer("fc8")
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise AlexNetError(f"{type(model).__name__} has no nn.Linear layer to serve as its last layer")
    return linear[-1]


def head_keys(model: nn.Module) -> tuple[str, ...]:
    """The state_dict keys of the last layer."""
    module = head(model)
    owned = {id(t) for t in module.state_dict(keep_vars=True).values()}
    return tuple(k for k, v in model.state_dict(keep_vars=True).items() if id(v) in owned)


def frozen_parameters(model: nn.Module, freeze: tuple[str, ...]) -> list[str]:
    """The names of the parameters ``train.freeze`` keeps as they are, for this model.

    ``features``: conv1…conv5 (torchvision's ``features``); ``backbone``: every parameter but the
    last layer's; a paper layer name (conv1 … fc7) on our nets; any module path (``layer1``, …).
    """
    if not freeze:
        return []
    names = dict(model.named_parameters())
    last = set(head_keys(model))
    chosen: set[str] = set()
    for token in freeze:
        if token == "backbone":
            chosen |= {n for n in names if n not in last}
            continue
        paths = FREEZE_FEATURES if token == "features" and isinstance(model, AlexNet) else (token,)
        for path in paths:
            if isinstance(model, AlexNet) and path in model.layer_names().values():
                path = next(p for p, n in model.layer_names().items() if n == path)
            elif isinstance(model, AlexNet) and path in FREEZE_FEATURES:
                continue  # a conv layer the model has dropped (§7)
            found = {n for n in names if n == path or n.startswith(path + ".")}
            if not found:
                layers = (
                    ", ".join(model.layer_names().values()) if isinstance(model, AlexNet) else "module paths"
                )
                raise AlexNetError(
                    f"train.freeze: this model has no layer {token!r}; give none, features, backbone or "
                    f"{layers}"
                )
            chosen |= found
    if chosen & last:
        raise AlexNetError("train.freeze: the last layer is the one a new task trains; leave it out")
    return [n for n in names if n in chosen]


def freeze(model: nn.Module, freeze: tuple[str, ...]) -> list[str]:
    """Switch off gradients for the frozen parameters (they stay bit-identical: the optimiser never
    sees them); returns their names."""
    names = frozen_parameters(model, freeze)
    params = dict(model.named_parameters())
    for name in names:
        params[name].requires_grad_(False)
    return names


def crop_warning(config: RunConfig, store: Store) -> str | None:
    """A line for the log when the training crop covers a small corner of each stored image."""
    d = config.data
    if d.crop_mode == "random" and d.crop < SMALL_CROP_FRACTION * store.size:
        share = 100.0 * d.crop**2 / store.size**2
        return (
            f"warning: the {config.preset} recipe trains on {d.crop}×{d.crop} crops of {store.size}×"
            f"{store.size} images ({share:.0f} % of each); for photos use --preset finetune or torchvision, "
            f"or prepare the data at --size {round(d.crop * 8 / 7)} for this recipe"
        )
    return None


def saved_normalization(norm: Normalization) -> dict:
    if norm.mean_image is not None:
        return {"kind": "mean_image", "mean_image": norm.mean_image}
    return {"kind": "channel", "mean": list(norm.mean), "std": list(norm.std)}


def normalization_from(saved: dict) -> Normalization:
    if saved["kind"] == "mean_image":
        return Normalization(mean_image=saved["mean_image"].float())
    return Normalization(mean=tuple(saved["mean"]), std=tuple(saved["std"]))


def _normalization(config: RunConfig, store: Store) -> Normalization:
    d = config.data
    if d.normalize == "mean_image":
        if store.mean is None:
            raise AlexNetError(
                f"{store.root} has no training split, so no mean image; use "
                f"--set data.normalize=channel or prepare a set with train/"
            )
        return Normalization(mean_image=torch.from_numpy(store.mean.copy()))
    if len(d.mean) != store.channels or len(d.std) != store.channels:
        raise AlexNetError(
            f"data.mean/std have {len(d.mean)} values for {store.channels}-channel images; "
            f"set --set data.mean=... --set data.std=... with {store.channels}"
        )
    return Normalization(mean=tuple(d.mean), std=tuple(d.std))


def _eigenpairs(config: RunConfig, store: Store) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    lighting = config.data.lighting
    if lighting == "none":
        return None, None
    if store.channels != 3:
        raise AlexNetError(
            f"PCA lighting needs RGB images, {store.root} has {store.channels} channel(s); "
            f"use --set data.lighting=none"
        )
    if lighting == "imagenet":
        return torch.tensor(IMAGENET_EIGVALS), torch.tensor(IMAGENET_EIGVECS)
    if store.eigvals is None:
        raise AlexNetError(
            f"data.lighting=store, but {store.root} has no RGB eigenpairs (no training split); "
            f"use --set data.lighting=imagenet (PAPER.md's constants) or none"
        )
    return torch.from_numpy(store.eigvals.copy()), torch.from_numpy(store.eigvecs.copy())


def build_transforms(
    config: RunConfig, store: Store, normalization: Normalization | None = None
) -> Transforms:
    """Training, centre-crop and ten-crop transforms from the recipe and the store's statistics
    (``normalization``: one already fixed, e.g. by a checkpoint or the weights a run starts from)."""
    d = config.data
    if d.crop > store.size:
        raise AlexNetError(
            f"data.crop {d.crop} is larger than the store's {store.size}×{store.size} images; "
            f"use --set data.crop=N with N ≤ {store.size}, or prepare with --size"
        )
    norm = normalization or _normalization(config, store)
    if norm.mean_image is not None and tuple(norm.mean_image.shape[:2]) != (store.size, store.size):
        side = norm.mean_image.shape[0]
        raise AlexNetError(
            f"the mean image the model was trained with is {side}×{side}, the data is prepared at "
            f"{store.size}×{store.size}; prepare it with --size {side}"
        )
    eigvals, eigvecs = _eigenpairs(config, store)
    options = dict(flip=d.flip, eigvals=eigvals, eigvecs=eigvecs, lighting_std=d.lighting_std)
    if d.crop_mode == "resized":
        train = ResizedCropTransform(d.crop, norm, **options)
    else:
        train = TrainTransform(d.crop, norm, cutout=d.cutout, **options)
    center, ten = EvalTransform(d.crop, norm), EvalTransform(d.crop, norm, ten_crop=True)
    if d.resize:
        train, center, ten = Resized(train, d.resize), Resized(center, d.resize), Resized(ten, d.resize)
    return Transforms(train, center, ten, saved_normalization(norm))


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model's input: decoded and prepared at ``image_size`` (§2), then the
    evaluation crop (or ten crops), the resize and the normalisation the model was trained with."""

    image_size: int  # side of the square every image is resized and cropped to first (§2)
    channels: int
    crop: int
    resize: int | None
    normalization: Normalization

    def transform(self, ten_crop: bool = False) -> EvalTransform | Resized:
        """uint8 [B, S, S, C] → the model's input (centre crop, or ten crops [B, 10, …])."""
        transform = EvalTransform(self.crop, self.normalization, ten_crop=ten_crop)
        return Resized(transform, self.resize) if self.resize else transform

    def state(self) -> dict:
        """The checkpoint's fields for it."""
        return {"normalization": saved_normalization(self.normalization), "crop": self.crop,
                "resize": self.resize, "image_size": self.image_size}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict, channels: int, where: str = "checkpoint") -> Preprocessing:
        """Rebuilt from a checkpoint's (or an export's) fields."""
        try:
            norm = normalization_from(state["normalization"])
            size = state.get("image_size")
            if size is None and norm.mean_image is not None:  # checkpoints before image_size was kept
                size = int(norm.mean_image.shape[0])
            crop, resize = int(state["crop"]), state.get("resize")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AlexNetError(
                f"{where} has no usable preprocessing record ({exc!r}); retrain or resave it"
            ) from None
        if size is None:
            raise AlexNetError(
                f"{where} does not record the size its images were prepared at; retrain or resave it"
            )
        return cls(int(size), channels, crop, int(resize) if resize else None, norm)
