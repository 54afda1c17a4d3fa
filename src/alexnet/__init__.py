"""alexnet: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) as published, its variants, and its tools."""

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

__version__ = "0.1.0"

__all__ = [
    "AlexNet",
    "AlexNetError",
    "Figure1Net",
    "LocalResponseNorm",
    "TwoTowerAlexNet",
    "__version__",
    "build_model",
    "list_models",
    "summarize",
]
