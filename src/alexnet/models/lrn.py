"""Local response normalisation (§3.3), with a hand-written backward.

``torch.nn.LocalResponseNorm`` builds LRN from ``pad`` + ``avg_pool3d`` + ``pow`` and lets autograd
differentiate that chain; on the CPU this makes a training step of the paper model about twice as
slow as the same model without LRN. Here the forward is a few in-place slice additions along the
channel axis, and the backward is the closed form:

    s_i  = k + α/n · Σ_{j ∈ W(i)} a_j²                 (the window W(i) = [i − ⌊n/2⌋, i + ⌊(n−1)/2⌋])
    b_i  = a_i · s_i^(−β)
    ∂L/∂a_j = g_j · s_j^(−β) − (2αβ/n) · a_j · Σ_{i: j ∈ W(i)} g_i · a_i · s_i^(−β−1)

with the same window convention, zero padding and α/n scaling as torch, so results agree with
``torch.nn.LocalResponseNorm`` to rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import AlexNetError

Workspace = dict  # (shape, dtype, device) → a scratch tensor reused between calls


def _padded(
    x: Tensor, before: int, after: int, fill: float, workspace: Workspace | None
) -> tuple[Tensor, Tensor]:
    """An [N, G, before + C + after, ...] buffer whose pad channels hold ``fill``, and its interior view.

    On the CPU a fresh activation-sized tensor costs as much as a full pass over it (the pages are
    faulted in anew), so the module keeps this scratch buffer between calls; CUDA's caching
    allocator already reuses memory.
    """
    channels = x.shape[2]
    shape = (x.shape[0], x.shape[1], before + channels + after, *x.shape[3:])
    # The buffer's memory order follows x's (channels_last included): with the channel axis laid
    # out as in x every pass below is a plain streaming loop, not a transposition, and the output
    # keeps x's layout for the next layer.
    order = _memory_order(x)
    key = (shape, order, x.dtype, x.device)
    if workspace is not None and x.device.type == "cpu":
        buf = workspace.get(key)
        if buf is None:
            workspace.clear()  # one size at a time: a new batch shape replaces the old buffer
            buf = workspace[key] = _empty_in_order(x, shape, order)
    else:
        buf = _empty_in_order(x, shape, order)
    buf[:, :, :before].fill_(fill)
    buf[:, :, before + channels :].fill_(fill)
    return buf, buf[:, :, before : before + channels]


def _memory_order(x: Tensor) -> tuple[int, ...]:
    """x's dimensions from outermost to innermost in memory (stable for size-1 dims)."""
    return tuple(sorted(range(x.dim()), key=lambda d: (-x.stride(d), d)))


def _empty_in_order(x: Tensor, shape: tuple[int, ...], order: tuple[int, ...]) -> Tensor:
    """An empty tensor of ``shape`` whose dimensions are laid out in memory in ``order``."""
    storage_shape = [shape[d] for d in order]
    inverse = sorted(range(len(order)), key=lambda i: order[i])
    return x.new_empty(storage_shape).permute(inverse)


def _window_sum(buf: Tensor, size: int, channels: int) -> Tensor:
    """Σ of ``size`` consecutive channels of a padded buffer, into a new tensor (one add, then in place)."""
    if size == 1:
        return buf[:, :, :channels].clone()
    out = torch.add(buf[:, :, :channels], buf[:, :, 1 : 1 + channels])
    for d in range(2, size):
        out += buf[:, :, d : d + channels]
    return out


class _LRN(torch.autograd.Function):
    # Memory-bound: every full pass over a conv1-sized batch costs about a millisecond on the CPU,
    # and a fresh allocation about as much again, so the passes are few and mostly in place.
    @staticmethod
    def forward(
        ctx, x, size: int, alpha: float, beta: float, k: float, groups: int, workspace: Workspace | None
    ):
        xg = x.unflatten(1, (groups, x.shape[1] // groups))
        channels = xg.shape[2]
        before, after = size // 2, (size - 1) // 2
        # Each window covers exactly `size` buffer slots, so padding with k/n and adding k/n to every
        # interior slot gives s = k + α/n Σ a² from one sum, at the edges too.
        buf, inner = _padded(xg, before, after, k / size, workspace)
        torch.addcmul(torch.tensor(k / size, dtype=x.dtype), xg, xg, value=alpha / size, out=inner)
        scale = _window_sum(buf, size, channels)
        if beta == 0.75:  # s^(−3/4) = rsqrt(s) · sqrt(rsqrt(s)): two cheap passes instead of pow
            inv = torch.rsqrt(scale)
            inv.mul_(torch.sqrt(inv, out=inner))
        else:
            inv = torch.pow(scale, -beta)
        del buf, inner
        out = xg * inv
        ratio = torch.div(inv, scale, out=scale)  # s^(−β−1), all the backward needs of s
        ctx.save_for_backward(xg, inv, ratio)
        ctx.params = (size, -2.0 * alpha * beta / size, before, after, workspace)
        return out.flatten(1, 2)

    @staticmethod
    def backward(ctx, grad):
        xg, inv, ratio = ctx.saved_tensors
        size, coef, before, after, workspace = ctx.params
        g = grad.unflatten(1, xg.shape[1:3])
        # The transpose of the window [i − before, i + after] is [j − after, j + before].
        buf, inner = _padded(xg, after, before, 0.0, workspace)
        torch.addcmul(torch.zeros((), dtype=g.dtype), g, xg, value=coef, out=inner)
        inner.mul_(ratio)  # −2αβ/n · g_i a_i s_i^(−β−1)
        grad_x = _window_sum(buf, size, xg.shape[2])
        del buf, inner
        grad_x.mul_(xg).addcmul_(g, inv)
        return grad_x.flatten(1, 2), None, None, None, None, None, None


def local_response_norm(
    x: Tensor,
    size: int,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    groups: int = 1,
    workspace: Workspace | None = None,
) -> Tensor:
    """Functional LRN over dim 1 of an [N, C, ...] tensor; ``groups`` keeps windows inside each group.

    ``workspace``, a dict the caller keeps, lets CPU calls reuse one scratch buffer.
    """
    if x.dim() < 3:
        raise AlexNetError(
            f"LocalResponseNorm needs an input of at least 3 dimensions [N, C, ...], got {x.dim()}"
        )
    if x.shape[1] % groups:
        raise AlexNetError(f"LocalResponseNorm: {x.shape[1]} channels do not split into {groups} groups")
    return _LRN.apply(x, size, alpha, beta, k, groups, workspace)


class LocalResponseNorm(nn.Module):
    """Drop-in for ``torch.nn.LocalResponseNorm`` (same arguments, same result), fast on the CPU.

    ``groups`` (an addition, default 1 = torch's semantics) normalises each group of channels on its
    own: in the paper's two-GPU net each GPU normalises only its own kernels (§3.2, §3.3).
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, groups: int = 1):
        super().__init__()
        if size < 1 or groups < 1:
            raise AlexNetError(
                f"LocalResponseNorm: size and groups must be ≥ 1, got size={size}, groups={groups}"
            )
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups
        self._workspace: Workspace = {}

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            # Exporters (ONNX, TorchScript) cannot see inside our autograd Function; torch's own
            # LRN, applied per group, computes the same result from ops they know.
            chunks = x.chunk(self.groups, dim=1)
            return torch.cat(
                [F.local_response_norm(c, self.size, self.alpha, self.beta, self.k) for c in chunks], 1
            )
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.groups, self._workspace)

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}{groups}"
