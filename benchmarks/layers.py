"""Max-pooling, dropout and the convolutions' weight gradients in a CPU training step: our C kernels
(models/pool.py, models/dropout.py) against torch's ops, and the matmul weight gradient
(models/conv.py) against oneDNN's. (LRN has its own script, lrn.py.)

Each pool and dropout layer of the model alone, forward + backward on the activation it sees at
the preset's batch (``--batch`` to change it), with the kernel (pools: on every map, also those the
model leaves to torch's op: pool.MIN_VALUES), with torch's op, and a ReLU on the same tensor for
scale; rounds alternate so that machine drift hits all alike, and the minimum of each is reported
(interference on a shared machine only ever adds time). Each stride-1 convolution likewise, forward +
backward (input and weight gradients) in the step's precision, oneDNN's kernels against the same
with the weight gradient by im2col + matmul, on every such layer, to see where the matmul pays.
Whole steps are not compared here: on the
2-core machines this was written on, the same step's minimum moved by 25 % between identical
models in one run, more than these layers' share; train_step.py measures the step against its
kernel bound.

    python benchmarks/layers.py [--model paper|cifar10|cifar10-long] [--precision fp32|bf16] [--rounds 10]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from train_step import preset_model  # benchmarks/train_step.py: the net as its preset builds it

from alexnet.config import preset
from alexnet.models import conv, native, pool
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


def conv_lines(model: nn.Module, x: torch.Tensor, precision: str, rounds: int) -> list[str]:
    """Each stride-1 convolution alone, forward + backward with oneDNN's weight gradient and with the
    matmul's, at its real input in the step's precision (bf16 weights, as the weight copies are)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    inputs: list[tuple[str, nn.Conv2d, torch.Tensor]] = []
    names = model.layer_names()
    hooks = [
        m.register_forward_hook(lambda mod, args, out, n=names[path]: inputs.append((n, mod, args[0])))
        for path, m in model.named_modules()
        if type(m) is nn.Conv2d and m.stride == (1, 1)
    ]
    with torch.no_grad(), autocast(torch.device("cpu"), precision):
        model(x)
    for h in hooks:
        h.remove()
    lines = []
    for name, layer, a in inputs:
        layer = copy.deepcopy(layer).to(dtype)
        a = a.to(dtype).contiguous(memory_format=torch.channels_last)
        g = torch.randn_like(layer(a))
        forms = {"oneDNN": layer, "matmul": lambda t, m=layer: conv.conv_with_matmul_weight_grad(m, t)}
        best = dict.fromkeys(forms, float("inf"))
        for _ in range(rounds + 1):  # the first round warms up (oneDNN picks its kernels)
            for form, fn in forms.items():
                a.requires_grad_(True)
                layer.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                fn(a).backward(g)
                best[form] = min(best[form], time.perf_counter() - t0)
                a.requires_grad_(False)
        a.requires_grad_(True)
        taken = "the matmul" if conv.matmul_weight_grad(layer, a) else "oneDNN's"
        shape = "×".join(map(str, a.shape))
        lines.append(
            f"  {name} {layer.kernel_size[0]}×{layer.kernel_size[1]}/{layer.groups} on {shape} {precision}, "
            f"forward + backward, min of {rounds}: oneDNN {best['oneDNN'] * 1000:.1f} ms, weight "
            f"gradient by matmul {best['matmul'] * 1000:.1f} ms ({best['oneDNN'] / best['matmul']:.2f}× "
            f"oneDNN's speed); the model: {taken}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("paper", "cifar10", "cifar10-long"), default="paper")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--batch", type=int, default=None, help="default: the preset's")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    keep_freed_cpu_memory()  # as `alexnet train` on the CPU: each step reuses the last step's pages
    torch.manual_seed(0)
    size = 227 if args.model == "paper" else 28
    batch = args.batch or preset(args.model).train.batch_size
    x = (torch.randn(batch, 3, size, size) * 50).contiguous(memory_format=torch.channels_last)
    model = preset_model(args.model, size).to(memory_format=torch.channels_last)
    print(
        f"{args.model} model as its preset builds it, CPU {args.precision}, batch {batch}, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds; ours: {native.status('maxpool')}, "
        f"{native.status('dropout')}"
    )
    lines = layer_lines(model, x, args.precision, args.rounds)
    for line in lines + conv_lines(model, x, args.precision, args.rounds):
        print(line)


if __name__ == "__main__":
    main()
