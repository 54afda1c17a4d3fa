"""The experiments by name: the paper's claims (studies.py) and the reproductions (reproductions.py)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import AlexNetError
from .reproductions import compare, sweep
from .spec import Experiment
from .studies import ablate, init, relu_tanh, towers
from .transfer import transfer

# name → (builder, the options it takes, the line of --list)
CATALOGUE: dict[str, tuple[Callable[..., Experiment], tuple[str, ...], str]] = {
    "relu-tanh": (
        relu_tanh,
        (),
        "Fig. 1: epochs to 25 % training error, ReLU vs tanh (figure1 net, CIFAR-10)",
    ),
    "ablate": (ablate, (), "§3–§7: each design choice removed alone from the cifar10 recipe, over seeds"),
    "towers": (towers, (), "§6.1, Fig. 3: one tower's conv1 colour-agnostic, the other colour-specific?"),
    "init": (init, (), "§5: the paper's N(0, 0.01) init against caffe, torch, kaiming; signal, curves"),
    "sweep": (
        sweep,
        ("param", "values", "scale_lr"),
        "the small-data study: --param epochs|batch_size|lr --values ...; curves per value",
    ),
    "compare": (
        compare,
        ("models", "input_size"),
        "--models alexnet,googlenet,vgg11,resnet18: torchvision networks from scratch, one recipe",
    ),
    "transfer": (
        transfer,
        ("per_class", "source_epochs"),
        "fine-tuned from a model of the other classes against scratch, --per-class N images (CIFAR-10)",
    ),
}


def describe() -> list[str]:
    """One line per experiment for ``alexnet experiment --list``."""
    width = max(map(len, CATALOGUE))
    return [f"{name:<{width}}  {line}" for name, (_, _, line) in CATALOGUE.items()]


def experiment(name: str, **options) -> Experiment:
    """The experiment ``name`` built with its options (None values are left out)."""
    if name not in CATALOGUE:
        raise AlexNetError(f"unknown experiment {name!r}; choose one of {', '.join(CATALOGUE)}")
    build, takes, _ = CATALOGUE[name]
    given = {k: v for k, v in options.items() if v not in (None, False)}
    stray = sorted(set(given) - set(takes))
    if stray:
        flags = ", ".join("--" + k.replace("_", "-") for k in stray)
        users = sorted(n for n, (_, t, _) in CATALOGUE.items() if set(stray) & set(t))
        raise AlexNetError(f"{flags} is for {' and '.join(users)}, not {name}")
    return build(**given)
