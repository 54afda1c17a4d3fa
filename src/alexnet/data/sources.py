"""What ``--data`` accepts: an ImageFolder tree, a prepared store, or a torchvision data set by name."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from ..errors import AlexNetError
from ..fileio import first_line
from .decode import IMAGE_EXTENSIONS
from .imagenet import is_kaggle, is_official, kaggle_source, official_source
from .samples import SAMPLES, sample_store_path
from .splits import ArraySplit, FolderSplit, Source, array_fingerprint, folder_fingerprint
from .store import open_store

SPLIT_NAMES = ("train", "val", "test")
WNID = re.compile(r"^n\d{8}$")
# torchvision data sets by name: (class in torchvision.datasets, the files a user can supply offline)
TORCHVISION_SETS = {
    "cifar10": ("CIFAR10", "cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/)"),
    "cifar100": ("CIFAR100", "cifar-100-python.tar.gz (or its extracted cifar-100-python/)"),
    "mnist": ("MNIST", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"),
}


def default_cache_dir() -> Path:
    """Where torchvision sets are looked for and downloaded: $ALEXNET_DATA, else ~/.cache/alexnet/datasets."""
    return Path(os.environ.get("ALEXNET_DATA", Path.home() / ".cache" / "alexnet" / "datasets"))


def default_store_cache() -> Path:
    """Where stores prepared on first use are kept: $ALEXNET_CACHE/stores, else ~/.cache/alexnet/stores.

    Not inside $ALEXNET_DATA: a data folder may be shared or read-only.
    """
    return Path(os.environ.get("ALEXNET_CACHE", Path.home() / ".cache" / "alexnet")) / "stores"


def class_names(class_ids: tuple[str, ...]) -> tuple[str, ...]:
    """Human-readable names: ImageNet's 1,000 wnid folders get torchvision's names, others keep theirs."""
    if len(class_ids) == 1000 and all(WNID.match(c) for c in class_ids):
        # Sorted wnids are the standard ImageNet class order, the order of torchvision's names.
        from torchvision.models import AlexNet_Weights

        return tuple(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    return class_ids


def _visible_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` (symbolic links included, dangling ones too: they are tried and
    listed as skipped), leaving out hidden files and everything inside hidden folders
    (``.ipynb_checkpoints``, ``.DS_Store``), as the class folders themselves are."""
    out = []
    for p in folder.rglob("*"):
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        if p.is_file() or (p.is_symlink() and not p.exists()):
            out.append(p)
    return sorted(out)


def _scan_split(root: Path) -> tuple[FolderSplit, tuple[str, ...]]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise AlexNetError(f"{root} has no class folders; expected {root}/<class>/<image files>")
    split_dirs = {(root.parent / name).resolve() for name in SPLIT_NAMES} | {root.resolve()}
    looped = [p for p in class_dirs if p.is_symlink() and p.resolve() in split_dirs]
    if looped:
        raise AlexNetError(
            f"{looped[0]} is a link to a split folder ({looped[0].resolve()}), not a class; remove it"
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        entries = _visible_files(class_dir)
        if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in entries):
            raise AlexNetError(
                f"class folder {class_dir} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                f"add images or remove the folder"
            )
        files += entries
        labels += [label] * len(entries)
    return FolderSplit(root, tuple(files), tuple(labels)), tuple(p.name for p in class_dirs)


def folder_source(root: Path) -> Source:
    """An ImageFolder tree: ``root/{train,val,test}/<class>/<images>``; every split needs the same classes."""
    if not root.is_dir():
        raise AlexNetError(f"{root} is not a folder")
    present = [name for name in SPLIT_NAMES if (root / name).is_dir()]
    if not present:
        if not any(root.iterdir()):
            raise AlexNetError(f"{root} is empty; expected {root}/train/<class>/<images> and {root}/val/...")
        raise AlexNetError(
            f"{root} has no train/, val/ or test/ folder; arrange it as "
            f"{root}/train/<class>/<images> (ImageFolder layout)"
        )
    splits: dict[str, FolderSplit | ArraySplit] = {}
    ids: tuple[str, ...] | None = None
    for name in present:
        split, split_ids = _scan_split(root / name)
        if ids is not None and split_ids != ids:
            raise AlexNetError(
                f"{root / name} has other class folders than {root / present[0]}; "
                f"every split needs the same classes"
            )
        ids = split_ids
        splits[name] = split
    assert ids is not None
    return Source(str(root.resolve()), splits, ids, class_names(ids), folder_fingerprint(root, splits))


def torchvision_source(name: str, cache_dir: Path | None = None, download: bool = True) -> Source:
    """A torchvision data set by name, downloaded into ``cache_dir`` when the network allows."""
    import torchvision.datasets as tvd

    cls_name, files = TORCHVISION_SETS[name]
    cls = getattr(tvd, cls_name)
    root = Path(cache_dir or default_cache_dir()) / name
    existed = root.exists()
    splits: dict[str, FolderSplit | ArraySplit] = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = cls(str(root), train=train, download=download)
        except Exception as exc:  # URLError, RuntimeError ("Dataset not found"), checksum errors, …
            if not existed:  # torchvision made the folder for its download: leave nothing behind
                _remove_empty_folders(root)
            raise AlexNetError(
                f"cannot get {name} into {root} ({first_line(exc)[:160]}); without a network, put {files} "
                f"into {root} yourself (or point $ALEXNET_DATA at a folder that holds them), or give "
                f"an ImageFolder path instead of {name!r}"
            ) from None
        images = np.asarray(ds.data, dtype=np.uint8)
        if images.ndim == 3:  # MNIST-like: [N, H, W] grey
            images = images[..., None]
        splits[split] = ArraySplit(images, np.asarray(ds.targets, dtype=np.int64))
        classes = tuple(ds.classes)
    return Source(f"torchvision:{name}", splits, classes, classes, array_fingerprint(splits))


def _remove_empty_folders(root: Path) -> None:
    """Remove ``root`` and the folders under it if they hold no file."""
    if not root.is_dir() or any(p.is_file() for p in root.rglob("*")):
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        folder.rmdir()
    root.rmdir()


def sample_source(name: str) -> Source:
    """A sample the package ships (e.g. cifar10-sample), as a source: its decoded images."""
    store = open_store(sample_store_path(name))
    splits = {n: ArraySplit(np.asarray(s.images), np.asarray(s.labels)) for n, s in store.splits.items()}
    classes = tuple(store.classes)
    return Source(f"alexnet:{name}", splits, classes, classes, array_fingerprint(splits))


def resolve_source(spec: str | Path, cache_dir: Path | None = None) -> Source:
    """``spec`` is a torchvision set name (cifar10, cifar100, mnist, fashion-mnist), a sample the
    package ships (cifar10-sample) or an ImageFolder root."""
    text = str(spec)
    if text in TORCHVISION_SETS and not Path(text).exists():
        return torchvision_source(text, cache_dir)
    if text in SAMPLES and not Path(text).exists():
        return sample_source(text)
    path = Path(text).expanduser()
    if not path.exists():
        raise AlexNetError(
            f"{path} does not exist; give an ImageFolder root, a prepared store, "
            f"one of {', '.join(TORCHVISION_SETS)}, or {', '.join(SAMPLES)} (shipped with the package)"
        )
    if path.is_dir() and is_official(path):  # ImageNet's archives, read in place
        return official_source(path)
    if path.is_dir() and is_kaggle(path):
        return kaggle_source(path)
    return folder_source(path)


def cached_store_path(source: Source, size: int | None, store_cache: Path | None = None) -> Path:
    """Where ``open_data`` keeps the store it prepares for a source: one folder per (source, size)."""
    key = hashlib.sha256(f"{source.description}|{size}".encode()).hexdigest()[:12]
    name = Path(source.description).name or "data"
    return Path(store_cache or default_store_cache()) / f"{name}-{key}"
