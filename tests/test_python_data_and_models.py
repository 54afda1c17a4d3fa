"""Your own data and model in Python: prepare_dataset on Datasets, fit(config, model=module)."""

import json

import numpy as np
import pytest
import torch
import torchvision
from conftest import CIFAR, require
from torch import nn

from alexnet import AlexNetError, fit, load_model, prepare_dataset, resolve, resume_config
from alexnet.checkpoint import load_checkpoint
from alexnet.data import open_store


def test_a_store_from_fakedata_holds_the_datasets_images_and_labels(tmp_path):
    data = torchvision.datasets.FakeData(size=24, image_size=(3, 20, 20), num_classes=3)
    summary = prepare_dataset({"train": data, "test": data}, tmp_path / "store", classes=["a", "b", "c"],
                              progress=False)  # fmt: skip
    store = open_store(tmp_path / "store")
    assert (
        summary.counts == {"train": 24, "test": 24} and store.size == 20 and store.classes == ["a", "b", "c"]
    )
    for i in range(len(data)):
        image, label = data[i]
        assert np.array_equal(store.split("train").images[i], np.asarray(image))
        assert store.split("train").labels[i] == label
    assert store.mean.shape == (20, 20, 3)  # the training split's statistics, as every store has


def test_a_store_from_a_subset_of_the_shared_cifar10(tmp_path):
    folder = torchvision.datasets.ImageFolder(require(CIFAR) / "train")
    subset = torch.utils.data.Subset(folder, list(range(0, 50_000, 2_500)))  # two images of each class
    prepare_dataset(subset, tmp_path / "store", progress=False)  # the classes of the Subset's ImageFolder
    store = open_store(tmp_path / "store")
    assert store.classes == folder.classes and len(store.split("train")) == 20
    for row, index in enumerate(subset.indices):
        path, label = folder.samples[index]
        assert np.array_equal(store.split("train").images[row], np.asarray(folder.loader(path)))
        assert store.split("train").labels[row] == label


def test_tensors_grey_images_and_unusable_items(tmp_path):
    class Items(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.grey = [torch.randint(0, 256, (1, 12, 12), dtype=torch.uint8, generator=g) for _ in range(6)]

        def __len__(self):
            return 8

        def __getitem__(self, i):
            if i == 6:
                return torch.zeros(1, 12, 12), 0  # float pixels
            if i == 7:
                return self.grey[0], 5  # no such class
            return self.grey[i], i % 2

    data = Items()
    summary = prepare_dataset(data, tmp_path / "store", classes=["even", "odd"], progress=False)
    store = open_store(tmp_path / "store")
    assert store.channels == 1 and summary.counts == {"train": 6} and summary.skipped == {"train": 2}
    assert np.array_equal(
        np.asarray(store.split("train").images), torch.stack(data.grey).permute(0, 2, 3, 1).numpy()
    )
    rows = [
        json.loads(line) for line in (tmp_path / "store" / "train" / "skipped.jsonl").read_text().splitlines()
    ]
    assert rows == [{"path": "item 6", "reason": "a torch.float32 tensor; give uint8 pixels (0–255)"},
                    {"path": "item 7", "reason": "label 5 outside 0..1"}]  # fmt: skip
    with pytest.raises(AlexNetError, match=r"prepare_dataset needs classes=\[...\]"):
        prepare_dataset(data, tmp_path / "other", progress=False)


class TinyNet(nn.Module):
    """A model of a user's own: two convolutions and a linear layer, for 28×28 RGB crops."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.classifier = nn.Linear(32, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def tiny_config(out, epochs):
    sets = {"data.source": "cifar10-sample", "train.out": str(out), "train.epochs": str(epochs),
            "data.limit_train": "800", "train.batch_size": "32", "train.precision": "fp32",
            "train.deterministic": "true", "data.ten_crop": "false", "optim.lr": "0.05"}  # fmt: skip
    return resolve("cifar10", sets=sets)


def test_fit_trains_and_resumes_a_module_of_your_own_bit_exactly(tmp_path):
    torch.manual_seed(0)
    whole = fit(tiny_config(tmp_path / "whole", 3), model=TinyNet(), progress=False)
    assert whole.history[-1]["train_loss"] < whole.history[0]["train_loss"] - 0.05  # it learns
    torch.manual_seed(0)
    fit(tiny_config(tmp_path / "cut", 1), model=TinyNet(), progress=False)
    fit(resume_config(tmp_path / "cut", {"train.epochs": "3"}), resume=True, model=TinyNet(), progress=False)
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert a["arch"]["name"] == "custom:TinyNet" and a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    timing = ("seconds", "images_per_second")
    assert [{k: v for k, v in r.items() if k not in timing} for r in a["history"]] == [
        {k: v for k, v in r.items() if k not in timing} for r in b["history"]
    ]
    with pytest.raises(AlexNetError, match=r"module of its own \(TinyNet\); load it in Python"):
        load_model(tmp_path / "whole")
    loaded = load_model(tmp_path / "whole", model=TinyNet(), device="cpu")
    assert loaded.classes[0] == "airplane" and loaded.preprocessing.crop == 28
    with pytest.raises(AlexNetError, match=r"holds a 'custom:TinyNet' model, not 'custom:Linear'"):
        fit(resume_config(tmp_path / "cut", {"train.epochs": "4"}), resume=True, model=nn.Linear(3, 10))
