"""The dropout CPU kernel (models/dropout_kernel.c, models/dropout.py) against torch's dropout."""

import math

import pytest
import torch
from conftest import count_calls
from torch import nn

from alexnet.models import native
from alexnet.models.dropout import Dropout


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the kernel's forward and backward calls (the kernel itself runs unchanged)."""
    assert native.dropout() is not None, native.status("dropout")  # CI's machines have a C compiler
    return count_calls(monkeypatch, native.NativeDropout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.5, 0.25])
def test_each_value_is_kept_with_probability_1_minus_p_and_scaled_as_torch_does(kernel_calls, dtype, p):
    torch.manual_seed(0)
    x = torch.randn(256, 4096).to(dtype).requires_grad_()
    g = torch.randn(256, 4096).to(dtype)
    out = Dropout(p).train()(x)
    (mask,) = out.grad_fn.saved_tensors
    (grad,) = torch.autograd.grad(out, x, g)
    assert kernel_calls == {"forward": 1, "backward": 1} and out.dtype == grad.dtype == dtype
    kept = mask.bool()
    # x · mask · s and g · mask · s with torch's scale s (1/(1 − p) in the tensor's dtype), computed
    # in fp32 and rounded once, and the same numbers as torch's dropout where it keeps a value
    scale = torch.tensor(1 / (1 - p), dtype=dtype).item()
    assert torch.equal(out, (x.detach().float() * kept * scale).to(dtype))
    assert torch.equal(grad, (g.float() * kept * scale).to(dtype))
    x_ = x.detach().clone().requires_grad_()
    theirs = torch.nn.functional.dropout(x_, p)
    (their_grad,) = torch.autograd.grad(theirs, x_, g)
    where = theirs != 0
    assert torch.equal(theirs[where], (x.detach()[where].float() * scale).to(dtype))
    assert torch.equal(their_grad[where], (g[where].float() * scale).to(dtype))
    n = kept.numel()  # about a million Bernoulli(1 − p) draws: within 5 standard deviations
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    # neighbours independent: both kept (1 − p)², as for any pair of independent draws
    both = (kept[:, 1:] & kept[:, :-1]).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 / n)


def test_the_mask_follows_torchs_generator(kernel_calls):
    x = torch.ones(64, 512)
    drop = Dropout(0.5).train()
    torch.manual_seed(3)
    first, second = drop(x), drop(x)
    torch.manual_seed(3)
    assert torch.equal(drop(x), first) and torch.equal(drop(x), second)  # manual_seed reproduces
    assert not torch.equal(first, second)  # each call draws a new mask
    state = torch.get_rng_state()  # a checkpoint's RNG state: the run resumes with the same masks
    after = drop(x)
    torch.set_rng_state(state)
    assert torch.equal(drop(x), after)


def test_a_nan_stays_nan_where_dropped_as_in_torch(kernel_calls):
    x = torch.full((4, 8192), float("nan"))
    assert Dropout(0.5).train()(x).isnan().all() and torch.nn.functional.dropout(x, 0.5).isnan().all()


OTHER_CASES = {
    "eval": (lambda d: d.eval(), lambda x: x),
    "p = 0": (lambda d: Dropout(0.0), lambda x: x),
    "p = 1": (lambda d: Dropout(1.0), lambda x: x),
    "in place": (lambda d: Dropout(0.5, inplace=True), lambda x: x.clone()),
    "fp16": (lambda d: d, lambda x: x.half()),
    "not contiguous": (lambda d: d, lambda x: x.t()),
}


@pytest.mark.parametrize("case", OTHER_CASES)
def test_every_other_case_is_torchs_dropout(kernel_calls, case):
    module, change = OTHER_CASES[case]
    x = change(torch.randn(64, 256))
    ours, theirs = module(Dropout(0.5)), module(nn.Dropout(0.5))
    ours.train(theirs.training)
    torch.manual_seed(0)
    a = ours(x.clone() if case == "in place" else x)
    torch.manual_seed(0)
    b = theirs(x.clone() if case == "in place" else x)
    assert torch.equal(a, b) and kernel_calls == {"forward": 0, "backward": 0}


def test_the_module_is_torchs_dropout_to_its_users():
    ours, theirs = Dropout(0.5), nn.Dropout(0.5)
    assert isinstance(ours, nn.Dropout) and type(ours).__name__ == "Dropout"
    assert repr(ours) == repr(theirs) and ours.state_dict() == {}


def test_switched_off_dropout_is_torchs(monkeypatch, tmp_path):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    monkeypatch.setenv("ALEXNET_NATIVE_DROPOUT", "0")
    monkeypatch.setattr(native, "_loaded", {})
    assert native.dropout() is None
    assert native.status("dropout") == "off (ALEXNET_NATIVE_DROPOUT=0): dropout runs as torch's"
    x = torch.randn(64, 256)
    torch.manual_seed(0)
    a = Dropout(0.5)(x)
    torch.manual_seed(0)
    assert torch.equal(a, torch.nn.functional.dropout(x, 0.5)) and not (tmp_path / "kernels").exists()


def test_under_torch_compile_dropout_is_torchs_for_inductor_to_fuse(kernel_calls, monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x = torch.randn(64, 256)
    torch.manual_seed(0)
    a = Dropout(0.5)(x)
    torch.manual_seed(0)
    assert torch.equal(a, torch.nn.functional.dropout(x, 0.5)) and kernel_calls["forward"] == 0


def test_where_the_kernel_cannot_run_torch_ops_take_over(kernel_calls, monkeypatch):
    # No memory for the kernel's jobs: the mask comes from torch's bernoulli_, the same numbers
    # (x · mask · 1/(1 − p)) forward and backward.
    monkeypatch.setattr(native.NativeDropout, "forward", lambda *args: None)
    monkeypatch.setattr(native.NativeDropout, "backward", lambda *args: None)
    x = torch.randn(64, 256, requires_grad=True)
    g = torch.randn(64, 256)
    out = Dropout(0.25).train()(x)
    (mask,) = out.grad_fn.saved_tensors
    (grad,) = torch.autograd.grad(out, x, g)
    kept = mask.bool()
    assert 0.6 < kept.float().mean().item() < 0.9
    assert torch.equal(out, x.detach() * kept * (1 / 0.75)) and torch.equal(grad, g * kept * (1 / 0.75))
