"""Training-step throughput: a naive step against our defaults, in one process.

Naive: fp32, NCHW, torch.nn.LocalResponseNorm, eager. Ours: the defaults ``alexnet train`` picks for
the device (our LRN, channels_last, bf16 autocast where the device has native bf16), optionally
with torch.compile. Models: ``paper`` at 227 and ``cifar10`` at 28 (its recipe's crop). Also a
short loss-parity check: the same seed trained a few steps both ways must give close losses. On
the CPU it also prints the ceiling: the paper net's FLOPs per training image against the measured
fp32 matmul rate, the most any implementation of the same arithmetic can reach here.

    python benchmarks/train_step.py [--batch 64] [--steps 5] [--device cpu|cuda] [--compile]
    python benchmarks/train_step.py --device cuda --batch 256 --store STORE   # + from a prepared store
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from lrn import with_torch_lrn  # benchmarks/lrn.py: torch's LRN per tower
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from alexnet import build_model
from alexnet.runtime import autocast, resolve_precision

PARITY_STEPS = 3


def make_step(model, device, precision, channels_last):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step(x, y):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def clock(device) -> float:
    """perf_counter after the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def timed(step, x, y, steps, device) -> tuple[float, float]:
    for _ in range(2):
        step(x, y)
    times = []
    for _ in range(steps):
        t0 = clock(device)
        step(x, y)
        times.append(clock(device) - t0)
    return len(x) / min(times), len(x) / statistics.median(times)


def best_time(fn, device, repeats: int = 5) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernel on the first call
    best = float("inf")
    for _ in range(repeats):
        t0 = clock(device)
        fn()
        best = min(best, clock(device) - t0)
    return best


def arithmetic_peak(device, precision: str) -> tuple[float, str]:
    """The device's best rate in ``precision`` (FLOP/s) over the kernels the step runs, and which.

    Two probes, under the same autocast as the step: a 2048² matmul (the fully connected layers)
    and conv3 of the paper net at batch 64 (13×13, 384 → 384, 3×3: oneDNN's convolution, which on
    some AMD CPUs beats torch's sgemm, so a matmul-only ceiling would be too low). The larger is
    the ceiling: no step of the same arithmetic can run faster than its FLOPs at that rate.
    """
    size = 2048
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    conv = torch.nn.Conv2d(384, 384, 3, padding=1).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(64, 384, 13, 13, device=device).contiguous(memory_format=torch.channels_last)

    def matmul():
        with torch.no_grad(), autocast(device, precision):
            a @ b

    def convolution():
        with torch.no_grad(), autocast(device, precision):
            conv(x)

    rates = {
        "matmul": 2 * size**3 / best_time(matmul, device),
        "conv": 2 * 64 * 384 * 384 * 9 * 13 * 13 / best_time(convolution, device),
    }
    kernel = max(rates, key=rates.get)
    return rates[kernel], f"{precision} {kernel}"


def step_flops(name: str, size: int, device) -> float:
    """FLOPs of one training image (forward and backward), counted by torch's FlopCounterMode."""
    model = build_model(name, input_size=size).to(device)
    x = torch.randn(2, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long, device=device)).backward()
    return counter.get_total_flops() / len(x)


def variants(name, size, device, compile_model):
    precision, _ = resolve_precision("auto", device)

    def naive():
        torch.manual_seed(0)
        m = build_model(name, input_size=size)
        m = with_torch_lrn(m) if name in ("paper", "cifar10") else m
        return make_step(m.to(device), device, "fp32", channels_last=False)

    def ours():
        torch.manual_seed(0)
        m = build_model(name, input_size=size).to(device).to(memory_format=torch.channels_last)
        if compile_model:
            m = torch.compile(m)
        return make_step(m, device, precision, channels_last=True)

    return {
        "naive (fp32, NCHW, torch LRN, eager)": naive,
        f"ours ({precision}, channels_last, our LRN{', compiled' if compile_model else ''})": ours,
    }


def from_store(path: str, batch: int, steps: int, device, compile_model: bool) -> float:
    """Our paper step fed by the real input path: StoreLoader + the paper's augmentation on ``device``."""
    from alexnet.config import override, preset
    from alexnet.data import StoreLoader, open_data
    from alexnet.recipe import build_transforms

    store = open_data(path)
    config = preset("paper")
    if store.mean is None:  # a store without a training split has no mean image
        config = override(config, {"data.normalize": "channel", "data.lighting": "imagenet"})
    augment = build_transforms(config, store).train
    split = store.split("train" if "train" in store.splits else next(iter(store.splits)))
    loader = StoreLoader(split, batch, seed=0, drop_last=True, device=device)
    step = list(variants("paper", 227, device, compile_model).values())[-1]()  # the same "ours" step
    generator = torch.Generator(device=device).manual_seed(0)

    def batches():  # epoch after epoch, however small the store
        while True:
            yield from loader

    feed = batches()
    for _ in range(2):  # warm-up
        images, labels = next(feed)
        step(augment(images, generator), labels.to(device, non_blocking=True))
    t0 = clock(device)
    for _ in range(steps):
        images, labels = next(feed)
        step(augment(images, generator), labels.to(device, non_blocking=True))
    return steps * batch / (clock(device) - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--store", help="also time the paper step fed from this prepared store")
    args = parser.parse_args()
    device = torch.device(args.device)
    name_of = "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(
        f"training step, batch {args.batch}, {args.steps} timed steps after 2 warm-up, on {name_of} "
        f"({torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    ratio, ours = {}, {}
    for name, size in (("cifar10", 28), ("paper", 227)):
        x = torch.randn(args.batch, 3, size, size, device=device)
        y = torch.randint(0, 10 if name == "cifar10" else 1000, (args.batch,), device=device)
        rates = {}
        losses = {}
        for label, make in variants(name, size, device, args.compile).items():
            step = make()
            best, median = timed(step, x, y, args.steps, device)
            rates[label] = best
            parity = make()  # the same initial weights: both paths must follow the same loss curve
            losses[label] = [float(parity(x, y).detach()) for _ in range(PARITY_STEPS)][-1]
            print(f"  {name:<8} {label:<52} {best:8.1f} img/s (median {median:.1f})")
        naive_rate, our_rate = rates.values()
        ours[name] = our_rate
        ratio[name] = our_rate / naive_rate
        first, second = losses.values()
        print(
            f"  {name:<8} loss after {PARITY_STEPS} steps on one batch: naive {first:.4f}, "
            f"ours {second:.4f}; "
            f"speedup {ratio[name]:.2f}×"
        )
    if args.store:
        rate = from_store(args.store, args.batch, args.steps, device, args.compile)
        print(
            f"  paper    ours, fed from {args.store} "
            f"(StoreLoader + paper augmentation on {device.type}): {rate:.1f} img/s"
        )
    # The ceiling, in the precision "ours" ran in: a step cannot beat FLOPs / peak rate.
    precision, why = resolve_precision("auto", device)
    peak, probe = arithmetic_peak(device, precision)
    flops = step_flops("paper", 227, device)
    ceiling = peak / flops
    print(f"  precision of ours: {precision} ({why})")
    print(
        f"  paper    {flops / 1e9:.2f} GFLOP per training image; peak here {peak / 1e9:.0f} GFLOP/s "
        f"({probe}) → at most {ceiling:.1f} img/s; naive {ours['paper'] / ratio['paper']:.1f}, "
        f"ours {ours['paper']:.1f} img/s = {100 * ours['paper'] / ceiling:.0f} % of that ceiling"
    )
    print(
        f"speedup of our defaults over the naive step: cifar10 {ratio['cifar10']:.2f}×, "
        f"paper {ratio['paper']:.2f}×"
    )


if __name__ == "__main__":
    main()
