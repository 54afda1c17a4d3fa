"""One small logging interface: console (progress bar or plain lines) and TensorBoard.

metrics.jsonl belongs to the run directory (``RunDir.write_history``), which keeps it equal to the
checkpoint's history.

Back ends that are absent (no terminal, no tensorboard package, not rank 0) are null objects, so the
training loop calls the same methods whatever is installed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch


class _NullWriter:
    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return _NullWriter()
    return SummaryWriter(str(run_dir / "tensorboard"))


class LatestValue:
    """A device scalar read without a sync: each ``read`` starts a non-blocking copy of the given
    value into pinned memory and returns the last value whose copy has finished (on the CPU, the
    value itself)."""

    def __init__(self) -> None:
        self.buffer, self.event, self.value = None, None, None

    def read(self, tensor) -> float | None:
        if not hasattr(tensor, "is_cuda") or not tensor.is_cuda:
            return float(tensor)
        if self.event is not None and self.event.query():  # arrived: show it
            self.value = float(self.buffer)
        if self.event is None or self.event.query():  # start the next copy
            if self.buffer is None:
                self.buffer = torch.empty((), dtype=tensor.dtype, pin_memory=True)
            self.buffer.copy_(tensor.detach(), non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        return self.value


class RunLog:
    """Console lines on stderr and TensorBoard scalars."""

    def __init__(
        self, run_dir: Path | None, *, enabled: bool = True, progress: bool | None = None, log_every: int = 50
    ) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self.log_every = max(1, log_every)
        self.bar_wanted = sys.stderr.isatty() if progress is None else progress
        self.bar = None
        self.writer = _tensorboard(run_dir) if enabled and run_dir is not None else _NullWriter()
        self._loss = LatestValue()

    def message(self, text: str) -> None:
        if self.enabled:
            if self.bar is not None:
                self.bar.write(text, file=sys.stderr)
            else:
                print(text, file=sys.stderr, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        self._epoch, self._epochs, self._steps, self._start = epoch, epochs, steps, time.perf_counter()
        if self.enabled and self.bar_wanted:
            from tqdm import tqdm

            self.bar = tqdm(
                total=steps,
                initial=done,
                desc=f"epoch {epoch + 1}/{epochs}",
                unit="step",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )

    def step(self, step: int, loss, lr: float, images_per_second: float) -> None:
        """``loss`` may be a device tensor: on a GPU it is copied to the host without waiting and
        shown once it has arrived, so the log never stalls the queue of work (no host sync)."""
        if not self.enabled:
            return
        if self.bar is not None:
            if step % 10 == 0:
                shown = self._loss.read(loss)
                self.bar.set_postfix(
                    loss="…" if shown is None else f"{shown:.3f}", lr=f"{lr:.2g}",
                    img_s=f"{images_per_second:.0f}", refresh=False,
                )  # fmt: skip
            self.bar.update(1)
        elif (step + 1) % self.log_every == 0:
            shown = self._loss.read(loss)
            self.message(
                f"epoch {self._epoch + 1}/{self._epochs} step {step + 1}/{self._steps} "
                f"loss {'…' if shown is None else f'{shown:.4f}'} lr {lr:.3g} {images_per_second:.0f} img/s"
            )

    def end_epoch(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not self.enabled:
            return
        for key, value in row.items():
            if isinstance(value, (int, float)) and key != "epoch":
                self.writer.add_scalar(key, value, row["epoch"])
        self.message(
            f"epoch {row['epoch']}/{self._epochs}: train loss {row['train_loss']:.4f} "
            f"error {row['train_top1_error']:.2f} % | val loss {row['val_loss']:.4f} "
            f"top-1 {row['val_top1_error']:.2f} % top-5 {row['val_top5_error']:.2f} %"
            f" | lr {row['lr']:.3g} | {row['seconds']:.0f} s, {row['images_per_second']:.0f} img/s"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.writer.close()
