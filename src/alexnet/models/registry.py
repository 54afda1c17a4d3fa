"""``build_model(name, **switches)``: every model of the project by name."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from ..errors import AlexNetError
from ..fileio import first_line
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
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def is_torchvision_classifier(name: str) -> bool:
    return name not in MODEL_DESCRIPTIONS and name in torchvision_classifiers()


def build_torchvision_classifier(name: str, *, num_classes: int = 1000, in_channels: int = 3, **switches):
    """torchvision's own definition of ``name``, from scratch (no downloaded weights).

    Auxiliary heads (GoogLeNet, Inception v3) are switched off: the model returns one tensor of
    logits, trained with the one loss; torchvision's reference scripts train these two the same way.
    """
    import torchvision.models

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

    ``weights`` loads a state_dict file (e.g. torchvision's ``alexnet-owt-7be5be79.pth``) with
    ``weights_only=True`` and ``strict=True``.
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
    if isinstance(weights, str) and weights in PRETRAINED:
        if name != "torchvision":
            raise AlexNetError(f"weights={weights!r} are torchvision's, for build_model('torchvision'); "
                               f"{name!r} has no published weights")  # fmt: skip
        model = AlexNet(name, **switches)
        state = pretrained_state(weights)
        check_state_fits(model, state, f"torchvision's {weights} weights")
        model.load_state_dict(state)
        return model
    exported = _exported_switches(weights)
    switches = {**exported, **switches}  # a safetensors export knows how its model was built
    model = factory(**switches) if name == "figure1" else AlexNet(name, **switches)
    if weights is not None:
        load_weights(model, weights)
    return model


# torchvision's names for its AlexNet weights (the only published ones: the "one weird trick" net)
PRETRAINED = ("DEFAULT", "IMAGENET1K_V1")


def pretrained_state(name: str = "DEFAULT") -> dict:
    """torchvision's AlexNet weights through its own API: downloaded once into $TORCH_HOME's hub
    cache (default ~/.cache/torch/hub/checkpoints), loaded from there afterwards, also offline."""
    import torch.hub
    from torchvision.models import AlexNet_Weights

    weights = AlexNet_Weights[name] if name != "DEFAULT" else AlexNet_Weights.DEFAULT
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False, weights_only=True)
    except Exception as exc:  # offline: URLError; a damaged cached file: a load error
        raise AlexNetError(
            f"cannot get torchvision's AlexNet weights ({first_line(exc)[:120]}); without a network, "
            f"put {Path(weights.url).name} (from {weights.url}) at {file}"
        ) from None


def _exported_switches(weights) -> dict:
    """The switches recorded in an ``alexnet export --format safetensors`` file (else none)."""
    if weights is None or Path(weights).suffix != ".safetensors" or not Path(weights).is_file():
        return {}
    # imported here: analysis and config import the models package, which must load first
    from ..analysis.export import read_safetensors

    _, meta = read_safetensors(Path(weights), tensors=False)
    if not meta:
        return {}
    from ..config import from_dict

    config = from_dict(meta["config"])
    side = config.data.resize or config.data.crop
    arch = {
        "num_classes": len(meta["classes"]),
        "in_channels": meta["arch"]["in_channels"],
        "input_size": side,
    }
    return {**arch, **config.model.switches()}


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict file into ``model`` strictly; bare dicts and {"state_dict"|"model": …} both work."""
    path = Path(path)
    if not path.is_file():
        raise AlexNetError(f"weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise AlexNetError(f"weights file {path} is empty (0 bytes); download or copy it again")
    if path.suffix == ".safetensors":
        from ..analysis.export import read_safetensors

        state, _ = read_safetensors(path)
        check_state_fits(model, state, path)
        model.load_state_dict(state)
        return
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, … for bad files
        raise AlexNetError(
            f"{path} is not a loadable weights file ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise AlexNetError(f"{path} holds a {type(state).__name__}, not a state_dict")
    check_state_fits(model, state, path)
    model.load_state_dict(state)


def check_state_fits(model: nn.Module, state: dict, source: str | Path) -> None:
    """Raise, naming the first difference, unless ``state`` has exactly ``model``'s keys and shapes."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise AlexNetError(
            f"{source} does not fit this model: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    for key, value in state.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise AlexNetError(
                f"{source}: {key} has shape {tuple(value.shape)} but the model expects "
                f"{tuple(own[key].shape)} (another architecture or number of classes?)"
            )
