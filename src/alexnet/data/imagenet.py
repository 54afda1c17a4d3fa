"""ImageNet (ILSVRC-2012) as users download it, read where it lies: no extraction to disk.

- **The official archives** in one folder: ``ILSVRC2012_img_train.tar`` (1,000 inner tars, one per
  wnid, each holding ``<wnid>_*.JPEG``), ``ILSVRC2012_img_val.tar`` (50,000 JPEGs in one folder)
  and ``ILSVRC2012_devkit_t12.tar.gz`` (``data/meta.mat``: the synsets; ``data/ILSVRC2012_
  validation_ground_truth.txt``: one ILSVRC2012_ID per validation image, in file order). The
  images are read as byte ranges of the tar files (their members are listed from the headers
  only); the devkit is parsed with torchvision's own ``parse_meta_mat`` and
  ``parse_val_groundtruth_txt`` (which need scipy: the ``imagenet`` extra).
- **Kaggle's layout** ("ImageNet Object Localization Challenge"): ``ILSVRC/Data/CLS-LOC/train/
  <wnid>/*.JPEG``, ``ILSVRC/Data/CLS-LOC/val/*.JPEG`` (flat), ``LOC_val_solution.csv``
  (``ImageId,PredictionString``; the string's first token is the wnid) and
  ``LOC_synset_mapping.txt`` (``wnid words``).

Both give torchvision's ``ImageNet`` classes: the sorted wnids are the class indices, and a class's
name is its first synonym (torchvision's ``ImageNet.classes[i][0]``).
"""

from __future__ import annotations

import csv
import hashlib
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from ..errors import AlexNetError
from ..fileio import first_line
from .decode import IMAGE_EXTENSIONS
from .splits import ArchiveSplit, FolderSplit, Source, folder_fingerprint

TRAIN_TAR, VAL_TAR, DEVKIT = (
    "ILSVRC2012_img_train.tar",
    "ILSVRC2012_img_val.tar",
    "ILSVRC2012_devkit_t12.tar.gz",
)
KAGGLE_DATA = Path("ILSVRC") / "Data" / "CLS-LOC"


def is_official(folder: Path) -> bool:
    return (folder / DEVKIT).is_file() and ((folder / TRAIN_TAR).is_file() or (folder / VAL_TAR).is_file())


def is_kaggle(folder: Path) -> bool:
    return (folder / KAGGLE_DATA / "train").is_dir() and (folder / "LOC_synset_mapping.txt").is_file()


def _members(path: Path, fileobj=None) -> list[tarfile.TarInfo]:
    """The regular files of a tar, from its headers alone (the data is seeked over, not read)."""
    try:
        with tarfile.open(path if fileobj is None else None, mode="r:", fileobj=fileobj) as tar:
            return [m for m in tar.getmembers() if m.isfile()]
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise AlexNetError(
            f"{path} is truncated or not a tar archive ({first_line(exc)[:120]}); download it again"
        ) from None


def read_devkit(path: Path) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """(wnid → its synonyms, each validation image's wnid in file order) from the devkit archive,
    by torchvision's own ``parse_devkit_archive`` (which checks the archive's md5, reads meta.mat
    with scipy, and extracts the 2.5 MB devkit into a temporary folder it removes). Its meta file
    is written into a temporary folder too: the data folder may be read-only."""
    from torchvision.datasets.imagenet import load_meta_file, parse_devkit_archive

    try:
        import scipy.io  # noqa: F401  (parse_devkit_archive's loadmat)
    except ImportError:
        raise AlexNetError(
            "reading ImageNet's devkit (meta.mat) needs scipy: pip install 'alexnet[imagenet]'"
        ) from None
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(path.resolve(), Path(tmp) / DEVKIT)
        try:
            parse_devkit_archive(tmp)
            wnid_to_classes, val_wnids = load_meta_file(tmp)
        except RuntimeError as exc:  # torchvision: "not present in the root directory or is corrupted"
            raise AlexNetError(f"{path} is damaged ({first_line(exc)[:100]}); download it again") from None
        except Exception as exc:  # a tar or mat file that does not read
            raise AlexNetError(
                f"{path} cannot be read ({type(exc).__name__}: {first_line(exc)[:100]})"
            ) from None
    return dict(wnid_to_classes), list(val_wnids)


def official_source(folder: Path):
    """The official archives in ``folder`` as a Source (the splits whose archive is there)."""
    wnid_to_classes, val_wnids = read_devkit(folder / DEVKIT)
    wnids = sorted(wnid_to_classes)
    index = {w: i for i, w in enumerate(wnids)}
    splits = {}
    if (folder / TRAIN_TAR).is_file():
        splits["train"] = _train_split(folder / TRAIN_TAR, index)
    if (folder / VAL_TAR).is_file():
        splits["val"] = _val_split(folder / VAL_TAR, val_wnids, index)
    classes = tuple(wnid_to_classes[w][0] for w in wnids)
    return Source(f"ILSVRC-2012 archives in {folder.resolve()}", splits, tuple(wnids), classes,
                  _archive_fingerprint(folder))  # fmt: skip


def _train_split(path: Path, index: dict[str, int]) -> ArchiveSplit:
    offsets, sizes, names, labels = [], [], [], []
    # each inner tar is read in place through tarfile's own view of a member (seekable, never
    # extracted); its members' offsets are relative to the inner tar's first byte
    inners = sorted(_members(path), key=lambda m: m.name)  # a damaged archive: one line, from here
    with tarfile.open(path, mode="r:") as outer:
        for inner in inners:
            wnid = Path(inner.name).stem
            if wnid not in index:
                raise AlexNetError(f"{path}: {inner.name} is not a class of the devkit (no synset {wnid})")
            for m in sorted(_members(path, outer.extractfile(inner)), key=lambda m: m.name):
                offsets.append(inner.offset_data + m.offset_data)
                sizes.append(m.size)
                names.append(f"{inner.name}/{m.name}")
                labels.append(index[wnid])
    return _split(path, offsets, sizes, names, labels)


def _val_split(path: Path, val_wnids: list[str], index: dict[str, int]) -> ArchiveSplit:
    members = sorted(_members(path), key=lambda m: m.name)  # ILSVRC2012_val_00000001.JPEG, … in file order
    if len(members) != len(val_wnids):
        raise AlexNetError(
            f"{path} holds {len(members)} images, the devkit's ground truth {len(val_wnids)}; "
            "download both again"
        )
    labels = [index[w] for w in val_wnids]
    return _split(path, [m.offset_data for m in members], [m.size for m in members],
                  [m.name for m in members], labels)  # fmt: skip


def _split(path: Path, offsets, sizes, names, labels) -> ArchiveSplit:
    n = len(offsets)
    return ArchiveSplit(str(path), (str(path),), np.zeros(n, np.int32), np.asarray(offsets, np.int64),
                        np.asarray(sizes, np.int64), tuple(names), np.asarray(labels, np.int64))  # fmt: skip


def _archive_fingerprint(folder: Path) -> str:
    """The archives' names, sizes and times: a changed download is prepared again."""
    digest = hashlib.sha256()
    for name in (TRAIN_TAR, VAL_TAR, DEVKIT):
        if (folder / name).is_file():
            st = (folder / name).stat()
            digest.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def kaggle_source(folder: Path):
    """Kaggle's CLS-LOC layout in ``folder`` as a Source (train and val)."""
    names = {}
    for line in (folder / "LOC_synset_mapping.txt").read_text().splitlines():
        wnid, _, words = line.strip().partition(" ")
        if wnid:
            names[wnid] = words.split(", ")[0]
    wnids = sorted(names)
    index = {w: i for i, w in enumerate(wnids)}
    train_root = folder / KAGGLE_DATA / "train"
    files, labels = [], []
    for wnid in wnids:
        for f in sorted((train_root / wnid).glob("*")) if (train_root / wnid).is_dir() else []:
            if f.suffix.lower() in IMAGE_EXTENSIONS or f.is_file():
                files.append(f)
                labels.append(index[wnid])
    splits = {"train": FolderSplit(train_root, tuple(files), tuple(labels))}
    val_root, solution = folder / KAGGLE_DATA / "val", folder / "LOC_val_solution.csv"
    if val_root.is_dir() and solution.is_file():
        truth = {}
        with open(solution, newline="") as f:
            for row in csv.DictReader(f):
                truth[row["ImageId"]] = row["PredictionString"].split()[0]
        files, labels = [], []
        for f in sorted(val_root.glob("*")):
            if f.stem in truth:
                files.append(f)
                labels.append(index[truth[f.stem]])
        splits["val"] = FolderSplit(val_root, tuple(files), tuple(labels))
    classes = tuple(names[w] for w in wnids)
    return Source(f"ILSVRC-2012 (Kaggle layout) in {folder.resolve()}", splits, tuple(wnids), classes,
                  folder_fingerprint(folder, splits))  # fmt: skip


def read_member(path: str, offset: int, size: int, handles: dict) -> bytes:
    """The bytes of one archive member (files kept open per process in ``handles``)."""
    f = handles.get(path)
    if f is None:
        f = handles[path] = open(path, "rb")  # noqa: SIM115 (kept open for the worker's life)
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise OSError(f"{path} ends {size - len(data)} bytes early (truncated)")
    return data
