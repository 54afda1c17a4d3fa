"""Check and time every GPU path in one command, so that a first session with a GPU only measures.

    python benchmarks/gpu_check.py [--out gpu_check] [--quick]    # on a machine with CUDA GPUs
    python benchmarks/gpu_check.py --dry-run                      # the CPU-capable parts, on the CPU

Writes OUT/gpu_check.json (every number and every failure) and OUT/gpu_check.md (a summary), and
prints each check as it finishes. Each check is independent: one that fails is recorded with its
error and the rest still run. Sized for about 8 minutes on one H100:

- environment: torch, torchvision, TorchCodec, each device's name, capability and memory;
- the CUDA tests (tests/test_gpu.py, test_gpu_ready.py, test_jpeg_store.py, test_two_tower.py);
- host syncs in a steady-state training step (``torch.cuda.set_sync_debug_mode("warn")``);
- fp16 LRN under autocast at |a| = 300 against torch's LRN in fp32;
- nvJPEG (TorchCodec, torchvision) against CPU decoding while other allocations come and go;
- benchmarks/train_step.py: the paper and torchvision nets at batch 256, eager, compiled and with
  CUDA graphs (img/s and the share of the device's dense bf16 peak);
- end to end from a JPEG store (an epoch of 4,096 images at 256 px) in bf16, fp16 and compiled;
- the two-tower split on cuda:0,cuda:0 (and cuda:0,cuda:1 with two GPUs);
- DDP with NCCL over two GPUs (torchrun), when there are two.

--dry-run runs all of it that a CPU can (the tests, fp16 LRN with CPU autocast, the step benchmark,
end to end and two towers on cpu,cpu, each at a tiny size) and says for the rest why it was skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/test_gpu.py",
    "tests/test_gpu_ready.py",
    "tests/test_jpeg_store.py",
    "tests/test_two_tower.py",
]


class Skip(Exception):
    """A check that cannot run here, and why."""


def run(cmd: list[str], timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} … exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return done


# ---------------------------------------------------------------------------- the checks


def environment(ctx) -> dict:
    import torchvision

    try:
        import torchcodec

        codec = torchcodec.__version__
    except ImportError:
        codec = None
    from alexnet.data.jpeg import jpeg_decoder

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "torchcodec": codec, "jpeg_decoder": jpeg_decoder()[0],
           "cuda": torch.version.cuda, "devices": []}  # fmt: skip
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out["devices"].append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                               "memory_gb": round(p.total_memory / 2**30, 1)})  # fmt: skip
    if not out["devices"]:
        out["cpu"] = platform.processor() or platform.machine()
    return out


def cuda_tests(ctx) -> dict:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                          cwd=ROOT, capture_output=True, text=True, timeout=ctx.limit(300))  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
    if done.returncode != 0:
        raise RuntimeError(f"pytest: {summary}\n{done.stdout[-1500:]}")
    return {"summary": summary, **counts}


def host_syncs(ctx) -> dict:
    """Steady-state steps of the real loop under set_sync_debug_mode("warn"): each warning is a
    copy or read that makes the CPU wait for the GPU."""
    if ctx.device.type != "cuda":
        raise Skip("torch.cuda.set_sync_debug_mode needs CUDA (the CPU test counts copies instead)")
    from alexnet.config import OptimConfig, ScheduleConfig
    from alexnet.data import StoreLoader, open_data
    from alexnet.data.transforms import Normalization, TrainTransform
    from alexnet.models import build_model
    from alexnet.train import Schedule, make_optimizer, train_one_epoch

    store = open_data("cifar10-sample")
    split = store.split("train").evenly_spaced(1024)
    model = build_model("cifar10", input_size=28).to(ctx.device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, OptimConfig(momentum=0.9))
    norm = Normalization(mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    transform = TrainTransform(
        28, norm, eigvals=torch.from_numpy(store.eigvals), eigvecs=torch.from_numpy(store.eigvecs)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=False)

    def epoch(e):
        loader = StoreLoader(split, 128, seed=0, drop_last=True, device=ctx.device)
        loader.set_epoch(e)
        schedule = Schedule(ScheduleConfig(name="constant"), 0.01, len(loader), 2)
        g = torch.Generator().manual_seed(e)
        return train_one_epoch(model, loader, transform, optimizer, schedule, scaler, g, e,
                               device=ctx.device, precision="bf16")  # fmt: skip

    epoch(0)  # warm-up: the constants cross, cuDNN picks its kernels
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            epoch(1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return {"steps": 8, "syncs": len(syncs), "first": syncs[:5]}


def fp16_lrn(ctx) -> dict:
    from alexnet.models import LocalResponseNorm

    x = torch.full((8, 96, 27, 27), 300.0, device=ctx.device)
    x[:, ::2] = -30.0
    with torch.autocast(ctx.device.type, dtype=torch.float16):
        out = LocalResponseNorm(5, 1e-4, 0.75, 2.0, channels=96).to(ctx.device)(x.half())
    ref = torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x)
    err = float(((out.float() - ref).abs() / ref.abs().clamp_min(1.0)).max())  # fp16 keeps ~3 digits
    if not torch.isfinite(out).all() or err > 2e-3:
        raise RuntimeError(
            f"fp16 LRN: finite {bool(torch.isfinite(out).all())}, max relative error {err:.3g}"
        )
    return {"max_relative_error": err}


def nvjpeg(ctx) -> dict:
    """Decode the same batch on the GPU many times while other tensors are allocated and freed
    around it (what exposed use-after-free in torchvision's decoder), against the CPU decode."""
    if ctx.device.type != "cuda":
        raise Skip("nvJPEG needs CUDA")
    from alexnet.data.jpeg import jpeg_decoder

    store = ctx.jpeg_store()
    images = store.split("train").images
    rows = np.arange(256)
    cpu = images.decode(rows).int()
    out = {}
    for name in ("torchcodec", "torchvision"):
        os.environ["ALEXNET_JPEG_DECODER"] = name
        jpeg_decoder.cache_clear()
        try:
            worst = 0.0
            for _ in range(20):
                junk = [torch.empty(2**20 * int(s), dtype=torch.uint8, device=ctx.device) for s in (3, 7, 1)]
                gpu = images.decode(rows, ctx.device)
                del junk
                worst = max(worst, float((gpu.cpu().int() - cpu).abs().float().mean()))
            out[name] = {"mean_abs_difference_worst": worst, "ok": worst < 2.0}
        except Exception as exc:  # one decoder missing or failing does not hide the other
            out[name] = {"error": str(exc).splitlines()[0][:200]}
        finally:
            os.environ.pop("ALEXNET_JPEG_DECODER", None)
            jpeg_decoder.cache_clear()
    return out


def train_steps(ctx) -> dict:
    """benchmarks/train_step.py in its three modes."""
    out = {}
    if ctx.device.type == "cuda":
        base = ["--device", "cuda", "--models", "torchvision,paper", "--batch", "256", "--steps", "10"]
        modes = {"eager": [], "compiled": ["--compile"], "cuda graphs": ["--cuda-graphs"]}
    else:
        base = [
            "--device",
            "cpu",
            "--models",
            "cifar10",
            "--batch",
            "8",
            "--steps",
            "1",
            "--precision",
            "fp32",
        ]
        modes = {"eager": []}
    for mode, extra in modes.items():
        done = run([sys.executable, "benchmarks/train_step.py", *base, *extra], ctx.limit(240))
        rates = re.findall(r"^\s+(\w+)\s+b\d+\s+ours \(.*?\)\s+([\d.]+) img/s", done.stdout, re.M)
        shares = re.findall(
            r"^\s+(\w+)\s+b\d+\s+\w+ ours [\d.]+ img/s; ceiling .*?: (\d+) % of it", done.stdout, re.M
        )
        out[mode] = {
            "img_per_s": {m: float(r) for m, r in rates},
            "percent_of_bf16_peak": {m: float(s) for m, s in shares},
        }
    return out


def end_to_end(ctx) -> dict:
    """`alexnet train` from a JPEG store: one epoch in each precision (and compiled)."""
    from alexnet import fit, resolve

    store = ctx.jpeg_store()
    cases = {"bf16": {}, "fp16": {}, "bf16 compiled": {"train.compile": "true"}}
    if ctx.device.type != "cuda":
        cases = {"fp32": {}}
    out = {}
    for name, more in cases.items():
        precision = name.split()[0]
        sets = {"data.source": str(store.root), "train.out": str(ctx.tmp / f"e2e-{name.replace(' ', '-')}"),
                "train.epochs": "1", "train.batch_size": str(ctx.batch), "train.precision": precision,
                "train.device": ctx.device.type, "data.ten_crop": "false", "data.limit_val": str(ctx.batch),
                "train.log_every": "1000", **more}  # fmt: skip
        started = time.perf_counter()
        result = fit(resolve("paper", sets=sets), progress=False)
        out[name] = {"train_img_per_s": round(result.history[0]["images_per_second"], 1),
                     "wall_seconds": round(time.perf_counter() - started, 1),
                     "train_loss": round(result.history[0]["train_loss"], 4)}  # fmt: skip
    return out


def two_towers(ctx) -> dict:
    from alexnet import fit, resolve

    pairs = ["cpu,cpu"] if ctx.device.type != "cuda" else ["cuda:0,cuda:0"]
    if torch.cuda.device_count() >= 2:
        pairs.append("cuda:0,cuda:1")
    out = {}
    for pair in pairs:
        where = ctx.tmp / f"towers-{pair.replace(':', '').replace(',', '-')}"
        sets = {"data.source": str(ctx.jpeg_store().root), "train.out": str(where), "train.epochs": "1",
                "train.batch_size": str(ctx.batch), "train.two_devices": pair, "data.ten_crop": "false",
                "data.limit_train": str(4 * ctx.batch), "data.limit_val": str(ctx.batch),
                "train.precision": "fp32" if ctx.device.type != "cuda" else "bf16"}  # fmt: skip
        result = fit(resolve("paper", sets=sets), progress=False)
        out[pair] = {"train_img_per_s": round(result.history[0]["images_per_second"], 1)}
    return out


def ddp_nccl(ctx) -> dict:
    if torch.cuda.device_count() < 2:
        raise Skip(f"DDP with NCCL needs two GPUs, this machine has {torch.cuda.device_count()}")
    out = ctx.tmp / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "alexnet", "train", "--preset", "paper", "--data", str(ctx.jpeg_store().root), "--out", str(out),
           "--epochs", "1",
           "--batch-size", str(2 * ctx.batch), "--set", "data.ten_crop=false"]  # fmt: skip
    started = time.perf_counter()
    run(cmd, ctx.limit(300))
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return {
        "train_img_per_s_rank0": row["images_per_second"],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


CHECKS = {
    "environment": environment,
    "cuda tests": cuda_tests,
    "host syncs in a step": host_syncs,
    "fp16 LRN": fp16_lrn,
    "nvJPEG under memory churn": nvjpeg,
    "training step (train_step.py)": train_steps,
    "end to end from a JPEG store": end_to_end,
    "two towers": two_towers,
    "DDP with NCCL": ddp_nccl,
}


# ---------------------------------------------------------------------------- the run


class Context:
    def __init__(self, device: torch.device, tmp: Path, images: int, batch: int, deadline: float):
        self.device, self.tmp, self.images, self.batch, self.deadline = device, tmp, images, batch, deadline
        self._store = None

    def limit(self, seconds: int) -> int:
        """A subprocess's timeout: at most what is left of the whole budget."""
        return max(30, min(seconds, int(self.deadline - time.perf_counter())))

    def jpeg_store(self):
        """A JPEG store of ``images`` real photographs' worth at 256 px: the shipped CIFAR-10 sample's
        images (cycled to the count), resized to 256 as `alexnet prepare` does."""
        if self._store is None:
            from alexnet import prepare_dataset
            from alexnet.data import open_data, open_store

            sample = open_data("cifar10-sample")
            pixels = np.concatenate([np.asarray(s.images) for s in sample.splits.values()])
            labels = np.concatenate([np.asarray(s.labels) for s in sample.splits.values()])
            n = self.images

            class Cycled(torch.utils.data.Dataset):
                def __len__(self):
                    return n

                def __getitem__(self, i):
                    j = (i * 997) % len(pixels)  # a stride through the sample: every class, early on
                    return pixels[j], int(labels[j])

            out = self.tmp / "jpeg-store"
            prepare_dataset(
                Cycled(), out, classes=sample.classes, size=256, image_format="jpeg", progress=False
            )
            self._store = open_store(out)
        return self._store


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_check", help="where gpu_check.json and gpu_check.md go")
    parser.add_argument(
        "--dry-run", action="store_true", help="the CPU-capable parts, on the CPU, at a tiny size"
    )
    parser.add_argument("--budget", type=int, default=480, help="seconds for everything (default 8 minutes)")
    parser.add_argument("--only", default=None, help="comma-separated check names (default all)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; --dry-run runs the CPU-capable parts", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [c.strip() for c in args.only.split(",")] if args.only else list(CHECKS)
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "dry_run": args.dry_run, "checks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(device, Path(tmp), 48 if args.dry_run else 4096, 8 if args.dry_run else 256,
                      time.perf_counter() + args.budget)  # fmt: skip
        for name in wanted:
            started = time.perf_counter()
            try:
                entry = {"status": "ok", "result": CHECKS[name](ctx)}
            except Skip as why:
                entry = {"status": "skipped", "why": str(why)}
            except Exception as exc:  # recorded; the next check still runs
                entry = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000],
                         "where": traceback.format_exc().splitlines()[-3:]}  # fmt: skip
            entry["seconds"] = round(time.perf_counter() - started, 1)
            results["checks"][name] = entry
            print(f"{entry['status']:>7}  {name} ({entry['seconds']} s)", flush=True)
            (out / "gpu_check.json").write_text(
                json.dumps(results, indent=1)
            )  # what ran so far survives a kill
    (out / "gpu_check.md").write_text(summary(results))
    failed = [n for n, e in results["checks"].items() if e["status"] == "failed"]
    print(f"{out / 'gpu_check.md'}: {len(results['checks'])} checks, {len(failed)} failed")
    return 1 if failed else 0


def summary(results: dict) -> str:
    kind = "dry run on the CPU" if results["dry_run"] else "CUDA"
    lines = [f"# GPU check ({kind}, {results['started']})", "",
             "| check | status | seconds | result |", "|---|---|---|---|"]  # fmt: skip
    for name, e in results["checks"].items():
        what = e.get("why") or e.get("error") or json.dumps(e.get("result"), separators=(", ", ": "))
        lines.append(f"| {name} | {e['status']} | {e['seconds']} | {what[:400].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
