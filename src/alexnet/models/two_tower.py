"""The paper's two-GPU AlexNet (§3.2): two towers on two devices that talk only where the paper says.

Each tower holds half the kernels of every layer. Activations cross between the devices only into
conv3 (which reads both towers' conv2 maps) and into the fully connected layers fc6, fc7 and fc8.
On one device this network is exactly ``AlexNet("paper")`` with ``groups=2``: ``from_grouped`` and
``to_grouped`` move weights between the two forms, and ``state_dict``/``load_state_dict`` speak
the grouped form's names, so a two-tower run's checkpoint is an ordinary paper-net checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import AlexNetError
from .alexnet import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, AlexNet
from .dropout import Dropout
from .features import relu_lrn
from .lrn import LocalResponseNorm
from .pool import MaxPool2d

PAPER_WIDTHS = (96, 256, 384, 384, 256)
CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")
HIDDEN = 4096


class _Tower(nn.Module):
    """Half of every layer (§3.2): 48-128-192-192-128 kernels, 2048 + 2048 hidden units."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 48, 11, stride=4)
        self.conv2 = nn.Conv2d(48, 128, 5, padding=2)
        self.conv3 = nn.Conv2d(256, 192, 3, padding=1)  # reads both towers
        self.conv4 = nn.Conv2d(192, 192, 3, padding=1)
        self.conv5 = nn.Conv2d(192, 128, 3, padding=1)
        self.fc6 = nn.Linear(2 * 128 * 6 * 6, HIDDEN // 2)  # reads both towers
        self.fc7 = nn.Linear(HIDDEN, HIDDEN // 2)  # reads both towers
        self.lrn1 = LocalResponseNorm(LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K, channels=48)
        self.lrn2 = LocalResponseNorm(LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K, channels=128)
        self.pool = MaxPool2d(3, 2)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = Dropout(dropout)

    def lower(self, x: Tensor) -> Tensor:
        x = self.pool(relu_lrn(self.relu, self.lrn1, self.conv1(x)))  # features.py: one LRN call
        return self.pool(relu_lrn(self.relu, self.lrn2, self.conv2(x)))

    def upper(self, both: Tensor) -> Tensor:
        x = self.relu(self.conv3(both))
        x = self.relu(self.conv4(x))
        return self.pool(self.relu(self.conv5(x))).flatten(1)


class TwoTowerAlexNet(nn.Module):
    """The paper network split over ``devices=(a, b)``; logits come back on device ``a``."""

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        dropout: float = 0.5,
        init: str = "paper",
        devices: Sequence[str | torch.device] = ("cpu", "cpu"),
    ) -> None:
        super().__init__()
        if len(devices) != 2:
            raise AlexNetError(f"TwoTowerAlexNet needs two devices, got {list(devices)}")
        self.devices = (torch.device(devices[0]), torch.device(devices[1]))
        # what checkpoints record and check, as for the grouped net this one converts to
        self.arch, self.num_classes, self.in_channels = "paper", num_classes, 3
        self.tower_a = _Tower(dropout)
        self.tower_b = _Tower(dropout)
        self.fc8 = nn.Linear(HIDDEN, num_classes)
        self.load_grouped(AlexNet("paper", num_classes=num_classes, dropout=dropout, init=init))
        self.place()

    def place(self) -> TwoTowerAlexNet:
        """Move tower a and fc8 to the first device and tower b to the second (done when built)."""
        self.tower_a.to(self.devices[0])
        self.fc8.to(self.devices[0])
        self.tower_b.to(self.devices[1])
        return self

    @classmethod
    def from_grouped(
        cls, model: AlexNet, devices: Sequence[str | torch.device] = ("cpu", "cpu")
    ) -> TwoTowerAlexNet:
        """The two-tower form of a grouped ``AlexNet("paper")`` (same weights, same function)."""
        dropout = next(m.p for m in model.classifier if isinstance(m, nn.Dropout))
        net = cls(model.num_classes, dropout=dropout, init="torch", devices=devices)
        net.load_grouped(model)
        return net

    def load_grouped(self, model: AlexNet) -> None:
        _check_grouped(model)
        a, b = self.tower_a, self.tower_b
        with torch.no_grad():
            for name in (*CONVS, "fc6", "fc7"):  # every split layer: first half of its outputs to tower a
                src = model.layer(name)
                half = src.weight.shape[0] // 2
                for tower, rows in ((a, slice(0, half)), (b, slice(half, None))):
                    getattr(tower, name).weight.copy_(src.weight[rows])
                    getattr(tower, name).bias.copy_(src.bias[rows])
            self.fc8.weight.copy_(model.layer("fc8").weight)
            self.fc8.bias.copy_(model.layer("fc8").bias)

    def to_grouped(self) -> AlexNet:
        """The one-device grouped ``AlexNet("paper")`` with these weights, on the CPU."""
        model = AlexNet("paper", num_classes=self.num_classes, dropout=self.tower_a.dropout.p, init="torch")
        with torch.no_grad():
            for name in (*CONVS, "fc6", "fc7"):
                dst = model.layer(name)
                halves = [getattr(t, name) for t in (self.tower_a, self.tower_b)]
                dst.weight.copy_(torch.cat([h.weight.detach().cpu() for h in halves]))
                dst.bias.copy_(torch.cat([h.bias.detach().cpu() for h in halves]))
            model.layer("fc8").weight.copy_(self.fc8.weight.cpu())
            model.layer("fc8").bias.copy_(self.fc8.bias.cpu())
        return model

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """The grouped ``AlexNet("paper")``'s state_dict (its parameter names, on the CPU)."""
        state = self.to_grouped().state_dict(prefix=prefix)
        if destination is None:
            return state
        destination.update(state)
        return destination

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a grouped ``AlexNet("paper")`` state_dict (what ``state_dict`` gives) into the towers."""
        grouped = AlexNet("paper", num_classes=self.num_classes, dropout=self.tower_a.dropout.p, init="torch")
        result = grouped.load_state_dict(state_dict, strict=strict)
        self.load_grouped(grouped)
        return result

    def forward(self, x: Tensor) -> Tensor:
        da, db = self.devices
        a, b = self.tower_a, self.tower_b
        ha = a.lower(x.to(da, non_blocking=True))
        hb = b.lower(x.to(db, non_blocking=True))
        # §3.2: conv3 takes all kernel maps of conv2, from both GPUs.
        ua = a.upper(torch.cat([ha, hb.to(da, non_blocking=True)], 1))
        ub = b.upper(torch.cat([ha.to(db, non_blocking=True), hb], 1))
        # The fully connected layers read both towers; dropout after fc6 and fc7 (§4.2).
        fa, fb = torch.cat([ua, ub.to(da)], 1), torch.cat([ua.to(db), ub], 1)
        fa, fb = a.dropout(a.relu(a.fc6(fa))), b.dropout(b.relu(b.fc6(fb)))
        fa, fb = torch.cat([fa, fb.to(da)], 1), torch.cat([fa.to(db), fb], 1)
        fa, fb = a.dropout(a.relu(a.fc7(fa))), b.dropout(b.relu(b.fc7(fb)))
        return self.fc8(torch.cat([fa, fb.to(da)], 1))


def _check_grouped(model: AlexNet) -> None:
    ok = (
        isinstance(model, AlexNet)
        and model.arch == "paper"
        and [model.layer(n).out_channels for n in CONVS] == list(PAPER_WIDTHS)
        and model.layer("conv2").groups == 2
        and model.layer("fc6").in_features == 256 * 6 * 6
        and isinstance(model.features[1], nn.ReLU)
        and sum(isinstance(m, LocalResponseNorm) for m in model.features) == 2
        and model.lrn_position == "before-pool"
        and model.pool_kernel == 3
    )
    if not ok:
        raise AlexNetError(
            "TwoTowerAlexNet converts only AlexNet('paper') with groups=2, the paper's widths, "
            "ReLU, LRN before the pools, overlapping pools and all five conv layers"
        )
