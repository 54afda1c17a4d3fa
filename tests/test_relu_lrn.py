"""ReLU → LRN (§3.3) in LRN's own passes: the same numbers as the two modules, bit for bit."""

import pytest
import torch
from conftest import count_calls, grads
from torch import nn
from torch.nn.modules.module import register_module_forward_hook

from alexnet import build_model
from alexnet.models import native
from alexnet.models.features import Features
from alexnet.models.lrn import LocalResponseNorm

NAN = float("nan")


def _conv_output(dtype, shape=(3, 96, 7, 9)):
    """Pre-ReLU values at conv1's scale, channels_last, with the ReLU's edge cases in them."""
    x = torch.randn(*shape) * 20
    x[0, :6, 0, 0] = torch.tensor([0.0, -0.0, NAN, -NAN, float("inf"), float("-inf")])
    return x.to(dtype).to(memory_format=torch.channels_last)


def _same_bits(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(a.isnan(), b.isnan())


@pytest.fixture
def native_calls(monkeypatch):
    assert native.lrn() is not None, native.status()  # CI's machines have a C compiler
    return count_calls(monkeypatch, native.NativeLRN)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("groups", [1, 2])
def test_the_kernel_with_relu_is_relu_then_the_kernel_bit_for_bit(native_calls, dtype, groups):
    # Forward and backward of the fused form against torch.relu then our LRN (the same kernel without
    # the ReLU), NaN of either sign, ±0 and ±inf included: the ReLU's max and its backward's mask are
    # the only differences, so every bit must agree.
    x = _conv_output(dtype)
    g = torch.randn(x.shape).to(dtype).contiguous(memory_format=torch.channels_last)
    lrn = LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=groups)
    fused, fused_grad = grads(lrn.after_relu, x, g)
    assert native_calls == {"forward": 1, "backward": 1}
    two, two_grad = grads(lambda t: lrn(torch.relu(t)), x, g)
    _same_bits(fused, two)
    _same_bits(fused_grad, two_grad)
    assert fused.dtype == dtype and fused.is_contiguous(memory_format=torch.channels_last)
    assert (fused_grad[x <= 0] == 0).all() and fused_grad[0, 2, 0, 0].isnan()  # ReLU passes NaN on
    assert fused_grad[0, 3, 0, 0].isnan()  # -NaN too, as torch's threshold_backward does


def test_the_fused_form_keeps_only_the_relus_input(native_calls):
    # the ReLU's input is all the backward needs (the ReLU's own output is never written out)
    x = _conv_output(torch.float32).requires_grad_()
    out = LocalResponseNorm(5, 1e-4, 0.75, 2.0).after_relu(x)
    assert len(out.grad_fn.saved_tensors) == 1 and out.grad_fn.saved_tensors[0] is x


@pytest.mark.parametrize("kernel_backward", [True, False])
def test_the_gemm_form_with_relu_is_torchs_relu_and_lrn(monkeypatch, kernel_backward):
    # Where the kernel does not take the input (NCHW here) or cannot run its backward, the ReLU is
    # applied first and the gradient masked: torch's relu → LocalResponseNorm to fp32 rounding.
    x = _conv_output(torch.float32, (2, 12, 5, 4))
    x[0, :6, 0, 0] = torch.tensor([0.0, -0.0, 1.0, -1.0, 3.0, -2.0])  # torch's LRN spreads NaN over windows
    if kernel_backward:
        monkeypatch.setattr(native.NativeLRN, "backward", lambda *args: None)
    else:
        x = x.contiguous()
    g = torch.randn(x.shape)
    ours, ours_grad = grads(LocalResponseNorm(3, 1e-2, 0.75, 2.0).after_relu, x, g)
    ref, ref_grad = grads(lambda t: nn.LocalResponseNorm(3, 1e-2, 0.75, 2.0)(torch.relu(t)), x, g)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-5, atol=1e-6)
    assert (ours_grad[x <= 0] == 0).all()


def _step(model, x, y):
    model.zero_grad(set_to_none=True)
    out = model(x)
    nn.functional.cross_entropy(out, y).backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(("name", "size", "groups"), [("paper", 227, 2), ("cifar10", 32, 2)])
def test_the_nets_take_the_fused_pair_and_give_the_two_modules_numbers(monkeypatch, name, size, groups):
    # The paper net's ReLU → LRN after conv1 and conv2, the cifar10 net's after its pools: each pair
    # one LRN call with the ReLU module skipped, and the output and every gradient bit for bit those
    # of the same net running the modules one by one (as it does when a hook watches a module).
    torch.manual_seed(0)
    model = build_model(name, groups=groups, dropout=0.0).to(memory_format=torch.channels_last)
    assert type(model.features) is Features
    x = torch.randn(2, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([1, 7])
    relus = count_calls(monkeypatch, nn.ReLU, ("forward",))
    fused = _step(model, x, y)
    relus_fused = relus["forward"]
    handle = register_module_forward_hook(lambda *_: None)  # every module watched: no fusing
    two = _step(model, x, y)
    handle.remove()
    assert relus_fused == relus["forward"] - relus_fused - 2 == 5  # 2 of the 7 ReLU modules skipped
    model.features[1].register_forward_hook(lambda *_: None)  # conv1's ReLU watched: only conv2's pair fused
    assert torch.equal(_step(model, x, y)[0], fused[0]) and relus["forward"] == 2 * 7 - 2 + 6
    assert torch.equal(fused[0], two[0])
    assert all(torch.equal(a, b) for a, b in zip(fused[1], two[1], strict=True))


def test_the_features_keep_sequentials_names_and_slicing():
    model = build_model("paper")
    plain = nn.Sequential(*model.features)
    assert list(model.features.state_dict()) == list(plain.state_dict())
    assert repr(model.features).split("\n")[1:] == repr(plain).split("\n")[1:]
    head = model.features[:3]  # conv1, its ReLU and LRN: a Features too, fused when called
    assert type(head) is Features and len(head) == 3
    x = torch.randn(1, 3, 227, 227)
    torch.testing.assert_close(head(x), plain[:3](x), rtol=0, atol=0)


def test_fx_feature_extraction_sees_the_relu_as_its_own_node():
    # torchvision's create_feature_extractor traces `features` with our layers as leaves: under FX
    # the pair runs as two modules, so the ReLU's output (features.1) is a node of its own
    from torchvision.models.feature_extraction import create_feature_extractor

    from alexnet.models.pool import MaxPool2d

    model = build_model("paper").eval()
    leaves = {"leaf_modules": [LocalResponseNorm, MaxPool2d]}
    extract = create_feature_extractor(model.features, ["1", "2"], tracer_kwargs=leaves)
    x = torch.randn(1, 3, 227, 227)
    out = extract(x)
    conv1 = model.features[0](x)
    assert torch.equal(out["1"], torch.relu(conv1)) and torch.equal(out["2"], model.features[:3](x))


def test_the_two_tower_net_takes_the_fused_pair_in_each_tower(monkeypatch):
    # both towers' conv1 and conv2 (§3.2) run ReLU → LRN as one call, and the logits stay the grouped
    # net's; a hook on the towers' shared ReLU puts them back to two calls with the same logits
    from alexnet.models.two_tower import TwoTowerAlexNet

    torch.manual_seed(0)
    grouped = build_model("paper", dropout=0.0).eval()
    towers = TwoTowerAlexNet.from_grouped(grouped).eval()
    calls = count_calls(monkeypatch, LocalResponseNorm, ("after_relu",))
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        fused = towers(x)
        assert calls["after_relu"] == 4
        towers.tower_a.relu.register_forward_hook(lambda *_: None)
        towers.tower_b.relu.register_forward_hook(lambda *_: None)
        two = towers(x)
        assert calls["after_relu"] == 4
        torch.testing.assert_close(fused, grouped(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(fused, two)


def test_the_fused_form_passes_gradcheck_in_float64():
    # float64 takes the GEMM form: LRN of ReLU(x) against finite differences, with values kept away
    # from ReLU's kink at 0 (where the derivative is undefined), and groups keeping their windows
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    x = (x + x.sign() * 0.1).requires_grad_()
    lrn = LocalResponseNorm(3, alpha=0.1, beta=0.75, k=2.0, groups=2)
    assert torch.autograd.gradcheck(lrn.after_relu, (x,))
