"""The CPU kernels in C, each built once per machine with the system's C compiler.

``lrn_kernel.c``: LRN in one pass over the activation forward (1 read, 1 write) and one backward (2
reads, 1 write: it recomputes the window sums from the input rather than saving them), where the
GEMM form in lrn.py makes about 15 and 12; ``benchmarks/lrn.py`` times both.
``maxpool_kernel.c``: max-pooling with a one-byte position per output value instead of torch's
int64 index and saved input, equal to torch's max_pool2d bit for bit in fp32; ``benchmarks/layers.py``.
``dropout_kernel.c``: dropout with its mask from a hash of (seed, index) instead of torch's
bernoulli_, about 8× faster on the fc layers' outputs; the seed is drawn from torch's generator.
LRN and max-pooling cover channels_last CPU tensors in fp32 or bf16 (the training step's layout,
channels innermost), dropout contiguous ones; everything else, and every machine without a C
compiler, takes torch's ops (LRN: the GEMM form), which give the same result (LRN: to rounding;
dropout: the same distribution).

Build: ``cc -O3 -march=native …`` into a shared library in ``$ALEXNET_CACHE/kernels`` (default
``~/.cache/alexnet/kernels``), named by a hash of the sources, the flags and the CPU, so a machine
with other instructions (a cluster's other nodes on a shared home) builds its own. About a second
each, the first time the layer runs on the CPU; after that the file is loaded. A library is written
to a temporary name and renamed into place, so processes that build at once each end with a whole
file. Loaded through ctypes, not torch's C++ extension builder: that compiles torch's headers (about
a minute on 2 cores) for kernels that need none of them. ``ALEXNET_NATIVE_LRN=0``,
``ALEXNET_NATIVE_MAXPOOL=0`` and ``ALEXNET_NATIVE_DROPOUT=0`` switch them off.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

# Tried in order until one compiles: -march=native and -mrecip (x86) are not every compiler's. The
# math flags let the compiler vectorise LRN's 1/sqrt(s) as rsqrt and one Newton step (fp32-accurate
# to a few ulp; fp32 results stay within the tests' 1e-5 of torch's LRN); NaNs are tested on their
# bits there. Max-pooling takes no math flags: with them the compiler may assume no NaN and lose
# torch's NaN rule in its comparisons.
FAST_MATH = ("-fno-math-errno", "-funsafe-math-optimizations", "-ffinite-math-only", "-fno-trapping-math")
COMMON = ["-shared", "-fPIC", "-pthread"]
HEADERS = ("native_common.h",)  # included by every kernel: bf16 conversion and the thread split


class NativeLRN:
    """lrn_kernel.c's two entry points, on torch tensors."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        i64, f32, ptr, i32 = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int
        lib.lrn_forward.argtypes = [i32, i32, ptr, ptr, i64, i64, i64, i64, f32, f32, f32, i32]
        lib.lrn_backward.argtypes = [i32, i32, ptr, ptr, ptr, i64, i64, i64, i64, f32, f32, f32, f32, i32]
        lib.lrn_forward.restype = lib.lrn_backward.restype = i32
        self._lib, self.path = lib, path

    def forward(
        self, x: Tensor, groups: int, size: int, alpha: float, beta: float, k: float, relu: bool = False
    ) -> Tensor | None:
        """LRN of x, or of ReLU(x) with ``relu`` (lrn_kernel.c), in x's dtype and layout; None if the
        kernel could not run."""
        out = torch.empty_like(x)
        rows, channels = x.numel() // x.shape[1], x.shape[1]
        failed = self._lib.lrn_forward(
            x.dtype == torch.bfloat16, relu, x.data_ptr(), out.data_ptr(),
            rows, channels, groups, size, alpha / size, beta, k, torch.get_num_threads(),
        )  # fmt: skip
        return None if failed else out

    def backward(
        self,
        grad: Tensor,
        x: Tensor,
        groups: int,
        size: int,
        alpha: float,
        beta: float,
        k: float,
        relu: bool = False,
    ) -> Tensor | None:
        """∂L/∂x of lrn_kernel.c from the forward's input (grad in x's layout), through the ReLU with
        ``relu``; None if it could not run."""
        grad_x = torch.empty_like(x)
        rows, channels = x.numel() // x.shape[1], x.shape[1]
        failed = self._lib.lrn_backward(
            x.dtype == torch.bfloat16, relu, grad.data_ptr(), x.data_ptr(), grad_x.data_ptr(),
            rows, channels, groups, size, alpha / size, beta, k, -2.0 * alpha * beta / size,
            torch.get_num_threads(),
        )  # fmt: skip
        return None if failed else grad_x


class NativeMaxPool:
    """maxpool_kernel.c's two entry points (square windows, no padding), on torch tensors."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        i64, ptr, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        lib.maxpool_forward.argtypes = [i32, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, i32]
        lib.maxpool_backward.argtypes = [i32, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, i32]
        lib.maxpool_forward.restype = lib.maxpool_backward.restype = i32
        self._lib, self.path = lib, path

    def forward(self, x: Tensor, kernel: int, stride: int) -> tuple[Tensor, Tensor] | None:
        """max_pool2d(x, kernel, stride), channels_last like x, and each maximum's position in its
        window (uint8, row-major) for the backward; None if the kernel could not run."""
        n, c, h, w = x.shape
        size = (n, c, (h - kernel) // stride + 1, (w - kernel) // stride + 1)
        out = torch.empty(size, dtype=x.dtype, memory_format=torch.channels_last)
        at = torch.empty(size, dtype=torch.uint8, memory_format=torch.channels_last)
        failed = self._lib.maxpool_forward(
            x.dtype == torch.bfloat16, x.data_ptr(), out.data_ptr(), at.data_ptr(), n, h, w, c,
            kernel, stride, torch.get_num_threads(),
        )  # fmt: skip
        return None if failed else (out, at)

    def backward(self, grad: Tensor, at: Tensor, x_shape, kernel: int, stride: int) -> Tensor | None:
        """∂L/∂x (channels_last, grad's dtype) from the forward's positions; None if it could not run."""
        n, c, h, w = x_shape
        grad_x = torch.empty((n, c, h, w), dtype=grad.dtype, memory_format=torch.channels_last)
        failed = self._lib.maxpool_backward(
            grad.dtype == torch.bfloat16, grad.data_ptr(), at.data_ptr(), grad_x.data_ptr(), n, h, w,
            c, kernel, stride, torch.get_num_threads(),
        )  # fmt: skip
        return None if failed else grad_x


class NativeDropout:
    """dropout_kernel.c's two entry points, on contiguous torch tensors."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        i64, ptr, i32, u64, u32, f32 = (
            ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float,
        )  # fmt: skip
        lib.dropout_forward.argtypes = [i32, ptr, ptr, ptr, i64, u64, u32, f32, i32]
        lib.dropout_backward.argtypes = [i32, ptr, ptr, ptr, i64, f32, i32]
        lib.dropout_forward.restype = lib.dropout_backward.restype = i32
        self._lib, self.path = lib, path

    def forward(self, x: Tensor, p: float, seed: int) -> tuple[Tensor, Tensor] | None:
        """(x with each value zeroed with probability p and the rest scaled by 1/(1 − p), the mask);
        None if the kernel could not run."""
        out, mask = torch.empty_like(x), torch.empty(x.shape, dtype=torch.uint8)
        keep = min(round((1.0 - p) * 2**32), 2**32 - 1)  # a value is kept where its hash < keep
        failed = self._lib.dropout_forward(
            x.dtype == torch.bfloat16, x.data_ptr(), out.data_ptr(), mask.data_ptr(), x.numel(), seed,
            keep, _scale(p, x.dtype), torch.get_num_threads(),
        )  # fmt: skip
        return None if failed else (out, mask)

    def backward(self, grad: Tensor, mask: Tensor, p: float) -> Tensor | None:
        """grad · mask / (1 − p); None if the kernel could not run."""
        grad_x = torch.empty_like(grad)
        failed = self._lib.dropout_backward(
            grad.dtype == torch.bfloat16, grad.data_ptr(), mask.data_ptr(), grad_x.data_ptr(), grad.numel(),
            _scale(p, grad.dtype), torch.get_num_threads(),
        )  # fmt: skip
        return None if failed else grad_x


def _scale(p: float, dtype: torch.dtype) -> float:
    """1/(1 − p) rounded to the tensor's dtype, as torch's dropout scales (2 exactly for p = 0.5)."""
    return torch.tensor(1.0 / (1.0 - p), dtype=dtype).item()


@dataclass(frozen=True)
class _Kernel:
    name: str  # the library's file name prefix
    source: str
    flag_sets: tuple[tuple[str, ...], ...]
    switch: str  # the environment variable that, set to 0, switches it off
    instead: str  # what runs where it does not, for the status line
    wrapper: type
    label: str  # the kernel, in the status line's words
    built: str  # the status line's words for a loaded kernel


KERNELS = {
    "lrn": _Kernel(
        "lrn",
        "lrn_kernel.c",
        (
            ("-O3", "-march=native", *FAST_MATH, "-mrecip"),
            ("-O3", "-march=native", *FAST_MATH),
            ("-O3", *FAST_MATH),
        ),
        "ALEXNET_NATIVE_LRN",
        "LRN runs as GEMMs",
        NativeLRN,
        "LRN's CPU kernel",
        "one-pass CPU kernel",
    ),
    "maxpool": _Kernel(
        "maxpool",
        "maxpool_kernel.c",
        (("-O3", "-march=native"), ("-O3",)),
        "ALEXNET_NATIVE_MAXPOOL",
        "max-pooling runs as torch's",
        NativeMaxPool,
        "the max-pool CPU kernel",
        "CPU max-pool kernel",
    ),
    "dropout": _Kernel(
        "dropout",
        "dropout_kernel.c",
        (("-O3", "-march=native"), ("-O3",)),
        "ALEXNET_NATIVE_DROPOUT",
        "dropout runs as torch's",
        NativeDropout,
        "the dropout CPU kernel",
        "CPU dropout kernel",
    ),
}

_lock = threading.Lock()
_loaded: dict[str, tuple[object | None, str]] = {}  # name → (the kernel or None, its status line)
_suspended = 0  # inside gemm_form()


def lrn() -> NativeLRN | None:
    """LRN's kernel, built or loaded on first use; None where it is switched off or cannot be built."""
    return _get("lrn")  # type: ignore[return-value]


def maxpool() -> NativeMaxPool | None:
    """The max-pool kernel, built or loaded on first use; None where off or it cannot be built."""
    return _get("maxpool")  # type: ignore[return-value]


def dropout() -> NativeDropout | None:
    """The dropout kernel, built or loaded on first use; None where off or it cannot be built."""
    return _get("dropout")  # type: ignore[return-value]


def status(name: str = "lrn") -> str:
    """One line: whether that kernel is in use here, and why not if not (builds it if needed)."""
    _get(name)
    return _loaded[name][1]


@contextlib.contextmanager
def gemm_form():
    """LRN forwards inside the block take the GEMM form (their backwards follow): to compare the two."""
    global _suspended
    _suspended += 1
    try:
        yield
    finally:
        _suspended -= 1


def channels_innermost(x: Tensor) -> bool:
    """Whether x is a dense channels_last CPU fp32/bf16 [N, C, H, W]: [pixels, channels] in memory."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16) or x.numel() == 0:
        return False
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def lrn_applies(x: Tensor) -> bool:
    """Whether LRN's kernel takes x (outside gemm_form())."""
    return not _suspended and channels_innermost(x)


def cache_dir() -> Path:
    """$ALEXNET_CACHE/kernels, else ~/.cache/alexnet/kernels (beside the prepared stores' cache)."""
    return Path(os.environ.get("ALEXNET_CACHE", Path.home() / ".cache" / "alexnet")) / "kernels"


def _get(name: str) -> object | None:
    if name not in _loaded:
        with _lock:
            if name not in _loaded:
                _loaded[name] = _load(KERNELS[name])
    return _loaded[name][0]


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU's model and instruction flags (Linux), else its name."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    keep = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in keep}))


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _load(spec: _Kernel) -> tuple[object | None, str]:
    if os.environ.get(spec.switch, "1") == "0":
        return None, f"off ({spec.switch}=0): {spec.instead}"
    compiler = _compiler()
    if compiler is None:
        return None, f"no C compiler (cc, gcc, clang; or $CC) found: {spec.instead}"
    here = resources.files(__package__)
    files = {name: here.joinpath(name).read_bytes() for name in (spec.source, *HEADERS)}
    errors = []
    for flags in spec.flag_sets:
        key = hashlib.sha256(b"\0".join([*files.values(), " ".join(flags).encode(), compiler.encode(),
                                         _cpu_identity().encode()])).hexdigest()[:16]  # fmt: skip
        path = cache_dir() / f"{spec.name}-{key}.so"
        for attempt in ("cached", "rebuilt"):  # a damaged file in the cache is built again, once
            if attempt == "rebuilt" or not path.exists():
                error = _build(compiler, list(flags), spec.source, files, path)
                if error:
                    errors.append(error)
                    break
            try:
                return spec.wrapper(path), f"{spec.built} ({path})"
            except (OSError, AttributeError) as exc:  # AttributeError: a library without the symbols
                errors.append(f"loading {path}: {exc}")
    return None, f"{spec.label} did not build ({errors[-1]}): {spec.instead}"


def _build(compiler: str, flags: list[str], source: str, files: dict[str, bytes], path: Path) -> str | None:
    """Compile ``source`` (with the other ``files`` beside it) into a temporary file beside ``path``
    and rename it into place; the error, or None."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            for name, text in files.items():
                (Path(tmp) / name).write_bytes(text)
            src, lib = Path(tmp) / source, Path(tmp) / path.name
            done = subprocess.run(
                [compiler, *flags, *COMMON, "-o", str(lib), str(src), "-lm"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                return f"{Path(compiler).name} {' '.join(flags)}: {last}"
            os.replace(lib, path)  # atomic: a racing build replaces a whole file with a whole file
    except (OSError, subprocess.SubprocessError) as exc:
        return f"building in {path.parent}: {exc}"
    return None
