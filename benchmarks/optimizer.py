"""The paper preset's optimizer step alone: §5's update rule written out against ours, in one process.

Written out (what PaperSGD computed before): v ← μv − λεw − εg; w ← w + v as four in-place passes,
eleven reads and writes of 4 bytes per parameter. Ours: PaperSGD as the paper preset builds it
(make_optimizer: weights decayed, biases not) on torch's fused SGD kernel, one pass reading w, g, v
and writing w, v (five). Also torch.optim.SGD with fused=True over the same groups: the kernel's
own speed, the bound ours can reach. The ceiling: the step's memory traffic at the best rate simple
in-place passes reach on this machine (``bandwidth``).

With ``--bf16``, also what a bf16 weight copy kept by the optimizer could save a bf16 step: the
weight-side passes of autocast's route (each fp32 weight cast to bf16 for the forward, each bf16
weight gradient cast back to fp32, then ours) against one torch.compile'd pass that reads the fp32
weight, the bf16 gradient and the velocity and writes the weight, the velocity and the bf16 copy.
The allocator keeps freed memory as ``alexnet train`` has it (keep_freed_cpu_memory), so a cast's
fresh output costs no page faults.

    python benchmarks/optimizer.py [--rounds 7] [--bf16]
"""

from __future__ import annotations

import argparse
import time

import torch
from train_step import best_time  # benchmarks/train_step.py: two warm-ups, then the best

from alexnet import build_model
from alexnet.config import preset
from alexnet.experiments.framework import machine
from alexnet.runtime import keep_freed_cpu_memory
from alexnet.train import make_optimizer
from alexnet.train.optim import parameter_groups
from alexnet.train.weight_copy import paper_update

# Bytes moved per parameter (fp32). Written out: v.mul_ reads and writes v (2), each add_ into v
# reads v and w or g and writes v (3 + 3), w.add_(v) reads w and v and writes w (3). Fused: reads
# w, g, v and writes w, v once (5).
WRITTEN_OUT_BYTES, FUSED_BYTES = 11 * 4, 5 * 4
CPU = torch.device("cpu")


def bandwidth(rounds: int) -> float:
    """The best memory rate of simple in-place passes (bytes per second): a *= s (a read and a write
    per element) and a += b (two reads, a write), at fc6's size (37.7 M floats) and at 256 MB, in
    place as the optimizer's passes are (a separate output is read before it is written)."""
    rates = []
    for numel in (37_748_736, 1 << 26):
        a, b = torch.rand(numel), torch.rand(numel)
        rates.append(2 * 4 * numel / best_time(lambda: a.mul_(1.0), CPU, rounds))  # noqa: B023 (timed at once)
        rates.append(3 * 4 * numel / best_time(lambda: a.add_(b), CPU, rounds))  # noqa: B023
    return max(rates)


def written_out_step(groups, velocities):
    def step():
        with torch.no_grad():
            for group in groups:
                lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
                for w in group["params"]:
                    v = velocities[w]
                    v.mul_(mu).add_(w, alpha=-wd * lr).add_(w.grad, alpha=-lr)
                    w.add_(v)

    return step


def bf16_weight_passes(model, ours, rounds: int) -> dict[str, float]:
    """Seconds per step of the weight-side passes of a bf16 step, both ways (``--bf16``)."""
    params = list(model.parameters())
    grads = [p.grad.to(torch.bfloat16) for p in params]  # what the bf16 convolutions hand back

    def autocast_route():
        [p.to(torch.bfloat16) for p in params]  # autocast's cast of each weight, once a forward
        for p, g in zip(params, grads, strict=True):
            p.grad = g.float()  # the cast's backward: the gradient back to the weight's fp32
        ours.step()

    masters = [p.detach().clone() for p in params]
    velocities = [torch.zeros_like(p) for p in params]
    copies = [p.detach().to(torch.bfloat16) for p in params]
    rates = [torch.tensor(x) for x in (0.01, 0.9, 5e-4)]
    compiled = torch.compile(paper_update, fullgraph=True, dynamic=False)  # as training runs it
    t0 = time.perf_counter()
    compiled(masters, grads, velocities, copies, *rates)
    print(f"bf16 weight copy: compiled in {time.perf_counter() - t0:.1f} s (cached on disk for the next run)")
    return {
        "autocast's casts + ours": best_time(autocast_route, CPU, rounds),
        "one compiled pass writing the bf16 copy": best_time(
            lambda: compiled(masters, grads, velocities, copies, *rates), CPU, rounds
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bf16", action="store_true", help="also time a bf16 step's weight-side passes")
    args = parser.parse_args()
    keep_freed_cpu_memory()  # as `alexnet train` on the CPU
    torch.manual_seed(0)
    recipe = preset("paper")
    model = build_model(recipe.model.name, **recipe.model.switches())
    cfg = recipe.optim
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    n = sum(p.numel() for p in model.parameters())
    print(f"{machine()}; paper: {n:,} parameters, {cfg.name}")
    ours = make_optimizer(model, cfg)
    groups = [{**g, "lr": cfg.lr, "momentum": cfg.momentum} for g in parameter_groups(model, cfg)]
    velocities = {p: torch.zeros_like(p) for p in model.parameters()}
    kernel = torch.optim.SGD(
        [{k: g[k] for k in ("params", "weight_decay")} for g in groups],
        lr=cfg.lr, momentum=cfg.momentum, fused=True,
    )  # fmt: skip
    rate = bandwidth(args.rounds)
    timed = {
        "written out (four passes)": (
            best_time(written_out_step(groups, velocities), CPU, args.rounds),
            WRITTEN_OUT_BYTES,
        ),
        f"ours ({type(ours).__name__})": (best_time(ours.step, CPU, args.rounds), FUSED_BYTES),
        "torch.optim.SGD fused (the kernel alone)": (best_time(kernel.step, CPU, args.rounds), FUSED_BYTES),
    }
    print(f"memory bandwidth {rate / 1e9:.1f} GB/s (the best of a *= s and a += b, in place)")
    for name, (seconds, per_param) in timed.items():
        floor = per_param * n / rate
        print(f"  {name:42s} {seconds * 1e3:7.1f} ms  {per_param * n / seconds / 1e9:5.1f} GB/s  "
              f"{100 * floor / seconds:3.0f} % of the bandwidth")  # fmt: skip
    base, mine, bound = (t for t, _ in timed.values())
    print(
        f"ours: {base / mine:.2f}× the written-out rule; {100 * bound / mine:.0f} % of the kernel's own speed"
    )
    if args.bf16:
        with torch.no_grad():
            both = bf16_weight_passes(model, ours, args.rounds)
        for name, seconds in both.items():
            print(f"  {name:42s} {seconds * 1e3:7.1f} ms")
        route, copy = both.values()
        print(f"a bf16 weight copy kept by the optimizer would save {(route - copy) * 1e3:.1f} ms a step")


if __name__ == "__main__":
    main()
