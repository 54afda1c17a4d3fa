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
    """An ImageFolder of the first N CIFAR-10 images per class of each split (at most 300 train and
    50 test): the JPEG files of the package's cifar10-sample, which are those of the shared
    cifar10-jpeg folder byte for byte, under the same names (0000.jpg, …)."""
    from alexnet.data.samples import sample_store_path
    from alexnet.data.store import open_store

    store = open_store(sample_store_path("cifar10-sample"))
    for split, n in per_class.items():
        images = store.split(split).images  # JpegImages: the files' bytes, by row
        labels = store.split(split).labels
        for label, name in enumerate(store.classes):
            rows = [int(r) for r in (labels == label).nonzero()[0]]
            if n > len(rows):
                raise ValueError(f"the sample has {len(rows)} {split} images of {name}, not {n}")
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, row in enumerate(rows[:n]):
                (folder / f"{i:04d}.jpg").write_bytes(bytes(images.encoded([row])[0].numpy()))
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


def count_calls(monkeypatch, cls, names=("forward", "backward")) -> dict[str, int]:
    """Counts calls of ``cls``'s methods ``names`` (a native kernel's entry points), which still run."""
    calls = dict.fromkeys(names, 0)
    for name in names:
        original = getattr(cls, name)

        def counted(self, *args, _original=original, _name=name):
            calls[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(cls, name, counted)
    return calls


def grads(fn, x, g):
    """fn(x) and ∂⟨fn(x), g⟩/∂x, for a fresh leaf copy of x (the output detached)."""
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    (gx,) = torch.autograd.grad(out, x, g)
    return out.detach(), gx
