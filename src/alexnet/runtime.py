"""Where and how a process computes: device, precision, autocast, and torch.distributed facts.

A leaf module: training, evaluation and the analysis commands import it; it imports nothing of
theirs. Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set, WORLD_SIZE > 1) a process joins a group,
NCCL on CUDA and gloo on the CPU; without them the distributed helpers are no-ops.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import AlexNetError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# The CPU flag (as /proc/cpuinfo and lscpu print it) under which bf16 training is faster than
# fp32: AMX tiles (Sapphire Rapids and later, when the hypervisor exposes them). AVX-512 BF16
# alone is not enough: on a 2-core Sapphire Rapids guest with avx512_bf16 but no AMX, bf16 autocast
# ran our cifar10 step at 0.69× and the paper step at 0.75× the fp32 channels_last speed
# (benchmarks/RESULTS.md, "bf16 without AMX").
FAST_BF16_FLAGS = frozenset({"amx_bf16"})
# Where set, what ``auto`` resolves to (e.g. bf16, to run everything as a CPU with AMX would).
AUTO_PRECISION_ENV = "ALEXNET_AUTO_PRECISION"


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when torch sees one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AlexNetError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise AlexNetError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AlexNetError(f"device {name} asked for, but torch sees no CUDA device; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise AlexNetError(f"device {name}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_cpu_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc serves every block over 32 MB with a fresh mmap and unmaps it on free, so each
    activation of a CPU training step (a conv1 output of the paper net at batch 64 is 37 MB in
    bf16) comes back as new pages that the kernel must fault in and zero: a fresh 37 MB tensor
    cost 12 ms against 3 ms for the same multiply into memory used before (2-core Sapphire
    Rapids). With mmap off and trimming off, freed blocks return to the heap and the next step
    reuses them, like CUDA's caching allocator and the jemalloc/tcmalloc that PyTorch's CPU
    tuning guide suggests preloading; the process keeps its peak memory. Process-wide and
    idempotent; returns whether it applied (glibc only; elsewhere a no-op). Large blocks that
    glibc cannot place in a thread's arena still fall back to mmap.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; a C library without these parameters (musl) returns 0.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where there is no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_native_bf16() -> tuple[bool, str]:
    """Whether bf16 training is faster than fp32 on this CPU, and the evidence, in words.

    Two public facts must agree: the CPU's flags (``lscpu``: amx_bf16) and the instruction set
    torch's kernels dispatch to (``torch.backends.cpu.get_cpu_capability()``, which
    ``ATEN_CPU_CAPABILITY=avx2`` lowers, so the AVX2 path can be forced on any machine). Without
    /proc/cpuinfo (macOS, Windows) torch's oneDNN query decides.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    if flags:
        fast = sorted(FAST_BF16_FLAGS & flags)
        if not fast:
            extra = " (avx512_bf16 alone measured slower than fp32)" if "avx512_bf16" in flags else ""
            return False, f"CPU without amx_bf16{extra}"
        if not capability.startswith("AVX512"):
            return False, f"CPU has {fast[0]} but torch dispatches to {capability}"
        return True, f"CPU has {fast[0]}, torch dispatches to {capability}"
    try:  # no flags to read: ask oneDNN, the library that runs the bf16 convolutions
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return native, f"oneDNN reports {'native' if native else 'no native'} bf16 on {sys.platform}"


def cuda_native_bf16(device: torch.device, capability: tuple[int, int] | None = None) -> bool:
    """bf16 in hardware: compute capability 8.0 (Ampere) or later. ``torch.cuda.is_bf16_supported()``
    also says True where bf16 is emulated (V100, T4: 7.x), whose cuDNN has no bf16 convolutions."""
    major, minor = capability or torch.cuda.get_device_capability(device)
    return (major, minor) >= (8, 0)


# cuBLAS's condition for deterministic GEMMs (CUDA ≥ 10.2): a fixed workspace per stream
CUBLAS_DETERMINISTIC = ":4096:8"


def configure_kernels(device: torch.device, deterministic: bool) -> None:
    """How kernels are picked: deterministic ones (and what CUDA needs for them), or the fastest:
    cuDNN's autotuner for the fixed input shapes of training, TF32 for fp32 matmuls and convolutions
    on GPUs that have it (10 mantissa bits; what autocast-free fp32 training on Ampere+ uses)."""
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)  # before the first GEMM
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def resolve_precision(name: str, device: torch.device) -> tuple[str, str]:
    """The precision to train in and why: ``auto`` is bf16 on GPUs that have it (else fp16) and on
    CPUs with AMX bf16 tiles (where bf16 is the faster precision), else fp32."""
    if name not in PRECISIONS:
        raise AlexNetError(f"unknown precision {name!r}; use {', '.join(PRECISIONS)}")
    if name != "auto":
        if name == "bf16" and device.type == "cuda" and not cuda_native_bf16(device):
            raise AlexNetError(
                "this GPU has no native bf16 (compute capability below 8.0: cuDNN has no bf16 convolutions "
                "there); use --precision fp16 or fp32"
            )
        if name == "fp16" and device.type == "cpu":
            raise AlexNetError("fp16 training is for GPUs; on the CPU use --precision bf16 or fp32")
        if name == "bf16" and device.type == "cpu":
            native, why = cpu_native_bf16()
            if not native:  # cifar10 step, b128, AVX2 EPYC: 314 ms fp32, 5.2 s bf16
                return (
                    name,
                    f"asked for, although {why}: bf16 is slower than fp32 on this CPU (auto picks fp32)",
                )
        return name, "asked for"
    forced = os.environ.get(AUTO_PRECISION_ENV)
    if forced:
        if forced not in ("fp32", "bf16", "fp16"):
            raise AlexNetError(f"{AUTO_PRECISION_ENV}={forced!r}; use fp32, bf16 or fp16")
        return forced, f"auto: {AUTO_PRECISION_ENV}={forced}"
    if device.type == "cuda":
        if cuda_native_bf16(device):
            return "bf16", "auto: the GPU has bf16 (compute capability ≥ 8.0)"
        return "fp16", "auto: the GPU has no native bf16 (fp16 with a gradient scaler)"
    native, why = cpu_native_bf16()
    return ("bf16" if native else "fp32"), f"auto: {why}"


def autocast(device: torch.device, precision: str):
    """The autocast context for a precision name (fp32: none at all, on any device)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(use_cuda: bool) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (metrics are global)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed(use_cuda: bool):
    """Join the torchrun group for the duration (a no-op without torchrun)."""
    info = init_distributed(use_cuda)
    try:
        yield info
        # Every rank done before any tears the group down: a gloo rank that destroyed its group
        # and exited while a peer was still writing the run's files aborted at exit now and then
        # ("terminate called without an active exception", 3 of 65 two-process CPU runs).
        barrier(info)
    finally:
        shutdown(info)
