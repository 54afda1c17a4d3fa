"""Per-layer summary of a model: output shape, parameters and multiply-adds.

Multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2), which counts the
convolutions and matrix products that dominate AlexNet; activations, LRN and pooling count zero.
(Our LRN sums its windows with a small GEMM, which the counter sees; that is how we compute LRN,
not arithmetic of the model, so LRN layers are taken out of the count, as torch's LRN would be.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .lrn import LocalResponseNorm

SHORT_NAMES = {
    "ReLU": "relu",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "GELU": "gelu",
    "ELU": "elu",
    "LeakyReLU": "lrelu",
    "LocalResponseNorm": "lrn",
    "MaxPool2d": "maxpool",
    "AdaptiveAvgPool2d": "avgpool",
    "Dropout": "dropout",
}


@dataclass(frozen=True)
class LayerRow:
    path: str  # module path, e.g. features.0
    name: str  # paper name (conv1 … fc8) where the layer has one, else the module type
    output_shape: tuple[int, ...]  # per image, without the batch dimension
    params: int
    macs: int  # multiply-adds per image


@dataclass(frozen=True)
class ModelSummary:
    rows: tuple[LayerRow, ...]
    input_shape: tuple[int, ...]
    total_params: int
    total_macs: int

    def format(self) -> str:
        """A plain-text table with totals, as ``alexnet summary`` prints it."""
        header = f"{'layer':<8} {'module':<14} {'output shape':<16} {'params':>12} {'MACs':>14}"
        lines = [f"input {'×'.join(map(str, self.input_shape))}", header, "-" * len(header)]
        for row in self.rows:
            shape = "×".join(map(str, row.output_shape))
            lines.append(f"{row.name:<8} {row.path:<14} {shape:<16} {row.params:>12,} {row.macs:>14,}")
        lines.append("-" * len(header))
        lines.append(f"{'total':<8} {'':<14} {'':<16} {self.total_params:>12,} {self.total_macs:>14,}")
        lines.append(
            f"{self.total_params:,} parameters, {self.total_macs / 1e6:.1f} M multiply-adds per image"
        )
        return "\n".join(lines)


def summarize(model: nn.Module, input_size: int | None = None) -> ModelSummary:
    """Run one image through ``model`` (eval mode, on the CPU) and tabulate its leaf modules."""
    size = input_size or getattr(model, "input_size", 224)
    channels = getattr(model, "in_channels", 3)
    x = torch.zeros(1, channels, size, size)
    names = model.layer_names() if hasattr(model, "layer_names") else {}
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    leaves = [(path, m) for path, m in model.named_modules() if path and not list(m.children())]
    for path, module in leaves:
        hooks.append(
            module.register_forward_hook(
                lambda _m, _i, out, path=path: shapes.__setitem__(path, tuple(out.shape[1:]))
            )
        )
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    flops = counter.get_flop_counts()
    prefix = type(model).__name__
    rows = []
    lrn_macs = 0
    for path, module in leaves:
        if path not in shapes or isinstance(module, nn.Identity):
            continue
        macs = sum(flops.get(f"{prefix}.{path}", {}).values()) // 2
        if isinstance(module, LocalResponseNorm):
            lrn_macs, macs = lrn_macs + macs, 0
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(
            LayerRow(
                path,
                names.get(path, SHORT_NAMES.get(type(module).__name__, type(module).__name__)),
                shapes[path],
                params,
                macs,
            )
        )
    return ModelSummary(
        rows=tuple(rows),
        input_shape=(channels, size, size),
        total_params=sum(p.numel() for p in model.parameters()),
        total_macs=counter.get_total_flops() // 2 - lrn_macs,
    )
