"""The conv stack's ``nn.Sequential``: each ReLU → LRN pair (§3.3) as one LRN call, and the small-map
convolutions' weight gradients as one matmul where that is faster (conv.py).

The paper puts LRN right after conv1's and conv2's ReLU. Run as two modules, the ReLU costs its own
passes over those maps (the largest activations of the net): 1 read + 1 write forward, 2 reads + 1
write backward. :meth:`LocalResponseNorm.after_relu` takes the ReLU's input instead and applies both
in LRN's own passes, with the same numbers. The modules stay where they are (the same
``features.N`` names, state_dict keys and printout as a plain ``nn.Sequential``); only the call
skips the ReLU module.

The pair runs as two calls, and the convolution as ``nn.Conv2d``, whenever someone could tell the
difference (observed.py): a hook on the module or a global module hook (feature extraction,
summaries, profilers that watch modules), TorchScript, ONNX and FX tracing (which see the modules),
and torch.compile (which fuses the ReLU itself).
"""

from __future__ import annotations

from torch import Tensor, nn

from .conv import conv_with_matmul_weight_grad, matmul_weight_grad
from .lrn import LocalResponseNorm
from .observed import observed


def fusable(relu: nn.Module, lrn: nn.Module | None) -> bool:
    """Whether ``lrn(relu(x))`` may run as ``lrn.after_relu(x)``: a plain ReLU, our LRN, and nobody
    watching (no hook on either, no global hook, no tracer)."""
    return type(relu) is nn.ReLU and isinstance(lrn, LocalResponseNorm) and not observed(relu, lrn)


def relu_lrn(relu: nn.Module, lrn: nn.Module, x: Tensor) -> Tensor:
    """``lrn(relu(x))``, in one LRN call where :func:`fusable` (the two-tower net's layers)."""
    return lrn.after_relu(x) if fusable(relu, lrn) else lrn(relu(x))


class Features(nn.Sequential):
    """``nn.Sequential`` that calls ``lrn.after_relu(x)`` for a ReLU followed by our LRN, and
    :func:`conv_with_matmul_weight_grad` for a convolution that :func:`matmul_weight_grad` picks."""

    def forward(self, x: Tensor) -> Tensor:
        modules = list(self)
        i = 0
        while i < len(modules):
            module, after = modules[i], modules[i + 1] if i + 1 < len(modules) else None
            if fusable(module, after):
                x = after.after_relu(x)
                i += 2
            elif matmul_weight_grad(module, x):
                x = conv_with_matmul_weight_grad(module, x)
                i += 1
            else:
                x = module(x)
                i += 1
        return x
