"""alexnet: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) as published, its variants, and its tools."""

from ._version import __version__
from .config import RunConfig, preset, preset_names
from .errors import AlexNetError
from .models import (
    AlexNet,
    Figure1Net,
    LocalResponseNorm,
    TwoTowerAlexNet,
    build_model,
    list_models,
    summarize,
)

# isort: off
from .train import fit  # before .evaluate, which imports train.distributed
from .evaluate import evaluate_checkpoint
# isort: on

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
    "preset",
    "preset_names",
    "summarize",
]
