"""The prepared store: what ``alexnet prepare`` writes and every training run reads.

Layout (all arrays are numpy ``.npy`` files, opened memory-mapped)::

    OUT/store.json              format, version, image size, channels, classes, per-split counts,
                                the training split's RGB PCA (eigenvalues, eigenvectors as columns,
                                pixels scaled to [0, 1] as in PAPER.md §2)
    OUT/<split>/images.npy      uint8 [N, size, size, C], row i is image i (RGB, or C=1 for grey sets)
    OUT/<split>/labels.npy      int64 [N]
    OUT/<split>/skipped.txt     one "path<TAB>reason" line per input that could not be used
    OUT/train/mean.npy          float32 [size, size, C], the per-pixel mean image in 0–255 units (§2)

The folder appears under its final name only when complete (prepare writes a temporary folder
and renames it), so a store that opens is a whole store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AlexNetError

STORE_FORMAT = "alexnet-store"
STORE_VERSION = 1
META_FILE = "store.json"


@dataclass(frozen=True)
class Split:
    """One split of a store: memory-mapped images and their labels."""

    name: str
    images: np.ndarray  # uint8 [N, H, W, C], memory-mapped
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


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

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise AlexNetError(f"store {self.root} has no split {name!r}; it has {', '.join(self.splits)}")
        return self.splits[name]


def is_store(path: str | Path) -> bool:
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == STORE_FORMAT
    except (OSError, ValueError):
        return False


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
    except ValueError as exc:
        raise AlexNetError(f"{meta_path} is damaged ({exc}); prepare the store again") from None
    if meta.get("format") != STORE_FORMAT or meta.get("version") != STORE_VERSION:
        raise AlexNetError(f"{meta_path} is not a version-{STORE_VERSION} {STORE_FORMAT}; prepare it again")
    splits = {}
    for name, info in meta["splits"].items():
        images = _load(root / name / "images.npy", mmap=True)
        labels = _load(root / name / "labels.npy", mmap=False)
        if images.shape[0] != info["count"] or labels.shape != (info["count"],):
            raise AlexNetError(
                f"{root / name} holds {images.shape[0]} images and {labels.shape[0]} labels, "
                f"{META_FILE} says {info['count']}; prepare the store again"
            )
        splits[name] = Split(name, images, labels)
    pca = meta.get("pca")
    mean_path = root / "train" / "mean.npy"
    return Store(
        root=root,
        meta=meta,
        splits=splits,
        mean=_load(mean_path, mmap=False) if mean_path.is_file() else None,
        eigvals=np.asarray(pca["eigvals"], dtype=np.float32) if pca else None,
        eigvecs=np.asarray(pca["eigvecs"], dtype=np.float32) if pca else None,
    )


def _load(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AlexNetError(f"{path} cannot be read ({exc}); prepare the store again") from None


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
