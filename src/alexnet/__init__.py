"""alexnet: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) as published, its variants, and its tools."""

from ._version import __version__
from .checkpoint import load_checkpoint, save_checkpoint
from .config import RunConfig, preset, preset_names
from .data import prepare, prepare_dataset
from .errors import AlexNetError
from .evaluate import evaluate_checkpoint
from .loading import LoadedModel, load_model
from .loading import resolve_run as resolve
from .models import (
    AlexNet,
    Figure1Net,
    LocalResponseNorm,
    TwoTowerAlexNet,
    build_model,
    list_models,
    summarize,
)
from .train import fit, resume_config

__all__ = [
    "AlexNet",
    "AlexNetError",
    "Figure1Net",
    "LoadedModel",
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
    "prepare",
    "prepare_dataset",
    "preset",
    "preset_names",
    "resolve",
    "resume_config",
    "save_checkpoint",
    "summarize",
]
