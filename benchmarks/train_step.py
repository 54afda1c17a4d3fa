"""Training-step throughput: a naive step against our defaults, in one process.

Naive: fp32, NCHW, torch.nn.LocalResponseNorm, eager, the preset's optimizer settings in torch's
own optimizer as torch runs it by default. Ours: the defaults ``alexnet train`` picks for the
device (our LRN, channels_last, bf16 autocast where the device has native bf16, the preset's
optimizer on torch's fused kernel), optionally with torch.compile. Models: ``cifar10`` at 28,
``figure1`` at 32, ``torchvision`` at 224 and ``paper`` at 227 (each recipe's crop), each built as
its preset builds it (the cifar10 net with two groups and LRN after its pools), at batch 64 and at
each preset's own batch by default. Also a short loss-parity check: the same seed trained
a few steps both ways must give close losses.

For every model it prints two bounds on the step. The ceiling: the model's FLOPs per training
image at the device's peak (on the CPU the best measured rate, in the step's precision, of the
kernels the step runs, probed before and again after the models, as a shared machine's speed can
change within a run; on CUDA the data sheet's dense bf16 peak). The kernel bound (``--kernels``):
the model's convolutions and matmuls run alone at their shapes, forward and backward, back to
back with nothing else in the step, timed in rounds alternating with our step (the best of each);
ours as a fraction of it is what the rest of the step (LRN, ReLU, pooling, dropout, casts, the
optimizer) costs.

    python benchmarks/train_step.py [--batch 64,preset] [--steps 5] [--device cpu|cuda] [--precision P]
    python benchmarks/train_step.py --device cuda --batch 256 --store STORE   # + from a prepared store
    python benchmarks/train_step.py --device cuda --batch 256 --cuda-graphs  # compile, mode reduce-overhead
    python benchmarks/train_step.py --models cifar10,paper --kernels  # + the kernel bound of each
    python benchmarks/train_step.py --models paper --batch preset --breakdown  # + where the step's time goes
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import statistics
import time

import torch
from lrn import with_torch_lrn  # benchmarks/lrn.py: torch's LRN per tower
from torch import nn
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop, conv_flop_count

from alexnet import build_model
from alexnet.config import preset
from alexnet.models import conv
from alexnet.runtime import autocast, keep_freed_cpu_memory, resolve_precision
from alexnet.train import make_optimizer
from alexnet.train.optim import parameter_groups
from alexnet.train.weight_copy import WeightCopy, use_weight_copy

PARITY_STEPS = 3


# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s.
GPU_BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0}


def stated_peak(device, given: float | None) -> tuple[float | None, str]:
    """The peak given on the command line (any device), else the GPU's from its data sheet."""
    if given:
        return given * 1e12, f"{given:g} TFLOP/s (--peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, tflops in GPU_BF16_PEAK_TFLOPS.items():  # "H100 PCIe" is checked before "H100"
        if key in name:
            return tflops * 1e12, f"{tflops:g} TFLOP/s dense bf16 ({key} data sheet)"
    return None, f"unknown for {name}: give --peak-tflops"


def preset_model(name: str, size: int):
    """The model as its preset trains it (groups, LRN position, dropout, widths), for inputs of side
    ``size``: ``name`` is a preset's (cifar10-long builds the cifar10 net wider)."""
    model = preset(name).model
    return build_model(model.name, **{**model.switches(), "input_size": size})


def torch_default(model, cfg):
    """The preset's optimizer settings in torch's own optimizer, as torch runs it by default (foreach,
    not the fused kernel): the naive step's. §5's rule becomes torch.optim.SGD, which agrees with it
    at the constant rate these steps run at, so the loss-parity check compares like with like."""
    groups = parameter_groups(model, cfg)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def make_step(model, device, precision, channels_last, optimizer, cuda_graphs=False):
    """One training step of ``model``, updated by ``optimizer`` (ours: the preset's, as ``alexnet
    train`` builds it with make_optimizer; naive: torch_default)."""

    def step(x, y):
        if cuda_graphs:  # a new iteration: outputs of the last replay may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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
    model = preset_model(name, size)
    model = with_torch_lrn(model).to(device)
    x = torch.randn(2, 3, size, size, device=device)
    fixed = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=fixed) as counter:
        F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long, device=device)).backward()
    return counter.get_total_flops() / len(x)


def layer_inputs(name: str, size: int, device) -> tuple[nn.Module, dict]:
    """The preset's net (channels_last, on ``device``) and the input shape of each of its
    convolution and linear layers (module path → shape), from one forward at batch 2."""
    model = preset_model(name, size).to(device).to(memory_format=torch.channels_last)
    shapes = {}

    def keep_shape(path):
        def hook(_module, inputs, _output):
            shapes[path] = inputs[0].shape  # returns None: the output stays as it is

        return hook

    hooks = [
        model.get_submodule(path).register_forward_hook(keep_shape(path)) for path in model.layer_names()
    ]
    with torch.no_grad():
        model(torch.randn(2, 3, size, size, device=device))
    for hook in hooks:
        hook.remove()
    return model, shapes


def matmul_convs(name: str, size: int, device, precision: str) -> list[str]:
    """The convolutions (conv1 … conv5) whose weight gradient the step computes by matmul
    (models/conv.py), in the step's precision on ``device``."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    model, shapes = layer_inputs(name, size, device)
    names, taken = model.layer_names(), []
    for path, shape in shapes.items():
        if len(shape) != 4:  # the linear layers
            continue
        x = torch.empty(shape, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        if conv.matmul_weight_grad(model.get_submodule(path), x):
            taken.append(names[path])
    return taken


def without_matmul_weight_grads(step):
    """``step`` with every convolution's weight gradient left to oneDNN (models/conv.py off)."""

    def run(x, y):
        kept, conv.MAX_PIXELS = conv.MAX_PIXELS, 0
        try:
            return step(x, y)
        finally:
            conv.MAX_PIXELS = kept

    return run


def kernel_runs(name: str, size: int, batch: int, device, precision: str) -> dict:
    """Forward + backward of each convolution and linear layer alone, at its real shapes: a callable
    per layer (conv1 … fc8), for ``kernel_times`` and ``paired_rates``.

    The bound on any step of this arithmetic on these kernels: with nothing else to do (no LRN,
    ReLU, pooling, dropout, casts or optimizer), a step still takes their sum. Weights and inputs
    are already in the step's precision (no autocast casts), channels_last as in ours, and conv1's
    input needs no gradient, as in training. A convolution runs as the conv stack runs it: with the
    matmul weight gradient where models/conv.py picks it.
    """
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    model, shapes = layer_inputs(name, size, device)
    names = model.layer_names()  # module path → the paper's name, conv1 … fc8, in order
    layers = [(n, model.get_submodule(n)) for n in names]
    runs = {}
    for index, (n, m) in enumerate(layers):
        layer = copy.deepcopy(m).to(dtype)
        x = torch.randn(batch, *shapes[n][1:], device=device, dtype=dtype)
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        x.requires_grad_(index > 0)
        grad = layer(x).detach().normal_()
        forward = layer
        if conv.matmul_weight_grad(layer, x):
            forward = functools.partial(conv.conv_with_matmul_weight_grad, layer)

        def run(layer=layer, forward=forward, x=x, grad=grad):
            layer.zero_grad(set_to_none=True)
            x.grad = None
            forward(x).backward(grad)

        runs[names[n]] = run
    return runs


def kernel_times(name: str, size: int, batch: int, device, precision: str) -> dict[str, float]:
    """Seconds of forward + backward of each convolution and linear layer alone (best of 5 each):
    where the kernel bound's time goes, layer by layer."""
    return {n: best_time(run, device) for n, run in kernel_runs(name, size, batch, device, precision).items()}


WITHOUT_COPIES = "ours without bf16 weight copies"


def copies_worth(step, without, x, y, rounds: int, device) -> tuple[float, float]:
    """img/s of our step and of the same step without bf16 weight copies, timed in alternation."""
    return paired_rates(step, x, y, {"without": lambda: without(x, y)}, rounds, device)


def paired_rates(step, x, y, kernels: dict, rounds: int, device) -> tuple[float, float]:
    """img/s of our step and of its kernels alone, each the best of ``rounds``, timed in alternation.

    The same statistic for both: the minimum of a whole step against the minimum of the kernels
    run back to back as one block. A sum of per-layer minima would be a looser bound the noisier
    the machine (each layer's fastest moment, never all at once), and measuring the two far apart
    would let drift decide the fraction.
    """

    def block():
        for run in kernels.values():
            run()

    for _ in range(2):  # warm-up: oneDNN picks and caches its kernels on the first calls
        step(x, y)
        block()
    best_step = best_block = float("inf")
    for _ in range(rounds):
        t0 = clock(device)
        step(x, y)
        t1 = clock(device)
        block()
        t2 = clock(device)
        best_step, best_block = min(best_step, t1 - t0), min(best_block, t2 - t1)
    return len(x) / best_step, len(x) / best_block


# Where a step's time goes (--breakdown): each profiled op's own time goes to the first category
# that claims it. The first three claim everything run inside them (the LRN's band GEMMs are LRN's
# cost, not the model's matmuls); the rest match the op itself or the autograd node above it.
OWNING = (
    ("optimizer", ("Optimizer.step", "Optimizer.zero_grad", "WeightCopy.step")),
    ("LRN", ("_LRN",)),  # our autograd Function, forward (_LRN) and backward (_LRNBackward)
    ("dropout", ("dropout", "bernoulli", "NativeDropoutBackward", "_Dropout")),  # _Dropout: our kernel's
)
BY_OP = (
    ("convolutions and matmuls", ("convolution", "addmm", "aten::mm", "aten::bmm", "aten::linear")),
    ("pooling", ("max_pool", "MaxPool")),  # MaxPool: also our kernel's Function, _MaxPool
    ("ReLU", ("relu", "threshold_backward", "clamp_min", "ReluBackward")),
    ("casts", ("_to_copy", "ToCopyBackward")),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss", "LogSoftmaxBackward", "NllLossBackward")),
)
CATEGORIES = (*(c for c, _ in OWNING), *(c for c, _ in BY_OP), "other")


def category(chain: list[str]) -> str:
    """The category of an op, given its name and those of the ops and nodes around it, innermost first."""
    for name, marks in OWNING:
        if any(mark in op for op in chain for mark in marks):
            return name
    for op in chain:
        for name, marks in BY_OP:
            if any(mark in op for mark in marks):
                return name
    return "other"


def breakdown(step, x, y, steps: int = 3) -> dict[str, float]:
    """Seconds per step by category (``CATEGORIES``), from torch.profiler's own time of each op.

    Profiling adds its own cost to every op, so the fractions are the result, not the sum.
    """
    for _ in range(2):
        step(x, y)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(x, y)
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    for event in prof.events():
        own = event.self_device_time_total if x.device.type == "cuda" else event.self_cpu_time_total
        if own <= 0:
            continue
        chain, parent = [event.name], event.cpu_parent
        while parent is not None:
            chain.append(parent.name)
            parent = parent.cpu_parent
        seconds[category(chain)] += own * 1e-6 / steps
    return seconds


def without_dropout(model: nn.Module, drop: bool) -> nn.Module:
    """``model`` with every dropout's rate set to 0 when ``drop``: the parity check's model."""
    for module in model.modules() if drop else ():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


PARITY_LR = 0.001


def parity_rate(cfg):
    """The optimizer settings of the parity check, at lr 0.001. What it compares is the step's
    arithmetic, so it runs where every preset's first steps learn: the cifar10 preset reaches its
    0.04 only after a warm-up epoch, and at 0.04 from the first step the loss on one batch of noise
    explodes (3.6 to 491 in three steps at batch 128; at 0.01 it still jumps to 6.4 before it
    falls), and rounding, not the code, then decides the number."""
    return dataclasses.replace(cfg, lr=PARITY_LR)


def variants(name, size, device, compile_model, precision, cuda_graphs=False, unfused=False):

    cfg = preset(name).optim

    def naive(dropout=True):
        rates = cfg if dropout else parity_rate(cfg)
        torch.manual_seed(0)
        m = without_dropout(preset_model(name, size), not dropout)
        m = with_torch_lrn(m)
        return make_step(m.to(device), device, "fp32", channels_last=False, optimizer=torch_default(m, rates))

    def ours(fused=True, copies=True, dropout=True):
        rates = cfg if dropout else parity_rate(cfg)
        torch.manual_seed(0)
        m = without_dropout(preset_model(name, size), not dropout)
        m = m.to(device).to(memory_format=torch.channels_last)
        # the preset's optimizer (paper: §5's rule, biases undecayed; cifar10: Nesterov), fused
        opt = make_optimizer(m, rates) if fused else torch_default(m, rates)
        if copies and weight_copies(opt):  # as `alexnet train`: bf16 copies kept by §5's update
            kept = WeightCopy(m, opt)
            return make_step(kept, device, precision, channels_last=True, optimizer=kept)
        if cuda_graphs:  # torch.compile's CUDA graphs: one replay per forward and per backward
            m = torch.compile(m, mode="reduce-overhead")
        elif compile_model:
            m = torch.compile(m)
        return make_step(m, device, precision, channels_last=True, optimizer=opt, cuda_graphs=cuda_graphs)

    def weight_copies(opt) -> bool:
        compiled = compile_model or cuda_graphs
        return use_weight_copy(opt, precision, distributed=False, compiled=compiled, two_devices=False)

    how = ", CUDA graphs" if cuda_graphs else ", compiled" if compile_model else ""
    out = {"naive (fp32, NCHW, torch LRN, eager)": naive}
    if unfused:  # what the fused optimizer kernel is worth, in the same process
        out[f"ours with torch's default optimizer ({precision}{how})"] = lambda **kw: ours(fused=False, **kw)
    if weight_copies(
        make_optimizer(preset_model(name, size), cfg)
    ):  # what the copies are worth, in the same process
        out[f"{WITHOUT_COPIES} (autocast's casts, fused {cfg.name})"] = lambda **kw: ours(copies=False, **kw)
        how += ", bf16 weight copies"
    out[f"ours ({precision}, channels_last, our LRN, fused {cfg.name}{how})"] = ours
    return out


def from_store(path: str, batch: int, steps: int, device, compile_model: bool) -> float:
    """Our paper step fed by the real input path: StoreLoader + the paper's augmentation on ``device``."""
    from alexnet.config import override
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


# each recipe's crop; the names are presets' (cifar10-long: the wider cifar10 net of the 89 % recipe)
SIZES = {"cifar10": 28, "cifar10-long": 28, "figure1": 32, "torchvision": 224, "paper": 227}
PRESET_BATCH = {name: preset(name).train.batch_size for name in SIZES}  # each recipe's batch


def batches_for(name: str, spec: str) -> list[int]:
    """``--batch``: numbers and ``preset`` (that model's recipe batch), comma-separated, in order."""
    out = []
    for item in spec.split(","):
        batch = PRESET_BATCH[name] if item.strip() == "preset" else int(item)
        if batch not in out:
            out.append(batch)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--batch", default="64,preset", help="batch sizes: numbers and 'preset' (the model's recipe batch)"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--cuda-graphs", action="store_true", help="torch.compile(mode='reduce-overhead')")
    parser.add_argument(
        "--models",
        default=None,
        help="presets: default cifar10,paper (CPU), cifar10,torchvision,paper; also figure1, cifar10-long",
    )
    parser.add_argument("--unfused", action="store_true", help="also time ours with torch's own optimizer")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak in the step's precision; default: a GPU's data-sheet dense bf16 peak, "
        "on the CPU the best rate of the probes (which take ~15 s in fp32 on 2 cores)",
    )
    parser.add_argument("--store", help="also time the paper step fed from this prepared store")
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="also time each model's convolutions and matmuls alone: its kernel bound",
    )
    parser.add_argument(
        "--kernel-rounds", type=int, default=10, help="alternating rounds of ours and its kernels (--kernels)"
    )
    parser.add_argument(
        "--precision", default="auto", help="precision of ours: auto (as training), fp32, bf16"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also profile ours: its time by category (kernels, LRN, pooling, ReLU, casts, optimizer, …)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    precision, why = resolve_precision(args.precision, device)
    name_of = "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device)
    # As `alexnet train` does on the CPU (alexnet.runtime); process-wide, so naive runs with it too.
    heap = ", freed memory kept for reuse" if device.type == "cpu" and keep_freed_cpu_memory() else ""
    print(
        f"training step, {args.steps} timed steps after 2 warm-up, on {name_of} "
        f"({torch.get_num_threads()} threads{heap}), torch {torch.__version__}; precision of ours: "
        f"{precision} ({why})"
    )
    # The ceiling, in the precision "ours" runs in: a step cannot beat its FLOPs at the peak rate.
    probed = not (device.type == "cuda" or args.peak_tflops)
    if probed:
        peak, source = arithmetic_peak(device, precision)
    else:
        peak, source = stated_peak(device, args.peak_tflops)
    print(f"  peak: {source}" if peak is None else f"  peak here {peak / 1e9:.0f} GFLOP/s ({source})")
    names = (args.models or ("cifar10,paper" if device.type == "cpu" else "cifar10,torchvision,paper")).split(
        ","
    )
    ratio, rows = {}, []
    for name in names:
        size = SIZES[name]
        flops = step_flops(name, size, device)
        classes = preset_model(name, size).num_classes
        for batch in batches_for(name, args.batch):
            x = torch.randn(batch, 3, size, size, device=device)
            y = torch.randint(0, classes, (batch,), device=device)
            rates, losses = {}, {}
            options = (args.compile, precision, args.cuda_graphs, args.unfused)
            for label, make in variants(name, size, device, *options).items():
                best, median = timed(make(), x, y, args.steps, device)
                rates[label] = best
                # The same initial weights and no dropout (our kernel's masks are not torch's, by design):
                # both paths must follow the same loss curve.
                parity = make(dropout=False)
                losses[label] = [float(parity(x, y).detach()) for _ in range(PARITY_STEPS)][-1]
                print(f"  {name:<8} b{batch:<4} {label:<52} {best:8.1f} img/s (median {median:.1f})")
            naive, ours = rates[next(iter(rates))], rates[list(rates)[-1]]
            ratio[f"{name} b{batch}"] = ours / naive
            first, second = losses[next(iter(losses))], losses[list(losses)[-1]]
            what = f"loss after {PARITY_STEPS} steps on one batch (dropout off, lr {PARITY_LR})"
            print(f"  {name:<8} b{batch:<4} {what}: naive {first:.4f}, ours {second:.4f}; "
                  f"speedup {ours / naive:.2f}×")  # fmt: skip
            row = {"model": name, "batch": batch, "ours": ours, "flops": flops}
            if peak:
                row["ceiling"] = peak / flops
            made = variants(name, size, device, *options)
            make_ours = list(made.values())[-1]  # a fresh "ours"
            without = [make for label, make in made.items() if label.startswith(WITHOUT_COPIES)]
            if without:  # the copies' worth, in alternation (sequential timings drift on a shared machine)
                kept, cast = copies_worth(make_ours(), without[0](), x, y, args.kernel_rounds, device)
                print(f"  {name:<8} b{batch:<4} bf16 weight copies: ours {1e3 * batch / kept:.0f} ms per "
                      f"step against {1e3 * batch / cast:.0f} ms with autocast's casts, best of "
                      f"{args.kernel_rounds} alternating rounds ({100 * (1 - cast / kept):.1f} % less "
                      f"time)")  # fmt: skip
            taken = matmul_convs(name, size, device, precision)
            if taken:  # the matmul weight gradients' worth, in alternation
                onednn = functools.partial(without_matmul_weight_grads(make_ours()), x, y)
                with_, without_ = paired_rates(
                    make_ours(), x, y, {"oneDNN": onednn}, args.kernel_rounds, device
                )
                print(f"  {name:<8} b{batch:<4} weight gradients of {', '.join(taken)} by matmul: ours "
                      f"{1e3 * batch / with_:.0f} ms per step against {1e3 * batch / without_:.0f} ms with "
                      f"oneDNN's, best of {args.kernel_rounds} alternating rounds ({with_ / without_:.2f}× "
                      f"the speed)")  # fmt: skip
            if args.kernels:
                runs = kernel_runs(name, size, batch, device, precision)
                each = ", ".join(f"{n} {1e3 * best_time(r, device):.1f}" for n, r in runs.items())
                paired, row["kernels"] = paired_rates(make_ours(), x, y, runs, args.kernel_rounds, device)
                alone, step = batch / row["kernels"], batch / paired
                print(f"  {name:<8} b{batch:<4} its convolutions and matmuls alone, forward + backward in "
                      f"{precision}, ms per batch (best of 5 each): {each}; all of them in a row "
                      f"{1e3 * alone:.0f} ms against ours {1e3 * step:.0f} ms per step, best of "
                      f"{args.kernel_rounds} alternating rounds ({1e3 * (step - alone):.0f} ms "
                      f"elsewhere)")  # fmt: skip
                row["paired"] = paired
            if args.breakdown:
                parts = breakdown(make_ours(), x, y, args.steps)
                total = sum(parts.values())
                shown = ", ".join(
                    f"{c} {1e3 * t:.1f} ({100 * t / total:.0f} %)" for c, t in parts.items() if t
                )
                print(f"  {name:<8} b{batch:<4} ours by category, ms per step under the profiler "
                      f"({1e3 * total:.0f} in all): {shown}")  # fmt: skip
            rows.append(row)
    if args.store:
        rate = from_store(args.store, batch_for_store(args.batch), args.steps, device, args.compile)
        print(
            f"  paper    ours, fed from {args.store} "
            f"(StoreLoader + paper augmentation on {device.type}): {rate:.1f} img/s"
        )
    if probed and rows:  # the ceiling is the best rate seen: the machine may have sped up since
        again, source = arithmetic_peak(device, precision)
        print(f"  peak probed again after the models: {again / 1e9:.0f} GFLOP/s ({source}); the ceiling "
              f"below uses {max(peak, again) / 1e9:.0f}")  # fmt: skip
        peak = max(peak, again)
        for r in rows:
            r["ceiling"] = peak / r["flops"]
    print("ours against the ceiling (model FLOPs at the peak) and against the kernel bound (its")
    print("convolutions and matmuls alone, nothing else in the step):")
    for r in rows:
        ceiling = (f"; ceiling {r['ceiling']:.1f} img/s ({r['flops'] / 1e9:.3f} GFLOP/image): "
                   f"{100 * r['ours'] / r['ceiling']:.0f} % of it") if "ceiling" in r else ""  # fmt: skip
        bound = ""
        if "kernels" in r:
            share = f", {100 * r['kernels'] / r['ceiling']:.0f} % of the ceiling" if "ceiling" in r else ""
            bound = f"; kernel bound {r['kernels']:.1f} img/s{share}: "
            bound += f"{100 * r['paired'] / r['kernels']:.0f} % of it (ours {r['paired']:.1f} img/s beside)"
        print(f"  {r['model']:<8} b{r['batch']:<4} {precision} ours {r['ours']:.1f} img/s{ceiling}{bound}")
    print(
        "speedup of our defaults over the naive step: " + ", ".join(f"{n} {v:.2f}×" for n, v in ratio.items())
    )


def batch_for_store(spec: str) -> int:
    """--store's batch: the first number of --batch, else the paper recipe's."""
    numbers = [int(b) for b in spec.split(",") if b.strip() != "preset"]
    return numbers[0] if numbers else PRESET_BATCH["paper"]


if __name__ == "__main__":
    main()
