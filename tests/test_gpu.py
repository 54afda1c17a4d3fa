"""The GPU paths the benchmarks and the paper's two-tower split take: run where a CUDA device is,
skipped with the reason elsewhere (the CPU versions of the same commands are tested beside them)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import slice_store

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), *args],
        capture_output=True, text=True, timeout=600, cwd=ROOT / "benchmarks",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_train_step_benchmark_runs_on_the_cpu_with_the_models_flag(tmp_path):
    # --store: the paper step fed by StoreLoader + the paper's augmentation, with the CPU generator
    # the transforms draw from on every device (a CUDA generator there failed: "Expected a 'cpu'
    # device type for generator")
    store = slice_store(tmp_path, {"train": 2}, size=240)
    out = bench(
        "--models", "cifar10", "--batch", "8", "--steps", "1", "--precision", "fp32", "--store", str(store),
        "--peak-tflops", "1",  # its probes: test_the_cpu_ceiling_is_the_fastest_of_its_probes
    )  # fmt: skip
    assert "peak here 1000 GFLOP/s (1 TFLOP/s (--peak-tflops))" in out
    assert re.search(
        r"^  cifar10  b8 +fp32 ours [\d.]+ img/s; ceiling [\d.]+ img/s .*: \d+ % of it", out, re.M
    )
    assert "ours (fp32, channels_last, our LRN, fused sgd)" in out  # the cifar10 preset's optimizer
    assert "speedup of our defaults over the naive step: cifar10" in out
    assert f"paper    ours, fed from {store} (StoreLoader + paper augmentation on cpu):" in out


@cuda
def test_the_train_step_benchmark_reports_the_share_of_the_gpus_bf16_peak():
    out = bench("--device", "cuda", "--models", "cifar10,torchvision", "--batch", "32", "--steps", "2",
                "--peak-tflops", "100")  # fmt: skip
    assert "peak here 100000 GFLOP/s (100 TFLOP/s (--peak-tflops))" in out
    assert re.search(
        r"^  torchvision b32 +bf16 ours [\d.]+ img/s; ceiling [\d.]+ img/s .*: \d+ % of it$", out, re.M
    )


@cuda
def test_cuda_graphs_step_runs():
    out = bench("--device", "cuda", "--models", "cifar10", "--batch", "32", "--steps", "2", "--cuda-graphs")
    assert "CUDA graphs" in out


@cuda
def test_two_towers_on_one_gpu_train_through_the_loop(tmp_path_factory, tmp_path):
    from alexnet.config import resolve
    from alexnet.train import fit

    store = slice_store(tmp_path_factory.mktemp("gpu"), {"train": 8, "test": 2}, size=256)
    sets = {"data.source": str(store), "train.out": str(tmp_path / "run"), "train.epochs": "1",
            "train.batch_size": "16", "train.two_devices": "cuda:0,cuda:0",
            "data.ten_crop": "false"}  # fmt: skip
    result = fit(resolve("paper", sets=sets), progress=False)
    assert result.history and result.final is not None
