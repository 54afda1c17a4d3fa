"""Whether anyone could tell a module's call from another way of computing it: hooks and tracers.

The conv stack runs some layers in a faster form than calling the module (features.py: ReLU → LRN
as one LRN call; conv.py: a matmul weight gradient). It does so only where nobody could tell the
difference: no hook on the module, no global module hook (feature extraction, summaries, profilers
that watch modules), and no tracer (TorchScript, ONNX and FX tracing see the modules; torch.compile
makes its own kernels).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import _symbolic_trace as fx_trace  # its tracing flag: torch.fx exports no reader
from torch.nn.modules import module as torch_module

# torch.fx's symbolic tracing under way (newer torch's reader; older torch's logs a warning once)
_fx_tracing = getattr(fx_trace, "is_fx_symbolic_tracing", fx_trace.is_fx_tracing)

# The hooks a module can carry; torch.nn.modules.module keeps the global ones as "_global" + name.
HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def hooked(module: nn.Module) -> bool:
    """Whether ``module`` carries a hook of its own."""
    return any(getattr(module, hooks) for hooks in HOOKS)


def globally_hooked() -> bool:
    """Whether a hook registered for every module (``register_module_forward_hook`` & co.) is live."""
    return any(getattr(torch_module, "_global" + hooks) for hooks in HOOKS)


def traced() -> bool:
    """Whether a tracer runs this forward: TorchScript, dynamo (torch.compile, torch.export) or FX
    (torchvision's create_feature_extractor, which must see each module as a node)."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch ≥ 2.5 (2.4: dynamo)
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or exporting() or _fx_tracing()


def observed(*modules: nn.Module) -> bool:
    """Whether calling ``modules`` some other way could be told apart: a hook on one of them, a
    global hook, or a tracer."""
    return any(hooked(m) for m in modules) or globally_hooked() or traced()
