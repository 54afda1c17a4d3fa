"""Runs that used to go silently wrong: each is now an error (one line, exit 2, nothing written)
or a warning, and Ctrl-C or SIGTERM in the first epoch leaves a checkpoint to resume from."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from conftest import cifar_slice

from alexnet.checkpoint import load_checkpoint
from alexnet.cli import main
from alexnet.data import prepare


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))  # first-use stores go here


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_data_set_with_one_class_is_refused(tmp_path, capsys):
    src = cifar_slice(tmp_path / "all", {"train": 4})
    for folder in (src / "train").iterdir():
        if folder.name != "cat":
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()
    out = tmp_path / "run"
    assert main(["train", "--preset", "cifar10", "--data", str(src), "--out", str(out)]) == 2
    assert one_line(capsys).endswith(
        "has 1 class (cat); a classifier learns to tell classes apart: give data with at least two "
        "class folders"
    )
    assert not out.exists()


def test_a_refused_run_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "cifar10", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere does not exist" in one_line(capsys) and not out.exists()
    args = ["train", "--preset", "cifar10", "--data", "cifar10-sample", "--out", str(out)]
    assert main([*args, "--set", "data.crop=40"]) == 2  # found only once the data is open
    assert "data.crop 40 is larger than the store's 32×32 images" in one_line(capsys) and not out.exists()
    out.mkdir()  # a folder the user made stays, empty, as it was
    assert main([*args, "--set", "data.crop=40"]) == 2
    assert out.is_dir() and not list(out.iterdir())


def test_the_users_own_field_is_checked_before_the_rules_between_fields(capsys):
    assert main(["train", "--preset", "cifar10", "--epochs", "0", "--data", "cifar10-sample"]) == 2
    assert one_line(capsys) == "alexnet: error: train.epochs must be ≥ 1, got 0"


def test_without_a_preset_the_first_line_says_which_recipe_runs(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nowhere")]) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("alexnet: no --preset given: training with the paper recipe")


def test_small_crops_of_large_images_are_warned_about(tmp_path, capsys):
    store = tmp_path / "photos256"
    prepare(
        cifar_slice(tmp_path / "src", {"train": 4, "test": 1}), store, size=256, workers=1, progress=False
    )
    args = ["train", "--preset", "cifar10", "--data", str(store), "--out", str(tmp_path / "run"), "--epochs",
            "1", "--batch-size", "8", "--precision", "fp32", "--set", "data.ten_crop=false"]  # fmt: skip
    assert main(args) == 0
    assert (
        "warning: the cifar10 recipe trains on 28×28 crops of 256×256 images (1 % of each); for photos use "
        "--preset finetune or torchvision, or prepare the data at --size 32 for this recipe"
    ) in capsys.readouterr().err


def train_cmd(out, *extra):
    sets = ["data.limit_train=480", "model.widths=16,32,32,32,32", "data.ten_crop=false",
            "train.deterministic=true", "train.log_every=1"]  # fmt: skip
    return [sys.executable, "-m", "alexnet", "train", "--preset", "cifar10", "--data", "cifar10-sample",
            "--out", str(out), "--epochs", "2", "--batch-size", "16", "--precision", "fp32",
            "--device", "cpu", *(a for s in sets for a in ("--set", s)), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run the interrupted ones are compared with."""
    out = tmp_path_factory.mktemp("whole") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "ALEXNET_CACHE": str(out.parent / "cache")}
    done = subprocess.run(train_cmd(out), check=True, capture_output=True, text=True, env=env, timeout=300)
    (out.parent / "stderr.txt").write_text(done.stderr)  # its step losses, to compare on a failure
    return out


def _first_differing_steps(whole_log: str, cut_log: str, n: int = 6) -> str:
    """The first steps whose logged loss differs between two runs' stderr (where they part)."""
    pattern = re.compile(r"(epoch \d+/\d+ step \d+/\d+) loss (\S+)")
    whole, cut = dict(pattern.findall(whole_log)), dict(pattern.findall(cut_log))
    differ = [f"{step}: {whole[step]} uninterrupted, {cut[step]} cut" for step in whole
              if step in cut and cut[step] != whole[step]]  # fmt: skip
    return "\n".join(differ[:n]) or "every logged step loss agrees"


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [
        # slow: the save-and-resume path is SIGTERM's; SIGINT differs only in its exit code and word
        pytest.param(signal.SIGINT, 130, "interrupted", marks=pytest.mark.slow),
        (signal.SIGTERM, 143, "terminated (SIGTERM)"),
    ],
)
def test_a_signal_in_the_first_epoch_saves_a_checkpoint_that_resumes_exactly(
    whole, tmp_path, sig, code, said
):
    env = {**os.environ, "OMP_NUM_THREADS": "2", "ALEXNET_CACHE": str(tmp_path / "cache")}
    cut = tmp_path / "cut"
    proc = subprocess.Popen(train_cmd(cut), env=env, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # the 30 steps of epoch 1 are logged one by one
        seen.append(line)
        if "epoch 1/2 step 4/" in line:
            proc.send_signal(sig)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == code, rest
    state = load_checkpoint(cut / "checkpoints" / "last.pt")
    assert state["epoch"] == 0 and 4 <= state["loader"]["position"] < 30  # mid-epoch 1, nothing lost
    step = state["loader"]["position"]
    assert f"alexnet: {said}: saved {cut / 'checkpoints' / 'last.pt'} at epoch 1, step {step} of 30" in rest
    done = subprocess.run(train_cmd(cut, "--resume"), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    a = load_checkpoint(whole / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    whole_log = (whole.parent / "stderr.txt").read_text()
    assert differ == [], (
        f"stopped at step {step}; {len(differ)} tensors differ; first differing step losses:\n"
        f"{_first_differing_steps(whole_log, ''.join(seen) + rest + done.stderr)}\n{rest[-2000:]}"
    )
    timing = ("seconds", "images_per_second")
    rows = [
        [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]
        for lines in ((run / "metrics.jsonl").read_text().splitlines() for run in (whole, cut))
    ]
    assert rows[0] == rows[1]


def test_an_empty_validation_split_is_refused_not_scored(tmp_path, capsys):
    src = cifar_slice(tmp_path / "src", {"train": 1, "test": 1})  # one training image per class
    out = tmp_path / "run"
    assert (
        main(["train", "--preset", "cifar10", "--data", str(src), "--out", str(out), "--batch-size", "4"])
        == 2
    )
    line = one_line(capsys)
    assert "the validation split (train (held out)) of" in line and line.endswith(
        "has no images; each class needs at least two training images to hold one out; add images or give a "
        "val/ split"
    )
    assert not out.exists()


class RunsOutOfMemory(torch.nn.Module):
    """A model whose forward fails to allocate from its `after`-th call on, as the allocator says."""

    def __init__(self, after, message):
        super().__init__()
        self.calls, self.after, self.message = 0, after, message
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 28 * 28, 10))

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.after:
            raise (
                torch.OutOfMemoryError(self.message) if "CUDA" in self.message else RuntimeError(self.message)
            )
        return self.net(x)


@pytest.mark.parametrize(
    "message",
    [
        "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes. Error code 12",
        "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total capacity)",
    ],
)
def test_out_of_memory_is_one_line_naming_the_batch_and_keeps_the_checkpoint(tmp_path, message):
    from alexnet import AlexNetError, fit, resolve

    sets = {"data.source": "cifar10-sample", "train.out": str(tmp_path / "run"), "train.epochs": "3",
            "data.limit_train": "160", "data.limit_val": "32", "train.batch_size": "32",
            "data.ten_crop": "false"}  # fmt: skip
    # 5 training steps and one validation batch an epoch: the 8th forward is step 2 of epoch 2
    with pytest.raises(AlexNetError) as caught:
        fit(resolve("cifar10", sets=sets), model=RunsOutOfMemory(8, message), progress=False)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert str(caught.value) == (
        f"out of memory with batches of 32 images ({message}); {last} is kept (--resume goes on with "
        "batches of 32); try --batch-size 16 in a new --out"
    )
    assert load_checkpoint(last)["epoch"] == 1
    first_step = RunsOutOfMemory(1, message.replace("CUDA out of", "DefaultCPUAllocator: out of"))
    with pytest.raises(AlexNetError, match=r"\(DefaultCPUAllocator.*\); try --batch-size 16$"):
        fit(resolve("cifar10", sets={**sets, "train.out": str(tmp_path / "new")}), model=first_step)
