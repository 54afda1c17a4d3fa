"""Batched, seeded augmentation on the model's device (§2, §4.1).

Every function takes a uint8 batch [B, H, W, C] (the store's layout) and, where it draws random
numbers, a ``torch.Generator``; the same generator state gives the same output on any device
(random numbers are drawn on the CPU, the pixels move on the batch's device). Outputs are float32
[B, C, h, w] in channels_last memory, which is what a permute of NHWC gives for free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import AlexNetError

# PAPER.md §2: the commonly used ImageNet RGB PCA (pixels in [0, 1]); eigenvectors are the columns.
IMAGENET_EIGVALS = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVECS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# torchvision's per-channel normalisation (pixels in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LIGHTING_STD = 0.1  # §4.1: α_i ~ N(0, 0.1)
# torchvision's RandomResizedCrop defaults: the window covers 8–100 % of the image's area, with an
# aspect ratio (width/height) drawn log-uniformly from 3/4–4/3; 10 tries, then a central window.
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_ATTEMPTS = 10


@dataclass(frozen=True)
class Crops:
    """Per-image crop parameters: top-left corners and horizontal flips, on the CPU."""

    top: Tensor  # int64 [B]
    left: Tensor  # int64 [B]
    flip: Tensor  # bool [B]
    size: int


def sample_crops(
    batch: int, height: int, width: int, size: int, generator: torch.Generator, flip: bool = True
) -> Crops:
    """Uniform random size×size windows inside height×width and a fair coin per image to mirror (§4.1)."""
    if size > height or size > width:
        raise AlexNetError(
            f"cannot crop {size}×{size} from {height}×{width} images; prepare them larger "
            f"(alexnet prepare --size) or crop smaller"
        )
    top = torch.randint(0, height - size + 1, (batch,), generator=generator)
    left = torch.randint(0, width - size + 1, (batch,), generator=generator)
    flips = torch.rand(batch, generator=generator) < 0.5 if flip else torch.zeros(batch, dtype=torch.bool)
    return Crops(top, left, flips, size)


def crop(images: Tensor, crops: Crops) -> Tensor:
    """The windows of ``crops`` from [B, H, W, C] (or one [H, W, C] image for all), mirrored where asked.

    One gather on the batch's device: row and column indices per image, the column order reversed
    for mirrored images, so crop and flip cost a single pass.
    """
    device = images.device
    span = torch.arange(crops.size)
    rows = crops.top[:, None] + span  # [B, size]
    cols = torch.where(
        crops.flip[:, None], crops.left[:, None] + crops.size - 1 - span, crops.left[:, None] + span
    )
    rows, cols = rows.to(device, non_blocking=True), cols.to(device, non_blocking=True)
    if images.dim() == 3:
        return images[rows[:, :, None], cols[:, None, :]]
    which = torch.arange(len(rows), device=device)[:, None, None]
    return images[which, rows[:, :, None], cols[:, None, :]]


def center_crop(images: Tensor, size: int) -> Tensor:
    """The central size×size window (torchvision's rounding) of [B, H, W, C]."""
    height, width = images.shape[1:3]
    if size > height or size > width:
        raise AlexNetError(f"cannot crop {size}×{size} from {height}×{width} images")
    top, left = round((height - size) / 2.0), round((width - size) / 2.0)
    return images[:, top : top + size, left : left + size]


def ten_crop(images: Tensor, size: int) -> Tensor:
    """§4.1 test: four corners and centre, then the same five of the mirrored image: [B, 10, size, size, C].

    The order is torchvision's TenCrop: tl, tr, bl, br, centre, then those of the flipped image.
    """
    height, width = images.shape[1:3]
    if size > height or size > width:
        raise AlexNetError(f"cannot crop {size}×{size} from {height}×{width} images")

    def five(x: Tensor) -> list[Tensor]:
        return [
            x[:, :size, :size],
            x[:, :size, width - size :],
            x[:, height - size :, :size],
            x[:, height - size :, width - size :],
            center_crop(x, size),
        ]

    return torch.stack(five(images) + five(images.flip(2)), dim=1)


def lighting(
    batch: int, eigvals: Tensor, eigvecs: Tensor, generator: torch.Generator, std: float = LIGHTING_STD
) -> Tensor:
    """§4.1 PCA colour shift per image: [p1 p2 p3]·[α1λ1, α2λ2, α3λ3]ᵀ with α ~ N(0, std), as [B, 3].

    In the units of ``eigvals`` (pixels in [0, 1] for the store's and PAPER.md's values).
    """
    alpha = torch.randn(batch, 3, generator=generator) * std
    return (alpha * eigvals.float().cpu()) @ eigvecs.float().cpu().T


def _to_model_layout(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2)  # [B, H, W, C] → [B, C, H, W] view, channels_last in memory


@dataclass(frozen=True)
class Normalization:
    """Either the paper's per-pixel mean image (0–255 units, §2) or per-channel mean/std on [0, 1] pixels."""

    mean_image: Tensor | None = None  # float32 [H, W, C] at the stored size
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        if (self.mean_image is None) == (self.mean is None):
            raise AlexNetError("normalisation needs either a mean image or a per-channel mean/std")


def _crop_into(
    images: Tensor,
    crops: Crops,
    out: Tensor,
    mean_image: Tensor | None,
    offsets: Tensor | None,
    scale: Tensor | None,
) -> None:
    """CPU path: per image, crop → float → − mean crop → − offset row → × scale row, into ``out``.

    On the CPU a loop of slice copies is ~10× faster than one gather, writing into an existing float
    buffer avoids faulting in a fresh one (which costs more than the copy), and finishing each image
    while it is still in cache beats whole-batch passes over a buffer larger than the cache.
    """
    size, width = crops.size, images.shape[2]
    mirrored_mean = mean_image.flip(1) if mean_image is not None and bool(crops.flip.any()) else None
    params = zip(crops.top.tolist(), crops.left.tolist(), crops.flip.tolist(), strict=True)
    for i, (top, left, flip) in enumerate(params):
        view = images[i, top : top + size, left : left + size]
        out[i].copy_(view.flip(1) if flip else view)
        if mean_image is not None:
            if flip:  # the mirror of window [left, left + size) is [W − left − size, W − left) of the mirror
                out[i].sub_(mirrored_mean[top : top + size, width - left - size : width - left])
            else:
                out[i].sub_(mean_image[top : top + size, left : left + size])
        rows = out[i].view(size, -1)
        if offsets is not None:
            rows.sub_(offsets[i])
        if scale is not None:
            rows.mul_(scale)


def sample_holes(batch: int, size: int, generator: torch.Generator) -> Tensor:
    """Cutout's square centres (DeVries & Taylor 2017): uniform over the whole crop, so that a square
    near an edge is clipped by it; int64 [B, 2] (row, column) on the CPU."""
    return torch.randint(0, size, (batch, 2), generator=generator)


def hole_bounds(centres: Tensor, side: int, size: int) -> tuple[Tensor, Tensor]:
    """[B, 2] first and one-past-last (row, column) of each square, clipped to the crop."""
    start = centres - side // 2
    return start.clamp(0, size), (start + side).clamp(0, size)


def _cut_into(x: Tensor, centres: Tensor, side: int) -> None:
    """CPU path: zero each image's square of ``x`` [B, S, S, C] in place (0 after normalisation is
    the mean pixel, as Cutout does), one slice per image."""
    start, stop = hole_bounds(centres, side, x.shape[1])
    for i, (r0, c0, r1, c1) in enumerate(torch.cat([start, stop], 1).tolist()):
        x[i, r0:r1, c0:c1] = 0.0


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """One host-to-device copy that does not wait: from pinned memory on CUDA (the CPU goes on
    queueing work), a no-op where ``t`` already is."""
    if t.device == device:
        return t
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def _constants(cache: dict, device: torch.device, make) -> dict:
    """The transform's constant tensors on ``device``, copied there once and kept: not per batch."""
    if device not in cache:
        cache[device] = {k: None if v is None else v.to(device) for k, v in make().items()}
    return cache[device]


@dataclass(frozen=True)
class TrainTransform:
    """§4.1 training augmentation: random crop + mirror, PCA lighting, normalisation.

    With a mean image, pixels stay in 0–255 units minus the mean (the paper); with mean/std they are
    (x/255 − mean)/std (torchvision). The lighting shift is added in the same units. ``out`` (float32
    [B, size, size, C], contiguous) receives the result when given; on the CPU reusing one buffer
    per step saves more time than all the arithmetic.

    On another device (the ``gather`` path) the batch's random draws (crop corners, mirrors,
    lighting coefficients) cross as one small tensor and everything else happens there: the
    constants (mean image, eigenpairs, mean/std) are copied once and kept, so a step makes one
    host-to-device copy of its own, whatever is switched on.
    """

    size: int  # crop side, pixels (224 in the paper's text, 227 in Caffe's)
    normalization: Normalization
    flip: bool = True
    eigvals: Tensor | None = None  # enables PCA lighting
    eigvecs: Tensor | None = None
    lighting_std: float = LIGHTING_STD
    cutout: int = 0  # side of the square zeroed at a random centre of each crop, pixels; 0: none
    # copy: per-image slice copies (fastest on the CPU); gather: one indexed gather (GPUs);
    # auto: copy on the CPU, gather elsewhere. Both give the same numbers (tested).
    path: str = "auto"
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, images: Tensor, generator: torch.Generator, out: Tensor | None = None) -> Tensor:
        b, h, w, c = images.shape
        crops = sample_crops(b, h, w, self.size, generator, self.flip)
        # §4.1 α ~ N(0, σ) per image and eigenvector: drawn here, on the CPU, like the crops
        alpha = (
            torch.randn(b, 3, generator=generator) * self.lighting_std if self.eigvals is not None else None
        )
        # drawn last, so that a run without cutout draws exactly what it drew before cutout existed
        holes = sample_holes(b, self.size, generator) if self.cutout else None
        norm, device = self.normalization, images.device
        if self.path not in ("auto", "copy", "gather"):
            raise AlexNetError(f"TrainTransform path must be auto, copy or gather, got {self.path!r}")
        if self.path == "copy" or (self.path == "auto" and device.type == "cpu"):
            if device.type != "cpu":
                raise AlexNetError("the copy path of TrainTransform runs on the CPU; use path='gather'")
            shift = None if alpha is None else (alpha * self.eigvals.float()) @ self.eigvecs.float().T
            mean_image = norm.mean_image
            # Per image, a constant subtracted from each pixel ([B, C], 0–255 units) and a per-channel
            # scale: x' = (x − mean_image − offset) · scale, the offset tiled along rows of w·C values.
            if mean_image is not None:
                offset, scale = (None if shift is None else -255.0 * shift), None
            else:
                mean = torch.tensor(norm.mean).expand(b, c)
                offset = 255.0 * (mean if shift is None else mean - shift)
                scale = (1.0 / (torch.tensor(norm.std) * 255.0)).repeat(self.size)
            offsets = None if offset is None else offset.repeat(1, self.size)  # [B, size·C]
            x = out if out is not None else torch.empty((b, self.size, self.size, c))
            _crop_into(images, crops, x, mean_image, offsets, scale)
            if holes is not None:
                _cut_into(x, holes, self.cutout)
            return _to_model_layout(x)
        return self._gather(images, crops, alpha, holes, out)

    def _gather(
        self, images: Tensor, crops: Crops, alpha: Tensor | None, holes: Tensor | None, out: Tensor | None
    ) -> Tensor:
        b = images.shape[0]
        device, norm = images.device, self.normalization
        k = self._device_constants(device)
        # every draw crosses in one small tensor: one host-to-device copy per batch, whatever is on
        draws = [crops.top.float(), crops.left.float(), crops.flip.float()]
        if holes is not None:
            start, stop = hole_bounds(holes, self.cutout, self.size)
            draws += [*start.float().unbind(1), *stop.float().unbind(1)]
        params = torch.stack(draws, 1)
        params = to_device(params if alpha is None else torch.cat([params, alpha], 1), device)
        top, left, flip = params[:, 0].long(), params[:, 1].long(), params[:, 2] > 0.5
        span = torch.arange(self.size, device=device)
        rows = top[:, None] + span
        cols = torch.where(flip[:, None], left[:, None] + self.size - 1 - span, left[:, None] + span)
        which = torch.arange(b, device=device)[:, None, None]
        x = images[which, rows[:, :, None], cols[:, None, :]].float()
        if k["mean_image"] is not None:
            x -= k["mean_image"][rows[:, :, None], cols[:, None, :]]
        lit = 3 if holes is None else 7  # where the lighting coefficients start in params
        if alpha is not None:  # [B, C] PCA colour shift in [0, 1] pixel units, added in 0–255 units
            x += 255.0 * ((params[:, lit:] * k["eigvals"]) @ k["eigvecs"].T)[:, None, None, :]
        if norm.mean is not None:
            x -= 255.0 * k["mean"]
            x *= 1.0 / (255.0 * k["std"])
        if holes is not None:
            r0, c0, r1, c1 = params[:, 3:7].long().unbind(1)
            inside_rows = (span >= r0[:, None]) & (span < r1[:, None])  # [B, size]
            inside_cols = (span >= c0[:, None]) & (span < c1[:, None])
            x.masked_fill_((inside_rows[:, :, None] & inside_cols[:, None, :])[..., None], 0.0)
        if out is not None:
            x = out.copy_(x)
        return _to_model_layout(x)

    def _device_constants(self, device: torch.device) -> dict:
        norm = self.normalization

        def make():
            return {
                "mean_image": None if norm.mean_image is None else norm.mean_image.float(),
                "eigvals": None if self.eigvals is None else self.eigvals.float(),
                "eigvecs": None if self.eigvecs is None else self.eigvecs.float(),
                "mean": None if norm.mean is None else torch.tensor(norm.mean),
                "std": None if norm.std is None else torch.tensor(norm.std),
            }

        return _constants(self._cache, device, make)


@dataclass(frozen=True)
class EvalTransform:
    """Evaluation: the centre crop ([B, C, s, s]) or the ten crops of §4.1 ([B, 10, C, s, s])."""

    size: int
    normalization: Normalization
    ten_crop: bool = False
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        def views(t: Tensor) -> Tensor:
            return ten_crop(t, self.size) if self.ten_crop else center_crop(t, self.size)

        norm = self.normalization

        def make():  # the constants, on the batch's device once
            if norm.mean_image is not None:
                return {"mean": views(norm.mean_image[None].float())}
            return {"mean": torch.tensor(norm.mean) * 255.0, "scale": 1.0 / (torch.tensor(norm.std) * 255.0)}

        k = _constants(self._cache, images.device, make)
        x = views(images).float()
        x -= k["mean"]
        if norm.mean_image is None:
            x.mul_(k["scale"])
        return x.permute(0, 1, 4, 2, 3) if self.ten_crop else _to_model_layout(x)


def sample_resized_crops(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = RRC_SCALE,
    ratio: tuple[float, float] = RRC_RATIO,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """torchvision's ``RandomResizedCrop.get_params`` for a whole batch: (top, left, h, w), int64 [B].

    Each image gets ``RRC_ATTEMPTS`` draws of (area fraction, log aspect ratio) at once; the first
    draw whose window fits is used, and an image with none gets the central window of the largest
    allowed aspect ratio, as torchvision does.
    """
    area = height * width
    target = torch.empty(batch, RRC_ATTEMPTS).uniform_(scale[0], scale[1], generator=generator) * area
    log_ratio = torch.empty(batch, RRC_ATTEMPTS).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = log_ratio.exp()
    w = (target * aspect).sqrt().round().long()
    h = (target / aspect).sqrt().round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(1)  # the first attempt that fits (0 when none does)
    rows = torch.arange(batch)
    w, h, found = w[rows, first], h[rows, first], fits.any(1)
    image_ratio = width / height
    if image_ratio < ratio[0]:
        fallback = (round(width / ratio[0]), width)
    elif image_ratio > ratio[1]:
        fallback = (height, round(height * ratio[1]))
    else:
        fallback = (height, width)
    h = torch.where(found, h, fallback[0])
    w = torch.where(found, w, fallback[1])
    u = torch.rand(batch, 2, generator=generator)  # torch.randint with a per-image upper bound
    top = torch.where(found, (u[:, 0] * (height - h + 1)).long(), (height - h) // 2)
    left = torch.where(found, (u[:, 1] * (width - w + 1)).long(), (width - w) // 2)
    return top, left, h, w


def _window_grid(start: Tensor, length: Tensor, full: int, out: int, flip: Tensor | None) -> Tensor:
    """grid_sample coordinates ([B, out], in [-1, 1]) that resize the window [start, start + length)
    of a side of ``full`` pixels to ``out`` pixels exactly as F.interpolate(bilinear,
    align_corners=False) does on the cropped window (sample points clamped to the window); on the
    device of ``start``."""
    dst = torch.arange(out, dtype=torch.float64, device=start.device) + 0.5
    src = start[:, None].double() + dst * (length[:, None].double() / out) - 0.5
    src = torch.minimum(torch.maximum(src, start[:, None].double()), (start + length - 1)[:, None].double())
    if flip is not None:
        src = torch.where(flip[:, None], (2 * start + length - 1)[:, None].double() - src, src)
    return ((2 * src + 1) / full - 1).float()


def resized_crop(images: Tensor, top: Tensor, left: Tensor, h: Tensor, w: Tensor, size: int, flip: Tensor):
    """The windows (top, left, h, w) of uint8 [B, H, W, C] resized to size×size (bilinear, no
    antialiasing) and mirrored where ``flip``: float [B, C, size, size] in 0–255 units, one call."""
    _, height, width, _ = images.shape
    gx = _window_grid(left, w, width, size, flip)
    gy = _window_grid(top, h, height, size, None)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    x = images.permute(0, 3, 1, 2).float()
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass(frozen=True)
class ResizedCropTransform:
    """torchvision's training augmentation, batched and seeded: RandomResizedCrop(size) (area 8–100 %,
    aspect 3/4–4/3, bilinear) and a horizontal flip, then PCA lighting if asked and normalisation.

    torchvision's reference resizes PIL images with antialiasing; this resize has none (it is one
    grid_sample for the batch). The difference is confined to windows larger than ``size``.
    """

    size: int
    normalization: Normalization
    flip: bool = True
    eigvals: Tensor | None = None
    eigvecs: Tensor | None = None
    lighting_std: float = LIGHTING_STD
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, images: Tensor, generator: torch.Generator, out: Tensor | None = None) -> Tensor:
        b, height, width, _ = images.shape
        top, left, h, w = sample_resized_crops(b, height, width, generator)
        flips = torch.rand(b, generator=generator) < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool)
        alpha = (
            torch.randn(b, 3, generator=generator) * self.lighting_std if self.eigvals is not None else None
        )
        norm, device = self.normalization, images.device
        # the batch's draws cross to the device as one small tensor; the constants are kept there
        draws = torch.stack([top, left, h, w, flips.long()], 1).double()
        params = to_device(draws if alpha is None else torch.cat([draws, alpha.double()], 1), device)
        top, left, h, w = (params[:, i].long() for i in range(4))
        flips = params[:, 4] > 0.5
        k = TrainTransform._device_constants(self, device)  # the same constants as TrainTransform's
        x = resized_crop(images, top, left, h, w, self.size, flips)  # [B, C, s, s], 0–255
        if norm.mean_image is not None:
            mean = k["mean_image"][None].expand(b, -1, -1, -1)
            x -= resized_crop(mean, top, left, h, w, self.size, flips)
        if alpha is not None:
            shift = (params[:, 5:].float() * k["eigvals"]) @ k["eigvecs"].T
            x += 255.0 * shift[:, :, None, None]
        if norm.mean is not None:
            x -= 255.0 * k["mean"][:, None, None]
            x *= 1.0 / (255.0 * k["std"])[:, None, None]
        x = x.contiguous(memory_format=torch.channels_last)
        if out is not None:
            return _to_model_layout(out).copy_(x)
        return x


@dataclass(frozen=True)
class Resized:
    """Another transform's output resized to size×size on the batch's device (bilinear), e.g. d2l's
    28×28 Fashion-MNIST shown to the net at 224×224 (the book's transforms.Resize(224))."""

    transform: TrainTransform | ResizedCropTransform | EvalTransform
    size: int

    def __call__(self, images: Tensor, generator: torch.Generator | None = None, out: Tensor | None = None):
        x = self.transform(images, generator)
        lead = x.shape[:-3]
        flat = x.reshape(-1, *x.shape[-3:])
        y = F.interpolate(flat, size=(self.size, self.size), mode="bilinear", align_corners=False)
        y = y.contiguous(memory_format=torch.channels_last)
        return y.reshape(*lead, *y.shape[1:]) if len(lead) > 1 else y
