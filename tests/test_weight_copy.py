"""bf16 weight copies kept by §5's update (train/weight_copy.py) instead of autocast's casts."""

import os
import signal
import subprocess
import sys

import torch
from torch.nn import functional as F

from alexnet import build_model
from alexnet.checkpoint import load_checkpoint
from alexnet.config import OptimConfig
from alexnet.runtime import autocast
from alexnet.train.optim import make_optimizer
from alexnet.train.weight_copy import WeightCopy, use_weight_copy

CPU = torch.device("cpu")


def _net_and_optimizer():
    torch.manual_seed(0)
    model = build_model("cifar10", widths=(16, 32, 32, 32, 32), groups=2, input_size=28, dropout=0.0)
    model = model.to(memory_format=torch.channels_last)
    cfg = OptimConfig(name="paper_sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, bias_decay=False)
    return model, make_optimizer(model, cfg)


def test_the_copies_run_autocasts_forward_and_the_update_is_the_paper_rule():
    x, y = torch.randn(8, 3, 28, 28).to(memory_format=torch.channels_last), torch.randint(0, 10, (8,))
    model, optimizer = _net_and_optimizer()  # the usual bf16 step: autocast casts, PaperSGD updates
    twin, twin_optimizer = _net_and_optimizer()  # the same weights, stepped through the copies
    copy = WeightCopy(twin, twin_optimizer)
    assert use_weight_copy(twin_optimizer, "bf16", distributed=False, compiled=False, two_devices=False)
    assert not use_weight_copy(twin_optimizer, "fp32", distributed=False, compiled=False, two_devices=False)
    assert not use_weight_copy(twin_optimizer, "bf16", distributed=True, compiled=False, two_devices=False)
    for step in range(3):
        with autocast(CPU, "bf16"):
            ref_loss = F.cross_entropy(model(x).float(), y)
            loss = F.cross_entropy(copy(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        copy.zero_grad()
        ref_loss.backward()
        loss.backward()
        named = dict(model.named_parameters())
        if step == 0:  # the same bf16 weights: the same loss and gradients, bit for bit
            assert torch.equal(loss, ref_loss)
            for name, c in copy.copies.items():
                assert c.dtype == torch.bfloat16 and torch.equal(c.grad.float(), named[name].grad), name
        before = {n: p.detach().clone() for n, p in twin.named_parameters()}
        velocity = {n: twin_optimizer.state[p].get("velocity", torch.zeros_like(p)).clone()
                    for n, p in twin.named_parameters()}  # fmt: skip
        grads = {n: c.grad.float() for n, c in copy.copies.items()}
        optimizer.step()
        copy.step()
        for group in twin_optimizer.param_groups:  # §5 written out, in float64
            for p in group["params"]:
                n = next(k for k, q in twin.named_parameters() if q is p)
                w, g, v = before[n].double(), grads[n].double(), velocity[n].double()
                v = group["momentum"] * v - group["lr"] * (g + group["weight_decay"] * w)
                torch.testing.assert_close(p.double(), w + v, rtol=1e-6, atol=1e-7)
                torch.testing.assert_close(
                    twin_optimizer.state[p]["velocity"].double(), v, rtol=1e-5, atol=1e-8
                )
                assert torch.equal(copy.copies[n].detach(), p.detach().to(torch.bfloat16))  # the copy is w's
        for n, p in twin.named_parameters():  # and PaperSGD through autocast: the same rule
            torch.testing.assert_close(p, named[n], rtol=1e-3, atol=1e-5)


def _train(out, *extra):
    sets = ["data.limit_train=96", "model.widths=16,32,32,32,32", "data.ten_crop=false",
            "train.deterministic=true", "train.log_every=1", "optim.name=paper_sgd",
            "optim.nesterov=false"]  # fmt: skip
    return [sys.executable, "-m", "alexnet", "train", "--preset", "cifar10", "--data", "cifar10-sample",
            "--out", str(out), "--epochs", "2", "--batch-size", "16", "--precision", "bf16",
            "--device", "cpu", *(a for s in sets for a in ("--set", s)), *extra]  # fmt: skip


def test_a_bf16_paper_sgd_run_trains_on_the_copies_and_resumes_from_a_signal_exactly(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2", "ALEXNET_CACHE": str(tmp_path / "cache")}
    whole = tmp_path / "whole"  # the uninterrupted run, beside the cut one (each is mostly one core's
    # start-up and compile): the same thread count each, so the same numbers
    with open(tmp_path / "whole.log", "w") as log:  # a file, not a pipe: nothing can block the run
        uncut = subprocess.Popen(_train(whole), stdout=subprocess.DEVNULL, stderr=log, env=env)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(_train(cut), env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the 6 steps of epoch 1 are logged one by one
        if "epoch 1/2 step 3/" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 143, rest
    assert 3 <= load_checkpoint(cut / "checkpoints" / "last.pt")["loader"]["position"] < 6
    resumed = subprocess.run(_train(cut, "--resume"), capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    uncut.wait(timeout=600)
    uncut_log = (tmp_path / "whole.log").read_text()
    assert uncut.returncode == 0, uncut_log
    assert "bf16 weight copies written by the update (autocast's weight casts skipped)" in uncut_log
    a = load_checkpoint(whole / "checkpoints" / "last.pt")
    b = load_checkpoint(cut / "checkpoints" / "last.pt")
    assert [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])] == []
    assert a["model"]["features.0.weight"].dtype == torch.float32  # the checkpoint holds the fp32 weights
    va = [s["velocity"] for s in a["optimizer"]["state"].values()]
    vb = [s["velocity"] for s in b["optimizer"]["state"].values()]
    assert len(va) == len(a["model"]) > 0  # a velocity for every weight (PaperSGD's state, resumed)
    assert all(torch.equal(u, v) for u, v in zip(va, vb, strict=True))
