"""A trained model back from its run directory or checkpoint, and predictions on image files.

An image is prepared exactly as the model's training data was: decoded, EXIF-rotated and made
RGB, its short side resized to the store's size and the central square cropped (``prepare``'s own
``decode``), then the checkpoint's evaluation transform (centre crop or ten crops, resize, and the
normalisation it was trained with).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..checkpoint import load_checkpoint, load_model_state, resolve_checkpoint
from ..config import RunConfig, from_dict, preset
from ..data.prepare import decode
from ..data.sources import IMAGE_EXTENSIONS
from ..errors import AlexNetError
from ..models import build_model
from ..models.registry import PRETRAINED
from ..recipe import build_for_run, eval_transform
from ..runtime import autocast, keep_freed_cpu_memory, resolve_device, resolve_precision


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first


@dataclass
class LoadedModel:
    """A trained model in eval mode with everything needed to use it on new images."""

    model: nn.Module
    config: RunConfig
    classes: list[str]
    image_size: int  # side of the square every image is resized and cropped to first (§2)
    channels: int
    checkpoint: Path
    epoch: int
    device: torch.device
    precision: str
    _state: dict

    def transform(self, ten_crop: bool = False):
        """The evaluation transform the model was trained with: uint8 [B, S, S, C] → model input."""
        return eval_transform(self._state, ten_crop)

    def load_images(
        self, paths: Sequence[str | Path]
    ) -> tuple[torch.Tensor, list[str], list[tuple[str, str]]]:
        """(uint8 [N, S, S, C] of the usable images, their paths, (path, reason) of the rest)."""
        images, kept, skipped = [], [], []
        for path in paths:
            pixels = decode(path, self.image_size)
            if isinstance(pixels, str):
                skipped.append((str(path), pixels))
                continue
            if self.channels == 1:  # grey models (d2l): luminance, as torchvision's grey sets store it
                pixels = np.asarray(Image.fromarray(pixels).convert("L"))[..., None]
            images.append(torch.from_numpy(np.array(pixels)))  # a writable copy of the decoded pixels
            kept.append(str(path))
        batch = (
            torch.stack(images) if images else torch.empty(0, self.image_size, self.image_size, self.channels)
        )
        return batch.to(torch.uint8), kept, skipped

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, ten_crop: bool = False) -> torch.Tensor:
        """Softmax over the classes for uint8 [B, S, S, C] images (ten crops: averaged, §4.1)."""
        x = self.transform(ten_crop)(images.to(self.device))
        with autocast(self.device, self.precision):
            if x.dim() == 5:
                return sum(self.model(x[:, v]).float().softmax(1) for v in range(x.shape[1])) / x.shape[1]
            return self.model(x).float().softmax(1)

    def predict(
        self, paths: Sequence[str | Path], *, topk: int = 5, ten_crop: bool = False
    ) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Top-k classes of each image file; files that cannot be decoded come back as (path, reason)."""
        images, kept, skipped = self.load_images(paths)
        if not kept:
            return [], skipped
        probs = self.probabilities(images, ten_crop)
        values, indices = probs.topk(min(topk, len(self.classes)), dim=1)
        predictions = [
            Prediction(
                path, [(self.classes[i], float(p)) for p, i in zip(v.tolist(), ix.tolist(), strict=True)]
            )
            for path, v, ix in zip(kept, values, indices, strict=True)
        ]
        return predictions, skipped


def _torchvision_model(path: str | Path, device: str) -> LoadedModel | None:
    """torchvision's AlexNet with its ImageNet weights (by name, or a bare state_dict file of
    them), its 1,000 class names and its preprocessing: Resize(256), CenterCrop(224), mean/std."""
    from torchvision.models import AlexNet_Weights

    if str(path) in PRETRAINED:
        model = build_model("torchvision", weights=str(path))
        source = Path(AlexNet_Weights.DEFAULT.url).name
    else:
        try:
            model = build_model("torchvision", weights=path)
        except AlexNetError:
            return None  # not torchvision's weights either
        source = str(path)
    config = preset("torchvision")
    dev = _model_device(device)
    state = {
        "normalization": {"kind": "channel", "mean": list(config.data.mean), "std": list(config.data.std)},
        "crop": config.data.crop,
        "resize": None,
        "arch": {"name": "torchvision", "num_classes": 1000, "in_channels": 3},
    }
    classes = list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    model = model.to(dev).to(memory_format=torch.channels_last).eval()
    return LoadedModel(model, config, classes, 256, 3, Path(source), 0, dev, "fp32", state)


def _model_device(name: str) -> torch.device:
    dev = resolve_device(name)
    if dev.type == "cpu":  # batch after batch of activations reuse the same pages, as in training
        keep_freed_cpu_memory()
    return dev


def load_model(path: str | Path, *, device: str = "auto") -> LoadedModel:
    """The model of a run directory (its best.pt, else last.pt) or checkpoint, ready to predict.

    Also torchvision's ImageNet weights: ``"DEFAULT"`` (through torchvision's weights API and
    cache) or their file, e.g. ``alexnet-owt-7be5be79.pth``.
    """
    if str(path) in PRETRAINED:
        return _torchvision_model(path, device)
    path = resolve_checkpoint(path)
    try:
        state = load_checkpoint(path)
    except AlexNetError as exc:
        if "not an alexnet checkpoint" in str(exc):
            loaded = _torchvision_model(path, device)
            if loaded is not None:
                return loaded
        raise
    config = from_dict(state["config"])
    dev = _model_device(device)
    classes = list(state["classes"])
    channels = int(state["arch"]["in_channels"])
    model = build_for_run(config, len(classes), channels)
    load_model_state(model, state, path)
    model = model.to(dev).to(memory_format=torch.channels_last).eval()
    size = state.get("image_size")
    if size is None and state["normalization"]["kind"] == "mean_image":
        size = int(state["normalization"]["mean_image"].shape[0])
    if size is None:
        raise AlexNetError(
            f"{path} does not record the size its images were prepared at; retrain or resave it"
        )
    precision, _ = resolve_precision(config.train.precision, dev)
    return LoadedModel(model, config, classes, int(size), channels, path, int(state.get("epoch", 0)), dev,
                       precision, state)  # fmt: skip


def image_files(items: Iterable[str | Path]) -> list[Path]:
    """Files named directly, and every image file under named folders (sorted)."""
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            files.append(p)
        else:
            raise AlexNetError(f"{p} does not exist; give image files or folders of images")
    if not files:
        raise AlexNetError(f"no image files in {', '.join(map(str, items))} ({', '.join(IMAGE_EXTENSIONS)})")
    return files
