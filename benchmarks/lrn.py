"""Cost of LRN in a CPU training step of the paper model (or the cifar10 one).

Times one SGD step (forward, backward, update) of ``paper`` at batch 16, 227×227 (``cifar10``: 28×28,
batch 128), each built as its preset builds it (groups, LRN position), four ways in one process:
without LRN (``lrn=False``), with our LocalResponseNorm, and with torch.nn.LocalResponseNorm
swapped in, and with ours in its GEMM form instead of the one-pass CPU kernel (native.py),
in fp32 or under bf16 autocast, channels_last as training runs; a model whose preset
puts LRN after the pool is also timed in §3.4's order (LRN before the pool). Rounds alternate
between the models so that machine drift hits all alike; the median and the minimum step time of
each are reported; the minimum is the robust one on a shared machine (interference only ever adds
time), and the goal is read off it.

    python benchmarks/lrn.py [--model paper|cifar10] [--precision fp32|bf16] [--batch 16] [--rounds 15]
                             [--layers]

``--layers`` also times each LRN layer alone (forward + backward on the activation it sees, at the
preset's batch) against a ReLU on the same tensor: how far LRN is from costing what a ReLU costs;
and the ReLU before it with it, as two calls and in LRN's passes (``after_relu``, as the nets run
the pair).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from alexnet import build_model
from alexnet.config import preset
from alexnet.models import LocalResponseNorm, native
from alexnet.runtime import autocast, keep_freed_cpu_memory


class TorchGroupedLRN(nn.Module):
    """torch.nn.LocalResponseNorm applied per tower, the same function as ours with groups=2."""

    def __init__(self, ours: LocalResponseNorm):
        super().__init__()
        self.groups = ours.groups
        self.lrn = nn.LocalResponseNorm(ours.size, ours.alpha, ours.beta, ours.k)

    def forward(self, x):
        return torch.cat([self.lrn(h) for h in x.chunk(self.groups, 1)], 1)


class GemmFormLRN(nn.Module):
    """Our LocalResponseNorm in its GEMM form (lrn.py) where the one-pass kernel would run."""

    def __init__(self, ours: LocalResponseNorm):
        super().__init__()
        self.lrn = ours

    def forward(self, x):
        with native.gemm_form():  # decided in the forward; the backward follows it
            return self.lrn(x)


def with_lrn(model: nn.Module, kind: type[nn.Module]) -> nn.Module:
    """The model with each of our LRN layers wrapped in or replaced by ``kind``."""
    for i, m in enumerate(model.features):
        if isinstance(m, LocalResponseNorm):
            model.features[i] = kind(m)
    return model


def with_torch_lrn(model: nn.Module) -> nn.Module:
    return with_lrn(model, TorchGroupedLRN)


def step_time(model, opt, x, y, precision: str = "fp32") -> float:
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with autocast(torch.device("cpu"), precision):
        logits = model(x)
    nn.functional.cross_entropy(logits.float(), y).backward()
    opt.step()
    return time.perf_counter() - t0


def layer_times(model: nn.Module, x: torch.Tensor, precision: str, rounds: int) -> list[str]:
    """Each LRN layer alone, forward + backward on the activation it sees in the model, ms (min of
    ``rounds`` alternating rounds): ours, ours as GEMMs, torch's, and a ReLU on the same tensor."""
    inputs: list[tuple[LocalResponseNorm, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: inputs.append((mod, args[0].detach())))
        for m in model.modules()
        if isinstance(m, LocalResponseNorm)
    ]
    with torch.no_grad(), autocast(torch.device("cpu"), precision):
        model(x)
    for h in hooks:
        h.remove()
    lines = []
    for lrn, a in inputs:
        g = torch.randn_like(a)
        torch_lrn = TorchGroupedLRN(lrn)
        forms = {
            "ReLU": torch.relu,
            "ours": lrn,
            "ours, GEMMs": GemmFormLRN(lrn),
            "torch LRN": torch_lrn,
            # the ReLU before it (§3.3): two calls, or in the kernel's passes as the net runs it
            "ReLU, then ours": lambda t, lrn=lrn: lrn(torch.relu(t)),
            "ReLU in ours": lrn.after_relu,
        }
        best = dict.fromkeys(forms, float("inf"))
        for _ in range(rounds + 1):  # the first round warms up (and builds the kernel)
            for name, fn in forms.items():
                t0 = time.perf_counter()
                a.requires_grad_(True)
                with autocast(torch.device("cpu"), precision):  # as in training: torch's LRN needs it in bf16
                    out = fn(a)
                torch.autograd.grad(out, a, g)
                best[name] = min(best[name], time.perf_counter() - t0)
                a.requires_grad_(False)
        shape = "×".join(map(str, a.shape))
        lines.append(
            f"  LRN on {shape} {str(a.dtype).removeprefix('torch.')}, forward + backward, min of {rounds}: "
            + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in best.items())
            + f"; ours = {best['ours'] / best['ReLU']:.2f} ReLUs (as GEMMs "
            f"{best['ours, GEMMs'] / best['ReLU']:.2f}, torch's {best['torch LRN'] / best['ReLU']:.2f}); "
            f"with the ReLU before it {best['ReLU in ours'] / best['ReLU']:.2f} ReLUs in its passes, "
            f"{best['ReLU, then ours'] / best['ReLU']:.2f} as two calls"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("paper", "cifar10"), default="paper")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--batch", type=int, default=None, help="default 16 (paper), 128 (cifar10)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--layers",
        action="store_true",
        help="also time each LRN layer alone against a ReLU, at the preset's batch",
    )
    args = parser.parse_args()
    keep_freed_cpu_memory()  # as `alexnet train` on the CPU: each step reuses the last step's pages
    torch.manual_seed(0)
    size, classes = (227, 1000) if args.model == "paper" else (28, 10)
    args.batch = args.batch or (16 if args.model == "paper" else 128)
    x = (torch.randn(args.batch, 3, size, size) * 50).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (args.batch,))
    switches = {**preset(args.model).model.switches(), "input_size": size}  # the preset's net
    models = {
        "no LRN": build_model(args.model, **{**switches, "lrn": False}),
        "ours": build_model(args.model, **switches),
        "ours, GEMMs": with_lrn(build_model(args.model, **switches), GemmFormLRN),
        "torch LRN": with_torch_lrn(build_model(args.model, **switches)),
    }
    if switches.get("lrn_position") == "after-pool":  # what the pool-first order saves
        models["§3.4 order"] = build_model(args.model, **{**switches, "lrn_position": "before-pool"})
    models = {k: m.to(memory_format=torch.channels_last) for k, m in models.items()}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for k in models:  # warm-up
        step_time(models[k], opts[k], x, y, args.precision)
    for _ in range(args.rounds):
        for k in models:
            times[k].append(step_time(models[k], opts[k], x, y, args.precision))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    print(
        f"{args.model} model as its preset builds it ({switches}),\n"
        f"CPU {args.precision} training step, batch {args.batch}, {size}×{size}, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds\n"
        f"ours: {native.status()}; 'ours, GEMMs': the same LRN as GEMMs (lrn.py)"
    )
    for k in models:
        print(
            f"  {k:<12} min {best[k] * 1000:7.1f} ms/step (×{best[k] / best['no LRN']:.3f})   "
            f"median {med[k] * 1000:7.1f} ms/step (×{med[k] / med['no LRN']:.3f})   "
            f"{args.batch / best[k]:5.1f} img/s"
        )
    print(
        f"LRN overhead (min): ours +{(best['ours'] / best['no LRN'] - 1) * 100:.1f} %, "
        f"torch +{(best['torch LRN'] / best['no LRN'] - 1) * 100:.1f} %; "
        f"ours as GEMMs +{(best['ours, GEMMs'] / best['no LRN'] - 1) * 100:.1f} %; "
        f"a step with ours is {best['torch LRN'] / best['ours']:.2f}× faster than with torch's LRN"
        + (
            "; ours in §3.4's order (LRN before the pool) "
            f"+{(best['§3.4 order'] / best['no LRN'] - 1) * 100:.1f} %"
            if "§3.4 order" in best
            else ""
        )
    )
    if args.layers:
        batch = preset(args.model).train.batch_size
        xl = (torch.randn(batch, 3, size, size) * 50).contiguous(memory_format=torch.channels_last)
        for line in layer_times(models["ours"], xl, args.precision, args.rounds):
            print(line)


if __name__ == "__main__":
    main()
