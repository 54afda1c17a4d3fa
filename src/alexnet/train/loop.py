"""``fit(config)``: train a model with a recipe, checkpoint and resume exactly, evaluate as §4.1.

One process, many (torchrun), or the paper's two-device split all go through the same functions.
Resuming restores the model, optimiser, schedule, scaler, the loader's position in its epoch, the
augmentation generator and torch's RNG (dropout), and the epoch's running sums, so a resumed run
continues as if it had never stopped (bit-exact on the CPU with ``train.deterministic``).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from .._version import __version__
from ..config import RunConfig, to_dict
from ..data import EvalTransform, StoreLoader, TrainTransform, open_data
from ..data.store import Split, Store
from ..data.transforms import IMAGENET_EIGVALS, IMAGENET_EIGVECS, Normalization
from ..errors import AlexNetError
from ..evaluate import autocast, evaluate
from ..models import TwoTowerAlexNet, build_model
from .checkpoint import load_checkpoint, load_model_state, save_checkpoint, unwrap
from .distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from .log import RunLog
from .optim import Schedule, make_optimizer

AUG_SEED_STRIDE = 1_000_003  # augmentation generator seed: seed + stride · rank


@dataclass
class RunResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    final: dict | None = None  # the closing evaluation (ten crops when the recipe asks)
    best_val_top1_error: float = math.inf


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AlexNetError(f"device {name} asked for, but torch sees no CUDA device; use --device cpu")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: bf16 on GPUs that support it (else fp16), bf16 on CPUs with native bf16, else fp32."""
    if name != "auto":
        if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise AlexNetError("this GPU has no bf16; use --precision fp16 or fp32")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    try:
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"


def build_transforms(
    config: RunConfig, store: Store
) -> tuple[TrainTransform, EvalTransform, EvalTransform, dict]:
    """Training, centre-crop and ten-crop transforms from the recipe and the store's statistics."""
    d = config.data
    if d.crop > store.size:
        raise AlexNetError(
            f"data.crop {d.crop} is larger than the store's {store.size}×{store.size} images; "
            f"use --set data.crop=N with N ≤ {store.size}, or prepare with --size"
        )
    if d.normalize == "mean_image":
        if store.mean is None:
            raise AlexNetError(
                f"{store.root} has no training split, so no mean image; use "
                f"--set data.normalize=channel or prepare a set with train/"
            )
        mean_image = torch.from_numpy(store.mean.copy())
        norm = Normalization(mean_image=mean_image)
        saved = {"kind": "mean_image", "mean_image": mean_image}
    else:
        if len(d.mean) != store.channels or len(d.std) != store.channels:
            raise AlexNetError(f"data.mean/std have {len(d.mean)} values for {store.channels}-channel images")
        norm = Normalization(mean=tuple(d.mean), std=tuple(d.std))
        saved = {"kind": "channel", "mean": list(d.mean), "std": list(d.std)}
    eig = (None, None)
    if d.lighting == "store" and store.eigvals is not None:
        eig = (torch.from_numpy(store.eigvals.copy()), torch.from_numpy(store.eigvecs.copy()))
    elif d.lighting == "imagenet":
        eig = (torch.tensor(IMAGENET_EIGVALS), torch.tensor(IMAGENET_EIGVECS))
    train = TrainTransform(
        d.crop, norm, flip=d.flip, eigvals=eig[0], eigvecs=eig[1], lighting_std=d.lighting_std
    )
    return train, EvalTransform(d.crop, norm), EvalTransform(d.crop, norm, ten_crop=True), saved


def build_for_run(config: RunConfig, num_classes: int, in_channels: int) -> nn.Module:
    m = config.model
    return build_model(
        m.name, num_classes=num_classes, in_channels=in_channels, input_size=config.data.crop, **m.switches()
    )


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def default_run_dir(config: RunConfig) -> Path:
    return Path("runs") / f"{config.preset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _pick_val_split(config: RunConfig, store: Store) -> str:
    if config.data.val_split:
        return config.data.val_split
    for name in ("val", "test"):
        if name in store.splits:
            return name
    raise AlexNetError(f"{store.root} has no val or test split to evaluate on; set data.val_split")


def _limited(split: Split, limit: int | None) -> Split:
    """``limit`` evenly spaced images: stores are sorted by class, so every class keeps its share."""
    if limit is None or limit >= len(split):
        return split
    idx = np.unique(np.round(np.linspace(0, len(split) - 1, limit)).astype(np.int64))
    return Split(split.name, np.asarray(split.images[idx]), np.asarray(split.labels[idx]))


def fit(config: RunConfig, *, resume: bool = False, progress: bool | None = None) -> RunResult:
    """Train ``config`` to the end (or from where its run directory stopped, with ``resume``)."""
    t = config.train
    device = resolve_device(t.device)
    dist = init_distributed(device.type == "cuda")
    try:
        return _fit(config, device, dist, resume, progress)
    finally:
        shutdown(dist)


def _fit(config: RunConfig, device: torch.device, dist: DistInfo, resume: bool, progress) -> RunResult:
    t = config.train
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if t.two_devices and dist.enabled:
        raise AlexNetError(
            "train.two_devices splits one model over two devices; do not combine it with torchrun"
        )
    precision = resolve_precision(t.precision, device)
    if t.deterministic:
        torch.use_deterministic_algorithms(True)
    if config.data.source is None:
        raise AlexNetError("no data: pass --data (a store, an ImageFolder root or a torchvision set name)")
    run_dir = Path(t.out) if t.out else default_run_dir(config)
    ckpt_dir = run_dir / "checkpoints"
    if not resume and (ckpt_dir / "last.pt").exists():
        raise AlexNetError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )

    # Rank 0 prepares the data (if needed) while the others wait, then all open the same store.
    if dist.is_main:
        store = open_data(config.data.source, size=config.data.size, workers=config.data.workers)
    barrier(dist)
    if not dist.is_main:
        store = open_data(config.data.source, size=config.data.size, progress=False)
    train_split = _limited(store.split(config.data.train_split), config.data.limit_train)
    val_split = _limited(store.split(_pick_val_split(config, store)), config.data.limit_val)
    train_tf, center_tf, ten_tf, saved_norm = build_transforms(config, store)

    torch.manual_seed(t.seed)  # the same initial weights on every rank
    model = build_for_run(config, len(store.classes), store.channels)
    input_device = device
    if t.two_devices:
        model = TwoTowerAlexNet.from_grouped(model, devices=t.two_devices)
        input_device = model.devices[0]
        device = input_device
    else:
        model = model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config.optim)
    if dist.enabled:
        if config.train.batch_size % dist.world_size:
            raise AlexNetError(
                f"train.batch_size {t.batch_size} does not split over {dist.world_size} processes"
            )
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    net = torch.compile(model) if t.compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    local_batch = t.batch_size // dist.world_size
    loader_device = "cpu" if t.two_devices else device
    train_loader = StoreLoader(
        train_split, local_batch, seed=t.seed, drop_last=True, device=loader_device, reuse_buffers=True
    )
    val_loader = StoreLoader(val_split, local_batch, shuffle=False, device=loader_device)
    schedule = Schedule(config.schedule, config.optim.lr, len(train_loader), t.epochs)
    generator = torch.Generator().manual_seed(t.seed + AUG_SEED_STRIDE * dist.rank)
    log = RunLog(run_dir, enabled=dist.is_main, progress=progress, log_every=t.log_every)
    result = RunResult(run_dir)
    start_epoch, global_step, partial = 0, 0, None
    arch = {"name": config.model.name, "num_classes": len(store.classes), "in_channels": store.channels}

    if resume:
        state = load_checkpoint(ckpt_dir / "last.pt")
        load_model_state(model, state, ckpt_dir / "last.pt")
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        train_loader.load_state_dict(state["loader"])
        start_epoch, global_step, partial = state["epoch"], state["step"], state.get("partial")
        result.history = list(state["history"])
        result.best_val_top1_error = min([r["val_top1_error"] for r in result.history], default=math.inf)
        torch.set_rng_state(state["rng"]["torch"])
        generator.set_state(state["rng"]["generator"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        log.message(
            f"resumed {run_dir} at epoch {start_epoch + 1}, step {train_loader.position} of the epoch"
        )
    elif dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
        (run_dir / "run.json").write_text(
            json.dumps(
                {
                    "version": __version__,
                    "git_sha": _git_sha(),
                    "torch": torch.__version__,
                    "device": str(device),
                    "precision": precision,
                    "world_size": dist.world_size,
                    "started": datetime.now().isoformat(),
                    "data": str(store.root),
                    "classes": len(store.classes),
                },
                indent=1,
            )
        )
        log.message(
            f"training {config.model.name} ({config.preset} recipe) on {device}, {precision}, "
            f"{dist.world_size} process(es), {len(train_split)} training images → {run_dir}"
        )
        log.message(schedule.describe())

    def checkpoint_state(epoch: int, partial_sums) -> dict:
        return {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "step": global_step,
            "loader": train_loader.state_dict(),
            "partial": partial_sums,
            "rng": {
                "torch": torch.get_rng_state(),
                "generator": generator.get_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            },
            "history": result.history,
            "config": to_dict(config),
            "arch": arch,
            "classes": list(store.classes),
            "normalization": saved_norm,
            "crop": config.data.crop,
            "version": __version__,
        }

    def save(name: str, epoch: int, partial_sums=None) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            _stop_on_nan(epoch, train_loader.position, run_dir)  # never save non-finite weights
        if dist.is_main:
            save_checkpoint(ckpt_dir / name, checkpoint_state(epoch, partial_sums))

    def on_step(step_in_epoch: int, sums: torch.Tensor) -> None:
        nonlocal global_step
        global_step += 1
        if t.checkpoint_every and global_step % t.checkpoint_every == 0 and step_in_epoch < len(train_loader):
            _check_finite(sums, epoch, step_in_epoch, run_dir)
            save("last.pt", epoch, sums.tolist())

    try:
        for epoch in range(start_epoch, t.epochs):
            train_loader.set_epoch(epoch)
            change = schedule.change_at(epoch)
            if change and train_loader.position == 0:
                log.message(change)
            started = time.perf_counter()
            log.start_epoch(epoch, t.epochs, len(train_loader), train_loader.position)
            sums = train_one_epoch(
                net,
                train_loader,
                train_tf,
                optimizer,
                schedule,
                scaler,
                generator,
                epoch,
                device=device,
                input_device=input_device,
                precision=precision,
                label_smoothing=t.label_smoothing,
                partial=partial,
                on_step=on_step,
                log=log,
            )
            partial = None
            _check_finite(sums, epoch, len(train_loader), run_dir)
            all_reduce_sum(sums, dist)
            val = evaluate(
                net,
                val_loader,
                center_tf,
                len(store.classes),
                device,
                precision=precision,
                dist=dist,
                input_device=input_device,
            )
            drop = schedule.end_epoch(epoch, val["top1_error"])
            seconds = time.perf_counter() - started
            loss_sum, right, count = sums.tolist()
            row = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / count,
                "train_top1_error": 100.0 * (1 - right / count),
                "val_loss": val["loss"],
                "val_top1_error": val["top1_error"],
                "val_top5_error": val["top5_error"],
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": seconds,
                "images_per_second": count / seconds,
            }
            result.history.append(row)
            log.end_epoch(row)
            if drop:
                log.message(drop)
            save("last.pt", epoch + 1)
            if val["top1_error"] < result.best_val_top1_error:
                result.best_val_top1_error = val["top1_error"]
                save("best.pt", epoch + 1)
        eval_tf = ten_tf if config.data.ten_crop else center_tf
        result.final = evaluate(
            net,
            val_loader,
            eval_tf,
            len(store.classes),
            device,
            precision=precision,
            dist=dist,
            input_device=input_device,
        )
        result.final["ten_crop"] = config.data.ten_crop
        if dist.is_main:
            summary = {k: v for k, v in result.final.items() if k not in ("confusion",)}
            (run_dir / "final.json").write_text(json.dumps(summary, indent=1))
            log.message(
                f"final {'ten-crop' if config.data.ten_crop else 'centre-crop'} evaluation on "
                f"{val_split.name}: top-1 error {result.final['top1_error']:.2f} %, "
                f"top-5 error {result.final['top5_error']:.2f} %, loss {result.final['loss']:.4f}"
            )
    finally:
        log.close()
    return result


def _check_finite(sums: torch.Tensor, epoch: int, step: int, run_dir: Path) -> None:
    if not math.isfinite(float(sums[0])):
        _stop_on_nan(epoch, step, run_dir)


def _stop_on_nan(epoch: int, step: int, run_dir: Path) -> None:
    raise AlexNetError(
        f"the loss became NaN or infinite in epoch {epoch + 1} (by step {step}); stopped. "
        f"The last good checkpoint is {run_dir / 'checkpoints' / 'last.pt'}: resume from it "
        f"with a lower learning rate (--set optim.lr=...)"
    )


def train_one_epoch(
    model: nn.Module,
    loader: StoreLoader,
    transform: TrainTransform,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
    epoch: int,
    *,
    device: torch.device,
    input_device: torch.device | None = None,
    precision: str = "fp32",
    label_smoothing: float = 0.0,
    partial: list[float] | None = None,
    on_step=None,
    log: RunLog | None = None,
) -> torch.Tensor:
    """One pass over ``loader`` from its saved position; returns [loss sum, top-1 right, count] (float64)."""
    model.train()
    sums = torch.tensor(partial or [0.0, 0.0, 0.0], dtype=torch.float64, device=device)
    buffer = None
    step = loader.position
    last = time.perf_counter()
    for images, labels in loader:
        if images.device.type == "cpu" and (buffer is None or buffer.shape[0] < len(images)):
            buffer = torch.empty((len(images), transform.size, transform.size, images.shape[-1]))
        x = transform(images, generator, out=buffer[: len(images)] if images.device.type == "cpu" else None)
        if input_device is not None and x.device != input_device:
            x = x.to(input_device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        lr = schedule.lr(epoch, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            right = (logits.argmax(1) == labels).sum()
            sums += torch.stack(
                [
                    loss.detach().double() * len(labels),
                    right.double(),
                    torch.tensor(float(len(labels)), dtype=torch.float64, device=device),
                ]
            )
        step += 1
        if log is not None:
            now = time.perf_counter()
            log.step(step - 1, loss.detach(), lr, len(labels) / max(now - last, 1e-9))
            last = now
        if on_step is not None:
            on_step(step, sums)
    return sums
