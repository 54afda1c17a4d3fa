"""The max-pool CPU kernel (models/maxpool_kernel.c, models/pool.py) against torch's max_pool2d."""

import pytest
import torch
import torch.nn.functional as F
from conftest import count_calls
from torch import nn

from alexnet.models import build_model, native, pool
from alexnet.models.pool import MaxPool2d


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the kernel's forward and backward calls (the kernel itself runs unchanged), and lets
    it take maps of any size (the model takes it only for large ones, pool.MIN_VALUES)."""
    monkeypatch.setattr(pool, "MIN_VALUES", 0)
    assert native.maxpool() is not None, native.status("maxpool")  # CI's machines have a C compiler
    return count_calls(monkeypatch, native.NativeMaxPool)


def _activation(shape, dtype, nans=False):
    """Post-ReLU-like values on a coarse grid (many ties, zeros among them), channels_last."""
    torch.manual_seed(0)
    x = (torch.randn(shape) * 4).round().relu() / 4
    if nans:
        x[0, 1, 2, 2] = x[0, 1, 2, 3] = x[-1, -1, 4, 4] = float("nan")  # two in one window
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


def _pool_and_grad(pool, x, g):
    x = x.detach().clone().requires_grad_()
    out = pool(x)
    out.backward(g)
    return out, x.grad


CASES = [((3, 96, 13, 13), 3, 2), ((2, 5, 12, 11), 3, 2), ((2, 7, 9, 9), 3, 3), ((2, 33, 8, 10), 2, 2)]


@pytest.mark.parametrize(("shape", "kernel", "stride"), CASES)
@pytest.mark.parametrize("nans", [False, True])
def test_fp32_forward_and_backward_are_torchs_bit_for_bit(kernel_calls, shape, kernel, stride, nans):
    # Ties everywhere (the first maximum in row-major order takes the gradient), NaNs (the last NaN
    # of a window does), windows that overlap (gradients summed in output order) or leave a column out.
    x = _activation(shape, torch.float32, nans)
    g = _grad_like(x, kernel, stride)
    ref_out, ref_grad = _pool_and_grad(nn.MaxPool2d(kernel, stride), x, g)
    out, grad = _pool_and_grad(MaxPool2d(kernel, stride), x, g)
    assert kernel_calls == {"forward": 1, "backward": 1}
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out.isnan(), ref_out.isnan()) and torch.equal(out.nan_to_num(), ref_out.nan_to_num())
    assert torch.equal(grad, ref_grad)


def _grad_like(x, kernel, stride):
    n, c, h, w = x.shape
    torch.manual_seed(1)
    shape = (n, c, (h - kernel) // stride + 1, (w - kernel) // stride + 1)
    return torch.randn(shape).to(x.dtype).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("shape", "kernel", "stride"), CASES)
def test_bf16_forward_is_torchs_and_its_gradient_the_exact_sum_rounded_once(
    kernel_calls, shape, kernel, stride
):
    # torch rounds a bf16 gradient after each of the up to four windows that add into one input
    # value; the kernel sums them in fp32 (exact for so few bf16 terms) and rounds once: it equals
    # torch's gradient computed in fp32 from the same bf16 numbers, then rounded to bf16.
    x = _activation(shape, torch.bfloat16, nans=True)
    g = _grad_like(x, kernel, stride)
    ref_out, _ = _pool_and_grad(nn.MaxPool2d(kernel, stride), x, g)
    _, exact = _pool_and_grad(nn.MaxPool2d(kernel, stride), x.float(), g.float())
    out, grad = _pool_and_grad(MaxPool2d(kernel, stride), x, g)
    assert kernel_calls == {"forward": 1, "backward": 1} and out.dtype == grad.dtype == torch.bfloat16
    assert torch.equal(out.isnan(), ref_out.isnan()) and torch.equal(out.nan_to_num(), ref_out.nan_to_num())
    assert torch.equal(grad, exact.bfloat16())
    if kernel == stride:  # windows apart: nothing to sum, so torch's bf16 gradient too
        assert torch.equal(grad, _pool_and_grad(nn.MaxPool2d(kernel, stride), x, g)[1])


OTHER_CASES = {
    "NCHW input": ({}, lambda x: x.contiguous()),
    "fp16 input": ({}, lambda x: x.half()),
    "padding": ({"padding": 1}, None),
    "ceil_mode": ({"ceil_mode": True}, None),
    "return_indices": ({"return_indices": True}, None),
    "dilation": ({"dilation": 2}, None),
}


@pytest.mark.parametrize("case", OTHER_CASES)
def test_every_other_case_is_torchs_own_op(kernel_calls, case):
    options, change = OTHER_CASES[case]
    x = _activation((2, 8, 9, 9), torch.float32)
    x = change(x) if change else x
    ours, theirs = MaxPool2d(3, 2, **options)(x), nn.MaxPool2d(3, 2, **options)(x)
    for a, b in zip(*((o if isinstance(o, tuple) else (o,)) for o in (ours, theirs)), strict=True):
        assert torch.equal(a, b)
    assert kernel_calls == {"forward": 0, "backward": 0}


def test_the_module_is_torchs_max_pool_to_its_users():
    ours, theirs = MaxPool2d(3, 2), nn.MaxPool2d(3, 2)
    assert isinstance(ours, nn.MaxPool2d) and type(ours).__name__ == "MaxPool2d"
    assert repr(ours) == repr(theirs) and ours.state_dict() == {}


def test_where_the_kernel_cannot_run_torch_ops_take_over(kernel_calls, monkeypatch):
    # No thread or scratch memory for the kernel: a forward takes torch's op (and its backward); a
    # backward after the kernel's forward adds the gradients at the saved positions with torch ops.
    x = _activation((2, 16, 11, 11), torch.float32, nans=True)
    g = _grad_like(x, 3, 2)
    ref_out, ref_grad = _pool_and_grad(nn.MaxPool2d(3, 2), x, g)
    monkeypatch.setattr(native.NativeMaxPool, "backward", lambda *args: None)
    out, grad = _pool_and_grad(MaxPool2d(3, 2), x, g)
    assert kernel_calls["forward"] == 1 and grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out.nan_to_num(), ref_out.nan_to_num())
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=0)  # the sums' order may differ
    monkeypatch.setattr(native.NativeMaxPool, "forward", lambda *args: None)
    out, grad = _pool_and_grad(MaxPool2d(3, 2), x, g)
    assert torch.equal(out.nan_to_num(), ref_out.nan_to_num()) and torch.equal(grad, ref_grad)


def test_switched_off_max_pooling_is_torchs(monkeypatch, tmp_path):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    monkeypatch.setenv("ALEXNET_NATIVE_MAXPOOL", "0")
    monkeypatch.setattr(native, "_loaded", {})
    assert native.maxpool() is None
    assert native.status("maxpool") == "off (ALEXNET_NATIVE_MAXPOOL=0): max-pooling runs as torch's"
    x = _activation((2, 8, 9, 9), torch.float32)
    assert torch.equal(MaxPool2d(3, 2)(x), F.max_pool2d(x, 3, 2))
    assert not (tmp_path / "kernels").exists()


def test_the_paper_net_with_the_kernel_is_the_same_function_and_gradient(kernel_calls):
    # The whole net, channels_last fp32 as training runs it: logits and every weight's gradient
    # equal those of the same net with torch's pools, bit for bit.
    torch.manual_seed(0)
    model = build_model("paper").to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 227, 227).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([3, 7])

    def run():
        torch.manual_seed(1)  # the same dropout masks
        model.zero_grad(set_to_none=True)
        logits = model(x)
        F.cross_entropy(logits, y).backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    ours = run()
    assert kernel_calls == {"forward": 3, "backward": 3}
    for module in model.modules():
        if isinstance(module, MaxPool2d):
            module.forward = nn.MaxPool2d.forward.__get__(module)
    theirs = run()
    assert kernel_calls == {"forward": 3, "backward": 3}
    assert torch.equal(ours[0], theirs[0])
    assert all(torch.equal(a, b) for a, b in zip(ours[1], theirs[1], strict=True))


def test_the_kernel_keeps_one_byte_per_output_value_for_the_backward(kernel_calls):
    # torch's op keeps an int64 index per output value (and autograd its input); the kernel keeps
    # the maximum's place in its window, one byte.
    x = _activation((2, 96, 13, 13), torch.bfloat16).requires_grad_()
    out = MaxPool2d(3, 2)(x)
    (at,) = out.grad_fn.saved_tensors
    assert at.dtype == torch.uint8 and at.shape == out.shape and int(at.max()) < 9
    assert kernel_calls["forward"] == 1


def test_the_model_takes_the_kernel_for_large_maps_only(kernel_calls, monkeypatch):
    monkeypatch.setattr(pool, "MIN_VALUES", 96 * 55 * 55)  # the paper net's conv1 map
    for shape, used in [((1, 96, 55, 55), 1), ((1, 96, 54, 55), 0), ((1, 256, 13, 13), 0)]:
        MaxPool2d(3, 2)(_activation(shape, torch.bfloat16))
        assert kernel_calls["forward"] == used
        kernel_calls["forward"] = 0


def test_under_torch_compile_pooling_is_torchs_for_inductor_to_fuse(kernel_calls, monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x = _activation((1, 96, 13, 13), torch.float32)
    assert torch.equal(MaxPool2d(3, 2)(x), F.max_pool2d(x, 3, 2)) and kernel_calls["forward"] == 0
