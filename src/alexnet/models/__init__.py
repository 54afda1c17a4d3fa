"""The models: AlexNet and its variants, fast LRN, the two-tower split, and the summary table."""

from .alexnet import ARCHS, AlexNet, ArchSpec, initialize, make_activation
from .lrn import LocalResponseNorm, local_response_norm
from .registry import MODEL_DESCRIPTIONS, build_model, list_models, load_weights
from .small import Figure1Net
from .summary import LayerRow, ModelSummary, summarize
from .two_tower import TwoTowerAlexNet

__all__ = [
    "ARCHS",
    "MODEL_DESCRIPTIONS",
    "AlexNet",
    "ArchSpec",
    "Figure1Net",
    "LayerRow",
    "LocalResponseNorm",
    "ModelSummary",
    "TwoTowerAlexNet",
    "build_model",
    "initialize",
    "list_models",
    "load_weights",
    "local_response_norm",
    "make_activation",
    "summarize",
]
