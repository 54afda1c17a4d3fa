"""Build the package's ``cifar10-sample`` store (src/alexnet/sample/cifar10) from a folder of
CIFAR-10 as 32×32 JPEGs in ImageFolder layout (train/<class>/NNNN.jpg, test/<class>/NNNN.jpg).

    python scripts/make_cifar10_sample.py ../shared/datasets/cifar10-jpeg src/alexnet/sample/cifar10

The first TRAIN (300) and TEST (50) files of each class in name order, their JPEG bytes unchanged
in a JPEG store (one jpeg.bin + offsets per split); the mean image and PCA of the training images
as every store has them. Run once; the result is committed.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet.data.jpeg import JpegWriter
from alexnet.data.stats import PixelStats, merge
from alexnet.data.store import META_FILE, SKIPPED_FILE, STORE_FORMAT, STORE_VERSION, open_store

PER_CLASS = {"train": 300, "test": 50}
SIZE = 32


def main(src: Path, out: Path) -> None:
    classes = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())
    if out.exists():
        shutil.rmtree(out)
    meta = {"format": STORE_FORMAT, "version": STORE_VERSION, "source": "alexnet:cifar10-sample",
            "fingerprint": None, "size": SIZE, "channels": 3, "classes": classes, "class_ids": classes,
            "image_format": "jpeg", "quality": None, "splits": {}}  # fmt: skip
    for split, n in PER_CLASS.items():
        folder = out / split
        folder.mkdir(parents=True)
        writer = JpegWriter(folder, 90, 1)
        labels, stats = [], None
        for label, name in enumerate(classes):
            for path in sorted((src / split / name).iterdir())[:n]:
                data = path.read_bytes()
                pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                assert pixels.shape == (SIZE, SIZE, 3), path
                writer.add_encoded([data])
                labels.append(label)
                if split == "train":
                    stats = merge(stats, PixelStats.of(pixels[None]))
        writer.close()
        np.save(folder / "labels.npy", np.asarray(labels, dtype=np.int64))
        (folder / SKIPPED_FILE).write_text("")
        meta["splits"][split] = {"count": len(labels), "skipped": 0, "bytes": writer.bytes}
        if stats is not None:
            np.save(folder / "mean.npy", stats.mean_image())
            meta["pca"] = stats.pca()
    (out / META_FILE).write_text(json.dumps(meta, indent=1))
    store = open_store(out)
    print(out, {k: len(s) for k, s in store.splits.items()}, sum(v["bytes"] for v in meta["splits"].values()))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
