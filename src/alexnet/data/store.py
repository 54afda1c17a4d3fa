"""The prepared store: what ``alexnet prepare`` writes and every training run reads.

Layout (all arrays are numpy ``.npy`` files, opened memory-mapped)::

    OUT/store.json              format, version, image size, channels, classes, per-split counts,
                                the training split's RGB PCA (eigenvalues, eigenvectors as columns,
                                pixels scaled to [0, 1] as in PAPER.md §2)
    OUT/<split>/images.npy      uint8 [N, size, size, C], row i is image i (RGB, or C=1 for grey sets)
    OUT/<split>/labels.npy      int64 [N]
    OUT/<split>/skipped.jsonl   one {"path": …, "reason": …} line per input that could not be used
    OUT/train/mean.npy          float32 [size, size, C], the per-pixel mean image in 0–255 units (§2)

A ``--format jpeg`` store (store.json ``"image_format": "jpeg"``) keeps each split's images as
``jpeg.bin`` + ``offsets.npy`` instead of images.npy (see :mod:`alexnet.data.jpeg`); everything
else is the same, and a split's ``images`` indexes the same way, decoding on read.

The folder appears under its final name only when complete (prepare writes a temporary folder
and renames it), so a store that opens is a whole store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AlexNetError
from .jpeg import JpegImages

STORE_FORMAT = "alexnet-store"
STORE_VERSION = 1
META_FILE = "store.json"
SKIPPED_FILE = "skipped.jsonl"


class RowSubset:
    """Rows ``rows`` of a (memory-mapped) array, read only when indexed: a subset of a 250 GB
    split costs its index, not a copy."""

    def __init__(self, base, rows: np.ndarray) -> None:
        if isinstance(base, RowSubset):  # a subset of a subset indexes the original directly
            base, rows = base.base, base.rows[rows]
        self.base, self.rows = base, np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.base.shape[1:])

    @property
    def dtype(self):
        return self.base.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        return self.base[self.rows[index]]

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.base[self.rows])
        return out if dtype is None else out.astype(dtype)


@dataclass(frozen=True)
class Split:
    """One split of a store: memory-mapped images and their labels."""

    name: str
    images: np.ndarray | RowSubset  # uint8 [N, H, W, C], memory-mapped (or JpegImages, decoded on read)
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: np.ndarray, name: str | None = None) -> Split:
        """The images at ``rows`` (in that order), read lazily from this split's store."""
        rows = np.asarray(rows, dtype=np.int64)
        return Split(name or self.name, RowSubset(self.images, rows), np.asarray(self.labels[rows]))

    def evenly_spaced(self, limit: int | None) -> Split:
        """``limit`` evenly spaced images: stores are sorted by class, so every class keeps its share."""
        if limit is None or limit >= len(self):
            return self
        return self.subset(np.unique(np.round(np.linspace(0, len(self) - 1, limit)).astype(np.int64)))

    def first_per_class(self, limit: int | None) -> Split:
        """At most ``limit`` images of each class: the first ones, in store order."""
        if limit is None:
            return self
        rows = np.concatenate([np.flatnonzero(self.labels == c)[:limit] for c in np.unique(self.labels)])
        return self if len(rows) == len(self) else self.subset(np.sort(rows))

    def relabelled(self, keep: list[int]) -> Split:
        """The images of the classes ``keep`` (old labels), labelled by their position in ``keep``."""
        mapping = np.full(int(self.labels.max(initial=-1)) + 1 if len(self) else 0, -1, np.int64)
        valid = [c for c in keep if c < len(mapping)]
        mapping[valid] = [keep.index(c) for c in valid]
        rows = np.flatnonzero(np.isin(self.labels, keep))
        return Split(self.name, RowSubset(self.images, rows), mapping[np.asarray(self.labels[rows])])

    def hold_out(self, fraction: float, seed: int) -> tuple[Split, Split]:
        """(the rest, a held-out ``fraction``): stratified (each class gives its share, at least one
        image of a class with two or more) and drawn from ``seed`` alone."""
        rng = np.random.default_rng(seed)
        held: list[np.ndarray] = []
        for label in np.unique(self.labels):
            members = np.flatnonzero(self.labels == label)
            k = min(len(members) - 1, max(1, round(fraction * len(members))))
            held.append(rng.permutation(members)[:k])
        held_rows = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
        rest = np.setdiff1d(np.arange(len(self)), held_rows)
        return self.subset(rest), self.subset(held_rows, f"{self.name} (held out)")


@dataclass(frozen=True)
class Store:
    root: Path
    meta: dict
    splits: dict[str, Split]
    mean: np.ndarray | None  # float32 [H, W, C] per-pixel mean of the training split, 0–255 units
    eigvals: np.ndarray | None  # [3] RGB covariance eigenvalues, descending, pixels in [0, 1]
    eigvecs: np.ndarray | None  # [3, 3] the matching unit eigenvectors as columns

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])

    def select(self, classes: tuple[str, ...] | list[str]) -> Store:
        """The store seen with only ``classes``, labelled 0..k−1 in that order (the mean image and
        the PCA stay those of the whole training split)."""
        unknown = [c for c in classes if c not in self.classes]
        if unknown:
            raise AlexNetError(
                f"data.classes: {self.root} has no class {', '.join(map(repr, unknown[:3]))}; "
                f"it has {', '.join(self.classes[:12])}{' …' if len(self.classes) > 12 else ''}"
            )
        keep = [self.classes.index(c) for c in classes]
        meta = {**self.meta, "classes": list(classes)}
        splits = {name: split.relabelled(keep) for name, split in self.splits.items()}
        return Store(self.root, meta, splits, self.mean, self.eigvals, self.eigvecs)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise AlexNetError(f"store {self.root} has no split {name!r}; it has {', '.join(self.splits)}")
        return self.splits[name]


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is meant as a store (it has a store.json); ``open_store`` says if it is a good one."""
    return (Path(path) / META_FILE).is_file()


def _check_meta(meta, meta_path: Path) -> None:
    """A store.json of the wrong shape is one line naming what is wrong, not a KeyError later."""

    def bad(what: str) -> AlexNetError:
        return AlexNetError(f"{meta_path} is damaged ({what}); prepare the store again")

    if not isinstance(meta, dict):
        raise bad(f"a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != STORE_FORMAT or meta.get("version") != STORE_VERSION:
        raise AlexNetError(f"{meta_path} is not a version-{STORE_VERSION} {STORE_FORMAT}; prepare it again")
    for key, kind in (("size", int), ("channels", int), ("classes", list), ("splits", dict)):
        if not isinstance(meta.get(key), kind):
            raise bad(f"{key!r} missing or not a{'n' if kind is int else ''} {kind.__name__}")
    if not meta["classes"] or not all(isinstance(c, str) for c in meta["classes"]):
        raise bad("'classes' must be a non-empty list of names")
    for name, info in meta["splits"].items():
        if not isinstance(info, dict) or not isinstance(info.get("count"), int):
            raise bad(f"split {name!r} has no image count")
    if meta.get("image_format", "raw") not in ("raw", "jpeg"):
        raise bad(f"image_format {meta.get('image_format')!r} is neither raw nor jpeg")
    pca = meta.get("pca")
    if pca is not None:
        if not (isinstance(pca, dict) and {"eigvals", "eigvecs"} <= set(pca)):
            raise bad("'pca' lacks eigvals or eigvecs")
        try:
            eigvals = np.asarray(pca["eigvals"], dtype=np.float64)
            eigvecs = np.asarray(pca["eigvecs"], dtype=np.float64)
        except (TypeError, ValueError):
            raise bad("'pca' holds values that are not numbers") from None
        if eigvals.shape != (3,) or eigvecs.shape != (3, 3):
            raise bad(
                f"'pca' has eigvals of shape {eigvals.shape} and eigvecs {eigvecs.shape}, not (3,) and (3, 3)"
            )
        # a covariance's smallest eigenvalue can come out a rounding error below 0 (a grey image set)
        if not (np.isfinite(eigvals).all() and np.isfinite(eigvecs).all()) or (eigvals < -1e-6).any():
            raise bad("'pca' has eigenvalues or eigenvectors that are not finite (or negative eigenvalues)")


def open_store(path: str | Path) -> Store:
    """Open a prepared store (memory-mapped); a missing or damaged file is one clear error."""
    root = Path(path)
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise AlexNetError(
            f"{root} is not a prepared store (no {META_FILE}); run `alexnet prepare SRC {root}`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise AlexNetError(f"{meta_path} is damaged (not JSON: {exc}); prepare the store again") from None
    _check_meta(meta, meta_path)
    splits = {}
    jpeg = meta.get("image_format", "raw") == "jpeg"
    for name, info in meta["splits"].items():
        if jpeg:
            images = JpegImages(root / name, meta["size"], meta["channels"])
        else:
            images = _load(root / name / "images.npy", mmap=True)
        labels = _load(root / name / "labels.npy", mmap=False)
        expected = (meta["size"], meta["size"], meta["channels"])
        if tuple(images.shape[1:]) != expected:
            raise AlexNetError(
                f"{root / name} holds images of {tuple(images.shape[1:])}, {META_FILE} says {expected} "
                f"(size, size, channels); prepare the store again"
            )
        if images.shape[0] != info["count"] or labels.shape != (info["count"],):
            raise AlexNetError(
                f"{root / name} holds {images.shape[0]} images and {labels.shape[0]} labels, "
                f"{META_FILE} says {info['count']}; prepare the store again"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(meta["classes"])):
            raise AlexNetError(
                f"{root / name / 'labels.npy'} has labels outside 0..{len(meta['classes']) - 1} "
                f"({int(labels.min())}..{int(labels.max())}) for {len(meta['classes'])} classes; "
                f"prepare the store again"
            )
        splits[name] = Split(name, images, labels)
    pca = meta.get("pca")
    mean_path = root / "train" / "mean.npy"
    mean = _load(mean_path, mmap=False) if mean_path.is_file() else None
    if mean is not None:
        shape = (meta["size"], meta["size"], meta["channels"])
        finite = bool(np.isfinite(mean).all())
        if mean.shape != shape or not finite:
            what = "" if finite else " with values that are not finite"
            raise AlexNetError(
                f"{mean_path} is a {mean.shape} array{what}, not the store's mean image of {shape}; "
                f"prepare the store again"
            )
    return Store(
        root=root,
        meta=meta,
        splits=splits,
        mean=mean,
        eigvals=np.asarray(pca["eigvals"], dtype=np.float32) if pca else None,
        eigvecs=np.asarray(pca["eigvecs"], dtype=np.float32) if pca else None,
    )


def _load(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AlexNetError(f"{path} cannot be read ({exc}); prepare the store again") from None


def reserve(path: Path) -> None:
    """Allocate a memory-mapped file's blocks now: on a full disk that fails here with ENOSPC,
    where writing into a sparse mapping would kill the process with SIGBUS."""
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))


def shrink_rows(path: Path, rows: int) -> None:
    """Cut an .npy file to its first ``rows`` rows in place (no copy of the data).

    The header is rewritten with the smaller shape and padded with spaces to its old length, which
    the .npy format allows (the header is a dict literal padded with spaces to an aligned length).
    """
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        header_fn = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = header_fn(f)
        offset = f.tell()
        start = 8 + (2 if version == (1, 0) else 4)  # magic (6) + version (2) + header length field
        header = repr(
            {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": fortran,
                "shape": (rows, *shape[1:]),
            }
        )
        space = offset - start - 1  # room for the dict before the closing newline
        if len(header) > space:
            raise AlexNetError(f"cannot shrink {path}: the new header does not fit")
        f.seek(start)
        f.write((header + " " * (space - len(header)) + "\n").encode("latin1"))
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        f.truncate(offset + rows * row_bytes)
