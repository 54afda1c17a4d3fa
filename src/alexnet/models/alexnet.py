"""The AlexNet family: the 2012 paper's network and the variants people train (torchvision, d2l, CIFAR).

One class, :class:`AlexNet`, builds all of them from an :class:`ArchSpec` (the layer table of a
variant) plus typed switches. Module and parameter names follow torchvision's ``features`` /
``avgpool`` / ``classifier`` layout, so the ``torchvision`` variant's state_dict is torchvision's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import AlexNetError
from .dropout import Dropout
from .features import Features
from .lrn import LocalResponseNorm
from .pool import MaxPool2d

CONV_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_NAMES = ("fc6", "fc7", "fc8")
# §3.2: on two GPUs, conv2, conv4 and conv5 see only their own tower's maps.
GROUPED_LAYERS = frozenset({"conv2", "conv4", "conv5"})
DROPPABLE_LAYERS = frozenset({"conv3", "conv4", "conv5"})  # §7: removing a middle layer costs ~2 % top-1
POOLED_LAYERS = ("conv1", "conv2", "conv5")
LRN_LAYERS = ("conv1", "conv2")  # §3.3: after the ReLU of conv1 and conv2, before pooling
# Where LRN sits against the max-pool that follows it: §3.4's order ("Max-pooling layers […] follow
# both response-normalization layers"), or after the pool, as in Krizhevsky's own CIFAR-10 nets
# (cuda-convnet's layers-18pct and layers-conv-local-11pct pool before rnorm1) and TensorFlow's
# CIFAR-10 tutorial. After the 3/2 pool LRN sees about a quarter of the values, so it costs a quarter.
LRN_POSITIONS = ("before-pool", "after-pool")
# §3.3: k = 2, n = 5, α = 1e-4, β = 0.75; torch (and Krizhevsky's code) divide α by n.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0
POOLS = {"overlapping": (3, 2), "non-overlapping": (2, 2)}  # §3.4: (window, stride)
INITS = ("paper", "caffe", "torch", "kaiming", "xavier")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "elu", "leaky_relu", "identity")

# The rule of each numeric or list switch, written once: the models check their arguments with it,
# and the run configuration (config.py) checks its model fields with the same entry.
SWITCH_RULES = {
    "dropout": (lambda p: 0.0 <= p < 1.0, "a probability in [0, 1)"),
    "groups": (lambda g: g in (1, 2), "1 or 2 (the paper's two towers, §3.2)"),
    "widths": (
        lambda w: len(w) == 5 and all(int(c) >= 1 for c in w),
        "five positive channel counts (conv1..conv5)",
    ),
    "drop_layers": (lambda names: set(names) <= DROPPABLE_LAYERS, "any of conv3, conv4, conv5 (§7)"),
}


def with_lrn(
    activation: nn.Module, pools: list[nn.Module], norm: nn.Module | None, position: str
) -> list[nn.Module]:
    """The layers after a conv: its activation, its max-pools, and LRN before or after the pools."""
    if position not in LRN_POSITIONS:  # checked here, where every model places its pools
        raise AlexNetError(f"unknown lrn_position {position!r}; choose {' or '.join(LRN_POSITIONS)}")
    if norm is None:
        return [activation, *pools]
    if position == "before-pool":
        return [activation, norm, *pools]
    if isinstance(activation, nn.ReLU) and pools:
        # With LRN after the pools, the ReLU goes after them too: max-pooling and max(0, ·) commute
        # exactly (both select values: the same output, and the same gradient, since a window whose
        # max is ≤ 0 passes 0 either way), and after a 3/2 pool the ReLU sees about a quarter of the
        # values (cifar10 preset, bf16: ReLU was 8 % of the step, benchmarks/RESULTS.md).
        return [*pools, activation, norm]
    return [activation, *pools, norm]


def check_switch(name: str, value) -> None:
    """Raise naming the switch and its rule (``SWITCH_RULES``) unless ``value`` keeps it."""
    ok, allowed = SWITCH_RULES[name]
    if not ok(value):
        raise AlexNetError(f"{name} must be {allowed}, got {value!r}")


def make_activation(name: str) -> nn.Module:
    """The nonlinearity by name; ReLU (§3.1) is the paper's, tanh and sigmoid are Fig. 1's comparisons."""
    factories = {
        "relu": lambda: nn.ReLU(inplace=True),
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "gelu": nn.GELU,
        "elu": lambda: nn.ELU(inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
        "identity": nn.Identity,
    }
    if name not in ACTIVATIONS:
        raise AlexNetError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return factories[name]()


@dataclass(frozen=True)
class ArchSpec:
    """The layer table of one variant: five conv layers and three fully connected ones."""

    widths: tuple[int, int, int, int, int]  # output channels of conv1..conv5
    kernels: tuple[int, int, int, int, int]  # square kernel sizes, pixels
    strides: tuple[int, int, int, int, int]
    paddings: tuple[int, int, int, int, int]
    hidden: tuple[int, int]  # widths of fc6 and fc7
    input_size: int  # the side of the square input the classifier is sized for, pixels
    in_channels: int = 3
    num_classes: int = 1000
    lrn: bool = True
    groups: int = 1
    adaptive_pool: int | None = None  # torchvision's AdaptiveAvgPool2d(6) before the classifier
    dropout_before_fc: bool = False  # torchvision puts Dropout before fc6/fc7, the paper after fc6/fc7
    init: str = "torch"
    lrn_position: str = "before-pool"  # one of LRN_POSITIONS


ARCHS: dict[str, ArchSpec] = {
    # §3.5, Fig. 2, with Caffe's 227 input (224 without padding does not give 55×55).
    "paper": ArchSpec(
        widths=(96, 256, 384, 384, 256),
        kernels=(11, 5, 3, 3, 3),
        strides=(4, 1, 1, 1, 1),
        paddings=(0, 2, 1, 1, 1),
        hidden=(4096, 4096),
        input_size=227,
        lrn=True,
        groups=2,
        init="paper",
    ),
    # torchvision.models.alexnet: the "one weird trick" widths (arXiv 1404.5997), no LRN, no groups.
    "torchvision": ArchSpec(
        widths=(64, 192, 384, 256, 256),
        kernels=(11, 5, 3, 3, 3),
        strides=(4, 1, 1, 1, 1),
        paddings=(2, 2, 1, 1, 1),
        hidden=(4096, 4096),
        input_size=224,
        lrn=False,
        adaptive_pool=6,
        dropout_before_fc=True,
    ),
    # Dive into Deep Learning §8.1: Fashion-MNIST resized to 224, one input channel, 10 classes.
    "d2l": ArchSpec(
        widths=(96, 256, 384, 384, 256),
        kernels=(11, 5, 3, 3, 3),
        strides=(4, 1, 1, 1, 1),
        paddings=(1, 2, 1, 1, 1),
        hidden=(4096, 4096),
        input_size=224,
        in_channels=1,
        num_classes=10,
        lrn=False,
        init="xavier",  # the book's train_ch6 applies nn.init.xavier_uniform_ to every conv/linear weight
    ),
    # AlexNet scaled to 32×32 CIFAR-10 images, in the spirit of cuda-convnet's layers-18pct and
    # TensorFlow's CIFAR-10 tutorial net (5×5 convs, LRN, 3/2 pools): the paper's five conv layers
    # with stride-1 5×5 kernels at the bottom, LRN after conv1/conv2, overlapping pools
    # (32 → 15 → 7 → 3), and two dropout-regularised hidden layers of 512.
    "cifar10": ArchSpec(
        widths=(64, 128, 256, 256, 128),
        kernels=(5, 5, 3, 3, 3),
        strides=(1, 1, 1, 1, 1),
        paddings=(2, 2, 1, 1, 1),
        hidden=(512, 512),
        input_size=32,
        num_classes=10,
        lrn=True,
    ),
}


@dataclass(frozen=True)
class _Conv:
    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int
    lrn: bool
    pools: int  # max-pools after this layer (more than one when the layers after it were dropped)


def _conv_plan(
    spec: ArchSpec, in_channels: int, groups: int, lrn: bool, drop_layers: Sequence[str]
) -> list[_Conv]:
    plan: list[_Conv] = []
    channels = in_channels
    pending_pools = 0
    for i, name in enumerate(CONV_NAMES):
        pools = 1 if name in POOLED_LAYERS else 0
        if name in drop_layers:
            pending_pools += pools
            continue
        if pending_pools:  # a dropped layer's pool moves to the layer before it
            plan[-1] = dataclasses.replace(plan[-1], pools=plan[-1].pools + pending_pools)
            pending_pools = 0
        g = groups if name in GROUPED_LAYERS else 1
        out = spec.widths[i]
        if channels % g or out % g:
            raise AlexNetError(f"{name}: {channels} → {out} channels do not split into {g} groups")
        plan.append(
            _Conv(
                name,
                channels,
                out,
                spec.kernels[i],
                spec.strides[i],
                spec.paddings[i],
                g,
                lrn and name in LRN_LAYERS,
                pools,
            )
        )
        channels = out
    if pending_pools:
        plan[-1] = dataclasses.replace(plan[-1], pools=plan[-1].pools + pending_pools)
    return plan


class AlexNet(nn.Module):
    """AlexNet and its variants (Krizhevsky et al. 2012, §3).

    ``arch`` picks the layer table (``paper``, ``torchvision``, ``d2l``, ``cifar10``); every other
    argument is a switch that overrides it (``None`` keeps the table's value):

    - ``activation``: ``relu`` (§3.1) or ``tanh``, ``sigmoid``, …
    - ``lrn``: local response normalisation after the ReLU of conv1 and conv2 (§3.3).
    - ``lrn_position``: ``before-pool`` (§3.4) or ``after-pool`` (cuda-convnet's CIFAR-10 nets).
    - ``pool``: ``overlapping`` 3/2 (§3.4) or ``non-overlapping`` 2/2.
    - ``groups``: 2 splits conv2/conv4/conv5 into the two GPU towers of §3.2 (and LRN per tower).
    - ``dropout``: the drop probability on fc6 and fc7 (§4.2).
    - ``drop_layers``: any of conv3/conv4/conv5 removed (§7); the next layer reads what is left.
    - ``widths``: output channels of conv1..conv5.
    - ``init``: ``paper`` (weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7; §5),
      ``caffe`` (bvlc_alexnet: biases 0.1 there, fc6/fc7 weights N(0, 0.005)) or ``torch``
      (PyTorch's default initialisation) or ``kaiming`` (He normal, std √(2/fan_in), biases 0) or
      ``xavier`` (Glorot uniform weights, torch's default biases: the d2l book's).
    - ``input_size``: the input side the classifier is sized for (227 for the paper).
    """

    def __init__(
        self,
        arch: str = "paper",
        *,
        num_classes: int | None = None,
        in_channels: int | None = None,
        activation: str = "relu",
        lrn: bool | None = None,
        lrn_position: str | None = None,
        pool: str = "overlapping",
        groups: int | None = None,
        dropout: float = 0.5,
        drop_layers: Sequence[str] = (),
        widths: Sequence[int] | None = None,
        init: str | None = None,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise AlexNetError(f"unknown AlexNet arch {arch!r}; choose one of {', '.join(ARCHS)}")
        spec = ARCHS[arch]
        if widths is not None:
            check_switch("widths", tuple(widths))
            spec = dataclasses.replace(spec, widths=tuple(int(w) for w in widths))
        num_classes = spec.num_classes if num_classes is None else num_classes
        in_channels = spec.in_channels if in_channels is None else in_channels
        groups = spec.groups if groups is None else groups
        lrn = spec.lrn if lrn is None else lrn
        lrn_position = spec.lrn_position if lrn_position is None else lrn_position
        init = spec.init if init is None else init
        input_size = spec.input_size if input_size is None else input_size
        _check_positive(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        check_switch("groups", groups)
        if pool not in POOLS:
            raise AlexNetError(
                f"unknown pool {pool!r}; choose overlapping (3/2, §3.4) or non-overlapping (2/2)"
            )
        check_switch("dropout", dropout)
        check_switch("drop_layers", tuple(drop_layers))
        if init not in INITS:
            raise AlexNetError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")

        self.arch, self.num_classes, self.in_channels, self.input_size = (
            arch,
            num_classes,
            in_channels,
            input_size,
        )
        self.pool_kernel, self.pool_stride = POOLS[pool]
        self.lrn_position = lrn_position
        self._plan = _conv_plan(spec, in_channels, groups, lrn, tuple(drop_layers))
        self._layer_paths: dict[str, str] = {}  # paper name (conv1, fc6, …) → module path

        layers: list[nn.Module] = []
        for conv in self._plan:
            self._layer_paths[conv.name] = f"features.{len(layers)}"
            layers.append(
                nn.Conv2d(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel,
                    conv.stride,
                    conv.padding,
                    groups=conv.groups,
                )
            )
            pools = [MaxPool2d(self.pool_kernel, self.pool_stride) for _ in range(conv.pools)]
            # §3.2: each tower normalises its own kernels, so LRN windows stay inside a group.
            norm = LocalResponseNorm(
                LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K, groups=groups, channels=conv.out_channels
            )
            layers.extend(
                with_lrn(make_activation(activation), pools, norm if conv.lrn else None, lrn_position)
            )
        self.features = Features(*layers)  # ReLU → LRN in one call (features.py)

        self.adaptive_pool = spec.adaptive_pool
        self.avgpool = nn.AdaptiveAvgPool2d(spec.adaptive_pool) if spec.adaptive_pool else nn.Identity()
        side = spec.adaptive_pool or self._feature_side(input_size)
        self.feature_shape = (self._plan[-1].out_channels, side, side)
        flat = self._plan[-1].out_channels * side * side

        head: list[nn.Module] = []
        widths_fc = (flat, *spec.hidden)
        for name, fan_in, fan_out in zip(FC_NAMES[:2], widths_fc[:2], widths_fc[1:3], strict=True):
            if spec.dropout_before_fc:
                head.append(Dropout(dropout))
            self._layer_paths[name] = f"classifier.{len(head)}"
            head.append(nn.Linear(fan_in, fan_out))
            head.append(make_activation(activation))
            if not spec.dropout_before_fc:
                head.append(Dropout(dropout))  # §4.2: dropout on the outputs of fc6 and fc7
        self._layer_paths["fc8"] = f"classifier.{len(head)}"
        head.append(nn.Linear(spec.hidden[1], num_classes))
        self.classifier = nn.Sequential(*head)
        self._checked_sizes: set[tuple[int, int]] = set()
        initialize(self, init)

    def layer(self, name: str) -> nn.Module:
        """The module of a paper layer by name (``conv1`` … ``fc8``)."""
        if name not in self._layer_paths:
            raise AlexNetError(f"this model has no layer {name!r}; it has {', '.join(self._layer_paths)}")
        return self.get_submodule(self._layer_paths[name])

    def layer_names(self) -> dict[str, str]:
        """Module path → paper layer name, for the layers with weights."""
        return {path: name for name, path in self._layer_paths.items()}

    def _feature_side(self, side: int, height: int | None = None) -> int:
        """Walk the conv/pool arithmetic for a side×side input; raise naming the first layer it fails."""
        shown = f"{height or side}×{side}"
        for conv in self._plan:
            if side + 2 * conv.padding < conv.kernel:
                raise AlexNetError(
                    f"{conv.name} needs at least {conv.kernel - 2 * conv.padding} pixels per side "
                    f"but gets {side} (input {shown}); use a larger input"
                )
            side = (side + 2 * conv.padding - conv.kernel) // conv.stride + 1
            for _ in range(conv.pools):
                if side < self.pool_kernel:
                    raise AlexNetError(
                        f"the max-pool after {conv.name} needs at least {self.pool_kernel} pixels "
                        f"per side but gets {side} (input {shown}); use a larger input"
                    )
                side = (side - self.pool_kernel) // self.pool_stride + 1
        return side

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise AlexNetError(
                f"{self.arch} expects input [N, {self.in_channels}, H, W], got {list(x.shape)}"
            )
        hw = (int(x.shape[2]), int(x.shape[3]))
        if hw in self._checked_sizes:
            return
        sides = [self._feature_side(s, hw[0]) for s in hw]
        if self.adaptive_pool is None and tuple(sides) != self.feature_shape[1:]:
            c, s, _ = self.feature_shape
            raise AlexNetError(
                f"fc6 expects {c}×{s}×{s} features but a {hw[0]}×{hw[1]} input gives "
                f"{c}×{sides[0]}×{sides[1]}; use {self.input_size}×{self.input_size} input "
                f"(or build the model with input_size={hw[0]})"
            )
        self._checked_sizes.add(hw)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.compiler.is_compiling():
            self._check_input(x)
        x = self.features(x)
        if tuple(x.shape[-2:]) != self.feature_shape[1:]:  # torchvision's AdaptiveAvgPool2d(6); at 224
            x = self.avgpool(x)  # it is the identity, skipped (its CUDA backward is not deterministic)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise AlexNetError(f"{name} must be a positive integer, got {value}")


@torch.no_grad()
def initialize(model: AlexNet, scheme: str) -> None:
    """Re-initialise: ``paper`` (§5), ``caffe`` (bvlc_alexnet), ``kaiming`` (He), ``xavier`` (d2l) or
    ``torch`` (as built)."""
    if scheme == "torch":
        return
    if scheme == "xavier":  # d2l's train_ch6: Glorot uniform weights, biases left at torch's default
        for path in model.layer_names():
            nn.init.xavier_uniform_(model.get_submodule(path).weight)
        return
    if scheme == "kaiming":  # He et al. 2015: std √(2/fan_in) keeps the signal's scale through ReLU layers
        for path in model.layer_names():
            module = model.get_submodule(path)
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
        return
    bias_one = {"conv2", "conv4", "conv5", "fc6", "fc7"}  # §5: biases 1 here, "to accelerate early learning"
    for path, name in model.layer_names().items():
        module = model.get_submodule(path)
        std = 0.005 if scheme == "caffe" and name in ("fc6", "fc7") else 0.01
        nn.init.normal_(module.weight, 0.0, std)
        bias = (1.0 if scheme == "paper" else 0.1) if name in bias_one else 0.0
        nn.init.constant_(module.bias, bias)
