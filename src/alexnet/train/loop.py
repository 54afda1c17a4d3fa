"""``fit(config)``: train a model with a recipe, checkpoint and resume exactly, evaluate as §4.1.

One process, many (torchrun), or the paper's two-device split all go through the same functions.
Resuming restores the model, optimiser, schedule, scaler, the loader's position in its epoch, the
augmentation generator and torch's RNG (dropout), and the epoch's running sums, so a resumed run
continues as if it had never stopped (bit-exact on the CPU with ``train.deterministic``).

The epoch-end sequence is ordered so that a kill at any point resumes cleanly (README,
"Reliability"): best.pt, then last.pt (whose history is the run's memory), then metrics.jsonl
(rewritten from that history).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .._version import __version__
from ..checkpoint import check_classes, load_checkpoint, load_model_state, model_arch, model_state
from ..config import RunConfig, override, to_dict
from ..data import StoreLoader, open_data
from ..data.jpeg import jpeg_decoder
from ..data.store import Split, Store
from ..data.transforms import Normalization, TrainTransform
from ..errors import AlexNetError, DivergedError, Interrupted
from ..evaluate import evaluate
from ..loading import NO_WEIGHTS, load_pretrained, read_weights
from ..recipe import (
    Transforms,
    build_for_run,
    build_transforms,
    crop_warning,
    freeze,
    normalization_from,
    place_model,
)
from ..runtime import (
    DistInfo,
    all_reduce_sum,
    autocast,
    configure_kernels,
    distributed,
    keep_freed_cpu_memory,
    resolve_device,
    resolve_precision,
)
from .log import RunLog
from .optim import Schedule, make_optimizer
from .run_dir import RunDir
from .weight_copy import WeightCopy, use_weight_copy

AUG_SEED_STRIDE = 1_000_003  # augmentation generator seed: seed + stride · rank


@dataclass
class RunResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    final: dict | None = None  # the closing evaluation of the final model (ten crops when the recipe asks)
    best: dict | None = None  # the closing evaluation of best.pt, when it is not the final model
    best_val_top1_error: float = math.inf
    best_epoch: int | None = None  # 1-based epoch of best.pt


def default_run_dir(config: RunConfig) -> Path:
    return Path("runs") / f"{config.preset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def resume_config(run_dir: str | Path, sets: dict | None = None) -> RunConfig:
    """The config of the run in ``run_dir`` (its checkpoint's, else its config.yaml's), with ``sets``."""
    saved = RunDir(run_dir, writer=False).saved_config()
    if saved is None:
        raise AlexNetError(f"{run_dir} holds no run to resume (no config.yaml); start one with --preset")
    return override(saved, {**(sets or {}), "train.out": str(run_dir)})


def fit(
    config: RunConfig, *, resume: bool = False, progress: bool | None = None, model: nn.Module | None = None
) -> RunResult:
    """Train ``config`` to the end, or on from where its run directory stopped (``resume``).

    With ``resume`` the config must be the run's own (``resume_config``), up to the fields
    ``config.RESUME_MAY_CHANGE`` lists; a run killed before its first checkpoint starts afresh.

    ``model``: a module of your own to train instead of the config's (its ``forward`` takes the
    recipe's input batch [B, C, crop, crop] and returns [B, classes] logits); checkpoints hold its
    state_dict, and a resume takes a module of the same class. Ctrl-C (SIGINT) or SIGTERM saves
    a checkpoint at the next step and stops with ``Interrupted``; ``resume`` continues from it.
    """
    if config.data.source is None:
        raise AlexNetError("no data: pass --data (a store, an ImageFolder root or a torchvision set name)")
    if model is not None and config.train.two_devices:
        raise AlexNetError(
            "train.two_devices splits the paper net; it does not apply to a module of your own"
        )
    device = resolve_device(config.train.device)
    if device.type == "cpu":  # each step's activations reuse the last step's pages
        keep_freed_cpu_memory()
    deterministic = torch.are_deterministic_algorithms_enabled()
    # Before the process group exists: every rank opens the data itself (a first-use prepare is
    # locked, so one rank prepares and the others wait on the lock, then reuse it), and no
    # collective can time out (NCCL's 10 minutes) while a large folder is being prepared.
    store = _open_store(config, main=int(os.environ.get("RANK", "0")) == 0)
    with distributed(device.type == "cuda") as dist, _restoring_determinism(deterministic):
        if dist.enabled and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        with RunDir(config.train.out or default_run_dir(config), writer=dist.is_main) as run:
            resume = _check_run_dir(run, config, resume, dist)
            trainer = Trainer.build(config, run, device, dist, progress, store, resume, model)
            try:
                with _stop_requests(enabled=not dist.enabled) as stop, _out_of_memory(config, run):
                    trainer.stop = stop
                    return trainer.train(resume)
            finally:
                trainer.log.close()


# What torch says when an allocation fails: CUDA's OutOfMemoryError, the CPU allocator's RuntimeError
OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


@contextlib.contextmanager
def _out_of_memory(config: RunConfig, run: RunDir):
    """A batch that does not fit in memory is one line naming the batch size and a smaller one to
    try, and where the run can go on from; the last checkpoint stays as it was."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        text = str(exc).lower()
        if not isinstance(exc, MemoryError) and not any(m in text for m in OUT_OF_MEMORY):
            raise
        batch = config.train.batch_size
        smaller = max(1, batch // 2)
        where = f"try --batch-size {smaller}"
        if run.last.is_file():  # the batch size is part of the run: a smaller one is a new run
            where = f"{run.last} is kept (--resume goes on with batches of {batch}); {where} in a new --out"
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise AlexNetError(f"out of memory with batches of {batch} images ({detail}); {where}") from None


@contextlib.contextmanager
def _stop_requests(enabled: bool):
    """SIGINT and SIGTERM ask the loop to stop at its next step (after saving) instead of killing it
    mid-write; a second Ctrl-C stops at once. Only in the main thread of a single process (under
    torchrun every rank would have to agree on the step)."""
    requested: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _restoring_determinism(before: bool):
    """train.deterministic switches torch's global flag on; put it back for the caller's process."""
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _check_run_dir(run: RunDir, config: RunConfig, resume: bool, dist: DistInfo) -> bool:
    """Whether there is a checkpoint to resume from; refuse to overwrite or to mix runs."""
    if config.train.two_devices and dist.enabled:
        raise AlexNetError(
            "train.two_devices splits one model over two devices; do not combine it with torchrun"
        )
    if run.best.is_file() and run.resume_point() is None:
        raise AlexNetError(
            f"{run.root} holds checkpoints/best.pt but no last.pt, so the run cannot be resumed and a new "
            f"one would overwrite best.pt; move best.pt away (or delete it) or choose another --out"
        )
    if not resume:
        if run.has_checkpoint() or run.holds_a_run():
            raise AlexNetError(
                f"{run.root} already holds a run; pass --resume to continue it or choose another --out"
            )
        return False
    run.check_resumable(config)
    return run.has_checkpoint()


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
class Splits:
    train: Split
    val: Split
    final: Split  # what the closing evaluation reports: test when the data has it

    def describe(self) -> str:
        return (
            f"{len(self.train)} training images; validation (rate drops, best.pt) on {self.val.name} "
            f"({len(self.val)}); final evaluation on {self.final.name} ({len(self.final)})"
        )


def choose_splits(config: RunConfig, store: Store) -> Splits:
    """Train, validation and final-evaluation splits; test validates only when named (data.val_split)."""
    d = config.data
    train = store.split(d.train_split).first_per_class(d.limit_per_class)
    if d.val_split:
        val = store.split(d.val_split)
    elif "val" in store.splits:
        val = store.split("val")
    else:  # a seeded, stratified part of train: the test split must not choose the model
        train, val = train.hold_out(d.holdout, d.holdout_seed)
    final = store.split("test") if "test" in store.splits else val
    limit = d.limit_val
    splits = Splits(train.evenly_spaced(d.limit_train), val.evenly_spaced(limit), final.evenly_spaced(limit))
    present = np.unique(np.asarray(splits.train.labels)) if len(splits.train) else []
    if 0 < len(present) < 2:
        raise AlexNetError(
            f"the training split of {store.root} holds images of one class only "
            f"({store.classes[int(present[0])]}); a classifier needs at least two (check data.classes, "
            f"data.limit_train, data.limit_per_class)"
        )
    for role, split in (("training", splits.train), ("validation", splits.val), ("final", splits.final)):
        if len(split) == 0:
            hint = (
                "each class needs at least two training images to hold one out; add images or give a "
                "val/ split"
                if role == "validation" and not d.val_split and "val" not in store.splits
                else "check the data and data.limit_* / data.classes"
            )
            raise AlexNetError(f"the {role} split ({split.name}) of {store.root} has no images; {hint}")
    return splits


def prior_error(split: Split) -> float:
    """The top-1 error (percent) of always answering the split's most common class."""
    counts = np.bincount(np.asarray(split.labels))
    return 100.0 * (1 - counts.max() / counts.sum())


@dataclass
class Trainer:
    """Everything one training process holds; its methods are the steps of ``fit``."""

    config: RunConfig
    run: RunDir
    device: torch.device  # where the inputs, labels and loss live (tower a's device for two towers)
    precision: str
    precision_reason: str
    dist: DistInfo
    store: Store
    splits: Splits
    transforms: Transforms
    model: nn.Module  # the bare model
    net: nn.Module  # what runs the steps: DDP- or compile-wrapped
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    train_loader: StoreLoader
    val_loader: StoreLoader
    log: RunLog
    result: RunResult
    epoch: int = 0
    step: int = 0  # optimiser steps since the start of the run
    partial: list[float] | None = None  # the running sums of an epoch a checkpoint cut
    notes: list[str] = field(default_factory=list)  # lines for the log once it starts
    weight_copy: WeightCopy | None = None  # bf16 copies kept by the update (weight_copy.py), or None
    stop: list[int] = field(default_factory=list)  # signals asking the loop to save and stop

    @classmethod
    def build(
        cls, config: RunConfig, run: RunDir, device: torch.device, dist: DistInfo, progress, store: Store,
        resume: bool = False, custom: nn.Module | None = None,
    ) -> Trainer:  # fmt: skip
        t = config.train
        precision, reason = resolve_precision(t.precision, device)
        configure_kernels(device, t.deterministic)
        splits = choose_splits(config, store)
        notes = [line for line in (crop_warning(config, store),) if line]
        if store.meta.get("image_format") == "jpeg":
            notes.append(f"JPEG store decoded by {jpeg_decoder()[0]}")
        torch.manual_seed(t.seed)  # the same initial weights on every rank
        model = custom if custom is not None else build_for_run(config, len(store.classes), store.channels)
        normalization = None
        if resume:  # the run's own normalisation, as its checkpoint keeps it
            saved = load_checkpoint(run.resume_point(), mmap=True)
            normalization = normalization_from(saved["normalization"])
        elif config.model.weights not in NO_WEIGHTS:
            pretrained = read_weights(config.model.weights, config.model.name)
            new = load_pretrained(model, pretrained)
            notes.append(f"started from {pretrained.source}; new last layer ({', '.join(new)}) for "
                         f"{len(store.classes)} classes")  # fmt: skip
            if config.data.normalize == "mean_image" and pretrained.mean_image is not None:
                normalization = Normalization(mean_image=pretrained.mean_image.float())
        frozen = freeze(model, t.freeze)
        if frozen:
            count = sum(p.numel() for n, p in model.named_parameters() if n in frozen)
            notes.append(
                f"frozen (train.freeze={','.join(t.freeze)}): {len(frozen)} tensors, {count:,} parameters"
            )
        transforms = build_transforms(config, store, normalization)
        model, device = place_model(config, model, device)
        optimizer = make_optimizer(model, config.optim)
        net = _wrap(model, config, dist, device)
        copy = None
        if use_weight_copy(optimizer, precision, distributed=dist.enabled, compiled=t.compile,
                           two_devices=bool(t.two_devices)):  # fmt: skip
            copy = WeightCopy(model, optimizer)
            notes.append(copy.note)
        local_batch = t.batch_size // dist.world_size
        loader_device = "cpu" if t.two_devices else device
        train_loader = StoreLoader(
            splits.train, local_batch, seed=t.seed, drop_last=True, device=loader_device, reuse_buffers=True
        )
        val_loader = StoreLoader(splits.val, local_batch, shuffle=False, device=loader_device)
        return cls(
            config,
            run,
            device,
            precision,
            reason,
            dist,
            store,
            splits,
            transforms,
            model,
            net,
            optimizer,
            Schedule(config.schedule, config.optim.lr, len(train_loader), t.epochs, prior_error(splits.val)),
            torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
            torch.Generator().manual_seed(t.seed + AUG_SEED_STRIDE * dist.rank),
            train_loader,
            val_loader,
            RunLog(run.root, enabled=dist.is_main, progress=progress, log_every=t.log_every),
            RunResult(run.root),
            notes=notes,
            weight_copy=copy,
        )

    # -- the run, top to bottom ------------------------------------------------------------
    def train(self, resume: bool) -> RunResult:
        removed = self.run.clean()
        if resume:
            self.restore()
        else:
            if (self.run.root / "config.yaml").is_file():  # a run killed before its first checkpoint
                self.log.message(
                    f"{self.run.root} has no checkpoint yet: starting the run from the beginning"
                )
            self.start()
        if removed:
            self.log.message(
                f"removed {removed} unfinished temporary file(s) a killed write left in {self.run.root}"
            )
        for epoch in range(self.epoch, self.config.train.epochs):
            self.epoch = epoch
            row = self.train_epoch()
            self.end_epoch(row)
        self.final_evaluation()
        return self.result

    def start(self) -> None:
        c = self.config
        self.run.start(c, {
            "version": __version__, "git_sha": _git_sha(), "torch": torch.__version__,
            "device": str(self.device), "precision": self.precision,
            "precision_reason": self.precision_reason,
            "world_size": self.dist.world_size, "started": datetime.now().isoformat(),
            "data": str(self.store.root), "classes": len(self.store.classes), "model": model_arch(self.model),
            "weights": c.model.weights,
        })  # fmt: skip
        name = model_arch(self.model)
        what = f"a module of your own, {name[7:]}" if name.startswith("custom:") else c.model.name
        self.log.message(
            f"training {what} ({c.preset} recipe) on {self.device}, {self.dist.world_size} "
            f"process(es) → {self.run.root}"
        )
        self._log_setup()

    def _log_setup(self) -> None:
        self.log.message(f"precision {self.precision} ({self.precision_reason})")
        self.log.message(self.splits.describe())
        self.log.message(self.schedule.describe())
        for line in self.notes:
            self.log.message(line)

    def restore(self) -> None:
        """Continue from last.pt (or the first epoch's best.pt, see RunDir.resume_point): weights,
        optimiser, schedule, scaler, loader, RNGs, sums, history."""
        point = self.run.resume_point()
        state = load_checkpoint(point)
        check_classes(state["classes"], self.store.classes, str(self.store.root), point)
        load_model_state(self.model, state, point)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler.is_enabled() and state["scaler"]:  # a bf16/fp32 run saved no scale to resume in fp16
            self.scaler.load_state_dict(state["scaler"])
        self.train_loader.load_state_dict(state["loader"])
        self.epoch, self.step, self.partial = state["epoch"], state["step"], state.get("partial")
        self.result.history = list(state["history"])
        self.result.best_val_top1_error = float(state.get("best_val_top1_error", math.inf))
        self.result.best_epoch = state.get("best_epoch")
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        if point != self.run.last:
            # best.pt becomes last.pt before any row is written: with rows and no last.pt, a second
            # kill before this epoch's end would leave a run that resume_point() refuses
            self.run.save(self.run.last, state)
        self.run.write_history(self.result.history)  # drop rows of epochs the checkpoint did not reach
        self.log.message(
            f"resumed {self.run.root} at epoch {self.epoch + 1}, "
            f"step {self.train_loader.position} of the epoch"
        )
        self._log_setup()

    def train_epoch(self) -> dict:
        """One epoch from the loader's position, then validation; the metrics row."""
        self.train_loader.set_epoch(self.epoch)
        change = self.schedule.change_at(self.epoch)
        if change and self.train_loader.position == 0:
            self.log.message(change)
        started = time.perf_counter()
        before = self.partial[2] if self.partial else 0.0  # images an earlier process counted
        self.log.start_epoch(
            self.epoch, self.config.train.epochs, len(self.train_loader), self.train_loader.position
        )
        if self.weight_copy is not None:
            self.weight_copy.refresh()  # from the weights as they are (restored, or as left)
        sums = train_one_epoch(
            self.weight_copy or self.net, self.train_loader, self.transforms.train,
            self.weight_copy or self.optimizer, self.schedule, self.scaler,
            self.generator, self.epoch, device=self.device, precision=self.precision,
            label_smoothing=self.config.train.label_smoothing, partial=self.partial, on_step=self.after_step,
            log=self.log,
        )  # fmt: skip
        self.partial = None
        self.check_finite(sums, len(self.train_loader))
        all_reduce_sum(sums, self.dist)
        val = self.evaluate(self.val_loader, self.transforms.center)
        seconds = time.perf_counter() - started
        loss_sum, right, count = sums.tolist()
        return {
            "epoch": self.epoch + 1,
            "train_loss": loss_sum / count,
            "train_top1_error": 100.0 * (1 - right / count),
            "val_loss": val["loss"],
            "val_top1_error": val["top1_error"],
            "val_top5_error": val["top5_error"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "images_per_second": (count - before * self.dist.world_size) / seconds,
        }

    def end_epoch(self, row: dict) -> None:
        """best.pt, then last.pt, then metrics.jsonl: a kill between any two resumes cleanly."""
        drop = self.schedule.end_epoch(self.epoch, row["val_top1_error"])
        self.result.history.append(row)
        self.log.end_epoch(row)
        if drop:
            self.log.message(drop)
        if row["val_top1_error"] < self.result.best_val_top1_error:
            self.result.best_val_top1_error, self.result.best_epoch = row["val_top1_error"], self.epoch + 1
            self.save(self.run.best, self.epoch + 1)
        self.save(self.run.last, self.epoch + 1)
        self.run.write_history(self.result.history)
        if self.stop:
            self.stopped(f"the end of epoch {self.epoch + 1}")

    def after_step(self, step_in_epoch: int, sums: torch.Tensor) -> None:
        self.step += 1
        every = self.config.train.checkpoint_every
        mid_epoch = step_in_epoch < len(self.train_loader)
        if mid_epoch and ((every and self.step % every == 0) or self.stop):
            self.check_finite(sums, step_in_epoch)
            self.save(self.run.last, self.epoch, sums.tolist())
        if self.stop and mid_epoch:
            self.stopped(f"epoch {self.epoch + 1}, step {step_in_epoch} of {len(self.train_loader)}")

    def stopped(self, where: str) -> None:
        """Raise ``Interrupted`` once the checkpoint of ``where`` is written."""
        name = "terminated (SIGTERM)" if self.stop[0] == signal.SIGTERM else "interrupted"
        raise Interrupted(
            f"{name}: saved {self.run.last} at {where}; continue with "
            f"alexnet train --out {self.run.root} --resume",
            signum=self.stop[0],
        )

    def save(self, path: Path, epoch: int, partial: list[float] | None = None) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self.stop_on_nan(self.train_loader.position)  # never save non-finite weights
        self.run.save(path, self.checkpoint_state(epoch, partial))

    def checkpoint_state(self, epoch: int, partial: list[float] | None) -> dict:
        d = self.config.data
        return {
            "model": model_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "loader": self.train_loader.state_dict(),
            "partial": partial,
            "rng": {
                "torch": torch.get_rng_state(),
                "generator": self.generator.get_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            },
            "history": self.result.history,
            "best_val_top1_error": self.result.best_val_top1_error,
            "best_epoch": self.result.best_epoch,
            "config": to_dict(self.config),
            "arch": {"name": model_arch(self.model), "num_classes": len(self.store.classes),
                     "in_channels": self.store.channels},
            "classes": list(self.store.classes),
            "normalization": self.transforms.saved,
            "crop": d.crop,
            "resize": d.resize,
            "image_size": self.store.size,  # what prepare made of every image: predict does the same
            "version": __version__,
        }  # fmt: skip

    def evaluate(self, loader: StoreLoader, transform) -> dict:
        return evaluate(
            self.net, loader, transform, len(self.store.classes), self.device,
            precision=self.precision, dist=self.dist, input_device=self.device,
        )  # fmt: skip

    def final_evaluation(self) -> None:
        """The final model, and best.pt when it is another epoch, on the final split (§4.1's ten crops
        when the recipe asks)."""
        d = self.config.data
        transform = self.transforms.ten_crop if d.ten_crop else self.transforms.center
        loader = StoreLoader(self.splits.final, self.val_loader.batch_size, shuffle=False,
                             device=self.val_loader.device)  # fmt: skip
        view = "ten-crop" if d.ten_crop else "centre-crop"
        last_epoch = len(self.result.history)
        self.result.final = {**self.evaluate(loader, transform), "ten_crop": d.ten_crop,
                             "split": self.splits.final.name, "epoch": last_epoch}  # fmt: skip
        self.log.message(_final_line(f"final model (epoch {last_epoch}), {view}", self.result.final))
        summary = {
            **self.result.final,
            "classes": list(self.store.classes),
        }  # the confusion too: alexnet plot
        if self.result.best_epoch not in (None, last_epoch) and self.run.best.is_file():
            load_model_state(self.model, load_checkpoint(self.run.best), self.run.best)
            self.result.best = {**self.evaluate(loader, transform), "epoch": self.result.best_epoch}
            self.log.message(
                _final_line(f"best.pt (epoch {self.result.best_epoch}), {view}", self.result.best)
            )
            summary["best"] = {k: v for k, v in self.result.best.items() if k != "confusion"}
        self.run.write_final(summary)

    # -- stopping ----------------------------------------------------------------------------
    def check_finite(self, sums: torch.Tensor, step: int) -> None:
        if not math.isfinite(float(sums[0])):
            self.stop_on_nan(step)

    def stop_on_nan(self, step: int) -> None:
        last = self.run.last
        where = (
            f"The last good checkpoint is {last}: resume from it"
            if last.is_file()
            else "No checkpoint was written yet: start again"
        )
        raise DivergedError(
            f"the loss became NaN or infinite in epoch {self.epoch + 1} (by step {step}); stopped. "
            f"{where} with a lower learning rate (--set optim.lr=...)"
        )


def _final_line(what: str, r: dict) -> str:
    return (
        f"{what} on {r.get('split', 'the final split')}: top-1 error {r['top1_error']:.2f} %, "
        f"top-5 error {r['top5_error']:.2f} %, loss {r['loss']:.4f}"
    )


def _open_store(config: RunConfig, main: bool = True) -> Store:
    """The run's data (prepared on first use), seen with only ``data.classes`` when they are named.
    At least two classes."""
    d = config.data
    store = open_data(d.source, size=d.size, workers=d.workers, progress=main)
    if d.classes:
        store = store.select(d.classes)
    if len(store.classes) < 2:
        raise AlexNetError(
            f"{store.root} has {len(store.classes)} class ({', '.join(store.classes)}); a classifier "
            f"learns to tell classes apart: give data with at least two class folders"
        )
    return store


def _wrap(model: nn.Module, config: RunConfig, dist: DistInfo, device: torch.device) -> nn.Module:
    t = config.train
    if dist.enabled:
        if t.batch_size % dist.world_size:
            raise AlexNetError(
                f"train.batch_size {t.batch_size} does not split over {dist.world_size} processes"
            )
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return torch.compile(model) if t.compile else model


def train_one_epoch(
    model: nn.Module,
    loader: StoreLoader,
    transform,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
    epoch: int,
    *,
    device: torch.device,
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
        if isinstance(transform, TrainTransform) and images.device.type == "cpu":
            if buffer is None or buffer.shape[0] < len(images):  # one reused float buffer (CPU)
                buffer = torch.empty((len(images), transform.size, transform.size, images.shape[-1]))
            x = transform(images, generator, out=buffer[: len(images)])
        else:
            x = transform(images, generator)
        x = x.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        lr = schedule.lr(epoch, step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():  # on the device, read once per epoch: no host sync in the step
            sums[0] += loss.detach().double() * len(labels)
            sums[1] += (logits.argmax(1) == labels).sum()
            sums[2] += len(labels)  # a Python number: a kernel argument, not a copy
        step += 1
        if log is not None:
            now = time.perf_counter()
            log.step(step - 1, loss.detach(), lr, len(labels) / max(now - last, 1e-9))
            last = now
        if on_step is not None:
            on_step(step, sums)
    return sums
