"""The README's Python snippets run as written, in a folder that holds what they name, and do what
the README says they do."""

import json
import re
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import cifar_slice, slice_store, train_small

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP_MARK = "# needs:"  # a line that needs a file no test can have says so, and is left out
CATEGORIES = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]


def snippets() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return ["\n".join(line for line in block.splitlines() if SKIP_MARK not in line) for block in blocks]


def check_models(ns, folder):
    assert ns["logits"].shape == (2, 1000)
    assert len(ns["predictions"]) == 1 and ns["skipped"] == []
    top = ns["predictions"][0].top
    assert len(top) == 3 and all(name in CATEGORIES for name, _ in top)
    assert ns["run"].classes[:2] == ["airplane", "automobile"] and len(ns["run"].classes) == 10
    assert not any(type(m).__name__ == "LocalResponseNorm" for m in ns["small"].modules())


def check_finetune_and_own_module(ns, folder):
    final = ns["result"].final
    assert (final["split"], final["count"]) == ("val", 4)  # the photo folder's val/: 2 × 2 photos
    tuned = json.loads((folder / "runs" / "tuned" / "run.json").read_text())
    assert tuned["weights"] == "DEFAULT" and tuned["classes"] == 2
    mine = json.loads((folder / "runs" / "mine" / "run.json").read_text())
    assert mine["model"] == "custom:Sequential" and mine["classes"] == 3


CHECKS = [check_models, check_finetune_and_own_module]  # one per snippet, in README order


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    store = slice_store(root, {"train": 20, "test": 3}, store=root / "stores" / "cifar10")
    train_small(store, root / "runs" / "quick", epochs=1)
    (root / "photo.jpg").write_bytes(next((root / "src" / "test" / "cat").iterdir()).read_bytes())
    photos = cifar_slice(root / "photos-src", {"train": 10})
    for name in ("cat", "dog"):  # my_photos/{train,val}/<class>: the transfer-learning tutorial's layout
        files = sorted((photos / "train" / name).iterdir())
        for split, part in (("train", files[:8]), ("val", files[8:])):
            (root / "my_photos" / split / name).mkdir(parents=True)
            for f in part:
                (root / "my_photos" / split / name / f.name).write_bytes(f.read_bytes())
    cache = root / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), cache / "alexnet-owt-7be5be79.pth")
    return root


def test_every_snippet_has_its_check():
    assert len(snippets()) == len(CHECKS)


@pytest.mark.parametrize("index", range(len(CHECKS)))
def test_readme_snippet_runs_as_written(folder, monkeypatch, index):
    monkeypatch.chdir(folder)
    monkeypatch.setenv("TORCH_HOME", str(folder / "torch"))
    monkeypatch.setenv("ALEXNET_CACHE", str(folder / "cache"))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # offline, as here
    namespace: dict = {}
    exec(compile(snippets()[index], f"README.md python block {index + 1}", "exec"), namespace)
    CHECKS[index](namespace, folder)
