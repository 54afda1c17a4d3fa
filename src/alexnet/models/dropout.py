"""Dropout (§4.2) that draws its CPU mask in the C kernel (dropout_kernel.c) instead of bernoulli_.

``Dropout`` is ``torch.nn.Dropout`` (same signature, state and repr): in training, on contiguous
fp32/bf16 CPU input, each value is zeroed with probability p and the rest scaled by 1/(1 − p), as
torch's does, with the mask drawn by native.py's dropout kernel from one seed taken from torch's
default generator (so ``torch.manual_seed`` and checkpointed RNG states reproduce it); the
backward multiplies by the same mask. torch's CPU dropout spends most of its time in bernoulli_:
10.7 ms forward + backward on a 128×4096 fc6 output in bf16 against 1.4 ms here, 23.5 and 3.0
ReLUs on the same tensor (benchmarks/layers.py). The masks differ from torch's (another random
stream, the same distribution); the kept values are torch's numbers. Everything else (eval,
CUDA, fp16, p of 0 or 1, in-place, and a model under torch.compile) is torch's dropout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import native


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p: float, kernel: native.NativeDropout):
        seed = int(torch.randint(0, 2**63 - 1, ()).item())  # from torch's default CPU generator
        done = kernel.forward(x, p, seed)
        if done is None:  # the kernel could not run (no memory for its jobs): the mask from torch
            mask = torch.empty(x.shape, dtype=torch.uint8).bernoulli_(1.0 - p)
            out = _masked(x, mask, p)
        else:
            out, mask = done
        ctx.save_for_backward(mask)
        ctx.params = (p, kernel, x.dtype)
        return out

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        p, kernel, dtype = ctx.params
        grad = grad.to(dtype).contiguous()
        grad_x = kernel.backward(grad, mask, p)
        return (_masked(grad, mask, p) if grad_x is None else grad_x), None, None


def _masked(t: Tensor, mask: Tensor, p: float) -> Tensor:
    """t · mask · 1/(1 − p) as torch's dropout computes it (the scale in t's dtype)."""
    return t * mask.to(t.dtype) * (1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    def forward(self, x: Tensor) -> Tensor:
        usable = (
            not torch.compiler.is_compiling()  # compiled: inductor's own code, without a graph break
            and self.training
            and not self.inplace
            and 0.0 < self.p < 1.0
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.bfloat16)
            and x.is_contiguous()
        )
        kernel = native.dropout() if usable else None
        if kernel is None:
            return super().forward(x)
        return _Dropout.apply(x, self.p, kernel)
