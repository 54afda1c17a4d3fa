"""The run directory never loses or mixes data: kills at every point of the epoch end, a second
writer, leftover temporary files, a full disk, another data set, and bad input (issue 8)."""

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import IMAGENET_SAMPLE, require, slice_store

from alexnet import AlexNetError, build_model
from alexnet.checkpoint import load_checkpoint
from alexnet.cli import main
from alexnet.config import resolve
from alexnet.data import open_store, prepare
from alexnet.data.prepare import read_skipped
from alexnet.data.stats import PixelStats
from alexnet.fileio import replace_folder
from alexnet.train import RunDir, fit, resume_config


class Killed(BaseException):
    """Stands for SIGKILL at a chosen line: nothing after it runs (not caught by `except Exception`)."""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return slice_store(tmp_path_factory.mktemp("runs"), {"train": 40, "test": 10})


def config(store, out, epochs=3, **sets):
    values = {
        "data.source": str(store),
        "train.out": str(out),
        "train.epochs": str(epochs),
        "train.batch_size": "32",
        "train.precision": "fp32",  # exact comparisons: the same arithmetic on every CPU kind
        "train.deterministic": "true",
        "train.log_every": "1000",
        "data.holdout": "0.2",
    }
    values.update({k: str(v) for k, v in sets.items()})
    return resolve("figure1", sets=values)


def last(run):
    return load_checkpoint(run / "checkpoints" / "last.pt")


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_timings(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in history]


def assert_same_run(a, b):
    for name in ("last.pt", "best.pt"):
        sa, sb = (load_checkpoint(r / "checkpoints" / name) for r in (a, b))
        assert sa["epoch"] == sb["epoch"], name
        for key in sa["model"]:
            assert torch.equal(sa["model"][key], sb["model"][key]), (name, key)
    assert without_timings(rows(a)) == without_timings(rows(b))
    assert not list(a.rglob("*.tmp")) and not list(b.rglob("*.tmp"))


@pytest.fixture(scope="module")
def whole(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    result = fit(config(store, out), progress=False)
    # the scenario of the lost best.pt needs an epoch that improves on the one before
    assert result.history[1]["val_top1_error"] < result.history[0]["val_top1_error"]
    return out


def kill_at(monkeypatch, point: str, epoch: int = 2):
    """Raise Killed at ``point`` of ``epoch``'s end (or mid-epoch 2)."""
    save, history = RunDir.save, RunDir.write_history

    def fake_save(self, path, state):
        if point == "mid_epoch" and state["partial"] is not None and state["epoch"] == 1:
            save(self, path, state)
            raise Killed
        if state["epoch"] == epoch and path.name == "last.pt" and state["partial"] is None:
            if point == "between_best_and_last":
                raise Killed
            if point == "during_last_write":  # what a kill inside the atomic write leaves
                (path.parent / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
                raise Killed
        save(self, path, state)

    def fake_history(self, rows_):
        if point == "after_last" and len(rows_) == 2:
            raise Killed
        history(self, rows_)

    monkeypatch.setattr(RunDir, "save", fake_save)
    monkeypatch.setattr(RunDir, "write_history", fake_history)


@pytest.mark.parametrize(
    "point, epoch",
    [("between_best_and_last", 2), ("during_last_write", 2), ("after_last", 2), ("mid_epoch", 2),
     ("between_best_and_last", 1)],  # the first epoch's best.pt, and no last.pt yet
)  # fmt: skip
def test_a_kill_at_any_point_of_the_epoch_end_resumes_to_the_same_run(
    store, whole, tmp_path, monkeypatch, point, epoch
):
    out = tmp_path / "run"
    sets = {"train.checkpoint_every": 3} if point == "mid_epoch" else {}
    with monkeypatch.context() as m:
        kill_at(m, point, epoch)
        with pytest.raises(Killed):
            fit(config(store, out, **sets), progress=False)
    if epoch == 1:  # best.pt alone, no row: a plain `alexnet train` refuses, --resume goes on from it
        assert not (out / "checkpoints" / "last.pt").exists() and rows(out) == []
        assert load_checkpoint(out / "checkpoints" / "best.pt")["epoch"] == 1
        with pytest.raises(AlexNetError, match="already holds a run; pass --resume"):
            fit(config(store, out), progress=False)
    if point == "after_last":  # the old order wrote the row and then died: now the row is missing
        assert len(rows(out)) == 1 and last(out)["epoch"] == 2
    done_before = last(out)["loader"]["position"] * 32 if point == "mid_epoch" else 0
    result = fit(resume_config(out, {"train.checkpoint_every": "0"}), resume=True, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert_same_run(whole, out)
    if point == "mid_epoch":  # images/s of the resumed epoch counts only this process's images
        assert done_before > 0
        row = rows(out)[1]  # 320 training images (400 less the 20 % held out), 10 steps of 32
        seen = row["images_per_second"] * row["seconds"]
        assert abs(seen - (320 - done_before)) < 1e-6 * 320, seen


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(store, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(RunDir, "save", lambda self, path, state: (_ for _ in ()).throw(Killed()))
        with pytest.raises(Killed):
            fit(config(store, out, epochs=1), progress=False)
    assert (out / "config.yaml").is_file() and not (out / "checkpoints" / "last.pt").exists()
    code = main(["train", "--out", str(out), "--resume"])
    assert code == 0 and [r["epoch"] for r in rows(out)] == [1]


def test_a_run_with_best_but_no_last_is_refused_not_overwritten(store, tmp_path, capsys):
    out = tmp_path / "run"
    fit(config(store, out, epochs=1), progress=False)
    capsys.readouterr()
    best = (out / "checkpoints" / "best.pt").read_bytes()
    (out / "checkpoints" / "last.pt").unlink()  # deleted to save space, or lost
    fresh = ["train", "--preset", "figure1", "--data", str(store), "--out", str(out), "--epochs", "1"]
    for args in (["train", "--out", str(out), "--resume", "--epochs", "2"], fresh):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0] == (
            f"alexnet: error: {out} holds checkpoints/best.pt but no last.pt, so the run cannot be resumed "
            f"and a new one would overwrite best.pt; move best.pt away (or delete it) or choose another --out"
        )
    assert (out / "checkpoints" / "best.pt").read_bytes() == best and len(rows(out)) == 1
    (out / "checkpoints" / "best.pt").unlink()  # a run that wrote its config but no checkpoint yet
    assert main(fresh) == 2  # is not silently started again in its place: --resume says so
    assert (
        "already holds a run; pass --resume to continue it or choose another --out" in capsys.readouterr().err
    )


def test_a_second_writer_is_refused_and_the_lock_dies_with_its_process(store, tmp_path, capsys):
    out = tmp_path / "run"
    holder = RunDir(out)
    holder.lock()
    try:
        code = main(
            ["train", "--preset", "figure1", "--data", str(store), "--out", str(out), "--epochs", "1"]
        )
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"alexnet: error: {out} is in use by process {os.getpid()}; wait for it to finish "
                       f"(or stop it), then --resume, or choose another --out"]  # fmt: skip
        assert not (out / "config.yaml").exists()  # refused before anything was written
    finally:
        holder.unlock()
    script = (
        f"from alexnet.train import RunDir; import time; RunDir({str(out)!r}).lock(); "
        "print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(AlexNetError, match=f"in use by process {proc.pid}"):
        RunDir(out).lock()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = RunDir(out)
    again.lock()  # the kernel dropped the dead process's lock
    again.unlock()


def test_leftover_temporary_files_are_removed_on_start_and_resume(store, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / ".last.pt.abc.tmp").write_bytes(b"x" * 1000)
    (out / ".metrics.jsonl.q.tmp").write_text("{}")
    fit(config(store, out, epochs=1), progress=False)
    assert not list(out.rglob("*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt"):  # not mkstemp's 0600
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    (out / "checkpoints" / ".best.pt.zz.tmp").write_bytes(b"x")
    fit(config(store, out, epochs=2), resume=True, progress=False)
    assert not list(out.rglob("*.tmp"))


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (a real full disk), or None where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_is_one_line_and_the_last_checkpoint_survives(
    store, tmp_path, small_disk, monkeypatch, capsys
):
    disk = small_disk or tmp_path / "disk"
    out = disk / "run"
    args = ["train", "--out", str(out), "--resume", "--epochs", "2"]
    assert main(["train", "--preset", "figure1", "--data", str(store), "--out", str(out), "--epochs", "1",
                 "--precision", "fp32", "--set", "data.holdout=0.2"]) == 0  # fmt: skip
    capsys.readouterr()
    before = last(out)
    if small_disk is not None:
        filler = fill(disk, leave=64 * 1024)  # less than one checkpoint (≈ 1 MB)
    else:  # no mount allowed: the same error, injected where the bytes are written
        real_fsync = os.fsync
        monkeypatch.setattr(
            "alexnet.fileio.os.fsync",
            lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")),
        )
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and sum(line.startswith("alexnet: error") for line in err.splitlines()) == 1
    line = err.strip().splitlines()[-1]  # after the run's own log lines
    assert line.startswith(f"alexnet: error: cannot write {out / 'checkpoints'}/"), line
    assert line.endswith(
        "the disk is full (no space left on device); free some space and run the command again"
    )
    if small_disk is not None:  # a new run on a disk with no room writes no empty config.yaml
        rest = disk / "rest"
        with open(rest, "wb") as f, contextlib.suppress(OSError):
            f.write(b"\0" * shutil.disk_usage(disk).free)
        fresh = disk / "fresh"
        code = main(
            ["train", "--preset", "figure1", "--data", str(store), "--out", str(fresh), "--epochs", "1"]
        )
        assert code == 2 and not (fresh / "config.yaml").exists() and not list(fresh.rglob("*.tmp"))
        assert "the disk is full" in capsys.readouterr().err
        rest.unlink()
    after = last(out)  # untouched and loadable
    assert after["epoch"] == 1 and all(
        torch.equal(after["model"][k], before["model"][k]) for k in before["model"]
    )
    assert not list(out.rglob("*.tmp"))
    if small_disk is not None:
        filler.unlink()
    else:
        monkeypatch.setattr("alexnet.fileio.os.fsync", real_fsync)
    assert main(args) == 0  # space freed: the run goes on
    assert [r["epoch"] for r in rows(out)] == [1, 2]


def test_a_full_disk_in_prepare_and_evaluate_json_is_one_line(store, tmp_path, small_disk, capsys):
    if small_disk is None:
        pytest.skip("mounting a tmpfs is not allowed here; the train case injects ENOSPC instead")
    src = Path(str(store).replace("/store", "/src"))
    filler = fill(small_disk, leave=16 * 1024)
    assert main(["prepare", str(src), str(small_disk / "store"), "--quiet", "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full" in err[0] and str(small_disk / "store") in err[0]
    assert not (small_disk / "store").exists()  # nothing that loads; what was done waits in .store.partial
    filler.unlink()  # space freed: the same command goes on and finishes the store
    assert main(["prepare", str(src), str(small_disk / "store"), "--quiet", "--workers", "1"]) == 0
    assert len(open_store(small_disk / "store").split("train")) == 400
    assert not (small_disk / ".store.partial").exists()
    shutil.rmtree(small_disk / "store")
    run = tmp_path / "run"
    fit(config(store, run, epochs=1), progress=False)
    fill(small_disk, leave=0)
    assert main(["evaluate", str(run), "--data", str(store), "--json", str(small_disk / "x.json")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_resume_on_another_data_set_names_the_classes_that_differ(store, tmp_path, capsys):
    out = tmp_path / "run"
    fit(config(store, out, epochs=1), progress=False)
    other = tmp_path / "other"
    shutil.copytree(Path(str(store).replace("/store", "/src")), other / "src", symlinks=True)
    for split in ("train", "test"):
        (other / "src" / split / "cat").rename(other / "src" / split / "cats")  # same place in the order
    prepare(other / "src", other / "store", workers=1, progress=False)
    assert (
        main(["train", "--out", str(out), "--resume", "--epochs", "2", "--data", str(other / "store")]) == 2
    )
    err = capsys.readouterr().err
    assert "1 class name(s) that differ" in err and "#3 'cats' (checkpoint: 'cat')" in err
    assert main(["evaluate", str(out), "--data", str(other / "store")]) == 2
    assert "#3 'cats' (checkpoint: 'cat')" in capsys.readouterr().err


def _edit_meta(store, **fields):
    meta = json.loads((store / "store.json").read_text())
    (store / "store.json").write_text(json.dumps({**meta, **fields}))


def _broken_store(store, tmp_path, edit):
    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    edit(broken)
    return broken


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: (s / "store.json").write_text("garbage{"), "store.json is damaged (not JSON"),
        (lambda s: (s / "store.json").write_text("[1, 2]"), "store.json is damaged (a JSON list"),
        (
            lambda s: (s / "store.json").write_text('{"format": "alexnet-store", "version": 1}'),
            "store.json is damaged ('size' missing",
        ),
        (lambda s: np.save(s / "train" / "labels.npy", np.full(400, 10)), "labels outside 0..9 (10..10)"),
        (lambda s: _edit_meta(s, channels=1), "holds images of (32, 32, 3), store.json says (32, 32, 1)"),
        (
            lambda s: _edit_meta(
                s, pca={"eigvals": [0.1, float("nan"), 0.01], "eigvecs": np.eye(3).tolist()}
            ),
            "'pca' has eigenvalues or eigenvectors that are not finite",
        ),
        (
            lambda s: _edit_meta(s, pca={"eigvals": [0.1, 0.2], "eigvecs": [[1.0]]}),
            "'pca' has eigvals of shape (2,) and eigvecs (1, 1), not (3,) and (3, 3)",
        ),
        (
            lambda s: np.save(s / "train" / "mean.npy", np.zeros((8, 8, 3), np.float32)),
            "mean.npy is a (8, 8, 3) array, not the store's mean image of (32, 32, 3)",
        ),
    ],
)
def test_a_broken_store_is_one_line(store, tmp_path, capsys, edit, message):
    broken = _broken_store(store, tmp_path, edit)
    code = main(["train", "--preset", "figure1", "--data", str(broken), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "train.device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
        (["--set", "train.label_smoothing=2"], "train.label_smoothing must be in [0, 1), got 2.0"),
        (["--set", "data.limit_train=-5"], "data.limit_train must be ≥ 1 (or none), got -5"),
        (["--set", "train.checkpoint_every=-1"], "train.checkpoint_every must be ≥ 0 steps"),
        (["--set", "schedule.warmup_epochs=-1"], "schedule.warmup_epochs must be ≥ 0, got -1.0"),
        (
            ["--set", "schedule.warmup_epochs=99"],
            "schedule.warmup_epochs must be in [0, train.epochs], got 99.0",
        ),
        (["--set", "data.lighting_std=-1"], "data.lighting_std must be ≥ 0, got -1.0"),
        (["--set", "data.cutout=-4"], "data.cutout must be ≥ 0 pixel, got -4"),
        (
            ["--set", "data.cutout=8", "--set", "data.crop_mode=resized"],
            "data.cutout must be 0 with crop_mode resized, got 8",
        ),
        (["--set", "model.lrn_position=after-relu"], "model.lrn_position: 'after-relu' is not one of"),
        (
            ["--set", "train.two_devices=cpu"],
            "train.two_devices must be two of cpu, cuda, cuda:N, got ('cpu',)",
        ),
    ],
)
def test_bad_config_values_are_refused_before_anything_is_written(store, tmp_path, capsys, args, message):
    out = tmp_path / "run"
    code = main(["train", "--preset", "figure1", "--data", str(store), "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_bad_files_and_paths_are_one_line(store, tmp_path, capsys):
    def fails(argv, message):
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], (argv, err)

    fails(["train", "--config", str(tmp_path), "--data", str(store)], "is a folder; give a YAML file")
    run = tmp_path / "run"
    fit(config(store, run, epochs=1), progress=False)
    capsys.readouterr()
    started = time.perf_counter()
    fails(["evaluate", str(run), "--data", str(store), "--json", str(tmp_path / "missing" / "x.json")],
          f"the folder {tmp_path / 'missing'} does not exist")  # fmt: skip
    assert time.perf_counter() - started < 5  # refused before the evaluation, not after it
    # a damaged config.yaml of a run that never reached a checkpoint
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text("")
    fails(["train", "--out", str(fresh), "--resume"], "config.yaml is empty or not a config mapping")
    (fresh / "config.yaml").write_bytes(b"\xff\xfe: [")
    fails(["train", "--out", str(fresh), "--resume"], "config.yaml is damaged")
    # a checkpoint cut short: the message is whole (it ends with its closing parenthesis)
    cut = tmp_path / "cut.pt"
    cut.write_bytes((run / "checkpoints" / "last.pt").read_bytes()[:5000])
    fails(["evaluate", str(cut), "--data", str(store)], "is not a readable checkpoint: it is truncated")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(AlexNetError, match=r"weights file .*empty\.pth is empty \(0 bytes\)"):
        build_model("figure1", weights=empty)
    # random bytes are not called "pickled objects that could run code"
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    fails(
        ["evaluate", str(noise), "--data", str(store)], f"{noise} is not a torch checkpoint (unreadable data:"
    )
    # our format tag with a field missing or malformed: named, not a KeyError
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    for key, value in (("classes", None), ("classes", "cat"), ("normalization", [1])):
        bad = tmp_path / f"bad-{key}.pt"
        torch.save(
            {k: v for k, v in state.items() if k != key} | ({} if value is None else {key: value}), bad
        )
        what = "missing" if value is None else "malformed"
        fails(
            ["evaluate", str(bad), "--data", str(store)],
            f"{bad} is a damaged checkpoint: its {key!r} is {what}",
        )
    # a damaged safetensors file through build_model: our error, not safetensors'
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(AlexNetError, match=r"fake\.safetensors is not a readable safetensors file"):
        build_model("figure1", weights=fake)
    # a YAML alias bomb is refused in one short line, never expanded
    bomb = tmp_path / "bomb.yaml"
    levels = [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    bomb.write_text("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(levels) + "optim: {lr: *i}\n")
    code = main(["train", "--config", str(bomb), "--data", str(store)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and len(err[0]) < 300 and "uses YAML aliases" in err[0]


def test_the_nan_stop_names_no_checkpoint_before_the_first(store, tmp_path):
    with pytest.raises(AlexNetError, match="No checkpoint was written yet: start again with a lower"):
        fit(config(store, tmp_path / "run", epochs=1, **{"optim.lr": "1e30"}), progress=False)


def test_a_run_resumed_from_best_pt_survives_a_second_stop(store, whole, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        kill_at(m, "between_best_and_last", epoch=1)
        with pytest.raises(Killed):
            fit(config(store, out), progress=False)
    best, last_pt = out / "checkpoints" / "best.pt", out / "checkpoints" / "last.pt"
    # the resumed run stops in epoch 2, before it writes a checkpoint of its own; best.pt was made
    # last.pt before the epoch-1 row was rewritten, so the stop names it and --resume still works
    lr = str(resolve("figure1").optim.lr)
    with pytest.raises(AlexNetError, match=f"The last good checkpoint is {re.escape(str(last_pt))}: resume"):
        fit(resume_config(out, {"optim.lr": "1e30"}), resume=True, progress=False)
    assert len(rows(out)) == 1
    for key, value in load_checkpoint(best)["model"].items():
        assert torch.equal(last(out)["model"][key], value), key
    fit(resume_config(out, {"optim.lr": lr}), resume=True, progress=False)
    assert_same_run(whole, out)


def test_a_file_name_that_is_not_utf8_is_listed_as_skipped(tmp_path):
    from PIL import Image

    src = tmp_path / "src" / "train"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8), (200, 10, 10)).save(src / cls / "ok.png")
    bad = os.fsencode(src / "a") + b"/caf\xe9.jpg"  # Latin-1 bytes: not UTF-8
    with open(bad, "wb") as f:
        f.write(b"not an image")
    summary = prepare(tmp_path / "src", tmp_path / "store", workers=1, progress=False)
    assert summary.skipped == {"train": 1}
    [(path, reason)] = read_skipped(tmp_path / "store" / "train" / "skipped.jsonl")
    assert os.fsencode(path) == bad and reason == "not an image Pillow can identify"


def test_a_forced_rebuild_keeps_the_old_store_until_the_new_one_replaces_it(store, tmp_path, monkeypatch):
    out = tmp_path / "store"
    shutil.copytree(store, out)
    stamp = (out / "store.json").read_bytes()
    src = Path(str(store).replace("/store", "/src"))
    with monkeypatch.context() as m:  # a rebuild that dies half-way leaves the old store as it was
        m.setattr(PixelStats, "pca", lambda stats: (_ for _ in ()).throw(Killed()))
        with pytest.raises(Killed):
            prepare(src, out, workers=1, progress=False, force=True)
    assert (out / "store.json").read_bytes() == stamp
    new, target = tmp_path / "new", tmp_path / "target"
    for folder, text in ((new, "new"), (target, "old")):
        folder.mkdir()
        (folder / "f").write_text(text)
    replace_folder(new, target)
    assert (target / "f").read_text() == "new" and not new.exists()


def test_killed_prepare_workers_print_no_traceback(tmp_path):
    sample = require(IMAGENET_SAMPLE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "alexnet", "prepare", str(sample), str(tmp_path / "store"), "--workers", "2",
         "--quiet"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.5)  # decoding the 1,000 photographs takes ~3 s with two workers
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
