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


def slice_store(
    root: pathlib.Path, per_class: dict[str, int], store: pathlib.Path | None = None, size: int | None = None
) -> pathlib.Path:
    """A prepared store of a CIFAR-10 slice (see ``cifar_slice``) at ``store`` (default root/store)."""
    from alexnet.data import prepare

    store = store or root / "store"
    cifar_slice(root / "src", per_class)
    prepare(root / "src", store, size=size, workers=1, progress=False)
    return store


def train_small(store: pathlib.Path, out: pathlib.Path, epochs: int = 2) -> pathlib.Path:
    """The cifar10 recipe (groups 2, 28 px crops) for a few epochs in fp32, centre-crop evaluation."""
    from alexnet.config import resolve
    from alexnet.train import fit

    sets = {"data.source": str(store), "train.out": str(out), "train.epochs": str(epochs),
            "train.batch_size": "32", "train.precision": "fp32", "data.ten_crop": "false"}  # fmt: skip
    fit(resolve("cifar10", sets=sets), progress=False)
    return out


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> pathlib.Path:
    """root/src (40 training and 5 test CIFAR-10 images per class), root/store, root/run (2 epochs)."""
    root = tmp_path_factory.mktemp("small_run")
    train_small(slice_store(root, {"train": 40, "test": 5}), root / "run")
    return root
