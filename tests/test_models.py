import math

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from alexnet import AlexNetError, build_model, list_models, summarize
from alexnet.models import LocalResponseNorm
from alexnet.models.pool import MaxPool2d

# PAPER.md §1 and §6; d2l, cifar10 and figure1 counted from their layer tables.
PARAMS = {
    "paper": 60_965_224,
    "torchvision": 61_100_840,
    "d2l": 46_764_746,
    "cifar10": 2_248_202,
    "figure1": 85_098,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_list_models_names_every_preset():
    assert list_models() == ["paper", "torchvision", "d2l", "cifar10", "figure1"]


@pytest.mark.parametrize("name", list(PARAMS))
def test_exact_parameter_counts(name):
    assert n_params(build_model(name)) == PARAMS[name]


def test_paper_without_groups_has_the_one_tower_count():
    assert n_params(build_model("paper", groups=1)) == 62_378_344


@pytest.mark.parametrize("name", list(PARAMS))
def test_forward_backward_every_preset(name):
    model = build_model(name)
    x = torch.randn(2, model.in_channels, model.input_size, model.input_size)
    logits = model(x)
    assert logits.shape == (2, model.num_classes)
    logits.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_multiply_adds_match_paper_and_torchvision():
    paper = summarize(build_model("paper"))
    assert paper.total_params == 60_965_224
    assert paper.total_macs == 724_406_816  # ≈724.4 M (PAPER.md §1)
    assert round(summarize(build_model("paper", groups=1)).total_macs / 1e6) == 1135
    tv = summarize(build_model("torchvision"))
    assert tv.total_macs == 714_188_480  # ≈714.2 M at 224
    conv1 = next(r for r in paper.rows if r.name == "conv1")
    assert conv1.output_shape == (96, 55, 55)
    assert paper.rows[-1].output_shape == (1000,)


def test_paper_layer_shapes_follow_figure2():
    rows = {r.name: r for r in summarize(build_model("paper")).rows}
    assert rows["conv2"].output_shape == (256, 27, 27)
    assert rows["conv5"].output_shape == (256, 13, 13)
    assert rows["fc6"].params == 9216 * 4096 + 4096


def test_paper_model_has_the_paper_layers():
    m = build_model("paper")
    assert [m.layer(n).groups for n in ("conv1", "conv2", "conv3", "conv4", "conv5")] == [1, 2, 1, 2, 2]
    lrns = [mod for mod in m.features if isinstance(mod, LocalResponseNorm)]
    assert [(n.size, n.alpha, n.beta, n.k, n.groups) for n in lrns] == [(5, 1e-4, 0.75, 2.0, 2)] * 2
    pools = [mod for mod in m.features if isinstance(mod, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(3, 2)] * 3
    drops = [mod.p for mod in m.classifier if isinstance(mod, nn.Dropout)]
    assert drops == [0.5, 0.5]
    # dropout acts on the outputs of fc6 and fc7 (after their ReLU)
    assert isinstance(m.classifier[2], nn.Dropout) and isinstance(m.classifier[5], nn.Dropout)


def test_torchvision_state_dict_round_trip_and_equal_logits(tmp_path):
    ours = build_model("torchvision").eval()
    theirs = torchvision.models.alexnet(weights=None).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    # and back: torchvision's own weights file loads into ours
    theirs = torchvision.models.alexnet(weights=None).eval()
    path = tmp_path / "alexnet-owt-test.pth"
    torch.save(theirs.state_dict(), path)
    loaded = build_model("torchvision", weights=path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), theirs(x))


def test_weights_for_another_class_count_are_refused(tmp_path):
    path = tmp_path / "ten.pth"
    torch.save(build_model("torchvision", num_classes=10).state_dict(), path)
    with pytest.raises(
        AlexNetError, match=r"classifier.6.weight \(10, 4096\) where the model has \(1000, 4096\)"
    ):
        build_model("torchvision", weights=path)


def test_weights_that_are_not_a_state_dict_are_refused(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(AlexNetError, match=r"junk\.pth is not a loadable weights file"):
        build_model("torchvision", weights=path)
    with pytest.raises(AlexNetError, match="does not exist"):
        build_model("torchvision", weights=tmp_path / "missing.pth")


def test_paper_init_statistics():
    m = build_model("paper")
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        w = m.layer(name).weight
        assert abs(w.mean().item()) < 2e-3 and abs(w.std().item() - 0.01) < 1e-3, name
        want = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.all(m.layer(name).bias == want), name
    assert abs(m.layer("fc6").weight.std().item() - 0.01) < 1e-5  # 37.7 M samples


def test_caffe_and_torch_inits():
    caffe = build_model("paper", init="caffe")
    assert torch.all(caffe.layer("conv2").bias == 0.1) and torch.all(caffe.layer("conv3").bias == 0)
    assert abs(caffe.layer("fc6").weight.std().item() - 0.005) < 1e-5
    torch_init = build_model("paper", init="torch")
    bound = 1 / (48 * 25) ** 0.5  # PyTorch's default: uniform(±1/sqrt(fan_in)) on the bias
    b = torch_init.layer("conv2").bias
    assert b.abs().max() <= bound and b.std() > bound / 4


def test_switches_change_the_network():
    tanh = build_model("paper", activation="tanh")
    assert isinstance(tanh.features[1], nn.Tanh)
    assert not any(isinstance(m, LocalResponseNorm) for m in build_model("paper", lrn=False).features)
    nonover = build_model("paper", pool="non-overlapping")
    assert all(m.kernel_size == 2 for m in nonover.features if isinstance(m, nn.MaxPool2d))
    assert nonover(torch.randn(1, 3, 227, 227)).shape == (1, 1000)  # 55→27→13→6 with 2/2 pools too
    assert build_model("paper", dropout=0.3).classifier[2].p == 0.3
    grey = build_model("cifar10", in_channels=1, num_classes=100)
    assert grey(torch.randn(2, 1, 32, 32)).shape == (2, 100)
    wide = build_model("cifar10", widths=(32, 64, 96, 96, 64))
    assert wide.layer("conv5").out_channels == 64
    assert build_model("figure1", activation="tanh", lrn=True)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("dropped", [("conv3",), ("conv4",), ("conv5",), ("conv3", "conv4", "conv5")])
def test_drop_layers_keeps_shapes_consistent(dropped):
    m = build_model("paper", drop_layers=dropped)
    for name in dropped:
        with pytest.raises(AlexNetError, match=f"no layer '{name}'"):
            m.layer(name)
    out = m(torch.randn(1, 3, 227, 227))
    assert out.shape == (1, 1000)
    assert m.layer("conv2").bias[0] == 1.0  # paper init still keyed by paper names
    # three 3/2 pools whatever is dropped: 227 → 55 → 27 → 13 → 6
    assert m.feature_shape[1:] == (6, 6)


@pytest.mark.parametrize(
    ("switches", "message"),
    [
        ({"activation": "swish"}, "unknown activation 'swish'"),
        ({"groups": 3}, "groups must be 1 or 2"),
        ({"pool": "avg"}, "unknown pool 'avg'"),
        ({"dropout": 1.5}, "dropout must be a probability"),
        ({"drop_layers": ("conv1",)}, "drop_layers must be any of conv3, conv4, conv5"),
        ({"widths": (96, 256)}, "widths must be five"),
        ({"widths": (95, 256, 384, 384, 256)}, "conv2: 95 → 256 channels do not split into 2 groups"),
        ({"init": "glorot"}, "unknown init 'glorot'"),
        (
            {"lrn_position": "after-relu"},
            "unknown lrn_position 'after-relu'; choose before-pool or after-pool",
        ),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
    ],
)
def test_bad_switch_values_raise_our_error(switches, message):
    with pytest.raises(AlexNetError, match=message):
        build_model("paper", **switches)


def test_switch_a_model_does_not_take():
    with pytest.raises(AlexNetError, match="model 'figure1' takes no switch groups"):
        build_model("figure1", groups=2)
    with pytest.raises(AlexNetError, match="unknown model 'vgg'"):
        build_model("vgg")


def test_input_too_small_names_layer_and_sizes():
    m = build_model("paper")
    with pytest.raises(
        AlexNetError, match=r"conv1 needs at least 11 pixels per side but gets 8 \(input 8×8\)"
    ):
        m(torch.randn(1, 3, 8, 8))
    with pytest.raises(
        AlexNetError, match=r"max-pool after conv5 needs at least 3 pixels per side but gets 2"
    ):
        m(torch.randn(1, 3, 63, 63))
    with pytest.raises(AlexNetError, match=r"fc6 expects 256×6×6 features but a 224×224 input gives 256×5×5"):
        m(torch.randn(1, 3, 224, 224))
    with pytest.raises(AlexNetError, match=r"expects input \[N, 3, H, W\], got \[1, 1, 227, 227\]"):
        m(torch.randn(1, 1, 227, 227))
    with pytest.raises(AlexNetError, match="max-pool after conv3 needs at least 3 pixels"):
        build_model("figure1")(torch.randn(1, 3, 12, 12))


def test_torchvision_variant_takes_any_reasonable_input():
    m = build_model("torchvision").eval()
    assert m(torch.randn(1, 3, 256, 256)).shape == (1, 1000)  # AdaptiveAvgPool2d(6)


def test_grouped_cifar10_net_has_the_hand_counted_parameters():
    # conv1 3→64 5×5; conv2 64→128 5×5 in 2 groups; conv3 128→256 3×3; conv4 256→256 and conv5
    # 256→128 3×3 in 2 groups; fc6 128·2·2→512 (28 → pool 13 → pool 6 → pool 2); fc7 512→512; fc8 512→10
    expected = (
        (3 * 64 * 25 + 64)
        + (32 * 128 * 25 + 128)
        + (128 * 256 * 9 + 256)
        + (128 * 256 * 9 + 256)
        + (128 * 128 * 9 + 128)
        + (128 * 2 * 2 * 512 + 512)
        + (512 * 512 + 512)
        + (512 * 10 + 10)
    )
    assert n_params(build_model("cifar10", groups=2, input_size=28)) == expected == 1_375_754


def test_lrn_after_the_pool_normalises_the_pooled_maps_per_tower():
    # cuda-convnet's CIFAR-10 order: conv → ReLU → 3/2 pool → LRN, with §3.3's constants per tower
    # (the ReLU runs after the pool: the same function, on a quarter of the values; the test below)
    torch.manual_seed(0)
    after = build_model("cifar10", groups=2, input_size=28, lrn_position="after-pool").eval()
    before = build_model("cifar10", groups=2, input_size=28).eval()
    kinds = [type(m).__name__ for m in after.features[:8]]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "LocalResponseNorm"] * 2
    assert [type(m).__name__ for m in before.features[:4]] == [
        "Conv2d",
        "ReLU",
        "LocalResponseNorm",
        "MaxPool2d",
    ]
    # the same parameters under the same names: only the order of two parameter-free layers differs
    before.load_state_dict(after.state_dict())
    x = torch.randn(4, 3, 28, 28)
    lrn = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    h = F.max_pool2d(F.relu(after.layer("conv1")(x)), 3, 2)
    h = torch.cat([lrn(t) for t in h.chunk(2, 1)], 1)
    h = F.max_pool2d(F.relu(after.layer("conv2")(h)), 3, 2)
    h = torch.cat([lrn(t) for t in h.chunk(2, 1)], 1)
    with torch.no_grad():
        torch.testing.assert_close(after.features[:8](x), h, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(after(x * 50), before(x * 50))  # a different function of the same weights


def test_d2l_is_initialised_as_the_book_does():
    # d2l's train_ch6: nn.init.xavier_uniform_ on every conv and linear weight, bound √(6/(fan_in + fan_out)).
    torch.manual_seed(0)
    net = build_model("d2l")
    layers = (("conv1", 1 * 11 * 11, 96 * 11 * 11), ("fc6", 6400, 4096), ("fc8", 4096, 10))
    for name, fan_in, fan_out in layers:
        bound = math.sqrt(6 / (fan_in + fan_out))
        w = net.layer(name).weight
        assert 0.95 * bound < float(w.detach().abs().max()) <= bound * (1 + 1e-6), name


def test_relu_after_the_pools_where_lrn_follows_them_is_the_same_function_and_gradient():
    from alexnet.config import preset

    torch.manual_seed(0)
    model = build_model("cifar10", **{**preset("cifar10").model.switches(), "input_size": 28}).eval()
    features = list(model.features)
    conv1 = features.index(model.layer("conv1"))
    kinds = [nn.Conv2d, MaxPool2d, nn.ReLU, LocalResponseNorm]
    assert [type(m) for m in features[conv1 : conv1 + 4]] == kinds  # the preset's LRN after the pool
    # The same net written in the usual order (ReLU right after each conv): same modules, same weights.
    written = [*features]
    for i in range(1, len(written)):
        if isinstance(written[i], nn.ReLU) and isinstance(written[i - 1], nn.MaxPool2d):
            written[i - 1], written[i] = written[i], written[i - 1]
    assert [type(m) for m in written[conv1 : conv1 + 4]] == [nn.Conv2d, nn.ReLU, MaxPool2d, LocalResponseNorm]
    x = (torch.randn(8, 3, 28, 28) * 2).to(memory_format=torch.channels_last)
    results = []
    for layers in (features, written):
        model.features = nn.Sequential(*layers)
        model.zero_grad(set_to_none=True)
        logits = model(x)
        logits.square().sum().backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    (ours, ours_grads), (usual, usual_grads) = results
    assert torch.equal(ours, usual)  # max and max(0, ·) commute exactly
    assert all(torch.equal(a, b) for a, b in zip(ours_grads, usual_grads, strict=True))
