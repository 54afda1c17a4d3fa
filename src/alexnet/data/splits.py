"""What a data set is before it is prepared: its splits (files in folders, arrays in memory, a
Python Dataset, byte ranges of archives), class ids and names, and a fingerprint of its content."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class FolderSplit:
    """One split of an ImageFolder tree: every file of every class folder, with its label."""

    root: Path
    files: tuple[Path, ...]
    labels: tuple[int, ...]


@dataclass(frozen=True)
class ArraySplit:
    """One split already in memory as uint8 [N, H, W, C] (torchvision's CIFAR and MNIST)."""

    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class DatasetSplit:
    """One split held by a map-style ``torch.utils.data.Dataset`` of (image, label) pairs."""

    dataset: object

    @property
    def labels(self) -> range:  # what the progress bar counts: one per item
        return range(len(self.dataset))


@dataclass(frozen=True)
class Source:
    """A data set before preparation: its splits, class folder ids and human-readable class names.

    ``fingerprint`` identifies its content (every file's name, size and modification time, or the
    arrays' bytes): a store prepared from it is reused only while the fingerprint is the same.
    """

    description: str
    splits: dict[str, FolderSplit | ArraySplit | DatasetSplit | ArchiveSplit]
    class_ids: tuple[str, ...]
    classes: tuple[str, ...]
    fingerprint: str | None = None


@dataclass(frozen=True)
class ArchiveSplit:
    """One split as byte ranges of tar files: image i is ``archives[where[i]]`` from ``offsets[i]``
    for ``sizes[i]`` bytes, named ``names[i]`` (for the list of skipped images), labelled ``labels[i]``."""

    root: str
    archives: tuple[str, ...]
    where: np.ndarray  # int32 [N]: which archive
    offsets: np.ndarray  # int64 [N]
    sizes: np.ndarray  # int64 [N]
    names: tuple[str, ...]
    labels: np.ndarray  # int64 [N]


def folder_fingerprint(root: Path, splits: dict) -> str:
    """What identifies a folder's content without reading it: each file's path, size and time."""
    digest = hashlib.sha256()
    for split in splits.values():
        for path in split.files:
            try:
                st = path.stat()
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:  # a dangling link: its target's name is what there is
                stamp = "missing"
            digest.update(f"{os.fsencode(path.relative_to(root)).hex()}\t{stamp}\n".encode())
    return digest.hexdigest()[:16]


def array_fingerprint(splits: dict) -> str:
    """The fingerprint of in-memory splits: their images' and labels' bytes."""
    digest = hashlib.sha256()
    for name, split in splits.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(split.images).data)
        digest.update(np.ascontiguousarray(split.labels, dtype=np.int64).data)
    return digest.hexdigest()[:16]
