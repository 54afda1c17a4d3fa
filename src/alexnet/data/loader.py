"""Shuffled uint8 batches from a store split, sharded per rank, with a resumable position.

The epoch's order is a permutation drawn from (seed, epoch) alone, so every rank computes the same
one and takes its own slice; the position within the epoch is part of ``state_dict()``, so a resumed
run sees exactly the batches it had not yet seen. A background thread reads the next batches from
the memory-mapped store while the model works.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from ..errors import AlexNetError
from .jpeg import JpegImages, jpeg_decoder
from .store import RowSubset, Split

SEED_STRIDE = 1_000_003  # seeds for (seed, epoch) pairs: seed * stride + epoch, distinct for epoch < stride


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def batch_source(images) -> tuple[JpegImages, np.ndarray | None] | None:
    """(the JPEG split, the row map of a subset or None) when ``images`` is JPEG-backed, else None."""
    if isinstance(images, JpegImages):
        return images, None
    if isinstance(images, RowSubset) and isinstance(images.base, JpegImages):
        return images.base, images.rows
    return None


class StoreLoader:
    """Batches (uint8 images [B, H, W, C], int64 labels [B]) of one split, on ``device``.

    - ``shuffle``: a new permutation each epoch (``set_epoch``), the same on every rank.
    - ``rank``/``world_size`` (default: torch.distributed's, else 0/1): rank r takes positions
      r, r + W, r + 2W, … of the permutation. Without ``drop_last`` every sample is seen exactly once
      per epoch across ranks (ranks may differ by one batch: use it for evaluation). With
      ``drop_last`` all ranks get the same number of full batches (use it for training).
    - ``state_dict()``/``load_state_dict()``: epoch and batches already yielded in it.
    - ``reuse_buffers`` (CPU only): batches are written into a small ring of buffers, so a yielded
      batch stays valid only until the next one is asked for, as in a training loop. A fresh
      batch-sized tensor costs more in page faults than the copy into it.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        device: str | torch.device = "cpu",
        prefetch: int = 2,
        reuse_buffers: bool = False,
    ) -> None:
        if batch_size < 1:
            raise AlexNetError(f"batch size must be positive, got {batch_size}")
        dist_rank, dist_world = _dist_rank_world()
        self.rank = dist_rank if rank is None else rank
        self.world_size = dist_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise AlexNetError(f"rank {self.rank} is outside a world of {self.world_size}")
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self.drop_last, self.device, self.prefetch = drop_last, torch.device(device), max(1, prefetch)
        self.pin = self.device.type == "cuda"
        # pinned buffers may still be copying to the GPU when the producer comes round again
        self.reuse_buffers = reuse_buffers and self.device.type == "cpu"
        self.epoch = 0
        self.position = 0  # batches of this epoch already yielded
        self.threads = max(1, min(4, torch.get_num_threads()))  # for the raw store's row copies
        self.pool: ThreadPoolExecutor | None = None
        self.streams: dict = {}
        if drop_last and len(self) == 0:
            raise AlexNetError(
                f"split {split.name!r} has {len(split)} images, fewer than one batch of "
                f"{batch_size} per rank on {self.world_size} ranks; use a smaller batch"
            )

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def indices(self) -> np.ndarray:
        """This rank's sample indices for the current epoch, in order."""
        n = len(self.split)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * SEED_STRIDE + self.epoch)
            order = torch.randperm(n, generator=g).numpy()
        else:
            order = np.arange(n)
        if self.drop_last:
            per_rank = n // self.world_size
            mine = order[: per_rank * self.world_size][self.rank :: self.world_size]
            return mine[: len(mine) // self.batch_size * self.batch_size]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.split)
        if self.drop_last:
            return (n // self.world_size) // self.batch_size
        mine = len(range(self.rank, n, self.world_size))
        return -(-mine // self.batch_size)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise AlexNetError(f"the saved loader used seed {state['seed']}, this one {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def _read(self, idx: np.ndarray, buffer: Tensor | None) -> tuple[Tensor, Tensor, object]:
        """(uint8 images, int64 labels, a CUDA event the images are ready at, or None)."""
        order = np.sort(idx)  # ascending rows read the memory map front to back
        jpeg = batch_source(self.split.images)
        if jpeg is not None:  # decoded in one batched call: threads on the CPU, nvJPEG on CUDA
            base, rows = jpeg
            where = self.device if self.device.type == "cuda" else torch.device("cpu")
            wanted = order if rows is None else rows[order]
            ready = None
            if where.type == "cuda":  # decoded on a stream of its own, handed over at an event
                with torch.cuda.stream(self._stream("decode")):
                    images, bad = base.decode_batch(wanted, where)
                    if not jpeg_decoder()[0].startswith("TorchCodec"):
                        # torchvision's nvJPEG writes on a stream of its own, unordered against the
                        # caller's: wait here, in the loader's thread (the training queue does not)
                        torch.cuda.synchronize(where)
                    ready = torch.cuda.Event()
                    ready.record()
            else:
                images, bad = base.decode_batch(wanted, where)
            labels = self.split.labels[order].astype(np.int64)
            if bad:  # a damaged image is skipped (and said once), with its label
                labels = labels[~np.isin(wanted, [row for row, _ in bad])]
            return images, torch.from_numpy(labels), ready
        if buffer is not None:
            images = buffer[: len(order)]
        else:
            shape = (len(order), *self.split.images.shape[1:])
            images = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin)
        rows, source = images.numpy(), self.split.images

        def copy(part: np.ndarray) -> None:  # row copies beat np.take's gather 2.5× here
            for j in part.tolist():
                rows[j] = source[order[j]]

        # a few threads share the batch: numpy's copies release the GIL, so rows come off the
        # memory map (and the page cache) in parallel instead of one after another
        parts = np.array_split(np.arange(len(order)), max(1, min(self.threads, len(order) // 16)))
        if len(parts) > 1:
            list(self._pool().map(copy, parts))
        else:
            copy(parts[0])
        labels = torch.from_numpy(self.split.labels[order].astype(np.int64))
        return images, labels, None

    def _pool(self) -> ThreadPoolExecutor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rows")
        return self.pool

    def _stream(self, name: str):
        """A CUDA stream of the loader's own (the batch copies', the decoder's), made once."""
        if name not in self.streams:
            self.streams[name] = torch.cuda.Stream(self.device)
        return self.streams[name]

    def _on_device(self, batches) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches on the loader's device. On CUDA each batch is copied on a side stream while
        the one before it trains, and handed over at an event (record_stream keeps its memory
        from being reused before the compute stream is done with it)."""
        if self.device.type != "cuda":
            for images, labels, _ in batches:
                yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            return
        queued = None
        for images, labels, ready in batches:
            copy = self._stream("copy")
            with torch.cuda.stream(copy):
                if ready is not None:
                    copy.wait_event(ready)
                moved = (images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))
                done = torch.cuda.Event()
                done.record()
            if queued is not None:
                yield self._hand_over(*queued)
            queued = (moved, done)
        if queued is not None:
            yield self._hand_over(*queued)

    def _hand_over(self, moved: tuple[Tensor, Tensor], done) -> tuple[Tensor, Tensor]:
        current = torch.cuda.current_stream(self.device)
        current.wait_event(done)
        for t in moved:
            t.record_stream(current)
        return moved

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        idx = self.indices()
        starts = list(range(self.position * self.batch_size, len(idx), self.batch_size))
        jobs: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        ring: list[Tensor] = []
        if self.reuse_buffers:
            # queued (≤ prefetch) + the one the consumer holds + the one being filled
            shape = (self.batch_size, *self.split.images.shape[1:])
            ring = [torch.empty(shape, dtype=torch.uint8) for _ in range(self.prefetch + 2)]

        def produce() -> None:
            try:
                for n, start in enumerate(starts):
                    if stop.is_set():
                        return
                    buffer = ring[n % len(ring)] if ring else None
                    jobs.put(self._read(idx[start : start + self.batch_size], buffer))
            except BaseException as exc:  # handed to the consumer, raised there
                jobs.put(exc)
            jobs.put(None)

        worker = threading.Thread(target=produce, daemon=True, name="StoreLoader")
        worker.start()

        def host_batches():
            while True:
                item = jobs.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item

        try:
            for batch in self._on_device(host_batches()):
                self.position += 1
                yield batch
            self.epoch, self.position = self.epoch + 1, 0
        finally:
            stop.set()
            while worker.is_alive():  # drain so the producer can finish its last put
                try:
                    jobs.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.01)
