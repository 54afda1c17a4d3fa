"""An experiment's runs dispatched by local processes, Ray or SLURM (submitit) give the numbers of
the sequential runner, and a killed launcher launched again finishes only what was missing."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import slice_store

from alexnet.experiments import Experiment, Metric, Variant, run_experiment
from alexnet.experiments.launchers import Launch

TIMING = ("seconds", "images_per_second", "epoch_seconds", "wall_seconds")


def two_by_two() -> Experiment:
    return Experiment(
        name="launch", title="launchers", preset="figure1",
        variants=(Variant("relu"), Variant("tanh", {"model.activation": "tanh"})),
        primary=Metric("test_top1_error", "test error %"), epochs=1, seeds=2,
        sets={"train.batch_size": "32", "train.precision": "fp32", "train.deterministic": "true",
              "data.ten_crop": "false"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return slice_store(tmp_path_factory.mktemp("launch"), {"train": 12, "test": 3})


def numbers(results: dict) -> list:
    """Every number of every run, timings left out."""
    return [
        {k: ([{m: v for m, v in row.items() if m not in TIMING} for row in val] if k == "history" else val)
         for k, val in run.items() if k not in TIMING}
        for run in results["runs"]
    ]  # fmt: skip


@pytest.fixture(scope="module")
def sequential(store, tmp_path_factory):
    """The reference: one run after another in this process, with one thread (what each of the
    parallel runs gets on two cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("seq") / "exp"
        return run_experiment(two_by_two(), str(store), out, say=lambda _: None)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "how",
    [
        Launch("local", jobs=2, cpus_per_run=1),
        Launch("ray", cpus_per_run=1),
        Launch("slurm", cpus_per_run=1, cluster="local"),  # submitit's local executor: slurm's code path
    ],
    ids=["local", "ray", "slurm"],
)
def test_every_launcher_gives_the_sequential_numbers(store, sequential, tmp_path, how):
    if how.launcher == "ray":
        pytest.importorskip("ray")
    if how.launcher == "slurm":
        pytest.importorskip("submitit")
    said = []
    results = run_experiment(two_by_two(), str(store), tmp_path / "exp", say=said.append, how=how)
    assert numbers(results) == numbers(sequential)
    assert f"4 run(s) by the {how.launcher} launcher" in "\n".join(said)
    if how.launcher == "ray":
        import ray

        ray.shutdown()


def test_a_killed_launcher_launched_again_finishes_only_the_missing_runs(store, tmp_path):
    out = tmp_path / "exp"
    sets = ["train.precision=fp32", "train.batch_size=32", "data.ten_crop=false", "optim.lr=0.01"]
    cmd = [sys.executable, "-m", "alexnet", "experiment", "relu-tanh", "--data", str(store), "--seeds", "2",
           "--epochs", "1", "--out", str(out), "--launcher", "local", "--jobs", "2"]  # fmt: skip
    cmd += [arg for s in sets for arg in ("--set", s)]
    env = {**os.environ, "ALEXNET_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("runs/*/*/final.json")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # the launcher; its workers die with it
    proc.wait()
    finished = {p.parent: p.stat().st_mtime_ns for p in out.glob("runs/*/*/final.json")}
    assert 1 <= len(finished) < 4, finished
    time.sleep(1)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(p.joinpath("final.json").stat().st_mtime_ns == t for p, t in finished.items())  # reused
    assert done.stdout.count("reused") == len(finished)
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 4 and all(r["epochs"] == 1 for r in results["runs"])
