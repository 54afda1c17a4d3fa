"""Two "nodes" on localhost through torchrun's c10d rendezvous (gloo), reading a JPEG store: a node
killed mid-epoch, both restarted with --resume, ends with the parameters of an uninterrupted run."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import cifar_slice
from test_resume_ddp import _step, params, train_cmd

from alexnet.checkpoint import load_checkpoint
from alexnet.data import prepare

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
# slow (about 30 s: three launches of two torchrun agents): CI covers the DDP kill and bit-exact resume
# without the rendezvous in test_resume_ddp.py
pytestmark = [pytest.mark.skipif(TORCHRUN is None, reason="no torchrun beside this Python"), pytest.mark.slow]


@pytest.fixture(scope="module")
def jpeg_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    src = cifar_slice(root / "src", {"train": 64, "test": 10})
    prepare(src, root / "store", workers=1, progress=False, image_format="jpeg", quality=95)
    return root / "store"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nodes(store, out, *extra) -> list[subprocess.Popen]:
    """Two torchrun agents, one process each, meeting at a c10d rendezvous on localhost: what two
    machines run with --rdzv_endpoint=HOST:PORT of the first one."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = train_cmd(store, out, "--set", "train.checkpoint_every=3", *extra)[3:]
    cmd = [TORCHRUN, "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
           f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id=test-{port}", "--max_restarts=0",
           "-m", "alexnet", *args]  # fmt: skip
    return [
        subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        for _ in range(2)
    ]


def wait(nodes, timeout=300) -> None:
    for node in nodes:
        _, err = node.communicate(timeout=timeout)
        assert node.returncode == 0, err.decode()[-3000:]


def test_a_killed_node_restarted_with_resume_matches_the_uninterrupted_two_node_run(jpeg_store, tmp_path):
    whole = tmp_path / "whole"
    wait(start_nodes(jpeg_store, whole))
    state = load_checkpoint(whole / "checkpoints" / "last.pt")
    assert state["step"] == 36  # 576 training images (10 % held out) / 32 per global batch (16 per node) × 2

    cut = tmp_path / "cut"
    nodes = start_nodes(jpeg_store, cut)
    last = cut / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while time.time() < deadline and not (last.exists() and _step(last) >= 6):
        time.sleep(0.02)
    os.killpg(nodes[1].pid, signal.SIGKILL)  # one node dies: its agent and its rank
    os.killpg(nodes[0].pid, signal.SIGKILL)  # and the operator stops the other to restart all
    for node in nodes:
        node.wait()
    saved = load_checkpoint(last)
    assert saved["epoch"] == 0 and 0 < saved["loader"]["position"] < 18, "the kill should land mid-epoch 1"

    wait(start_nodes(jpeg_store, cut, "--resume"))
    a, b = params(whole), params(cut)
    for key in a:
        assert torch.equal(a[key], b[key]), key
