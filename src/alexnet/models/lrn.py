"""Local response normalisation (§3.3), with a hand-written backward.

``torch.nn.LocalResponseNorm`` builds LRN from ``pad`` + ``avg_pool3d`` + ``pow`` and lets autograd
differentiate that chain; on the CPU this makes a training step of the paper model about twice as
slow as the same model without LRN. Here the sum over a window of channels is one matrix product
with a banded [C, C] matrix (a GEMM, which bf16 and AMX run at their full rate, instead of n
strided passes over the activations; with groups, each group's channels are rows of their own),
and the backward is the closed form:

    s_i  = k + α/n · Σ_{j ∈ W(i)} a_j²                 (the window W(i) = [i − ⌊n/2⌋, i + ⌊(n−1)/2⌋])
    b_i  = a_i · s_i^(−β)
    ∂L/∂a_j = g_j · s_j^(−β) − (2αβ/n) · a_j · Σ_{i: j ∈ W(i)} g_i · a_i · s_i^(−β−1)

with the same window convention, zero padding and α/n scaling as torch, so results agree with
``torch.nn.LocalResponseNorm`` to rounding. With ``groups`` each group's windows stay inside it
(§3.2's towers).

On the CPU, channels_last fp32 and bf16 inputs (how training runs) take the same formulas as one
C kernel pass forward and one backward instead (lrn_kernel.c, built by native.py: half the
GEMM form's time on the paper net's maps in bf16); the GEMM form serves every other case.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import AlexNetError
from . import native


def band_matrix(channels: int, size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """M[j, i] = 1 where channel j is in the window of channel i, else 0: a band of ``size`` diagonals.

    ``x² @ M`` is then the window sum for every channel at once, and the backward's sum over the
    channels whose window holds j is the product with Mᵀ. Ones are exact in every precision; α/n
    is applied by the GEMM as a float scale. ``channels`` is a group's: groups share the matrix.
    """
    i = torch.arange(channels, device=device)
    offset = i[:, None] - i[None, :]  # j − i
    return ((offset >= -(size // 2)) & (offset <= (size - 1) // 2)).to(dtype)


def _mix(t: Tensor, mat: Tensor, scale: float, shift: float = 0.0) -> Tensor:
    """shift + scale · Σ_j t_j · mat[j, i] within each group of len(mat) channels (dim 1), in t's layout."""
    n, channels = t.shape[:2]
    per = mat.shape[0]
    beta = 1.0 if shift else 0.0
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        # Channels innermost: one GEMM [pixels · groups, per] @ [per, per] on a view, no copy; the
        # result stays channels_last.
        rows = t.permute(0, 2, 3, 1).reshape(-1, per)
        out = torch.addmm(rows.new_full((1,), shift), rows, mat, beta=beta, alpha=scale)
        return out.view(n, t.shape[2], t.shape[3], channels).permute(0, 3, 1, 2)
    flat = t.reshape(n * (channels // per), per, -1)  # channels first: matᵀ @ [per, pixels], group by group
    out = torch.baddbmm(
        flat.new_full((1, 1, 1), shift), mat.t().expand(flat.shape[0], -1, -1), flat, beta=beta, alpha=scale
    )
    return out.view(t.shape)


def _terms(x: Tensor, band: Tensor, size: int, alpha: float, beta: float, k: float):
    """(b, s^(−β), b/s) as GEMMs: the output and what the backward needs of s."""
    scale = _mix(x * x, band, alpha / size, k)  # s = k + α/n Σ a²
    if beta == 0.75:  # s^(−3/4) = rsqrt(s) · sqrt(rsqrt(s)): cheap passes instead of pow
        inv = torch.rsqrt(scale)
        inv.mul_(torch.sqrt(inv))
    else:
        inv = torch.pow(scale, -beta)
    out = x * inv
    # a · s^(−β−1) = b / s: all the backward needs of s, and one pass fewer there than s^(−β−1)
    xr = torch.div(out, scale, out=scale)
    return out, inv, xr


class _LRN(torch.autograd.Function):
    # Memory-bound apart from the GEMM: every full pass over a conv1-sized batch costs milliseconds
    # on the CPU, so the passes are few and the window sums are GEMMs.
    # With ``relu``, x is the input of a ReLU before LRN (§3.3's order): the kernel applies both in
    # its passes; elsewhere a = ReLU(x) is taken first and the gradient masked as ReLU's backward.
    @staticmethod
    def forward(ctx, x, band, size: int, alpha: float, beta: float, k: float, relu: bool):
        ctx.params = (band, size, alpha, beta, k, relu)
        kernel = native.lrn() if native.lrn_applies(x) else None
        out = kernel.forward(x, x.shape[1] // band.shape[0], size, alpha, beta, k, relu) if kernel else None
        ctx.native = kernel if out is not None else None
        if out is not None:  # one pass (native.py); the backward recomputes s from x
            ctx.save_for_backward(x)
            return out
        a = torch.relu(x) if relu else x
        out, inv, xr = _terms(a, band, size, alpha, beta, k)  # where the kernel cannot run
        ctx.save_for_backward(a, inv, xr)
        return out

    @staticmethod
    def backward(ctx, grad):
        band, size, alpha, beta, k, relu = ctx.params
        a = ctx.saved_tensors[0]  # the kernel's: its input x; the GEMM form's: LRN's input a
        grad = grad.contiguous(memory_format=_layout(a))
        none = (None,) * 6
        if ctx.native:
            groups = a.shape[1] // band.shape[0]
            grad_x = ctx.native.backward(grad.to(a.dtype), a, groups, size, alpha, beta, k, relu)
            if grad_x is not None:
                return grad_x, *none
            a = torch.relu(a) if relu else a  # the kernel could not run this time
            _, inv, xr = _terms(a, band, size, alpha, beta, k)
        else:
            _, inv, xr = ctx.saved_tensors
        grad_x = _mix(torch.mul(grad, xr), band.t(), -2.0 * alpha * beta / size)  # Σ_{i: j ∈ W(i)} …
        grad_x.mul_(a).addcmul_(grad, inv)  # ∂L/∂a_j = g_j s_j^(−β) − 2αβ/n · a_j Σ g_i a_i s_i^(−β−1)
        if relu:  # ReLU's backward (torch's threshold_backward): 0 where its output is ≤ 0, NaN passing
            grad_x.masked_fill_(a <= 0, 0.0)
        return grad_x, *none


def _layout(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def local_response_norm(
    x: Tensor,
    size: int,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    groups: int = 1,
    band: Tensor | None = None,
    relu: bool = False,
) -> Tensor:
    """Functional LRN over dim 1 of an [N, C, ...] tensor; ``groups`` keeps windows inside each group.

    ``band``: the band matrix of a group's channels (the module keeps it as a buffer, built once);
    without it, it is built for this call. ``relu``: LRN of ReLU(x), the two in one pass where the
    kernel runs (the same numbers as ``torch.relu`` then LRN).
    """
    if x.dim() < 3:
        raise AlexNetError(
            f"LocalResponseNorm needs an input of at least 3 dimensions [N, C, ...], got {x.dim()}"
        )
    if x.shape[1] % groups:
        raise AlexNetError(f"LocalResponseNorm: {x.shape[1]} channels do not split into {groups} groups")
    # a² overflows fp16 from |a| ≈ 256 (conv1 outputs can grow that large in training): compute in
    # fp32, as autocast does for torch's LRN (its pow is on autocast's fp32 list). bf16 has fp32's range.
    work = x.float() if x.dtype == torch.float16 else x
    per = x.shape[1] // groups
    if band is None or band.shape[0] != per:
        band = band_matrix(per, size, work.dtype, x.device)
    # Autocast would run the window-sum GEMM in its own dtype again (fp16: a² back to fp16, inf, and
    # inf × 0 = NaN in the band product); the dtype here is the one chosen above.
    with _without_autocast(x.device):
        out = _LRN.apply(work, band.to(device=x.device, dtype=work.dtype), size, alpha, beta, k, relu)
    return out.to(x.dtype)


def _without_autocast(device: torch.device):
    """Autocast switched off for the block where it is on (devices without autocast: nothing to do)."""
    if torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class LocalResponseNorm(nn.Module):
    """Drop-in for ``torch.nn.LocalResponseNorm`` (same arguments, same result), fast on the CPU.

    ``groups`` (an addition, default 1 = torch's semantics) normalises each group of channels on its
    own: in the paper's two-GPU net each GPU normalises only its own kernels (§3.2, §3.3).
    ``channels`` (an addition): the input's channel count, when known, so that the band matrix is a
    buffer built once (it moves with the module; nothing is created or cached inside ``forward``,
    which CUDA graphs and ``torch.compile`` need); without it, each call builds its own.
    """

    def __init__(
        self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, groups: int = 1,
        channels: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if size < 1 or groups < 1:
            raise AlexNetError(
                f"LocalResponseNorm: size and groups must be ≥ 1, got size={size}, groups={groups}"
            )
        if channels is not None and (channels < 1 or channels % groups):
            raise AlexNetError(f"LocalResponseNorm: {channels} channels do not split into {groups} groups")
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups
        band = (
            None
            if channels is None
            else band_matrix(channels // groups, size, torch.float32, torch.device("cpu"))
        )
        self.register_buffer("band", band, persistent=False)  # not in the state_dict: derived, not learned

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            # Exporters (ONNX, TorchScript) cannot see inside our autograd Function; torch's own
            # LRN, applied per group, computes the same result from ops they know.
            chunks = x.chunk(self.groups, dim=1)
            return torch.cat(
                [F.local_response_norm(c, self.size, self.alpha, self.beta, self.k) for c in chunks], 1
            )
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.groups, self.band)

    def after_relu(self, x: Tensor) -> Tensor:
        """This LRN of ``torch.relu(x)``: the ReLU before it (§3.3) in the same kernel passes.

        Called by :class:`~alexnet.models.features.Features` and ``features.relu_lrn`` in place of
        the ReLU module and this one, only where no hook or tracer watches either (``fusable``).
        """
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.groups, self.band, True)

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}{groups}"
