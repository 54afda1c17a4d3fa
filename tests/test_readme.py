"""The README's Python snippets run as written, in a folder that holds what they name."""

import re
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import slice_store, train_small

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP_MARK = "# needs:"  # a line that needs a file no test can have says so, and is left out


def snippets() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return ["\n".join(line for line in block.splitlines() if SKIP_MARK not in line) for block in blocks]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    store = slice_store(root, {"train": 20, "test": 3}, store=root / "stores" / "cifar10")
    train_small(store, root / "runs" / "quick", epochs=1)
    (root / "photo.jpg").write_bytes(next((root / "src" / "test" / "cat").iterdir()).read_bytes())
    cache = root / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), cache / "alexnet-owt-7be5be79.pth")
    return root


def test_there_are_snippets():
    assert len(snippets()) >= 3


@pytest.mark.parametrize("index", range(len(snippets())))
def test_readme_snippet_runs_as_written(folder, monkeypatch, index):
    monkeypatch.chdir(folder)
    monkeypatch.setenv("TORCH_HOME", str(folder / "torch"))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # offline, as here
    exec(compile(snippets()[index], f"README.md python block {index + 1}", "exec"), {})
