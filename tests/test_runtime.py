import platform
import subprocess
import sys

import pytest

# A child process allocates and touches 256 MB, frees it, and prints its resident memory (kB)
# before, at the peak and after the free.
CHILD = """
import sys, torch
from alexnet.runtime import keep_freed_cpu_memory
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
applied = keep_freed_cpu_memory() if sys.argv[1] == "keep" else False
before = rss()
x = torch.ones(64 * 2**20)
peak = rss()
del x
print(applied, before, peak, rss())
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)
def test_freed_cpu_memory_stays_with_the_process_for_the_next_step():
    def run(mode):
        out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
        applied, before, peak, after = out.stdout.split()
        return applied == "True", int(before), int(peak), int(after)

    applied, before, peak, after = run("default")
    # glibc's default: a block this large is its own mmap, handed back to the kernel on free, so
    # the next allocation faults in fresh zeroed pages.
    assert not applied and peak - before > 200_000 and after - before < 50_000
    applied, before, peak, after = run("keep")
    # Kept: the pages stay resident for the next tensor of the next step.
    assert applied and peak - before > 200_000 and after - before > 200_000


def test_training_on_the_cpu_keeps_freed_memory(tmp_path, monkeypatch):
    from conftest import slice_store, train_small

    from alexnet.train import loop

    calls = []
    monkeypatch.setattr(loop, "keep_freed_cpu_memory", lambda: calls.append(1) or True)
    train_small(slice_store(tmp_path, {"train": 8, "test": 1}), tmp_path / "run", epochs=1)
    assert calls == [1]


def test_a_model_loaded_for_the_cpu_keeps_freed_memory(small_run, monkeypatch):
    # evaluate, predict and inspect run batch after batch through load_model: 24 → 18 s for
    # `alexnet evaluate` of the d2l run on Fashion-MNIST's test split (system time 11 → 0.9 s)
    from alexnet import loading

    calls = []
    monkeypatch.setattr(loading, "keep_freed_cpu_memory", lambda: calls.append(1) or True)
    loading.load_model(small_run / "run", device="cpu")
    assert calls == [1]
