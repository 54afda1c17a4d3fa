"""The signal at initialisation (§5): with the paper's biases of 1 and N(0, 0.01) weights, how much of
each layer's output depends on the input image."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import CIFAR10_MEAN, CIFAR10_STD
from ..data import open_data
from ..models import build_model


@torch.no_grad()
def signal_at_init(data: str, init: str, images: int = 256, crop: int = 28) -> dict:
    """ReLU output (mean, std) per layer of the ``cifar10`` net and the logits' spread across
    images, for ``images`` evenly spaced, channel-normalised centre crops of the training split.

    With the paper's biases of 1 the mean dwarfs the input-dependent part, so the net computes
    almost the same output for every image and the gradient carries almost nothing about the input.
    """
    train = open_data(data).split("train")
    x = torch.from_numpy(np.array(train.images[:: max(1, len(train) // images)][:images]))
    mean, std = torch.tensor(CIFAR10_MEAN) * 255, torch.tensor(CIFAR10_STD) * 255
    offset = (x.shape[1] - crop) // 2
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
