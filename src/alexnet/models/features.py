"""The conv stack's ``nn.Sequential``, running each ReLU → LRN pair (§3.3) as one LRN call.

The paper puts LRN right after conv1's and conv2's ReLU. Run as two modules, the ReLU costs its own
passes over those maps (the largest activations of the net): 1 read + 1 write forward, 2 reads + 1
write backward. :meth:`LocalResponseNorm.after_relu` takes the ReLU's input instead and applies both
in LRN's own passes, with the same numbers. The modules stay where they are (the same
``features.N`` names, state_dict keys and printout as a plain ``nn.Sequential``); only the call
skips the ReLU module.

The pair runs as two calls whenever someone could tell the difference: a hook on either module or
a global module hook (feature extraction, summaries, profilers that watch modules), TorchScript,
ONNX and FX tracing (which see the modules), and torch.compile (which fuses the ReLU itself).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.fx import _symbolic_trace as fx_trace  # its tracing flag: torch.fx exports no reader
from torch.nn.modules import module as torch_module

from .lrn import LocalResponseNorm

# torch.fx's symbolic tracing under way (newer torch's reader; older torch's logs a warning once)
_fx_tracing = getattr(fx_trace, "is_fx_symbolic_tracing", fx_trace.is_fx_tracing)

# The hooks a module can carry; torch.nn.modules.module keeps the global ones as "_global" + name.
HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _hooked(module: nn.Module) -> bool:
    return any(getattr(module, hooks) for hooks in HOOKS)


def _globally_hooked() -> bool:
    """Whether a hook registered for every module (``register_module_forward_hook`` & co.) is live."""
    return any(getattr(torch_module, "_global" + hooks) for hooks in HOOKS)


def _traced() -> bool:
    """Whether a tracer runs this forward: TorchScript, dynamo (torch.compile, torch.export) or FX
    (torchvision's create_feature_extractor, which must see each module as a node)."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch ≥ 2.5 (2.4: dynamo)
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or exporting() or _fx_tracing()


def fusable(relu: nn.Module, lrn: nn.Module | None) -> bool:
    """Whether ``lrn(relu(x))`` may run as ``lrn.after_relu(x)``: a plain ReLU, our LRN, and nobody
    watching (no hook on either, no global hook, no tracer)."""
    return (
        type(relu) is nn.ReLU
        and isinstance(lrn, LocalResponseNorm)
        and not (_hooked(relu) or _hooked(lrn) or _globally_hooked() or _traced())
    )


def relu_lrn(relu: nn.Module, lrn: nn.Module, x: Tensor) -> Tensor:
    """``lrn(relu(x))``, in one LRN call where :func:`fusable` (the two-tower net's layers)."""
    return lrn.after_relu(x) if fusable(relu, lrn) else lrn(relu(x))


class Features(nn.Sequential):
    """``nn.Sequential`` that calls ``lrn.after_relu(x)`` for a ReLU followed by our LRN."""

    def forward(self, x: Tensor) -> Tensor:
        modules = list(self)
        i = 0
        while i < len(modules):
            module, after = modules[i], modules[i + 1] if i + 1 < len(modules) else None
            if fusable(module, after):
                x = after.after_relu(x)
                i += 2
            else:
                x = module(x)
                i += 1
        return x
