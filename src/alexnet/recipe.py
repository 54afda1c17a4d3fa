"""What a run's config means for its model and its transforms; shared by training and evaluation.

The normalisation a model was trained with is saved in its checkpoint (``saved_normalization``)
and rebuilt from there (``normalization_from``), so a checkpoint is evaluated exactly as trained.
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
from .models import build_model


def build_for_run(config: RunConfig, num_classes: int, in_channels: int) -> nn.Module:
    """The config's model for data of ``num_classes`` classes and ``in_channels`` channels."""
    m = config.model
    side = config.data.resize or config.data.crop
    return build_model(
        m.name, num_classes=num_classes, in_channels=in_channels, input_size=side, **m.switches()
    )


@dataclass(frozen=True)
class Transforms:
    train: TrainTransform | ResizedCropTransform | Resized
    center: EvalTransform | Resized
    ten_crop: EvalTransform | Resized
    saved: dict  # the normalisation, as the checkpoint keeps it


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


def build_transforms(config: RunConfig, store: Store) -> Transforms:
    """Training, centre-crop and ten-crop transforms from the recipe and the store's statistics."""
    d = config.data
    if d.crop > store.size:
        raise AlexNetError(
            f"data.crop {d.crop} is larger than the store's {store.size}×{store.size} images; "
            f"use --set data.crop=N with N ≤ {store.size}, or prepare with --size"
        )
    norm = _normalization(config, store)
    eigvals, eigvecs = _eigenpairs(config, store)
    kind = ResizedCropTransform if d.crop_mode == "resized" else TrainTransform
    train = kind(d.crop, norm, flip=d.flip, eigvals=eigvals, eigvecs=eigvecs, lighting_std=d.lighting_std)
    center, ten = EvalTransform(d.crop, norm), EvalTransform(d.crop, norm, ten_crop=True)
    if d.resize:
        train, center, ten = Resized(train, d.resize), Resized(center, d.resize), Resized(ten, d.resize)
    return Transforms(train, center, ten, saved_normalization(norm))


def eval_transform(state: dict, ten_crop: bool) -> EvalTransform | Resized:
    """The evaluation transform a checkpoint was trained with (its crop, resize and normalisation)."""
    transform = EvalTransform(
        int(state["crop"]), normalization_from(state["normalization"]), ten_crop=ten_crop
    )
    resize = state.get("resize")
    return Resized(transform, int(resize)) if resize else transform
