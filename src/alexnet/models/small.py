"""The four-layer CIFAR-10 net of Fig. 1 (§3.1: ReLU vs tanh).

The paper does not give this net. Its closest public relative is cuda-convnet's ``layers-80sec``
CIFAR-10 config (three 5×5 conv layers of 32, 32 and 64 kernels, each followed by a 3/2 pool, and a
10-way fully connected layer): four layers with weights, as the paper says.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import AlexNetError
from .alexnet import (
    LRN_ALPHA,
    LRN_BETA,
    LRN_K,
    LRN_SIZE,
    POOLS,
    check_switch,
    make_activation,
    with_lrn,
)
from .dropout import Dropout
from .features import Features
from .lrn import LocalResponseNorm
from .pool import MaxPool2d

FIGURE1_WIDTHS = (32, 32, 64)


class Figure1Net(nn.Module):
    """conv5×5/32 → pool → conv5×5/32 → pool → conv5×5/64 → pool → fc10, for 32×32 input (Fig. 1)."""

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "relu",
        lrn: bool = False,
        lrn_position: str = "before-pool",
        pool: str = "overlapping",
        dropout: float = 0.0,
        widths: Sequence[int] = FIGURE1_WIDTHS,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise AlexNetError(
                f"unknown pool {pool!r}; choose overlapping (3/2, §3.4) or non-overlapping (2/2)"
            )
        if len(widths) != 3 or any(int(w) < 1 for w in widths):
            raise AlexNetError(f"figure1 widths must be three positive channel counts, got {widths}")
        check_switch("dropout", dropout)
        if num_classes < 1 or in_channels < 1:
            raise AlexNetError(
                f"num_classes and in_channels must be positive, got {num_classes}, {in_channels}"
            )
        self.arch, self.num_classes, self.in_channels, self.input_size = (
            "figure1",
            num_classes,
            in_channels,
            input_size,
        )
        self.pool_kernel, self.pool_stride = POOLS[pool]
        layers: list[nn.Module] = []
        channels = in_channels
        self._layer_paths: dict[str, str] = {}
        for i, width in enumerate(widths):
            self._layer_paths[f"conv{i + 1}"] = f"features.{len(layers)}"
            layers.append(nn.Conv2d(channels, int(width), 5, padding=2))
            norm = LocalResponseNorm(LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K, channels=int(width))
            pools = [MaxPool2d(self.pool_kernel, self.pool_stride)]
            layers.extend(
                with_lrn(make_activation(activation), pools, norm if lrn and i < 2 else None, lrn_position)
            )
            channels = int(width)
        self.features = Features(*layers)  # ReLU → LRN in one call (features.py)
        side = self._feature_side(input_size)
        self.feature_shape = (channels, side, side)
        self._layer_paths["fc"] = "classifier.1"
        self.classifier = nn.Sequential(Dropout(dropout), nn.Linear(channels * side * side, num_classes))

    def _feature_side(self, side: int) -> int:
        shown = side
        for i in range(3):
            # 5×5 convs with padding 2 keep the size; each pool needs pool_kernel pixels.
            if side < self.pool_kernel:
                raise AlexNetError(
                    f"the max-pool after conv{i + 1} needs at least {self.pool_kernel} pixels per "
                    f"side but gets {side} (input {shown}×{shown}); use a larger input"
                )
            side = (side - self.pool_kernel) // self.pool_stride + 1
        return side

    def layer_names(self) -> dict[str, str]:
        return {path: name for name, path in self._layer_paths.items()}

    def forward(self, x: Tensor) -> Tensor:
        if not torch.compiler.is_compiling():
            if x.dim() != 4 or x.shape[1] != self.in_channels:
                raise AlexNetError(
                    f"figure1 expects input [N, {self.in_channels}, H, W], got {list(x.shape)}"
                )
            if (x.shape[2], x.shape[3]) != (self.input_size, self.input_size):
                self._feature_side(min(int(x.shape[2]), int(x.shape[3])))
                raise AlexNetError(
                    f"figure1 is sized for {self.input_size}×{self.input_size} input, got "
                    f"{x.shape[2]}×{x.shape[3]}; build it with input_size={x.shape[2]}"
                )
        return self.classifier(torch.flatten(self.features(x), 1))
