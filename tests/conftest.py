import pathlib

import pytest
import torch

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
CIFAR = SHARED / "cifar10-jpeg"
IMAGENET_SAMPLE = SHARED / "imagenet-sample"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def require(path: pathlib.Path) -> pathlib.Path:
    if not path.is_dir():
        pytest.skip(f"{path} is missing (the shared data sets live in ../shared/datasets beside the repo)")
    return path
