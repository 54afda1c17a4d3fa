"""``alexnet prepare``: decode, resize and crop every image once (§2), into a store.

§2: rescale so the short side is ``size``, take the central size×size patch, keep raw RGB. For
the training split also the per-pixel mean image (§2) and the eigenpairs of the 3×3 covariance of
all RGB pixels (§4.1), accumulated chunk by chunk in float64, never holding all pixels.

Inputs that cannot be used (empty, truncated, corrupt, not an image, a broken link, over
Pillow's decompression-bomb limit) are skipped, listed with their reason in
``<split>/skipped.jsonl`` and counted; convertible ones (grey, CMYK, RGBA, palette with
transparency, 16-bit, EXIF-rotated) are converted to RGB. ``prepare_dataset`` makes a store from
Python ``Dataset``s the same way.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..errors import AlexNetError
from ..fileio import exclusive, first_line, replace_folder, reporting_write_errors
from .decode import resize_center_crop, square
from .imagenet import read_member
from .jpeg import DEFAULT_QUALITY, JpegWriter
from .shards import write_split
from .sources import resolve_source
from .splits import ArchiveSplit, ArraySplit, DatasetSplit, FolderSplit, Source
from .stats import PixelStats, merge
from .store import (
    META_FILE,
    SKIPPED_FILE,
    STORE_FORMAT,
    STORE_VERSION,
    is_store,
    open_store,
    reserve,
    shrink_rows,
)

DEFAULT_SIZE = 256  # §2: short side 256, central 256×256


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
    workers: int = 1  # decoding processes
    resumed: int = 0  # images an earlier, interrupted prepare had done (not counted in the rate)

    @property
    def bytes_per_image(self) -> float | None:
        images = sum(self.counts.values())
        return None if self.encoded_bytes is None or not images else self.encoded_bytes / images

    @property
    def images_per_second(self) -> float:
        total = sum(self.counts.values()) + sum(self.skipped.values()) - self.resumed
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
        resumed = f", {self.resumed:,} of them done by an earlier run" if self.resumed else ""
        return (
            f"prepared {self.out}: {parts} images, {self.size}×{self.size}{skipped}{jpeg}; "
            f"{self.seconds:.1f} s, {self.images_per_second:,.0f} img/s "
            f"({self.images_per_second / self.workers:,.0f} per worker, {self.workers} workers){resumed}"
        )


@dataclass
class _Chunk:
    images: np.ndarray  # uint8 [k, S, S, C]
    labels: list[int]
    skipped: list[tuple[str, str]]
    stats: PixelStats | None


# ---------------------------------------------------------------------------- the store


def _auto_size(source: Source) -> int:
    """256 (§2), unless the set is already smaller (CIFAR, MNIST): then it keeps its own size."""
    split = next(iter(source.splits.values()))
    if isinstance(split, ArraySplit):
        side = min(split.images.shape[1:3])
        return side if side < DEFAULT_SIZE else DEFAULT_SIZE
    if isinstance(split, DatasetSplit):
        image = _dataset_image(split.dataset[0][0], 0)
        return min(image.size) if max(image.size) < DEFAULT_SIZE else DEFAULT_SIZE
    if isinstance(split, ArchiveSplit):
        handles: dict = {}
        where = [split.archives[k] for k in split.where[:16]]
        members = zip(where, split.offsets[:16], split.sizes[:16], strict=False)
        first = [io.BytesIO(read_member(w, int(o), int(n), handles)) for w, o, n in members]
    else:
        first = split.files[:16]
    for path in first:
        try:
            with Image.open(path) as image:
                w, h = image.size
        except Exception:  # a broken first file says nothing about the set; try the next
            continue
        return min(w, h) if max(w, h) < DEFAULT_SIZE else DEFAULT_SIZE
    return DEFAULT_SIZE


def _check_out(
    out: Path,
    source: Source,
    size: int | None,
    force: bool,
    image_format: str = "raw",
    rebuild_stale: bool = False,
) -> PrepareSummary | None:
    """A summary of the store already at ``out`` when it can be reused; None when one is to be built."""
    if out.exists() and not out.is_dir():
        raise AlexNetError(f"{out} exists and is a file; choose another output folder")
    if is_store(out):
        try:
            store = open_store(out)
        except AlexNetError as exc:
            if force or rebuild_stale:
                return None
            raise AlexNetError(f"{out} holds a damaged store ({exc}); pass --force to rebuild it") from None
        if force:
            return None
        same_source = store.meta.get("source") == source.description
        same_build = (size is None or store.size == size) and store.meta.get(
            "image_format", "raw"
        ) == image_format
        current = source.fingerprint is not None and store.meta.get("fingerprint") == source.fingerprint
        if same_source and same_build and current:
            counts = {name: len(s) for name, s in store.splits.items()}
            skipped = {name: info.get("skipped", 0) for name, info in store.meta["splits"].items()}
            return PrepareSummary(out, store.size, counts, skipped, 0.0, reused=True)
        if same_source and same_build and rebuild_stale:
            print(f"{source.description} changed since {out} was prepared from it: preparing it again",
                  file=sys.stderr)  # fmt: skip
            return None
        if same_source and same_build:
            raise AlexNetError(
                f"{out} holds a store of an earlier state of {source.description} (files were added, removed "
                f"or changed since); pass --force to rebuild it"
            )
        raise AlexNetError(
            f"{out} already holds a store of {store.meta.get('source')} at {store.size}×"
            f"{store.size}; pass --force to rebuild it, or choose another output folder"
        )
    if out.is_dir() and any(out.iterdir()):
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
    rebuild_stale: bool = False,
) -> PrepareSummary:
    """Prepare ``source`` into a store at ``out`` (see :mod:`alexnet.data.store` for the format).

    ``size`` defaults to 256, or to the images' own size when they are smaller (CIFAR stays 32×32).
    A complete store already at ``out`` for the same source, unchanged since (its fingerprint), is
    reused unless ``force``; a store of the source in an earlier state is refused, or rebuilt with
    ``rebuild_stale`` (a first-use cache). ``image_format="jpeg"`` encodes each resized image once at
    ``quality`` (:mod:`alexnet.data.jpeg`); the mean image and the PCA are computed from the pixels
    before encoding.

    Two prepares of one ``out`` never mix: the second waits for the first (a lock beside ``out``)
    and then reuses its store, or builds its own in place of it.
    """
    if image_format not in ("raw", "jpeg"):
        raise AlexNetError(f"--format must be raw or jpeg, got {image_format!r}")
    if not 1 <= quality <= 100:
        raise AlexNetError(f"--quality must be in 1..100, got {quality}")
    src = source if isinstance(source, Source) else resolve_source(source, cache_dir)
    out = Path(out)
    if size is not None and size < 1:
        raise AlexNetError(f"--size must be a positive number of pixels, got {size}")
    with exclusive(
        out.parent / f".{out.name}.lock", waiting=f"waiting for another prepare of {out} to finish"
    ):
        reused = _check_out(out, src, size, force, image_format, rebuild_stale)
        if reused is not None:
            return reused
        size = size or _auto_size(src)
        workers = max(1, workers or os.cpu_count() or 1)
        started = time.perf_counter()
        partial = out.parent / f".{out.name}.partial"
        # What an interrupted prepare of the same source, size and format finished is kept and
        # continued (its shards); anything else it left is removed. The lock is ours.
        plan = {"source": src.description, "fingerprint": src.fingerprint, "size": size,
                "format": image_format, "quality": quality, "version": STORE_VERSION}  # fmt: skip
        with reporting_write_errors(out):
            if src.fingerprint is None or _read_plan(partial) != plan:
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True)
                (partial / PLAN_FILE).write_text(json.dumps(plan))
            encoding = (image_format, quality)
            return _build(src, out, partial, size, workers, progress, started, encoding)


PLAN_FILE = "plan.json"  # in the partial folder: what is being prepared, for a resumed run to check


def _read_plan(partial: Path) -> dict | None:
    try:
        return json.loads((partial / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None


def prepare_dataset(
    dataset,
    out: str | Path,
    *,
    classes: list[str] | tuple[str, ...] | None = None,
    size: int | None = None,
    force: bool = False,
    progress: bool = True,
    image_format: str = "raw",
    quality: int = DEFAULT_QUALITY,
) -> PrepareSummary:
    """A store from map-style ``torch.utils.data.Dataset``s of (image, label) pairs, so that
    training, resume, evaluation and the rest work on data you hold in Python.

    ``dataset``: one Dataset (the train split) or a dict of them by split name
    (``{"train": ..., "test": ...}``). An image is a PIL image, a uint8 tensor [C, H, W] or [H, W]
    (torchvision's layout), or a uint8 numpy array [H, W, C] or [H, W]; it is prepared as
    ``alexnet prepare`` prepares a file (§2: short side to ``size``, central square). A label is an
    int in 0..len(classes)−1. ``classes``: the class names in label order (default: the Dataset's
    ``classes`` attribute, or its underlying one for a ``Subset``). Items that cannot be used are
    skipped and listed, as broken files are.
    """
    datasets = dict(dataset) if isinstance(dataset, Mapping) else {"train": dataset}
    if not datasets:
        raise AlexNetError("prepare_dataset needs at least one Dataset")
    first = next(iter(datasets.values()))
    classes = (
        classes
        or getattr(first, "classes", None)
        or getattr(getattr(first, "dataset", None), "classes", None)
    )
    if not classes:
        raise AlexNetError("prepare_dataset needs classes=[...]: the class names of labels 0, 1, 2, …")
    for name, ds in datasets.items():
        if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__"):
            raise AlexNetError(
                f"split {name!r}: a map-style Dataset (with __len__ and __getitem__) is needed"
            )
        if len(ds) == 0:
            raise AlexNetError(f"split {name!r}: the Dataset is empty")
    names = tuple(str(c) for c in classes)
    splits = {name: DatasetSplit(ds) for name, ds in datasets.items()}
    source = Source(f"dataset:{type(first).__name__}", splits, names, names, None)
    return prepare(source, out, size=size, force=force, progress=progress, image_format=image_format,
                   quality=quality, workers=1)  # fmt: skip


def _dataset_image(item, index: int) -> Image.Image:
    """A Dataset's image as a Pillow image (see ``prepare_dataset`` for what it may be)."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, torch.Tensor):
        if item.dtype != torch.uint8:
            raise ValueError(f"a {item.dtype} tensor; give uint8 pixels (0–255)")
        array = item.numpy()
        if array.ndim == 3:  # torchvision's [C, H, W]
            array = array.transpose(1, 2, 0)
    elif isinstance(item, np.ndarray):
        array = item
        if array.dtype != np.uint8:
            raise ValueError(f"a {array.dtype} array; give uint8 pixels (0–255)")
    else:
        raise ValueError(f"a {type(item).__name__}, not a PIL image, tensor or array")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"pixels of shape {tuple(item.shape)}, not [H, W], [H, W, 3] or [C, H, W]")
    return Image.fromarray(np.ascontiguousarray(array))


def _dataset_chunks(split: DatasetSplit, size: int, channels: int, classes: int, with_stats: bool):
    """The items of a Dataset, read in order in this process (a Dataset need not be picklable)."""
    per_chunk = max(8, min(512, (1 << 21) // (size * size * 3)))
    for start in range(0, len(split.dataset), per_chunk):
        images, labels, skipped = [], [], []
        for i in range(start, min(start + per_chunk, len(split.dataset))):
            item = split.dataset[i]
            try:
                image, label = item[0], int(item[1])
                if not 0 <= label < classes:
                    raise ValueError(f"label {label} outside 0..{classes - 1}")
                images.append(square(_dataset_image(image, i), size, channels))
                labels.append(label)
            except (TypeError, ValueError, IndexError, OSError) as exc:
                skipped.append((f"item {i}", first_line(exc)[:160]))
        array = np.stack(images) if images else np.empty((0, size, size, channels), np.uint8)
        yield _Chunk(array, labels, skipped, PixelStats.of(array) if with_stats and images else None)


def _dataset_channels(split: DatasetSplit) -> int:
    """1 for grey images (Fashion-MNIST, MNIST), else 3."""
    image = _dataset_image(split.dataset[0][0], 0)
    return 1 if image.mode in ("L", "1", "I", "I;16", "F") else 3


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
        "fingerprint": src.fingerprint,
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
            split_dir.mkdir(exist_ok=True)
            if isinstance(split, (FolderSplit, ArchiveSplit)):  # in shards a later run can continue
                shards = partial / "shards" / name
                stats = write_split(split, split_dir, shards, size, workers, name == "train", bar, encoding)
                listed = stats.pop("skipped")
                write_skipped(split_dir / SKIPPED_FILE, listed)
                stats["skipped"] = len(listed)
            else:
                stats = _write_split(
                    split, split_dir, size, workers, name == "train", bar, encoding, len(src.classes)
                )
            count, n_skipped, channels = stats.pop("count"), stats.pop("skipped"), stats.pop("channels")
            meta["channels"] = channels
            meta["splits"][name] = {"count": count, "skipped": n_skipped}
            if "bytes" in stats:
                meta["splits"][name]["bytes"] = stats.pop("bytes")
            if "pca" in stats:
                meta["pca"] = stats["pca"]
            counts[name], skipped[name] = count, n_skipped
            skipped_files[name] = out / name / SKIPPED_FILE
        (partial / META_FILE).write_text(json.dumps(meta, indent=1))
        shutil.rmtree(partial / "shards", ignore_errors=True)  # the store is whole: its shards are done
        (partial / PLAN_FILE).unlink()
    except BaseException:
        bar.close()
        if not (partial / PLAN_FILE).is_file() or src.fingerprint is None:
            shutil.rmtree(partial, ignore_errors=True)  # nothing a later run could continue
        raise
    bar.close()
    replace_folder(partial, out)
    encoded = [info["bytes"] for info in meta["splits"].values() if "bytes" in info]
    return PrepareSummary(
        out, size, counts, skipped, time.perf_counter() - started, skipped_files=skipped_files,
        encoded_bytes=sum(encoded) if encoded else None, quality=meta.get("quality"), workers=workers,
        resumed=bar.resumed,
    )  # fmt: skip


def _progress(total: int, enabled: bool):
    """A bar with images/s and the time left (tqdm's); ``resumed`` counts what earlier runs did."""
    bar = tqdm(total=total, unit="img", desc="prepare", disable=not enabled or not sys.stderr.isatty())
    bar.resumed = 0
    return bar


def _write_split(
    split, split_dir: Path, size: int, workers: int, with_stats: bool, bar, encoding=("raw", DEFAULT_QUALITY),
    classes: int = 0,
) -> dict:  # fmt: skip
    if isinstance(split, ArraySplit):
        chunks = _array_chunks(split, size, with_stats)
        channels = split.images.shape[-1]
        capacity = len(split.labels)
    else:
        channels = _dataset_channels(split)
        chunks = _dataset_chunks(split, size, channels, classes, with_stats)
        capacity = len(split.dataset)
    writer = JpegWriter(split_dir, encoding[1], workers) if encoding[0] == "jpeg" else None
    path = split_dir / "images.npy"
    if writer is None:
        images = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.uint8, shape=(capacity, size, size, channels)
        )
        reserve(path)
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    stats: PixelStats | None = None
    for chunk in chunks:
        if writer is None:
            images[len(labels) : len(labels) + len(chunk.labels)] = chunk.images
        else:
            writer.add(chunk.images)
        labels += chunk.labels
        skipped += chunk.skipped
        stats = merge(stats, chunk.stats)
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
    write_skipped(split_dir / SKIPPED_FILE, skipped)
    result = {"count": len(labels), "skipped": len(skipped), "channels": channels}
    if writer is not None:
        result["bytes"] = writer.bytes
    if with_stats and stats is not None:
        np.save(split_dir / "mean.npy", stats.mean_image())
        if channels == 3:
            result["pca"] = stats.pca()
    return result


def write_skipped(path: Path, skipped: list[tuple[str, str]]) -> None:
    """One JSON object per line, {"path": …, "reason": …}: any name (a TAB, a newline) reads back
    exactly. A name that is not UTF-8 keeps its bytes as \\udcXX escapes (Python's surrogateescape:
    ``os.fsencode(path)`` gives the original bytes back)."""
    path.write_text("".join(json.dumps({"path": p, "reason": r}) + "\n" for p, r in skipped))


def read_skipped(path: Path) -> list[tuple[str, str]]:
    """What ``write_skipped`` wrote: (path, reason) pairs."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["path"], row["reason"]) for row in rows]


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
        yield _Chunk(np.ascontiguousarray(block), labels, [], PixelStats.of(block) if with_stats else None)
