"""Training-step throughput: a naive step against our defaults, in one process.

Naive: fp32, NCHW, torch.nn.LocalResponseNorm, eager, torch's default SGD. Ours: the defaults
``alexnet train`` picks for the device (our LRN, channels_last, bf16 autocast where the device has
native bf16, the fused SGD kernel), optionally
with torch.compile. Models: ``paper`` at 227 and ``cifar10`` at 28 (its recipe's crop). Also a
short loss-parity check: the same seed trained a few steps both ways must give close losses. It
also prints the ceiling: the paper net's FLOPs per training image against the best measured rate,
in the precision of our step, of the kernels the step runs (matmul, convolutions), the most any
implementation of the same arithmetic can reach here, and our fraction of it.

    python benchmarks/train_step.py [--batch 64] [--steps 5] [--device cpu|cuda] [--compile] [--precision P]
    python benchmarks/train_step.py --device cuda --batch 256 --store STORE   # + from a prepared store
    python benchmarks/train_step.py --device cuda --batch 256 --cuda-graphs  # compile, mode reduce-overhead
    python benchmarks/train_step.py --models paper --kernels  # + the convolutions and matmuls alone

On CUDA it also prints each model's share of the GPU's dense bf16 peak (model FLOPs per training
image × images/s ÷ peak; the peak from the device name, or --peak-tflops).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from lrn import with_torch_lrn  # benchmarks/lrn.py: torch's LRN per tower
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop, conv_flop_count

from alexnet import build_model
from alexnet.runtime import autocast, keep_freed_cpu_memory, resolve_precision

PARITY_STEPS = 3


# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s.
GPU_BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0}


def gpu_peak(device, given: float | None) -> tuple[float | None, str]:
    if given:
        return given * 1e12, f"{given:g} TFLOP/s (--peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, tflops in GPU_BF16_PEAK_TFLOPS.items():  # "H100 PCIe" is checked before "H100"
        if key in name:
            return tflops * 1e12, f"{tflops:g} TFLOP/s dense bf16 ({key} data sheet)"
    return None, f"unknown for {name}: give --peak-tflops"


def make_step(model, device, precision, channels_last, cuda_graphs=False, fused=False):
    # ours: the fused SGD kernel, as training uses it (alexnet.train.optim.make_optimizer)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, fused=fused or None)

    def step(x, y):
        if cuda_graphs:  # a new iteration: outputs of the last replay may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
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
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = clock(device)
        fn()
        best = min(best, clock(device) - t0)
    return best


# Probes for the ceiling: (name, module or None for a matmul, input shape), at batch 64. The paper
# net's conv2 (27×27, 96 → 256, 5×5, two groups: the most FLOPs of any layer) and conv3 (13×13,
# 256 → 384, 3×3), and a 4096² matmul for the fully connected layers.
PROBES = (
    ("matmul 4096²", None, (4096, 4096)),
    ("conv2 5×5 g2", (96, 256, 5, 2, 2), (64, 96, 27, 27)),
    ("conv3 3×3", (256, 384, 3, 1, 1), (64, 256, 13, 13)),
)


def arithmetic_peak(device, precision: str, repeats: int = 10) -> tuple[float, str]:
    """The device's best sustained rate in ``precision`` (FLOP/s) over kernels the step runs.

    Each probe runs under the same autocast as our step (bf16 convolutions and matmuls go to
    oneDNN on the CPU); a convolution is probed as well as a matmul because on some CPUs torch's
    sgemm is slower than its convolutions, and a matmul-only ceiling would be too low. The
    largest rate is the ceiling: no step of the same arithmetic can beat its FLOPs at that rate.
    """
    rates = {}
    for name, spec, shape in PROBES:
        x = torch.randn(*shape, device=device)
        if spec is None:
            w = torch.randn(*shape, device=device)
            flops = 2 * shape[0] * shape[1] * shape[1]

            def run(x=x, w=w):
                with torch.no_grad(), autocast(device, precision):
                    x @ w
        else:
            c_in, c_out, k, pad, groups = spec
            conv = torch.nn.Conv2d(c_in, c_out, k, padding=pad, groups=groups).to(device)
            conv = conv.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
            n, _, h, w_ = shape
            flops = 2 * n * h * w_ * c_out * (c_in // groups) * k * k

            def run(x=x, conv=conv):
                with torch.no_grad(), autocast(device, precision):
                    conv(x)

        rates[name] = flops / best_time(run, device, repeats)
    kernel = max(rates, key=rates.get)
    shown = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in rates.items())
    return rates[kernel], f"{precision}; GFLOP/s by probe: {shown}"


def conv_backward_flops(grad_out_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of a convolution's backward: the forward's again for each gradient it computes.

    torch's own formula (up to 2.15 at least) counts the weight gradient of a grouped convolution
    ``groups`` times over (its transposed shapes lose the division; pytorch/pytorch#183405): the
    paper net's conv2, conv4 and conv5 have two groups, which made 4.96 GFLOP per training image
    of the right 4.14.
    """
    transposed, output_mask = args[4], args[7]  # aten.convolution_backward's argument order
    if transposed:
        return conv_backward_flop(grad_out_shape, x_shape, w_shape, *args, out_shape=out_shape, **kwargs)
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape))
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def step_flops(name: str, size: int, device) -> float:
    """FLOPs of one training image (forward and backward), counted by torch's FlopCounterMode.

    A convolution's backward is counted by ``conv_backward_flops``, not torch's formula.

    The model's arithmetic, not our implementation's: our LRN sums its windows with a small GEMM,
    which the counter would add, so it counts with torch's LRN (pooling, as for any LRN, uncounted).
    """
    model = build_model(name, input_size=size)
    model = with_torch_lrn(model).to(device) if name in ("paper", "cifar10") else model.to(device)
    x = torch.randn(2, 3, size, size, device=device)
    fixed = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=fixed) as counter:
        F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long, device=device)).backward()
    return counter.get_total_flops() / len(x)


def kernel_times(name: str, size: int, batch: int, device, precision: str) -> dict[str, float]:
    """Seconds of forward + backward of each convolution and linear layer alone, at its real shapes.

    The bound on any step of this arithmetic on these kernels: with nothing else to do (no LRN,
    ReLU, pooling, dropout, casts or optimizer), a step still takes their sum. Weights and inputs
    are already in the step's precision (no autocast casts), channels_last as in ours, and conv1's
    input needs no gradient, as in training.
    """
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    model = build_model(name, input_size=size).to(device).to(memory_format=torch.channels_last)
    names = model.layer_names()  # module path → the paper's name, conv1 … fc8, in order
    layers = [(n, model.get_submodule(n)) for n in names]
    shapes = {}

    def keep_shape(name):
        def hook(_module, inputs, _output):
            shapes[name] = inputs[0].shape  # returns None: the output stays as it is

        return hook

    hooks = [m.register_forward_hook(keep_shape(n)) for n, m in layers]
    with torch.no_grad():
        model(torch.randn(2, 3, size, size, device=device))
    for hook in hooks:
        hook.remove()
    times = {}
    for index, (n, m) in enumerate(layers):
        layer = copy.deepcopy(m).to(dtype)
        x = torch.randn(batch, *shapes[n][1:], device=device, dtype=dtype)
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        x.requires_grad_(index > 0)
        grad = layer(x).detach().normal_()

        def run(layer=layer, x=x, grad=grad):
            layer.zero_grad(set_to_none=True)
            x.grad = None
            layer(x).backward(grad)

        times[names[n]] = best_time(run, device)
    return times


def variants(name, size, device, compile_model, precision, cuda_graphs=False, unfused=False):

    def naive():
        torch.manual_seed(0)
        m = build_model(name, input_size=size)
        m = with_torch_lrn(m) if name in ("paper", "cifar10") else m
        return make_step(m.to(device), device, "fp32", channels_last=False)

    def ours(fused=True):
        torch.manual_seed(0)
        m = build_model(name, input_size=size).to(device).to(memory_format=torch.channels_last)
        if cuda_graphs:  # torch.compile's CUDA graphs: one replay per forward and per backward
            m = torch.compile(m, mode="reduce-overhead")
        elif compile_model:
            m = torch.compile(m)
        return make_step(m, device, precision, channels_last=True, cuda_graphs=cuda_graphs, fused=fused)

    how = ", CUDA graphs" if cuda_graphs else ", compiled" if compile_model else ""
    out = {"naive (fp32, NCHW, torch LRN, eager)": naive}
    if unfused:  # what the fused SGD kernel is worth, in the same process
        out[f"ours with torch's default SGD ({precision}{how})"] = lambda: ours(fused=False)
    out[f"ours ({precision}, channels_last, our LRN, fused SGD{how})"] = ours
    return out


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
    precision, _ = resolve_precision("auto", device)
    step = list(variants("paper", 227, device, compile_model, precision).values())[-1]()  # "ours"
    # The transforms draw their random numbers on the CPU (the same numbers on any device) and move
    # only the pixels: their generator is a CPU one on every device.
    generator = torch.Generator().manual_seed(0)

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
    parser.add_argument("--cuda-graphs", action="store_true", help="torch.compile(mode='reduce-overhead')")
    parser.add_argument(
        "--models", default=None, help="default cifar10,paper (CPU), cifar10,torchvision,paper"
    )
    parser.add_argument("--unfused", action="store_true", help="also time ours with torch's default SGD")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak")
    parser.add_argument("--store", help="also time the paper step fed from this prepared store")
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="also time the paper net's convolutions and matmuls alone: the most any step on them can reach",
    )
    parser.add_argument(
        "--precision", default="auto", help="precision of ours: auto (as training), fp32, bf16"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    precision, why = resolve_precision(args.precision, device)
    name_of = "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device)
    # As `alexnet train` does on the CPU (alexnet.runtime); process-wide, so naive runs with it too.
    heap = ", freed memory kept for reuse" if device.type == "cpu" and keep_freed_cpu_memory() else ""
    print(
        f"training step, batch {args.batch}, {args.steps} timed steps after 2 warm-up, on {name_of} "
        f"({torch.get_num_threads()} threads{heap}), torch {torch.__version__}"
    )
    ratio, ours = {}, {}
    sizes = {"cifar10": 28, "torchvision": 224, "paper": 227}
    names = (args.models or ("cifar10,paper" if device.type == "cpu" else "cifar10,torchvision,paper")).split(
        ","
    )
    for name in names:
        size = sizes[name]
        x = torch.randn(args.batch, 3, size, size, device=device)
        y = torch.randint(0, 10 if name == "cifar10" else 1000, (args.batch,), device=device)
        rates = {}
        losses = {}
        options = (args.compile, precision, args.cuda_graphs, args.unfused)
        for label, make in variants(name, size, device, *options).items():
            step = make()
            best, median = timed(step, x, y, args.steps, device)
            rates[label] = best
            parity = make()  # the same initial weights: both paths must follow the same loss curve
            losses[label] = [float(parity(x, y).detach()) for _ in range(PARITY_STEPS)][-1]
            print(f"  {name:<8} {label:<52} {best:8.1f} img/s (median {median:.1f})")
        naive_rate, our_rate = rates[next(iter(rates))], rates[list(rates)[-1]]
        ours[name] = our_rate
        ratio[name] = our_rate / naive_rate
        first, second = losses[next(iter(losses))], losses[list(losses)[-1]]
        print(
            f"  {name:<8} loss after {PARITY_STEPS} steps on one batch: naive {first:.4f}, "
            f"ours {second:.4f}; "
            f"speedup {ratio[name]:.2f}×"
        )
    if device.type == "cuda":
        peak, source = gpu_peak(device, args.peak_tflops)
        for name in names:
            flops = step_flops(name, sizes[name], device)
            share = f"{100 * flops * ours[name] / peak:.1f} % of {source}" if peak else source
            print(
                f"  {name:<8} {flops / 1e9:.2f} GFLOP per training image × {ours[name]:.0f} img/s = {share}"
            )
    if args.store:
        rate = from_store(args.store, args.batch, args.steps, device, args.compile)
        print(
            f"  paper    ours, fed from {args.store} "
            f"(StoreLoader + paper augmentation on {device.type}): {rate:.1f} img/s"
        )
    # The ceiling, in the precision "ours" ran in: a step cannot beat FLOPs / peak rate.
    print(f"  precision of ours: {precision} ({why})")
    if "paper" in ours:
        peak, probe = arithmetic_peak(device, precision)
        flops = step_flops("paper", 227, device)
        ceiling = peak / flops
        print(
            f"  paper    {flops / 1e9:.2f} GFLOP per training image; peak here {peak / 1e9:.0f} GFLOP/s "
            f"({probe}) → at most {ceiling:.1f} img/s; naive {ours['paper'] / ratio['paper']:.1f}, "
            f"ours {ours['paper']:.1f} img/s = {100 * ours['paper'] / ceiling:.0f} % of that ceiling"
        )
        if args.kernels:
            times = kernel_times("paper", 227, args.batch, device, precision)
            total = sum(times.values())
            each = ", ".join(f"{n} {1e3 * t:.1f}" for n, t in times.items())
            print(
                f"  paper    its convolutions and matmuls alone, forward + backward in {precision} "
                f"(ms per batch of {args.batch}: {each}): {1e3 * total:.0f} ms against "
                f"{1e3 * args.batch / ceiling:.0f} ms at the ceiling, so even with nothing else in the step "
                f"at most {args.batch / total:.1f} img/s = {100 * args.batch / total / ceiling:.0f} % of it; "
                f"ours spends {1e3 * args.batch / ours['paper'] - 1e3 * total:.0f} ms per step elsewhere"
            )
    print(
        "speedup of our defaults over the naive step: " + ", ".join(f"{n} {r:.2f}×" for n, r in ratio.items())
    )


if __name__ == "__main__":
    main()
