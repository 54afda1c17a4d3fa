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


def cifar_slice(root: pathlib.Path, per_class: dict[str, int]) -> pathlib.Path:
    """An ImageFolder of symlinks to the first N images per class of each CIFAR-10 split."""
    import os

    cifar = require(CIFAR)
    for split, n in per_class.items():
        for cls in sorted((cifar / split).iterdir()):
            (root / split / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]:
                os.symlink(f, root / split / cls.name / f.name)
    return root
