"""LRN's one-pass CPU kernel (lrn_kernel.c): built once per machine with the system's C compiler.

The kernel makes one pass over the activation forward (1 read, 1 write) and one backward (2 reads,
1 write: it recomputes the window sums from the input rather than saving them) where the GEMM form
in lrn.py makes about 15 and 12; ``benchmarks/lrn.py`` times both.
It covers channels_last CPU tensors in fp32 or bf16 (the training step's layout, channels innermost);
everything else, and every machine without a C compiler, takes the GEMM form, which gives the same
result to rounding.

Build: ``cc -O3 -march=native …`` into a shared library in ``$ALEXNET_CACHE/kernels`` (default
``~/.cache/alexnet/kernels``), named by a hash of the source, the flags
and the CPU, so a machine with other instructions (a cluster's other nodes on a shared home) builds
its own. About a second, the first time LRN runs on the CPU; after that the file is loaded. The
library is written to a temporary name and renamed into place, so processes that build at once
each end with a whole file. Loaded through ctypes, not torch's C++ extension builder: that compiles
torch's headers (about a minute on 2 cores) for a kernel that needs none of them.
``ALEXNET_NATIVE_LRN=0`` switches the kernel off (the GEMM form everywhere).
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
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

SOURCE = "lrn_kernel.c"
# Tried in order until one compiles: -march=native and -mrecip (x86) are not every compiler's. The
# math flags let the compiler vectorise 1/sqrt(s) as rsqrt and one Newton step (fp32-accurate to a
# few ulp; fp32 results stay within the tests' 1e-5 of torch's LRN); NaNs are tested on their bits.
FAST_MATH = ["-fno-math-errno", "-funsafe-math-optimizations", "-ffinite-math-only", "-fno-trapping-math"]
FLAG_SETS = (
    ["-O3", "-march=native", *FAST_MATH, "-mrecip"],
    ["-O3", "-march=native", *FAST_MATH],
    ["-O3", *FAST_MATH],
)
COMMON = ["-shared", "-fPIC", "-pthread"]

_lock = threading.Lock()
_kernel: NativeLRN | None = None
_status: str | None = None  # why the kernel is or is not in use, once looked at
_suspended = 0  # inside gemm_form()


class NativeLRN:
    """The built library's two entry points, on torch tensors."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        i64, f32, ptr, i32 = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int
        lib.lrn_forward.argtypes = [i32, ptr, ptr, i64, i64, i64, i64, f32, f32, f32, i32]
        lib.lrn_backward.argtypes = [i32, ptr, ptr, ptr, i64, i64, i64, i64, f32, f32, f32, f32, i32]
        lib.lrn_forward.restype = lib.lrn_backward.restype = i32
        self._lib, self.path = lib, path

    def forward(
        self, x: Tensor, groups: int, size: int, alpha: float, beta: float, k: float
    ) -> Tensor | None:
        """LRN of x (lrn_kernel.c), in x's dtype and layout; None if the kernel could not run."""
        out = torch.empty_like(x)
        rows, channels = x.numel() // x.shape[1], x.shape[1]
        failed = self._lib.lrn_forward(
            x.dtype == torch.bfloat16, x.data_ptr(), out.data_ptr(),
            rows, channels, groups, size, alpha / size, beta, k, torch.get_num_threads(),
        )  # fmt: skip
        return None if failed else out

    def backward(
        self, grad: Tensor, x: Tensor, groups: int, size: int, alpha: float, beta: float, k: float
    ) -> Tensor | None:
        """∂L/∂x of lrn_kernel.c from the forward's input (grad in x's layout); None if it could not run."""
        grad_x = torch.empty_like(x)
        rows, channels = x.numel() // x.shape[1], x.shape[1]
        failed = self._lib.lrn_backward(
            x.dtype == torch.bfloat16, grad.data_ptr(), x.data_ptr(), grad_x.data_ptr(),
            rows, channels, groups, size, alpha / size, beta, k, -2.0 * alpha * beta / size,
            torch.get_num_threads(),
        )  # fmt: skip
        return None if failed else grad_x


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
    if (
        _suspended
        or x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.bfloat16)
        or x.numel() == 0
    ):
        return False
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def kernel() -> NativeLRN | None:
    """The kernel, built or loaded on first use; None where it is switched off or cannot be built."""
    global _kernel, _status
    if _status is None:
        with _lock:
            if _status is None:
                _kernel, _status = _load()
    return _kernel


def status() -> str:
    """One line: whether LRN's CPU kernel is in use here, and why not if not (builds it if needed)."""
    kernel()
    return _status or ""


def cache_dir() -> Path:
    """$ALEXNET_CACHE/kernels, else ~/.cache/alexnet/kernels (beside the prepared stores' cache)."""
    return Path(os.environ.get("ALEXNET_CACHE", Path.home() / ".cache" / "alexnet")) / "kernels"


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


def _load() -> tuple[NativeLRN | None, str]:
    if os.environ.get("ALEXNET_NATIVE_LRN", "1") == "0":
        return None, "off (ALEXNET_NATIVE_LRN=0): LRN runs as GEMMs"
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler (cc, gcc, clang; or $CC) found: LRN runs as GEMMs"
    source = resources.files(__package__).joinpath(SOURCE).read_bytes()
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), compiler.encode(),
                                         _cpu_identity().encode()])).hexdigest()[:16]  # fmt: skip
        path = cache_dir() / f"lrn-{key}.so"
        for attempt in ("cached", "rebuilt"):  # a damaged file in the cache is built again, once
            if attempt == "rebuilt" or not path.exists():
                error = _build(compiler, flags, source, path)
                if error:
                    errors.append(error)
                    break
            try:
                return NativeLRN(path), f"one-pass CPU kernel ({path})"
            except OSError as exc:
                errors.append(f"loading {path}: {exc}")
    return None, f"LRN's CPU kernel did not build ({errors[-1]}): LRN runs as GEMMs"


def _build(compiler: str, flags: list[str], source: bytes, path: Path) -> str | None:
    """Compile into a temporary file beside ``path`` and rename it into place; the error, or None."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            src, lib = Path(tmp) / SOURCE, Path(tmp) / path.name
            src.write_bytes(source)
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
