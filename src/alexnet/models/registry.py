"""``build_model(name, **switches)``: every model of the project by name."""

from __future__ import annotations

import inspect
from pathlib import Path

from torch import nn

from ..errors import AlexNetError
from ..weights import (
    check_state_fits,
    pretrained_state,
    read_safetensors,
    read_state_file,
    torchvision_weights,
)
from .alexnet import AlexNet
from .small import Figure1Net

MODEL_DESCRIPTIONS = {
    "paper": "the 2012 network exactly: 227 input, two towers (groups=2), LRN, 3/2 pools (§3.5)",
    "torchvision": "torchvision.models.alexnet: same layers and parameter names, loads its weights",
    "d2l": "Dive into Deep Learning's AlexNet: 1 input channel, 224 input, 10 classes",
    "cifar10": "AlexNet scaled to 32×32 CIFAR-10: five convs, LRN, overlapping pools, dropout",
    "figure1": "the four-layer CIFAR-10 net of Fig. 1 (ReLU vs tanh)",
}


def list_models() -> list[str]:
    """The project's own model names (``build_model`` also takes torchvision's classification models)."""
    return list(MODEL_DESCRIPTIONS)


def torchvision_classifiers() -> list[str]:
    """torchvision's image classification models by name (resnet18, vgg11, googlenet, …)."""
    import torchvision.models  # here, not at the top: it takes ~2 s, and most commands never need it

    return torchvision.models.list_models(module=torchvision.models)


def is_torchvision_classifier(name: str) -> bool:
    return name not in MODEL_DESCRIPTIONS and name in torchvision_classifiers()


def build_torchvision_classifier(name: str, *, num_classes: int = 1000, in_channels: int = 3, **switches):
    """torchvision's own definition of ``name``, from scratch (no downloaded weights).

    Auxiliary heads (GoogLeNet, Inception v3) are switched off: the model returns one tensor of
    logits, trained with the one loss; torchvision's reference scripts train these two the same way.
    """
    import torchvision.models  # see torchvision_classifiers

    switches.pop("input_size", None)  # torchvision's classifiers take any input size they can pool
    if switches:
        raise AlexNetError(
            f"torchvision's {name} takes no switch {', '.join(sorted(switches))}; "
            "the switches are for the project's own models"
        )
    if in_channels != 3:
        raise AlexNetError(f"torchvision's {name} takes RGB input, not {in_channels} channel(s)")
    extra = {}
    if name in ("googlenet", "inception_v3"):
        extra = {"aux_logits": False, "init_weights": True}
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **extra)
    # what checkpoints record and check on load, as the project's own models carry them
    model.arch, model.num_classes, model.in_channels = name, num_classes, in_channels
    return model


def build_model(name: str, *, weights: str | Path | None = None, **switches) -> nn.Module:
    """Build a model by name with switches (see :class:`AlexNet` and :class:`Figure1Net`).

    ``weights`` loads weights strictly, every tensor with its exact shape: torchvision's published
    ones by name (``"DEFAULT"`` or ``"IMAGENET1K_V1"``, for ``build_model("torchvision")``, through
    torchvision's weights API and cache), a state_dict file (e.g. torchvision's
    ``alexnet-owt-7be5be79.pth``, loaded with ``weights_only=True``), or an ``alexnet export
    --format safetensors`` file, which also records how its model was built.
    """
    if name not in MODEL_DESCRIPTIONS:
        if weights is None and is_torchvision_classifier(name):
            return build_torchvision_classifier(name, **switches)
        raise AlexNetError(
            f"unknown model {name!r}; choose one of {', '.join(list_models())} or a torchvision "
            "classification model (resnet18, vgg11, googlenet, …)"
        )
    factory = Figure1Net if name == "figure1" else AlexNet
    accepted = set(inspect.signature(factory).parameters) - {"arch"}
    unknown = sorted(set(switches) - accepted)
    if unknown:
        raise AlexNetError(
            f"model {name!r} takes no switch {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}"
        )
    named = (
        torchvision_weights(str(weights)) if isinstance(weights, str) and not Path(weights).exists() else None
    )
    if named is not None:
        if name != "torchvision":
            raise AlexNetError(f"weights={weights!r} are torchvision's, for build_model('torchvision'); "
                               f"{name!r} has no published weights")  # fmt: skip
        model = AlexNet(name, **switches)
        load_state(model, pretrained_state(named), f"torchvision's {named}")
        return model
    switches = {**_exported_switches(weights, name), **switches}  # an export knows how it was built
    model = factory(**switches) if name == "figure1" else AlexNet(name, **switches)
    if weights is not None:
        load_weights(model, weights)
    return model


def _exported_switches(weights, name: str) -> dict:
    """The switches recorded in an ``alexnet export --format safetensors`` file (else none)."""
    if weights is None or Path(weights).suffix != ".safetensors" or not Path(weights).is_file():
        return {}
    _, _, meta = read_safetensors(Path(weights), tensors=False)
    build = dict(meta.get("build") or {})
    if build and build.pop("name", name) != name:
        raise AlexNetError(f"{weights} holds a {meta['build']['name']!r} model, not {name!r}")
    return build


def load_state(model: nn.Module, state: dict, source: str | Path) -> None:
    """Load ``state`` into ``model`` strictly, naming every tensor that differs when it does not fit."""
    check_state_fits(model, state, source)
    model.load_state_dict(state)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict file into ``model`` strictly; bare dicts, {"state_dict"|"model": …} and our
    safetensors exports all work."""
    load_state(model, read_state_file(path), path)
