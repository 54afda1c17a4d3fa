"""Data: sources, the prepared store, batched device-side transforms, and the loader."""

from .loader import StoreLoader
from .open import open_data
from .prepare import PrepareSummary, prepare, prepare_dataset
from .sources import TORCHVISION_SETS, resolve_source
from .store import Split, Store, is_store, open_store
from .transforms import (
    IMAGENET_EIGVALS,
    IMAGENET_EIGVECS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    center_crop,
    crop,
    lighting,
    sample_crops,
    ten_crop,
)

__all__ = [
    "IMAGENET_EIGVALS",
    "IMAGENET_EIGVECS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TORCHVISION_SETS",
    "EvalTransform",
    "PrepareSummary",
    "Split",
    "Store",
    "StoreLoader",
    "TrainTransform",
    "center_crop",
    "crop",
    "is_store",
    "lighting",
    "open_data",
    "open_store",
    "prepare",
    "prepare_dataset",
    "resolve_source",
    "sample_crops",
    "ten_crop",
]
