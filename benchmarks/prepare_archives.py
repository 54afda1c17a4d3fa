"""`alexnet prepare` from ImageNet's official archives (read in place) against the same images in
folders, in one run: images per second, and per worker.

    python benchmarks/prepare_archives.py [--data ../shared/datasets/imagenet-sample] [--workers 2]

The archives are built here from the folder's JPEGs in the official layout (a train tar of one
inner tar per class, a flat val tar, a devkit with meta.mat and the ground truth); torchvision's
md5 check of the devkit is switched off for them, since they are not the published files. Both
prepares write a raw store at 256 px; each is timed after a warm-up read of the files (so both
read from the page cache).
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from alexnet.data import prepare


def tar_bytes(members: dict[str, bytes], gz: bool = False) -> bytes:
    """A tar (or tar.gz) file's bytes holding ``members`` (name → bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def meta_mat(synsets: list[tuple[int, str, str, int]]) -> bytes:
    """The devkit's data/meta.mat for (ILSVRC2012_ID, wnid, words, number of children) rows; the
    fields the real file has, in its order."""
    import scipy.io

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]  # fmt: skip
    rows = np.zeros((len(synsets), 1), dtype=[(f, "O") for f in fields])
    for i, (idx, wnid, words, children) in enumerate(synsets):
        rows[i, 0] = (idx, wnid, words, "", children, np.zeros(children), 0, 1)
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"synsets": rows})
    return mat.getvalue()


def build_archives(split_root: Path, out: Path) -> int:
    """ILSVRC-2012's three files from an ImageFolder split whose folders are wnids."""
    classes = sorted(p for p in split_root.iterdir() if p.is_dir())
    synsets = [(i, folder.name, folder.name, 0) for i, folder in enumerate(classes, 1)]
    inner, val, truth = {}, {}, []
    for idx, folder in enumerate(classes, 1):
        files = sorted(f for f in folder.iterdir() if f.is_file())
        inner[f"{folder.name}.tar"] = tar_bytes({f.name: f.read_bytes() for f in files})
        for f in files:
            val[f"ILSVRC2012_val_{len(val) + 1:08d}.JPEG"] = f.read_bytes()
            truth.append(idx)
    (out / "ILSVRC2012_img_train.tar").write_bytes(tar_bytes(inner))
    (out / "ILSVRC2012_img_val.tar").write_bytes(tar_bytes(val))
    devkit = {"ILSVRC2012_devkit_t12/data/meta.mat": meta_mat(synsets),
              "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt":
                  "".join(f"{i}\n" for i in truth).encode()}  # fmt: skip
    (out / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(tar_bytes(devkit, gz=True))
    return 2 * len(val)


def timed(src: Path, out: Path, workers: int) -> tuple[float, int]:
    started = time.perf_counter()
    summary = prepare(src, out, workers=workers, progress=False)
    return time.perf_counter() - started, sum(summary.counts.values()) + sum(summary.skipped.values())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/datasets/imagenet-sample")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    split = next((Path(args.data) / s for s in ("train", "val") if (Path(args.data) / s).is_dir()), None)
    if split is None:
        print(f"{args.data} has no train/ or val/ folder", file=sys.stderr)
        return 2
    import torchvision.datasets.imagenet as tv_imagenet

    tv_imagenet.check_integrity = lambda path, md5=None: Path(path).is_file()  # not the published files
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "archives").mkdir()
        images = build_archives(split, tmp / "archives")
        folders = tmp / "folders"  # the same images, train and val, as an ImageFolder tree
        folders.mkdir()
        for name in ("train", "val"):
            (folders / name).symlink_to(split.resolve())
        for f in split.rglob("*"):  # warm the page cache for both
            if f.is_file():
                f.read_bytes()
        for f in (tmp / "archives").iterdir():
            f.read_bytes()
        folder_seconds, n_folder = timed(folders, tmp / "store-folders", args.workers)
        archive_seconds, n_archive = timed(tmp / "archives", tmp / "store-archives", args.workers)
    w = args.workers
    print(f"prepare at 256 px, {images} images ({split}, twice: train and val), {w} workers, raw store")
    folder_rate, archive_rate = n_folder / folder_seconds, n_archive / archive_seconds
    print(f"  from folders:  {folder_rate:7.0f} img/s, {folder_rate / w:6.0f} per worker")
    print(f"  from archives: {archive_rate:7.0f} img/s, {archive_rate / w:6.0f} per worker (read in place)")
    print(f"archives against folders: {archive_rate / folder_rate:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
