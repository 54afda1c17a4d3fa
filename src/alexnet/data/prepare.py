"""``alexnet prepare``: decode, resize and crop every image once (§2), into a store.

§2: rescale so the short side is ``size``, take the central size×size patch, keep raw RGB. For
the training split also the per-pixel mean image (§2) and the eigenpairs of the 3×3 covariance of
all RGB pixels (§4.1), accumulated chunk by chunk in float64, never holding all pixels.

Inputs that cannot be used (empty, truncated, corrupt, not an image, over Pillow's
decompression-bomb limit) are skipped, listed with their reason in ``<split>/skipped.txt`` and
counted; convertible ones (grey, CMYK, RGBA, palette with transparency, 16-bit, EXIF-rotated) are
converted to RGB.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import AlexNetError
from ..fileio import first_line, reporting_write_errors
from .jpeg import DEFAULT_QUALITY, encode
from .sources import ArraySplit, FolderSplit, Source, resolve_source
from .store import META_FILE, STORE_FORMAT, STORE_VERSION, is_store, open_store, shrink_rows

DEFAULT_SIZE = 256  # §2: short side 256, central 256×256
WHITE = (255, 255, 255)  # transparent pixels are shown over white, as a browser or viewer would
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass(frozen=True)
class PrepareSummary:
    out: Path
    size: int
    counts: dict[str, int]
    skipped: dict[str, int]
    seconds: float
    reused: bool = False
    skipped_files: dict[str, Path] = field(default_factory=dict)
    encoded_bytes: int | None = None  # a JPEG store: the bytes of all its images
    quality: int | None = None

    @property
    def bytes_per_image(self) -> float | None:
        images = sum(self.counts.values())
        return None if self.encoded_bytes is None or not images else self.encoded_bytes / images

    @property
    def images_per_second(self) -> float:
        total = sum(self.counts.values()) + sum(self.skipped.values())
        return total / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        """The closing summary line."""
        parts = ", ".join(f"{name} {n:,}" for name, n in self.counts.items())
        if self.reused:
            size = f"{self.size}×{self.size}"
            return f"{self.out} is already prepared ({parts} images, {size}); use --force to rebuild"
        n_skipped = sum(self.skipped.values())
        where = "; ".join(str(p) for name, p in self.skipped_files.items() if self.skipped[name])
        skipped = f", skipped {n_skipped:,} (listed in {where})" if n_skipped else ", skipped 0"
        jpeg = ""
        if self.bytes_per_image is not None:
            raw = self.size * self.size * 3
            jpeg = f", JPEG q{self.quality}: {self.bytes_per_image:,.0f} bytes/image (raw {raw:,})"
        return (
            f"prepared {self.out}: {parts} images, {self.size}×{self.size}{skipped}{jpeg}; "
            f"{self.seconds:.1f} s, {self.images_per_second:,.0f} img/s"
        )


# ---------------------------------------------------------------------------- decoding (in workers)


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


def decode(path: str | Path, size: int) -> np.ndarray | str:
    """The image at ``path`` as uint8 [size, size, 3], or the reason it cannot be used."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with warnings.catch_warnings():
            # Between 1× and 2× Pillow's limit Pillow only warns; treat it like the error above 2×.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format == "JPEG":
                    image.draft(image.mode, (size, size))  # decode at a reduced scale still ≥ size
                image = ImageOps.exif_transpose(image)  # §2 wants the scene upright
                image = to_rgb(image)
                image = resize_center_crop(image, size)
                return np.asarray(image, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"larger than Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} pixels"
    except UnidentifiedImageError:
        return "not an image Pillow can identify"
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        return f"cannot be decoded ({first_line(exc)[:120]})"


@dataclass
class _Chunk:
    images: np.ndarray  # uint8 [k, S, S, C]
    labels: list[int]
    skipped: list[tuple[str, str]]
    stats: _Stats | None


@dataclass
class _Stats:
    """Running sums for the mean image and the RGB covariance, float64."""

    image_sum: np.ndarray  # [S, S, C], sum of images in 0–255 units
    pixel_sum: np.ndarray  # [C], sum of pixels in [0, 1]
    pixel_outer: np.ndarray  # [C, C], sum of x xᵀ over pixels in [0, 1]
    images: int = 0
    pixels: int = 0

    @classmethod
    def of(cls, images: np.ndarray) -> _Stats:
        channels = images.shape[-1]
        x = images.reshape(-1, channels).astype(np.float64) / 255.0
        return cls(images.sum(axis=0, dtype=np.float64), x.sum(axis=0), x.T @ x, len(images), len(x))

    def add(self, other: _Stats) -> None:
        self.image_sum += other.image_sum
        self.pixel_sum += other.pixel_sum
        self.pixel_outer += other.pixel_outer
        self.images += other.images
        self.pixels += other.pixels


def _decode_chunk(job: tuple[list[str], list[int], int, bool]) -> _Chunk:
    paths, labels, size, with_stats = job
    images, kept, skipped = [], [], []
    for path, label in zip(paths, labels, strict=True):
        result = decode(path, size)
        if isinstance(result, str):
            skipped.append((path, result))
        else:
            images.append(result)
            kept.append(label)
    array = np.stack(images) if images else np.empty((0, size, size, 3), np.uint8)
    return _Chunk(array, kept, skipped, _Stats.of(array) if with_stats and images else None)


# ---------------------------------------------------------------------------- the store


def _auto_size(source: Source) -> int:
    """256 (§2), unless the set is already smaller (CIFAR, MNIST): then it keeps its own size."""
    split = next(iter(source.splits.values()))
    if isinstance(split, ArraySplit):
        side = min(split.images.shape[1:3])
        return side if side < DEFAULT_SIZE else DEFAULT_SIZE
    for path in split.files[:16]:
        try:
            with Image.open(path) as image:
                w, h = image.size
        except Exception:  # a broken first file says nothing about the set; try the next
            continue
        return min(w, h) if max(w, h) < DEFAULT_SIZE else DEFAULT_SIZE
    return DEFAULT_SIZE


def _check_out(
    out: Path, source: Source, size: int | None, force: bool, image_format: str = "raw"
) -> PrepareSummary | None:
    if out.exists() and not out.is_dir():
        raise AlexNetError(f"{out} exists and is a file; choose another output folder")
    if is_store(out):
        try:
            store = open_store(out)
        except AlexNetError as exc:
            if force:
                return None
            raise AlexNetError(f"{out} holds a damaged store ({exc}); pass --force to rebuild it") from None
        same = (
            store.meta.get("source") == source.description
            and (size is None or store.size == size)
            and store.meta.get("image_format", "raw") == image_format
        )
        if not force:
            if not same:
                raise AlexNetError(
                    f"{out} already holds a store of {store.meta.get('source')} at {store.size}×"
                    f"{store.size}; pass --force to rebuild it, or choose another output folder"
                )
            counts = {name: len(s) for name, s in store.splits.items()}
            skipped = {name: info.get("skipped", 0) for name, info in store.meta["splits"].items()}
            return PrepareSummary(out, store.size, counts, skipped, 0.0, reused=True)
    elif out.is_dir() and any(out.iterdir()):
        raise AlexNetError(
            f"{out} exists and is not an alexnet store; choose another (or an empty) output folder"
        )
    return None


def prepare(
    source: str | Path | Source,
    out: str | Path,
    *,
    size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
    cache_dir: Path | None = None,
    image_format: str = "raw",
    quality: int = DEFAULT_QUALITY,
) -> PrepareSummary:
    """Prepare ``source`` into a store at ``out`` (see :mod:`alexnet.data.store` for the format).

    ``size`` defaults to 256, or to the images' own size when they are smaller (CIFAR stays 32×32).
    A complete store already at ``out`` for the same source is reused unless ``force``.
    ``image_format="jpeg"`` encodes each resized image once at ``quality`` (:mod:`alexnet.data.jpeg`);
    the mean image and the PCA are computed from the pixels before encoding.
    """
    if image_format not in ("raw", "jpeg"):
        raise AlexNetError(f"--format must be raw or jpeg, got {image_format!r}")
    if not 1 <= quality <= 100:
        raise AlexNetError(f"--quality must be in 1..100, got {quality}")
    src = source if isinstance(source, Source) else resolve_source(source, cache_dir)
    out = Path(out)
    if size is not None and size < 1:
        raise AlexNetError(f"--size must be a positive number of pixels, got {size}")
    reused = _check_out(out, src, size, force, image_format)
    if reused is not None:
        return reused
    size = size or _auto_size(src)
    workers = max(1, workers or os.cpu_count() or 1)
    started = time.perf_counter()
    partial = out.parent / f".{out.name}.partial"
    with reporting_write_errors(out):
        shutil.rmtree(partial, ignore_errors=True)  # what an interrupted run left
        partial.mkdir(parents=True)
        encoding = (image_format, quality)
        return _build(src, out, partial, size, workers, progress, started, encoding)


def _build(
    src: Source,
    out: Path,
    partial: Path,
    size: int,
    workers: int,
    progress: bool,
    started: float,
    encoding: tuple[str, int] = ("raw", DEFAULT_QUALITY),
) -> PrepareSummary:

    meta: dict = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "source": src.description,
        "size": size,
        "classes": list(src.classes),
        "class_ids": list(src.class_ids),
        "splits": {},
    }
    if encoding[0] == "jpeg":
        meta.update(image_format="jpeg", quality=encoding[1])
    total = sum(len(s.labels) for s in src.splits.values())
    bar = _progress(total, progress)
    counts, skipped, skipped_files = {}, {}, {}
    try:
        for name, split in src.splits.items():
            split_dir = partial / name
            split_dir.mkdir()
            stats = _write_split(split, split_dir, size, workers, name == "train", bar, encoding)
            count, n_skipped, channels = stats.pop("count"), stats.pop("skipped"), stats.pop("channels")
            meta["channels"] = channels
            meta["splits"][name] = {"count": count, "skipped": n_skipped}
            if "bytes" in stats:
                meta["splits"][name]["bytes"] = stats.pop("bytes")
            if "pca" in stats:
                meta["pca"] = stats["pca"]
            counts[name], skipped[name] = count, n_skipped
            skipped_files[name] = out / name / "skipped.txt"
        (partial / META_FILE).write_text(json.dumps(meta, indent=1))
    except BaseException:
        bar.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    bar.close()
    replace_folder(partial, out)
    encoded = [info["bytes"] for info in meta["splits"].values() if "bytes" in info]
    return PrepareSummary(
        out, size, counts, skipped, time.perf_counter() - started, skipped_files=skipped_files,
        encoded_bytes=sum(encoded) if encoded else None, quality=meta.get("quality"),
    )  # fmt: skip


RENAME_EXCHANGE = 2  # renameat2 flag (Linux ≥ 3.15): swap two paths in one step
AT_FDCWD = -100


def replace_folder(new: Path, out: Path) -> None:
    """Put folder ``new`` at ``out``; an existing ``out`` stays whole until the new one replaces it.

    A folder cannot be renamed over a non-empty one, so where ``out`` exists the two are swapped
    in one step (renameat2 with RENAME_EXCHANGE) and the old one, now at ``new``, is removed.
    Where that call is missing (not Linux, or an old C library) the old folder is moved aside
    first, which leaves ``out`` absent for the moment between two renames.
    """
    if not out.exists():
        os.replace(new, out)
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        swapped = libc.renameat2(AT_FDCWD, os.fsencode(new), AT_FDCWD, os.fsencode(out), RENAME_EXCHANGE) == 0
    except (AttributeError, OSError):
        swapped = False
    if not swapped:
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(new, out)
        new = old
    shutil.rmtree(new, ignore_errors=True)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="prepare", disable=not enabled or not sys.stderr.isatty())


def _write_split(
    split, split_dir: Path, size: int, workers: int, with_stats: bool, bar, encoding=("raw", DEFAULT_QUALITY)
) -> dict:
    if isinstance(split, ArraySplit):
        chunks = _array_chunks(split, size, with_stats)
        channels = split.images.shape[-1]
        capacity = len(split.labels)
    else:
        chunks = _folder_chunks(split, size, workers, with_stats)
        channels = 3
        capacity = len(split.files)
    writer = _JpegWriter(split_dir, encoding[1], workers) if encoding[0] == "jpeg" else None
    path = split_dir / "images.npy"
    if writer is None:
        images = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.uint8, shape=(capacity, size, size, channels)
        )
        _reserve(path)
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    stats: _Stats | None = None
    for chunk in chunks:
        if writer is None:
            images[len(labels) : len(labels) + len(chunk.labels)] = chunk.images
        else:
            writer.add(chunk.images)
        labels += chunk.labels
        skipped += chunk.skipped
        if chunk.stats is not None:
            if stats is None:
                stats = chunk.stats
            else:
                stats.add(chunk.stats)
        bar.update(len(chunk.labels) + len(chunk.skipped))
    if writer is None:
        images.flush()
        del images
    else:
        writer.close()
    if not labels:
        raise AlexNetError(
            f"no usable image in {getattr(split, 'root', 'the split')} ({len(skipped)} skipped, "
            f"e.g. {skipped[0][0]}: {skipped[0][1]})"
            if skipped
            else "an empty split"
        )
    if writer is None and len(labels) < capacity:
        shrink_rows(path, len(labels))
    np.save(split_dir / "labels.npy", np.asarray(labels, dtype=np.int64))
    # File names need not be UTF-8 (os.fsdecode keeps undecodable bytes as surrogates): write them
    # back as their original bytes.
    (split_dir / "skipped.txt").write_bytes(
        b"".join(os.fsencode(p) + f"\t{r}\n".encode() for p, r in skipped)
    )
    result = {"count": len(labels), "skipped": len(skipped), "channels": channels}
    if writer is not None:
        result["bytes"] = writer.bytes
    if with_stats and stats is not None:
        np.save(split_dir / "mean.npy", (stats.image_sum / stats.images).astype(np.float32))
        if channels == 3:
            result["pca"] = _pca(stats)
    return result


class _JpegWriter:
    """Appends each chunk's images, JPEG-encoded on ``workers`` threads, to jpeg.bin; offsets.npy at
    close. Pillow releases the GIL while it encodes, so threads suffice."""

    def __init__(self, split_dir: Path, quality: int, workers: int) -> None:
        self.dir, self.quality = split_dir, quality
        self.file = open(split_dir / "jpeg.bin", "wb")  # noqa: SIM115 (closed in close())
        self.pool = ThreadPoolExecutor(max(1, workers))
        self.offsets = [0]

    @property
    def bytes(self) -> int:
        return self.offsets[-1]

    def add(self, images: np.ndarray) -> None:
        for data in encode(images, self.quality, self.pool):
            self.file.write(data)
            self.offsets.append(self.offsets[-1] + len(data))

    def close(self) -> None:
        self.pool.shutdown()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        np.save(self.dir / "offsets.npy", np.asarray(self.offsets, dtype=np.int64))


def _reserve(path: Path) -> None:
    """Allocate the memory-mapped file's blocks now: on a full disk that fails here with ENOSPC,
    where writing into a sparse mapping would kill the process with SIGBUS."""
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))


def _pca(stats: _Stats) -> dict:
    """§4.1: eigenpairs of the covariance of all training RGB pixels (pixels in [0, 1])."""
    mean = stats.pixel_sum / stats.pixels
    cov = stats.pixel_outer / stats.pixels - np.outer(mean, mean)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    eigvecs *= np.where(eigvecs[0] > 0, -1.0, 1.0)  # the sign of PAPER.md's constants (red component < 0)
    return {"eigvals": eigvals.tolist(), "eigvecs": eigvecs.tolist(), "pixel_mean": mean.tolist()}


def _folder_chunks(split: FolderSplit, size: int, workers: int, with_stats: bool):
    per_chunk = max(8, min(512, (1 << 21) // (size * size * 3)))  # about 2 MB of pixels per chunk
    paths = [str(p) for p in split.files]
    jobs = [
        (paths[i : i + per_chunk], list(split.labels[i : i + per_chunk]), size, with_stats)
        for i in range(0, len(paths), per_chunk)
    ]
    if workers == 1 or len(jobs) == 1:
        yield from map(_decode_chunk, jobs)
        return
    # fork on Linux: workers use only Pillow and numpy, and start in milliseconds.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, initializer=_quiet_worker) as pool:
        yield from pool.imap(_decode_chunk, jobs)


PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies (Linux)


def _quiet_worker() -> None:
    """A decoding worker leaves Ctrl-C to the parent (which ends the pool) and dies with it: a
    killed ``prepare`` must not leave workers printing BrokenPipe tracebacks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(AttributeError, OSError):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _array_chunks(split: ArraySplit, size: int, with_stats: bool):
    per_chunk = 4096
    for i in range(0, len(split.labels), per_chunk):
        block = split.images[i : i + per_chunk]
        if block.shape[1:3] != (size, size):
            mode = "L" if block.shape[-1] == 1 else "RGB"
            block = np.stack(
                [
                    np.asarray(
                        resize_center_crop(Image.fromarray(img.squeeze(-1) if mode == "L" else img), size)
                    ).reshape(size, size, block.shape[-1])
                    for img in block
                ]
            )
        labels = split.labels[i : i + per_chunk].tolist()
        yield _Chunk(np.ascontiguousarray(block), labels, [], _Stats.of(block) if with_stats else None)
