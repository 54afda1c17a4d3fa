"""A convolution's weight gradient on small maps as one batched matmul (bf16 on AMX CPUs).

The CIFAR-10 nets run conv3–conv5 (3×3) on 6×6 maps. There oneDNN's bf16 backward-weights kernel
(brgconv_bwd_w) ran at about a quarter of its own forward's rate on a 2-core Emerald Rapids, while
the same sum written as im2col then a batched matmul on AMX tiles ran 1.4–2.7× faster for the
cifar10-long net's shapes: its whole step 1.05–1.23× faster, the cifar10 net's 1.11–1.16×
(benchmarks/train_step.py, benchmarks/RESULTS.md). On 8×8 and larger maps, in fp32, and without
AMX (oneDNN held to AVX512_CORE_BF16), oneDNN's own kernel was the faster one, so the matmul runs
only where it was measured faster: :func:`matmul_weight_grad`.

Only the weight gradient changes, and only where the conv stack (features.py) calls a plain
``nn.Conv2d`` that nobody watches (observed.py). The forward and the input gradient are oneDNN's as
before, so inference and export give ``nn.Conv2d``'s numbers; the weight gradient is the same sum in
another order (fp32 accumulation in both, one bf16 rounding at the end).
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..runtime import cpu_native_bf16
from .observed import observed

# Output maps of at most this many pixels take the matmul (6×6: measured faster; 8×8 was mixed,
# 10×10 and 13×13 slower, benchmarks/RESULTS.md). 0 turns the matmul off (benchmarks/train_step.py's
# comparison); so does ALEXNET_MATMUL_WEIGHT_GRAD=0 in the environment.
MAX_PIXELS = 36
SWITCH = "ALEXNET_MATMUL_WEIGHT_GRAD"


@functools.cache
def _amx() -> bool:
    return cpu_native_bf16()[0]


def im2col(x: Tensor, kernel: tuple[int, int], padding: tuple[int, int], groups: int) -> Tensor:
    """[groups, B·Ho·Wo, kh·kw·C/groups]: each output pixel's input window (stride 1, dilation 1),
    zero-padded, row-major over (dy, dx, channel) within a group. The windows are one strided view
    of the padded NHWC input, copied once (0.8 ms against 1.4 ms for nine slice copies, conv3's
    input at batch 128 in bf16)."""
    b, c, h, w = x.shape
    (kh, kw), (ph, pw) = kernel, padding
    ho, wo, cg = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1, c // groups
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # [B, H + 2ph, W + 2pw, C]
    sb, sh, sw, sc = padded.stride()
    windows = padded.as_strided((groups, b, ho, wo, kh, kw, cg), (cg * sc, sb, sh, sw, sh, sw, sc))
    return windows.reshape(groups, b * ho * wo, kh * kw * cg)


class _WeightGradByMatmul(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.bfloat16)  # what autocast does to conv2d
    def forward(ctx, x, weight, bias, padding, groups):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.groups, ctx.has_bias = padding, groups, bias is not None
        return F.conv2d(x, weight, bias, 1, padding, 1, groups)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        padding, groups = ctx.padding, ctx.groups
        out_channels, cg, kh, kw = weight.shape
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [1, 1], list(padding), [1, 1], False, [0, 0], groups,
                [True, False, False],
            )[0]  # fmt: skip
        if ctx.needs_input_grad[1]:
            b, _, ho, wo = grad_out.shape
            cols = im2col(x, (kh, kw), padding, groups)  # [G, M, K]
            per_group = grad_out.permute(0, 2, 3, 1).reshape(b * ho * wo, groups, out_channels // groups)
            per_group = per_group.transpose(0, 1).contiguous()  # [G, M, O/G]
            grad_w = torch.bmm(per_group.transpose(1, 2), cols)  # [G, O/G, K]: Σ over the M pixels
            # (O, kh, kw, C/G) rows read as [O, C/G, kh, kw]: channels_last, as the weight is stored
            grad_w = grad_w.view(out_channels, kh, kw, cg).permute(0, 3, 1, 2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            accumulate = torch.promote_types(grad_out.dtype, torch.float32)  # bf16 sums in fp32
            grad_b = grad_out.sum((0, 2, 3), dtype=accumulate).to(grad_out.dtype)
        return grad_x, grad_w, grad_b, None, None


def matmul_weight_grad(conv: nn.Module, x: Tensor) -> bool:
    """Whether ``conv(x)`` runs as :func:`conv_with_matmul_weight_grad`: a plain ``nn.Conv2d``
    nobody watches, whose weight trains, a bf16 convolution on a CPU with AMX, stride 1, no
    dilation, zero padding given in pixels, a channels_last input and an output map of at most
    :data:`MAX_PIXELS` pixels; not where ``ALEXNET_MATMUL_WEIGHT_GRAD=0``."""
    if type(conv) is not nn.Conv2d or observed(conv):  # observed first: under FX, x is a Proxy
        return False
    if not (torch.is_grad_enabled() and conv.weight.requires_grad and x.device.type == "cpu"):
        return False
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    if dtype != torch.bfloat16 or x.dim() != 4 or isinstance(conv.padding, str):
        return False
    (kh, kw), (ph, pw) = conv.kernel_size, conv.padding
    pixels = (x.shape[2] + 2 * ph - kh + 1) * (x.shape[3] + 2 * pw - kw + 1)
    return (
        conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.padding_mode == "zeros"
        and 0 < pixels <= MAX_PIXELS
        and x.is_contiguous(memory_format=torch.channels_last)
        and os.environ.get(SWITCH, "1") != "0"
        and _amx()
    )


def conv_with_matmul_weight_grad(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)``, its weight gradient computed by im2col and a batched matmul."""
    return _WeightGradByMatmul.apply(x, conv.weight, conv.bias, conv.padding, conv.groups)
