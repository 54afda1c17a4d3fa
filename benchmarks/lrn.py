"""Cost of LRN in a CPU fp32 training step of the paper model (issue: LRN adds at most 10 %).

Times one SGD step (forward, backward, update) of ``paper`` at batch 16, 227×227, three ways in one
process: without LRN (``lrn=False``), with our LocalResponseNorm, and with torch.nn.LocalResponseNorm
swapped in. Rounds alternate between the three so that machine drift hits all alike; the median
and the minimum step time of each are reported; the minimum is the
robust one on a shared machine (interference only ever adds time), and the goal is read off it.

    python benchmarks/lrn.py [--batch 16] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from alexnet import build_model
from alexnet.models import LocalResponseNorm
from alexnet.runtime import keep_freed_cpu_memory


class TorchGroupedLRN(nn.Module):
    """torch.nn.LocalResponseNorm applied per tower, the same function as ours with groups=2."""

    def __init__(self, ours: LocalResponseNorm):
        super().__init__()
        self.groups = ours.groups
        self.lrn = nn.LocalResponseNorm(ours.size, ours.alpha, ours.beta, ours.k)

    def forward(self, x):
        return torch.cat([self.lrn(h) for h in x.chunk(self.groups, 1)], 1)


def with_torch_lrn(model: nn.Module) -> nn.Module:
    for i, m in enumerate(model.features):
        if isinstance(m, LocalResponseNorm):
            model.features[i] = TorchGroupedLRN(m)
    return model


def step_time(model, opt, x, y) -> float:
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    keep_freed_cpu_memory()  # as `alexnet train` on the CPU: each step reuses the last step's pages
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 227, 227) * 50
    y = torch.randint(0, 1000, (args.batch,))
    models = {
        "no LRN": build_model("paper", lrn=False),
        "ours": build_model("paper"),
        "torch LRN": with_torch_lrn(build_model("paper")),
    }
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for k in models:  # warm-up
        step_time(models[k], opts[k], x, y)
    for _ in range(args.rounds):
        for k in models:
            times[k].append(step_time(models[k], opts[k], x, y))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    print(
        f"paper model, CPU fp32 training step, batch {args.batch}, 227×227, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds"
    )
    for k in models:
        print(
            f"  {k:<10} min {best[k] * 1000:7.1f} ms/step (×{best[k] / best['no LRN']:.3f})   "
            f"median {med[k] * 1000:7.1f} ms/step (×{med[k] / med['no LRN']:.3f})   "
            f"{args.batch / best[k]:5.1f} img/s"
        )
    print(
        f"LRN overhead (min): ours +{(best['ours'] / best['no LRN'] - 1) * 100:.1f} %, "
        f"torch +{(best['torch LRN'] / best['no LRN'] - 1) * 100:.1f} %; "
        f"a step with ours is {best['torch LRN'] / best['ours']:.2f}× faster than with torch's LRN"
    )


if __name__ == "__main__":
    main()
