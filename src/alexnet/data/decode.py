"""One image file (or Pillow image) to the uint8 square every command works on (§2).

§2: rescale so the short side is ``size``, take the central size×size patch, keep raw RGB.
``prepare`` runs this once per image for a whole data set; ``predict`` and ``neighbors`` run it on
the files they are given, so a new photo is prepared exactly as the training images were.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import AlexNetError
from ..fileio import first_line

WHITE = (255, 255, 255)  # transparent pixels are shown over white, as a browser or viewer would
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# Files with these endings count as images when looking for them in folders (predict) and when
# checking that a class folder is not empty (prepare, which still tries every file it finds).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16-bit scaled by 1/257, transparency composited over white."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.int64)
        grey = (np.clip(values, 0, 65535) // 257).astype(np.uint8)  # 0..65535 → 0..255
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """§2: short side to ``size`` (bilinear, antialiased), then the central size×size patch.

    Rounding follows torchvision's Resize(size) and CenterCrop(size).
    """
    w, h = image.size
    if (w, h) != (size, size):
        new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        if new != (w, h):
            image = image.resize(new, Image.Resampling.BILINEAR)
        w, h = image.size
        top, left = round((h - size) / 2.0), round((w - size) / 2.0)
        image = image.crop((left, top, left + size, top + size))
    return image


def square(image: Image.Image, size: int, channels: int = 3) -> np.ndarray:
    """An open Pillow image upright, as RGB (or luminance for ``channels=1``), resized and centre-
    cropped to uint8 [size, size, channels]."""
    image = ImageOps.exif_transpose(image)  # §2 wants the scene upright
    image = resize_center_crop(to_rgb(image), size)
    if channels == 1:  # grey sets (Fashion-MNIST): luminance, as torchvision's grey sets store it
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8).reshape(size, size, channels)


def decode(path: str | Path | bytes, size: int, channels: int = 3) -> np.ndarray | str:
    """The image at ``path`` (or in these bytes: an archive's member) as uint8 [size, size,
    channels], or the reason it cannot be used."""
    try:
        if isinstance(path, bytes):
            if not path:
                return "empty file (0 bytes)"
            source = io.BytesIO(path)
        elif os.path.islink(path) and not os.path.exists(path):
            return "a broken symbolic link"
        elif os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        else:
            source = path
        with warnings.catch_warnings():
            # Between 1× and 2× Pillow's limit Pillow only warns; treat it like the error above 2×.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                if image.format == "JPEG":
                    image.draft(image.mode, (size, size))  # decode at a reduced scale still ≥ size
                return square(image, size, channels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"larger than Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} pixels"
    except UnidentifiedImageError:
        return "not an image Pillow can identify"
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        return f"cannot be decoded ({first_line(exc)[:120]})"


def image_files(items: Iterable[str | Path]) -> list[Path]:
    """Files named directly, and every image file under named folders (sorted)."""
    items = list(items)
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
