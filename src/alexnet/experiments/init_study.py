"""Why the paper's initialisation stalls on CIFAR-10, and what fixes it (§5).

Two measurements on real CIFAR-10 images with the ``cifar10`` net:

1. The signal at initialisation: per ReLU layer, the mean and the standard deviation of its
   outputs over a batch of real images, and how much the logits differ between images. With the
   paper's biases of 1 the mean dwarfs the input-dependent part, so the net computes almost the
   same output for every image and the gradient carries almost nothing about the input.
2. Short training runs of the ``cifar10`` recipe with each (input normalisation, init) pair.

    python -m alexnet.experiments.init_study STORE [--epochs 6] [--limit-train 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile

import numpy as np
import torch
from torch import nn

from ..config import CIFAR10_MEAN, CIFAR10_STD, resolve
from ..data import open_store
from ..models import build_model
from ..train import fit

PAIRS = (
    ("channel", "paper"),
    ("channel", "caffe"),
    ("channel", "torch"),
    ("channel", "kaiming"),
    ("mean_image", "paper"),
    ("mean_image", "torch"),
)


@torch.no_grad()
def signal_at_init(store_path: str, init: str, images: int = 256, crop: int = 28) -> dict:
    """ReLU output (mean, std) per layer and the logits' spread across images, channel-normalised input."""
    store = open_store(store_path)
    x = torch.from_numpy(
        np.array(store.split("train").images[:: len(store.split("train")) // images][:images])
    )
    mean, std = torch.tensor(CIFAR10_MEAN) * 255, torch.tensor(CIFAR10_STD) * 255
    offset = (store.size - crop) // 2
    x = ((x.float() - mean) / std).permute(0, 3, 1, 2)[:, :, offset : offset + crop, offset : offset + crop]
    torch.manual_seed(0)
    model = build_model("cifar10", init=init, input_size=crop).eval()
    layers = []
    h = x.contiguous()
    for module in (*model.features, model.avgpool, nn.Flatten(), *model.classifier):
        h = module(h)
        if isinstance(module, nn.ReLU):
            layers.append((float(h.mean()), float(h.std())))
    return {"init": init, "relu_mean_std": layers, "logit_spread": float(h.std(0).mean())}


def train_pair(
    store_path: str, normalize: str, init: str, epochs: int, limit_train: int, limit_val: int
) -> dict:
    with tempfile.TemporaryDirectory() as out:
        config = resolve(
            "cifar10",
            sets={
                "data.source": store_path,
                "train.out": out,
                "train.epochs": str(epochs),
                "model.init": init,
                "data.normalize": normalize,
                "data.limit_train": str(limit_train),
                "data.limit_val": str(limit_val),
                "train.log_every": "1000000",
                # The recipe as it was when the README's numbers were taken (before the preset
                # moved to two groups, dropout 0.25, lr 0.04 and label smoothing), so they reproduce.
                "model.groups": "1",
                "model.dropout": "0.5",
                "optim.lr": "0.02",
                "train.label_smoothing": "0",
                "data.ten_crop": "false",
            },
        )
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                result = fit(config, progress=False)
        except Exception as exc:  # a diverging pair is a result too
            return {"normalize": normalize, "init": init, "failed": str(exc).split(";")[0]}
    return {
        "normalize": normalize,
        "init": init,
        "train_loss": [r["train_loss"] for r in result.history],
        "val_top1_error": [r["val_top1_error"] for r in result.history],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--limit-train", type=int, default=2000)
    parser.add_argument("--limit-val", type=int, default=500)
    args = parser.parse_args()
    print("signal at initialisation (channel-normalised CIFAR-10 crops, 256 images):")
    for init in ("paper", "caffe", "torch", "kaiming"):
        s = signal_at_init(args.store, init)
        cells = "  ".join(f"{m:.3g}±{d:.2g}" for m, d in s["relu_mean_std"])
        print(
            f"  {init:<8} ReLU mean±std per layer: {cells}   "
            f"logits' spread across images {s['logit_spread']:.2g}"
        )
    print(
        f"training the cifar10 recipe, {args.epochs} epochs on {args.limit_train} images "
        f"(validation error on {args.limit_val} test images, chance 90 %):"
    )
    for normalize, init in PAIRS:
        r = train_pair(args.store, normalize, init, args.epochs, args.limit_train, args.limit_val)
        if "failed" in r:
            print(f"  {normalize:<10} {init:<8} {r['failed']}")
            continue
        losses = " ".join(f"{v:.2f}" for v in r["train_loss"])
        errors = " ".join(f"{v:.0f}" for v in r["val_top1_error"])
        print(f"  {normalize:<10} {init:<8} train loss {losses} | val error % {errors}")


if __name__ == "__main__":
    main()
