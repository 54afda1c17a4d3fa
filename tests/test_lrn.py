import pytest
import torch

from alexnet import AlexNetError
from alexnet.models import LocalResponseNorm


def _grads(module, x, g):
    x = x.detach().requires_grad_()
    out = module(x)
    (gx,) = torch.autograd.grad(out, x, g)
    return out, gx


@pytest.mark.parametrize("size", [5, 4, 1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_torch_lrn_forward_and_backward_fp32(size, channels_last):
    # Post-ReLU activations at AlexNet's scale (conv1 outputs reach tens).
    x = (torch.randn(4, 96, 13, 13) * 20).relu()
    g = torch.randn_like(x)
    if channels_last:
        x, g = x.to(memory_format=torch.channels_last), g.to(memory_format=torch.channels_last)
    ref = torch.nn.LocalResponseNorm(size, 1e-4, 0.75, 2.0)
    ours = LocalResponseNorm(size, 1e-4, 0.75, 2.0)
    out_r, g_r = _grads(ref, x, g)
    out_o, g_o = _grads(ours, x, g)
    torch.testing.assert_close(out_o, out_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_o, g_r, rtol=1e-5, atol=1e-6)
    # The layout passes through: a channels_last net stays channels_last after LRN, both ways, so
    # the next convolution does not pay for a transposition.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out_o.is_contiguous(memory_format=fmt) and g_o.is_contiguous(memory_format=fmt)


def test_strong_normalisation_regime_matches_torch():
    # α large enough that the denominator dominates, β not 0.75: the generic pow path.
    x = torch.randn(2, 16, 5, 5) * 3
    g = torch.randn_like(x)
    ref, ours = torch.nn.LocalResponseNorm(3, 0.5, 0.6, 1.0), LocalResponseNorm(3, 0.5, 0.6, 1.0)
    out_r, g_r = _grads(ref, x, g)
    out_o, g_o = _grads(ours, x, g)
    torch.testing.assert_close(out_o, out_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_o, g_r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [5, 2])
def test_gradcheck_float64(size):
    x = torch.randn(2, 7, 3, 3, dtype=torch.float64, requires_grad=True)
    lrn = LocalResponseNorm(size, alpha=0.1, beta=0.75, k=2.0)
    assert torch.autograd.gradcheck(lrn, (x,))
    lrn2 = LocalResponseNorm(size, alpha=0.1, beta=0.6, k=1.0, groups=1)
    assert torch.autograd.gradcheck(lrn2, (x,))


def test_3d_input_like_torch():
    x = torch.randn(2, 6, 10).abs()
    torch.testing.assert_close(LocalResponseNorm(3)(x), torch.nn.LocalResponseNorm(3)(x))


def test_groups_normalise_each_half_on_its_own():
    x = torch.randn(2, 96, 5, 5).abs() * 10
    grouped = LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2)(x)
    halves = [torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(h) for h in x.chunk(2, 1)]
    torch.testing.assert_close(grouped, torch.cat(halves, 1))
    x64 = torch.randn(1, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(LocalResponseNorm(5, 0.1, 0.75, 2.0, groups=2), (x64,))


def test_bad_arguments():
    with pytest.raises(AlexNetError, match="size and groups must be ≥ 1"):
        LocalResponseNorm(0)
    with pytest.raises(AlexNetError, match="10 channels do not split into 4 groups"):
        LocalResponseNorm(5, groups=4)(torch.randn(1, 10, 2, 2))


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_agrees_with_torch_in_fp32(channels_last):
    # Under bf16 autocast the window sum is a bf16 GEMM (fp32 accumulation); forward and backward
    # must stay within bf16's rounding (8 bits of mantissa) of torch's LRN computed in fp32.
    x = (torch.randn(4, 96, 13, 13) * 20).relu()
    g = torch.randn_like(x)
    if channels_last:
        x, g = x.to(memory_format=torch.channels_last), g.to(memory_format=torch.channels_last)
    ref = torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    out_o, g_o = _grads(LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2), x.bfloat16(), g.bfloat16())
    halves = [_grads(ref, h, gh) for h, gh in zip(x.chunk(2, 1), g.chunk(2, 1), strict=True)]
    out_r, g_r = torch.cat([h[0] for h in halves], 1), torch.cat([h[1] for h in halves], 1)
    assert out_o.dtype == g_o.dtype == torch.bfloat16
    torch.testing.assert_close(out_o.float(), out_r, rtol=2e-2, atol=1e-2)
    torch.testing.assert_close(g_o.float(), g_r, rtol=2e-2, atol=2e-2)


def test_fp16_input_does_not_overflow():
    # Activations of 300 square to 90,000, beyond fp16's 65,504: the result must still be torch's
    # LRN to fp16 rounding, not zeros or NaN.
    x = torch.full((2, 8, 3, 3), 300.0)
    x[:, ::2] = 30.0
    ref = torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x)
    out = LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fp16_autocast_keeps_the_window_sums_in_fp32(layout):
    # Under autocast(float16) the band GEMM would be cast back to fp16: a² = 90,000 overflows, and
    # inf × 0 in the band product is NaN, in the forward and in the backward.
    x = torch.full((2, 8, 4, 4), 300.0).to(memory_format=layout)
    x[:, ::2] = -30.0
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        out = LocalResponseNorm(5, 1e-4, 0.75, 2.0, channels=8)(x.half())
    out.float().sum().backward()
    reference = x.detach().clone().requires_grad_(True)
    expected = torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(reference)
    expected.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    torch.testing.assert_close(out.float(), expected, rtol=2e-3, atol=1e-3)
    torch.testing.assert_close(x.grad, reference.grad, rtol=2e-3, atol=1e-4)


def test_the_band_is_a_buffer_built_once_and_forward_keeps_no_state():
    lrn = LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2, channels=96)
    assert dict(lrn.named_buffers())["band"].shape == (48, 48) and "band" not in lrn.state_dict()
    before = {k: v for k, v in vars(lrn).items() if not k.startswith("_")}
    buffers = [b.data_ptr() for b in lrn.buffers()]
    lrn(torch.randn(2, 96, 5, 5)).sum()
    lrn(torch.randn(2, 96, 5, 5, dtype=torch.bfloat16))
    assert {k: v for k, v in vars(lrn).items() if not k.startswith("_")} == before
    assert [b.data_ptr() for b in lrn.buffers()] == buffers  # nothing created or replaced in forward
    torch.testing.assert_close(  # and without channels, each call builds its own: the same result
        lrn(x := torch.randn(2, 96, 5, 5)), LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2)(x)
    )
