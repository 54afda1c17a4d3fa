"""Small-map convolutions' weight gradient as im2col + one batched matmul (models/conv.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet import build_model
from alexnet.config import preset
from alexnet.models import conv, features


def _conv(cin, cout, k, groups, dtype=torch.float32, padding=None):
    c = nn.Conv2d(cin, cout, k, padding=k // 2 if padding is None else padding, groups=groups)
    return c.to(dtype).to(memory_format=torch.channels_last)


def _input(b, c, side, dtype=torch.float32):
    return torch.randn(b, c, side, side, dtype=dtype).to(memory_format=torch.channels_last)


def _grads(fn, c, x, g):
    """fn(c, x) and the gradients of ⟨fn(c, x), g⟩ for x, weight and bias (fresh leaves)."""
    c.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out = fn(c, x)
    out.backward(g)
    return out.detach(), x.grad, c.weight.grad, c.bias.grad


@pytest.mark.parametrize(("k", "padding", "groups"), [(3, 1, 1), (3, 1, 2), (5, 2, 2), (3, 0, 1), (1, 0, 4)])
def test_im2col_rows_are_unfolds_windows(k, padding, groups):
    # each row is one output pixel's window in (dy, dx, channel) order within a group: torch's unfold
    # gives the same numbers in (channel, dy, dx) order, per image and pixel
    x = _input(3, 8, 6, torch.float64)
    cols = conv.im2col(x, (k, k), (padding, padding), groups)
    side = 6 + 2 * padding - k + 1
    unfolded = F.unfold(x, k, padding=padding)  # [B, C·k·k, pixels]
    cg = 8 // groups
    for g in range(groups):
        want = unfolded.view(3, groups, cg, k, k, side * side)[:, g]
        want = want.permute(0, 4, 2, 3, 1)  # image, pixel, dy, dx, channel
        assert torch.equal(cols[g], want.reshape(3 * side * side, k * k * cg))


@pytest.mark.parametrize(("cin", "cout", "k", "groups"), [(6, 8, 3, 1), (6, 8, 3, 2), (4, 6, 5, 2)])
def test_the_gradients_are_the_convolutions_in_float64(cin, cout, k, groups):
    # the same sums in another order: float64 leaves only rounding
    c = _conv(cin, cout, k, groups, torch.float64)
    x, g = _input(2, cin, 5, torch.float64), torch.randn(2, cout, 5, 5, dtype=torch.float64)
    ours = _grads(conv.conv_with_matmul_weight_grad, c, x, g)
    torch_ = _grads(lambda m, v: m(v), c, x, g)
    for a, b in zip(ours, torch_, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups", [1, 2])
def test_in_bf16_the_output_and_input_gradient_are_onednns_bits_and_the_weight_gradient_its_sum(groups):
    # forward and grad-input run oneDNN's kernels as before: bit-equal; the weight gradient sums the
    # same bf16 products in fp32 in another order, so it sits as close to float64's as oneDNN's does
    c = _conv(64, 32, 3, groups, torch.bfloat16)
    x, g = _input(16, 64, 6, torch.bfloat16), torch.randn(16, 32, 6, 6).to(torch.bfloat16)
    out, gx, gw, gb = _grads(conv.conv_with_matmul_weight_grad, c, x, g)
    out_t, gx_t, gw_t, gb_t = _grads(lambda m, v: m(v), c, x, g)
    assert torch.equal(out, out_t) and torch.equal(gx, gx_t)
    assert gw.dtype == torch.bfloat16 and gw.is_contiguous(memory_format=torch.channels_last)
    exact = _grads(lambda m, v: m(v), c.double(), x.double(), g.double())[2]
    error, error_t = ((w.double() - exact).norm() / exact.norm() for w in (gw, gw_t))
    assert error < 4e-3 and error < 2 * error_t + 1e-4  # bf16's rounding of the result: ~2e-3
    torch.testing.assert_close(gb.float(), gb_t.float(), rtol=1e-2, atol=1e-2)


def test_under_autocast_fp32_weights_get_fp32_gradients_as_from_conv2d():
    # autocast's bf16 casts happen inside (custom_fwd), and the gradients reach the fp32 leaves in fp32
    c = _conv(32, 64, 3, 2)
    x, g = _input(8, 32, 6), torch.randn(8, 64, 6, 6)
    with torch.autocast("cpu", torch.bfloat16):
        out, gx, gw, gb = _grads(conv.conv_with_matmul_weight_grad, c, x, g)
    with torch.autocast("cpu", torch.bfloat16):
        out_t, gx_t, gw_t, gb_t = _grads(lambda m, v: m(v), c, x, g)
    assert out.dtype == torch.bfloat16 and torch.equal(out, out_t) and torch.equal(gx, gx_t)
    assert (gx.dtype, gw.dtype, gb.dtype) == (torch.float32,) * 3
    # both weight gradients as near the float64 truth as bf16's rounding allows (oneDNN's own bf16
    # kernel differs from the matmul's order elementwise, more so without AMX)
    exact = _grads(lambda m, v: m(v), c.double(), x.double(), g.double())
    for ours, theirs, truth in ((gw, gw_t, exact[2]), (gb, gb_t, exact[3])):
        error, error_t = ((w.double() - truth).norm() / truth.norm() for w in (ours, theirs))
        assert error < 1e-2 and error < 2 * error_t + 1e-3


def _cifar_net():
    m = preset("cifar10").model
    return build_model(m.name, **{**m.switches(), "input_size": 28}).to(memory_format=torch.channels_last)


def _taken(monkeypatch, amx=True):
    """The convolutions (by their out_channels) that the conv stack runs with the matmul gradient."""
    taken = []
    monkeypatch.setattr(conv, "_amx", lambda: amx)
    monkeypatch.setattr(
        features,
        "conv_with_matmul_weight_grad",
        lambda c, x: taken.append(c) or conv.conv_with_matmul_weight_grad(c, x),
    )
    return taken


def test_the_cifar10_net_takes_the_matmul_for_conv3_to_conv5_only_in_bf16_with_amx(monkeypatch):
    net, x = _cifar_net(), _input(4, 3, 28)
    small = [net.features[i] for i in (8, 10, 12)]  # conv3, conv4, conv5: 3×3 on 6×6 maps
    taken = _taken(monkeypatch)
    with torch.autocast("cpu", torch.bfloat16):
        net(x).float().sum().backward()
    assert taken == small  # conv1 (28×28) and conv2 (13×13) stay with oneDNN
    taken.clear()
    net(x).sum().backward()  # fp32: oneDNN's kernel was faster
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        net(x)  # no gradient to compute
    assert taken == []
    net.features[10].weight.requires_grad_(False)  # a frozen layer has no weight gradient
    handle = net.features[12].register_forward_hook(lambda *a: None)  # a hooked one runs as a module
    with torch.autocast("cpu", torch.bfloat16):
        net(x).float().sum().backward()
    assert taken == small[:1]
    handle.remove()
    taken.clear()
    monkeypatch.setenv("ALEXNET_MATMUL_WEIGHT_GRAD", "0")  # switched off by hand
    with torch.autocast("cpu", torch.bfloat16):
        net(x).float().sum().backward()
    assert taken == []
    monkeypatch.delenv("ALEXNET_MATMUL_WEIGHT_GRAD")
    taken.clear()
    monkeypatch.undo()
    taken = _taken(monkeypatch, amx=False)  # without AMX oneDNN's kernel was faster
    with torch.autocast("cpu", torch.bfloat16):
        net(x).float().sum().backward()
    assert taken == []


def test_a_bf16_cifar10_step_with_the_matmul_matches_onednns(monkeypatch):
    # the whole net's loss is bit-equal (the forward is unchanged) and every gradient agrees to
    # bf16's rounding; the convolutions that did not take the matmul are bit-equal
    torch.manual_seed(0)
    net = _cifar_net().to(torch.bfloat16).eval()  # eval: no dropout masks to tell apart
    x, y = _input(8, 3, 28, torch.bfloat16), torch.randint(0, 10, (8,))

    def step(amx):
        taken = _taken(monkeypatch, amx)
        net.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        monkeypatch.undo()
        return loss.detach(), {n: p.grad for n, p in net.named_parameters()}, len(taken)

    loss, grads, n = step(True)
    loss_t, grads_t, n_t = step(False)
    assert (n, n_t) == (3, 0) and torch.equal(loss, loss_t)
    for name, g in grads.items():
        if name.startswith(("features.8.", "features.10.", "features.12.")) or name.endswith(".bias"):
            torch.testing.assert_close(g.float(), grads_t[name].float(), rtol=3e-2, atol=1e-3)
        else:
            assert torch.equal(g, grads_t[name]), name
