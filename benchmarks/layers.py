"""Max-pooling and dropout in a CPU training step: our C kernels (models/pool.py, models/dropout.py)
against torch's ops. (LRN has its own script, lrn.py.)

Two measurements in one process, rounds alternating so that machine drift hits all alike, the
minimum of each reported (interference on a shared machine only ever adds time):

- each pool and dropout layer of the model alone, forward + backward on the activation it sees at
  the preset's batch, with the kernel (pools: on every map, also those the model leaves to torch's
  op: pool.MIN_VALUES), with torch's op, and a ReLU on the same tensor for scale;
- the whole training step (forward, backward, update) of the model as its preset builds it, with
  our kernels, with torch's pools, and with torch's dropout, at the preset's batch (``--batch``).

    python benchmarks/layers.py [--model paper|cifar10] [--precision fp32|bf16] [--rounds 10]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from alexnet import build_model
from alexnet.config import preset
from alexnet.models import native, pool
from alexnet.models.dropout import Dropout
from alexnet.models.pool import MaxPool2d
from alexnet.runtime import autocast, keep_freed_cpu_memory


def layer_lines(model: nn.Module, x: torch.Tensor, precision: str, rounds: int) -> list[str]:
    """Each pool and dropout layer alone, forward + backward, ms (min of ``rounds`` alternating rounds)."""
    inputs: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: inputs.append((mod, args[0].detach())))
        for m in model.modules()
        if isinstance(m, MaxPool2d | Dropout)
    ]
    with torch.no_grad(), autocast(torch.device("cpu"), precision):
        model(x)
    for h in hooks:
        h.remove()
    lines = []
    least, pool.MIN_VALUES = pool.MIN_VALUES, 0  # the kernel on every map, to see where it pays
    for layer, a in inputs:
        g = torch.randn_like(layer(a))
        if isinstance(layer, Dropout):
            theirs, what = (lambda t, p=layer.p: F.dropout(t, p)), "dropout"
        else:
            theirs, what = (lambda t, p=layer: F.max_pool2d(t, p.kernel_size, p.stride)), "pool"
        forms = {"ReLU": (torch.relu, torch.randn_like(a)), "ours": (layer, g), "torch": (theirs, g)}
        best = dict.fromkeys(forms, float("inf"))
        for _ in range(rounds + 1):  # the first round warms up (and builds the kernel)
            for name, (fn, grad) in forms.items():
                a.requires_grad_(True)
                t0 = time.perf_counter()
                torch.autograd.grad(fn(a), a, grad)
                best[name] = min(best[name], time.perf_counter() - t0)
                a.requires_grad_(False)
        shape, dtype = "×".join(map(str, a.shape)), str(a.dtype).removeprefix("torch.")
        lines.append(
            f"  {what} on {shape} {dtype}, forward + backward, min of {rounds}: "
            + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in best.items())
            + f"; ours {best['ours'] / best['torch']:.2f}× torch's time"
            f" ({best['ours'] / best['ReLU']:.2f} ReLUs, torch's {best['torch'] / best['ReLU']:.2f})"
            + ("" if what == "dropout" or a[0].numel() >= least else "; the model: torch's op")
        )
    pool.MIN_VALUES = least
    return lines


def step_time(model, opt, x, y, precision: str) -> float:
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with autocast(torch.device("cpu"), precision):
        logits = model(x)
    F.cross_entropy(logits.float(), y).backward()
    opt.step()
    return time.perf_counter() - t0


def with_torch_op(model: nn.Module, kind: type[nn.Module]) -> nn.Module:
    """The model with each of our MaxPool2d or Dropout running torch's op (same modules, weights)."""
    for m in model.modules():
        if isinstance(m, kind):
            m.forward = kind.__mro__[1].forward.__get__(m)  # nn.MaxPool2d's or nn.Dropout's
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("paper", "cifar10"), default="paper")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--batch", type=int, default=None, help="default: the preset's")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    keep_freed_cpu_memory()  # as `alexnet train` on the CPU: each step reuses the last step's pages
    torch.manual_seed(0)
    size, classes = (227, 1000) if args.model == "paper" else (28, 10)
    batch = args.batch or preset(args.model).train.batch_size
    x = (torch.randn(batch, 3, size, size) * 50).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,))
    switches = {**preset(args.model).model.switches(), "input_size": size}
    models = {
        "ours": build_model(args.model, **switches),
        "torch's pools": with_torch_op(build_model(args.model, **switches), MaxPool2d),
        "torch's dropout": with_torch_op(build_model(args.model, **switches), Dropout),
    }
    models = {k: m.to(memory_format=torch.channels_last) for k, m in models.items()}
    print(
        f"{args.model} model as its preset builds it, CPU {args.precision}, batch {batch}, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds; ours: {native.status('maxpool')}, "
        f"{native.status('dropout')}"
    )
    for line in layer_lines(models["ours"], x, args.precision, args.rounds):
        print(line)
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}
    best = dict.fromkeys(models, float("inf"))
    for k in models:  # warm-up
        step_time(models[k], opts[k], x, y, args.precision)
    for _ in range(args.rounds):
        for k in models:
            best[k] = min(best[k], step_time(models[k], opts[k], x, y, args.precision))
    print(
        f"  training step, min of {args.rounds}: ours {best['ours'] * 1000:.1f} ms; "
        + "; ".join(
            f"with {k} {best[k] * 1000:.1f} ms (ours {100 * (1 - best['ours'] / best[k]):.1f} % less time)"
            for k in models
            if k != "ours"
        )
    )


if __name__ == "__main__":
    main()
