"""alexnet: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) as published, its variants, and its tools."""

from ._version import __version__
from .analysis import load_model
from .checkpoint import load_checkpoint, save_checkpoint
from .config import RunConfig, preset, preset_names
from .errors import AlexNetError
from .evaluate import evaluate_checkpoint
from .models import (
    AlexNet,
    Figure1Net,
    LocalResponseNorm,
    TwoTowerAlexNet,
    build_model,
    list_models,
    summarize,
)
from .train import fit

__all__ = [
    "AlexNet",
    "AlexNetError",
    "Figure1Net",
    "LocalResponseNorm",
    "RunConfig",
    "TwoTowerAlexNet",
    "__version__",
    "build_model",
    "evaluate_checkpoint",
    "fit",
    "list_models",
    "load_checkpoint",
    "load_model",
    "preset",
    "preset_names",
    "save_checkpoint",
    "summarize",
]
