"""Images per second of the training data pipeline: torchvision's per-image path against ours.

Baseline: ImageFolder + PIL (Resize(256), RandomCrop(224), RandomHorizontalFlip, ToTensor,
Normalize) in a DataLoader with 2 workers. Ours: the store that ``alexnet prepare`` wrote once,
read by StoreLoader (one background thread) and augmented in batches by TrainTransform on the
main thread, the same 2 cores; once with the same augmentation as the baseline, once with the
paper's (227 crops, PCA lighting, per-pixel mean). Epochs are timed after one warm-up epoch each,
so both sides read from the page cache; ours runs 4× the epochs to time a
similar span. The one-time rate of ``prepare`` is printed too.

    python benchmarks/data_pipeline.py [--data ../shared/datasets/imagenet-sample] [--epochs 3]
        [--device cpu|cuda] [--format raw|jpeg] [--quality 90]

With ``--format jpeg`` it also prepares a JPEG store (``alexnet prepare --format jpeg``) and times
decode + the same augmentation from it with each JPEG decoder, TorchCodec and torchvision.io (a
thread pool on the CPU, nvJPEG with ``--device cuda``), beside the raw store and the baseline, and
prints the bytes per image of each. Rates are also given per CPU core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from alexnet import AlexNetError
from alexnet.data import (
    IMAGENET_EIGVALS,
    IMAGENET_EIGVECS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    StoreLoader,
    TrainTransform,
    open_store,
    prepare,
)
from alexnet.data.jpeg import DECODER_ENV, jpeg_decoder
from alexnet.data.transforms import Normalization

BATCH = 128
WORKERS = 2
OUR_EPOCHS_PER_BASELINE_EPOCH = 4  # ours is ~10× faster: more epochs for a comparable timing window


def baseline_rate(root: Path, epochs: int) -> float:
    tf = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.RandomCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    split = next(root / s for s in ("train", "val", "test") if (root / s).is_dir())
    ds = datasets.ImageFolder(str(split), tf)
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=WORKERS, persistent_workers=True)
    for _ in loader:  # warm-up epoch: starts the workers, fills the page cache
        pass
    started, n = time.perf_counter(), 0
    for _ in range(epochs):
        for images, _labels in loader:
            n += len(images)
    return n / (time.perf_counter() - started)


def our_rate(split, transform: TrainTransform, epochs: int, device: torch.device) -> float:
    loader = StoreLoader(split, BATCH, seed=0, device=device, reuse_buffers=True)
    g = torch.Generator().manual_seed(0)
    out = torch.empty((BATCH, transform.size, transform.size, split.images.shape[-1]), device=device)

    def run_epoch() -> int:
        n = 0
        for images, _labels in loader:
            x = transform(images, g, out=out[: len(images)])
            n += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n

    run_epoch()
    started, n = time.perf_counter(), 0
    for _ in range(epochs * OUR_EPOCHS_PER_BASELINE_EPOCH):
        n += run_epoch()
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/datasets/imagenet-sample")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--format", choices=("raw", "jpeg"), default="raw")
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    device = torch.device(args.device)
    root = Path(args.data)
    torch.set_num_threads(WORKERS)

    with tempfile.TemporaryDirectory() as tmp:
        summary = prepare(root, Path(tmp) / "store", workers=WORKERS, progress=False)
        store = open_store(Path(tmp) / "store")
        split = next(iter(store.splits.values()))
        n_images = len(split)
        base = baseline_rate(root, args.epochs)
        same = TrainTransform(224, Normalization(mean=IMAGENET_MEAN, std=IMAGENET_STD))
        ours = our_rate(split, same, args.epochs, device)
        mean_image = (
            store.mean if store.mean is not None else np.asarray(split.images).mean(0, dtype=np.float64)
        )
        paper = TrainTransform(
            227,
            Normalization(mean_image=torch.from_numpy(np.asarray(mean_image, dtype=np.float32)).to(device)),
            eigvals=torch.tensor(IMAGENET_EIGVALS),
            eigvecs=torch.tensor(IMAGENET_EIGVECS),
        )
        ours_paper = our_rate(split, paper, args.epochs, device)
        if args.format == "jpeg":
            jpeg_summary = prepare(root, Path(tmp) / "jpeg", workers=WORKERS, progress=False,
                                   image_format="jpeg", quality=args.quality)  # fmt: skip
            ours_jpeg = {}
            for decoder in ("torchcodec", "torchvision"):  # each library on the same store
                os.environ[DECODER_ENV] = decoder
                jpeg_decoder.cache_clear()
                try:
                    name = jpeg_decoder()[0]
                except AlexNetError as exc:  # TorchCodec not installed
                    print(f"  ({exc})")
                    continue
                jpeg_split = next(iter(open_store(Path(tmp) / "jpeg").splits.values()))
                ours_jpeg[name] = our_rate(jpeg_split, same, args.epochs, device)
            os.environ.pop(DECODER_ENV, None)
            jpeg_decoder.cache_clear()

    print(
        f"data pipeline, {n_images} images of {root} at full resolution, batch {BATCH}, {WORKERS} cores, "
        f"augmentation on {device}"
    )
    per = f"img/s per core ({WORKERS} cores)"
    print(f"  prepare (one time, {WORKERS} workers):                 {summary.images_per_second:8.0f} img/s")
    print(f"  baseline ImageFolder+PIL, DataLoader {WORKERS} workers:       {base:8.0f} img/s, "
          f"{base / WORKERS:.0f} {per}")  # fmt: skip
    rate = f"{ours:8.0f} img/s, {ours / WORKERS:.0f} {per}"
    print(f"  ours, raw store + batched aug (224, flip, mean/std):   {rate}")
    print(f"  ours, paper aug (227, flip, PCA lighting, mean image): {ours_paper:8.0f} img/s, "
          f"{ours_paper / WORKERS:.0f} {per}")  # fmt: skip
    print(
        f"per-epoch speedup over the baseline: {ours / base:.1f}× (same augmentation), "
        f"{ours_paper / base:.1f}× (paper's)"
    )
    if args.format == "jpeg":
        raw_bytes = summary.size * summary.size * 3
        where = "nvJPEG" if device.type == "cuda" else f"on {WORKERS} threads"
        print(f"  JPEG store q{args.quality}: prepare {jpeg_summary.images_per_second:.0f} img/s "
              f"(decode, resize, encode), {jpeg_summary.bytes_per_image:,.0f} bytes/image against "
              f"{raw_bytes:,} raw "
              f"({raw_bytes / jpeg_summary.bytes_per_image:.1f}× smaller)")  # fmt: skip
        for name, rate in ours_jpeg.items():
            print(f"  ours, JPEG store decoded by {name} ({where}) + batched aug (224, flip, mean/std): "
                  f"{rate:8.0f} img/s, {rate / WORKERS:.0f} {per}; {rate / ours:.2f}× raw, "
                  f"{rate / base:.1f}× the baseline")  # fmt: skip


if __name__ == "__main__":
    main()
