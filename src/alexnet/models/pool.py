"""Max-pooling (§3.4) that takes the C kernel (maxpool_kernel.c) where torch's CPU op is slowest.

``MaxPool2d`` is ``torch.nn.MaxPool2d`` (same signature, state, repr and result) whose forward and
backward run in native.py's max-pool kernel for large channels_last fp32/bf16 CPU maps with square
windows and no padding, dilation or ceil mode (the paper net's conv1 and conv2 pools): torch's op
keeps its input and an int64 index per output value for the backward; the kernel keeps one byte
per output value, and is faster there. fp32 results are torch's bit for bit; in bf16 a gradient
summed from overlapping windows is rounded once instead of after each addition. Every other case,
and a model under torch.compile, is torch's op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import native


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel: int, stride: int, pool: native.NativeMaxPool):
        done = pool.forward(x, kernel, stride)
        ctx.params = (kernel, stride, pool, x.shape, x.dtype)
        if done is None:  # the kernel could not run (no thread or scratch memory): torch's op
            ctx.save_for_backward(x)
            ctx.native = False
            return F.max_pool2d(x, kernel, stride)
        out, at = done
        ctx.save_for_backward(at)  # one byte per output value, not the input
        ctx.native = True
        return out

    @staticmethod
    def backward(ctx, grad):
        kernel, stride, pool, shape, dtype = ctx.params
        (saved,) = ctx.saved_tensors
        if ctx.native:
            grad = grad.to(dtype).contiguous(memory_format=torch.channels_last)
            grad_x = pool.backward(grad, saved, shape, kernel, stride)
            if grad_x is None:  # the kernel could not run: the same sums as torch ops
                grad_x = _scatter(grad, saved, shape, kernel, stride)
            return grad_x, None, None, None
        with torch.enable_grad():  # torch's backward, from torch's forward again
            again = saved.detach().requires_grad_()
            (grad_x,) = torch.autograd.grad(F.max_pool2d(again, kernel, stride), again, grad)
        return grad_x, None, None, None


def _scatter(grad: Tensor, at: Tensor, shape, kernel: int, stride: int) -> Tensor:
    """Each output's gradient added at its maximum's input position (at: its place in the window),
    summed in fp32 as the kernel sums them."""
    n, c, h, w = shape
    oh, ow = at.shape[2:]
    rows = torch.arange(oh).view(1, 1, oh, 1) * stride + at.long() // kernel
    cols = torch.arange(ow).view(1, 1, 1, ow) * stride + at.long() % kernel
    flat = torch.zeros(n, c, h * w)
    flat.scatter_add_(2, (rows * w + cols).reshape(n, c, -1), grad.float().reshape(n, c, -1))
    return flat.view(n, c, h, w).to(grad.dtype).contiguous(memory_format=torch.channels_last)


def _square(value) -> int | None:
    """An int, or a pair of equal ints, as one int; None otherwise."""
    if isinstance(value, int):
        return value
    if isinstance(value, tuple | list) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    return None


# The kernel takes maps of at least this many values per image (C·H·W), where it was faster in every
# run: forward + backward at batch 128 against torch's op (benchmarks/layers.py, 2-core Emerald
# Rapids), 0.62–0.79 of its time on the paper net's 96×55×55 and 256×27×27 maps (bf16 and fp32).
# Smaller maps went either way between runs (0.78–1.09 on 256×13×13, 0.77–1.07 on the cifar10 net's
# 64×28×28 and 128×13×13) or lost (1.5 on 128×6×6), and stay with torch's op.
MIN_VALUES = 100_000


class MaxPool2d(nn.MaxPool2d):
    def forward(self, x: Tensor) -> Tensor:
        kernel, stride = _square(self.kernel_size), _square(self.stride)
        plain = (
            kernel is not None
            and stride is not None
            and _square(self.padding) == 0
            and _square(self.dilation) == 1
            and not self.ceil_mode
            and not self.return_indices
        )
        large = x.dim() == 4 and x.shape[1] * x.shape[2] * x.shape[3] >= MIN_VALUES
        compiled = torch.compiler.is_compiling()  # compiled: inductor's own code, without a graph break
        usable = plain and large and not compiled and kernel <= 16 and min(x.shape[2:]) >= kernel
        if usable and native.channels_innermost(x):
            pool = native.maxpool()
            if pool is not None:
                return _MaxPool.apply(x, kernel, stride, pool)
        return super().forward(x)
