"""The compressed store: every image of a split JPEG-encoded once, in one file with an offsets index.

Layout of a split in a ``--format jpeg`` store (beside labels.npy, skipped.txt, mean.npy)::

    <split>/jpeg.bin       the JPEG files of the split's images, one after another (row order)
    <split>/offsets.npy    int64 [N + 1]: image i is jpeg.bin[offsets[i]:offsets[i + 1]]

Both are memory-mapped: reading a batch touches only its bytes, and no pickle or per-image file
is involved. What was compared (README, "The JPEG store"): WebDataset's tar shards stream well
from object storage but need a sequential reader and an index to seek; FFCV's .beton is this
layout plus a metadata table, behind a library with its own loader; plain offsets into one file
are what both reduce to for random access from a local disk, with numpy alone.

Decoding is batched: on the CPU ``torchvision.io.decode_jpeg`` on slices of the batch in a thread
pool (the op releases the GIL), on CUDA one ``decode_jpeg(list, device="cuda")`` call (nvJPEG).
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import AlexNetError

DEFAULT_QUALITY = 90


def encode(images: np.ndarray, quality: int, pool: ThreadPoolExecutor | None = None) -> list[bytes]:
    """JPEG bytes of each uint8 image [k, H, W, C] (C = 3 or 1), Pillow's encoder (4:2:0 for RGB)."""

    def one(image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
            buffer, "JPEG", quality=quality
        )
        return buffer.getvalue()

    return list(pool.map(one, images)) if pool is not None else [one(i) for i in images]


class JpegWriter:
    """Appends each chunk's images, JPEG-encoded on ``workers`` threads, to jpeg.bin; offsets.npy at
    close. Pillow releases the GIL while it encodes, so threads suffice."""

    def __init__(self, split_dir: Path, quality: int, workers: int) -> None:
        self.dir, self.quality = split_dir, quality
        self.file = open(split_dir / "jpeg.bin", "wb")  # noqa: SIM115 (closed in close())
        self.pool = ThreadPoolExecutor(max(1, workers))
        self.offsets = [0]

    @property
    def bytes(self) -> int:
        return self.offsets[-1]

    def add(self, images: np.ndarray) -> None:
        self.add_encoded(encode(images, self.quality, self.pool))

    def add_encoded(self, files: list[bytes]) -> None:
        """JPEG files as they are (e.g. a data set already stored as JPEGs of the store's size)."""
        for data in files:
            self.file.write(data)
            self.offsets.append(self.offsets[-1] + len(data))

    def close(self) -> None:
        self.pool.shutdown()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        np.save(self.dir / "offsets.npy", np.asarray(self.offsets, dtype=np.int64))


class JpegImages:
    """A split's JPEG images, indexed like the raw store's uint8 [N, H, W, C] array: an integer gives
    one decoded image, an index array or a slice a decoded batch (numpy, on the CPU)."""

    def __init__(self, folder: Path, size: int, channels: int) -> None:
        try:
            self.offsets = np.load(folder / "offsets.npy", allow_pickle=False)
            self.data = _map(folder / "jpeg.bin")
        except (OSError, ValueError) as exc:
            raise AlexNetError(
                f"{folder} cannot be read as a JPEG split ({exc}); prepare the store again"
            ) from None
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or int(self.offsets[-1]) != len(self.data):
            raise AlexNetError(
                f"{folder / 'offsets.npy'} does not match {folder / 'jpeg.bin'} ({len(self.data)} bytes); "
                "prepare the store again"
            )
        self.folder, self.shape, self.dtype = folder, (len(self.offsets) - 1, size, size, channels), np.uint8
        self.threads = max(1, torch.get_num_threads())  # decode_jpeg releases the GIL
        self.pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def encoded(self, rows) -> list[torch.Tensor]:
        """The JPEG bytes of ``rows`` as uint8 tensors (views of the memory map)."""
        # copies (a JPEG is a few KB): torch wants writable memory, the map is read-only
        return [torch.from_numpy(np.array(self.data[self.offsets[r] : self.offsets[r + 1]])) for r in rows]

    def decode(self, rows, device: torch.device | str = "cpu") -> torch.Tensor:
        """Images of ``rows`` decoded on ``device`` (nvJPEG on CUDA), shaped [k, H, W, C] uint8 like
        the raw store's, but laid out channels-first underneath: decode_jpeg returns [C, H, W], and
        the transforms turn the batch channels-first anyway, so no transposing copy is made."""
        from torchvision.io import ImageReadMode, decode_jpeg

        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        mode = ImageReadMode.RGB if self.shape[-1] == 3 else ImageReadMode.GRAY
        data = self.encoded(rows)
        device = torch.device(device)
        if not len(rows):
            return torch.empty((0, *self.shape[1:]), dtype=torch.uint8, device=device)
        if device.type == "cuda":
            batch = torch.stack(decode_jpeg(data, mode=mode, device=device))
            self._check(batch[0])  # stack has made them all one shape
        else:
            h, w, c = self.shape[1:]
            out = np.empty((len(rows), c, h, w), np.uint8)

            def work(part: np.ndarray) -> None:
                # each thread decodes its slice and copies it into place (numpy row copies: torch.stack
                # of hundreds of small tensors measured up to 10× slower)
                for i, image in zip(part, decode_jpeg([data[i] for i in part], mode=mode), strict=True):
                    self._check(image)
                    out[i] = image.numpy()

            parts = np.array_split(np.arange(len(rows)), min(self.threads, len(rows)))
            list(self._pool().map(work, parts))
            batch = torch.from_numpy(out)
        return batch.permute(0, 2, 3, 1)

    def _pool(self) -> ThreadPoolExecutor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="jpeg")
        return self.pool

    def _check(self, image: torch.Tensor) -> None:
        """A decoded [C, H, W] image must have the store's size."""
        h, w, c = self.shape[1:]
        if tuple(image.shape) != (c, h, w):
            raise AlexNetError(
                f"{self.folder / 'jpeg.bin'} holds an image of {tuple(image.shape)} (C, H, W), the store "
                f"says {(c, h, w)}; prepare the store again"
            )

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            row = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= row < len(self):
                raise IndexError(f"image {index} of {len(self)}")
            return self.decode([row])[0].numpy()
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        return self.decode(index).numpy()

    def __array__(self, dtype=None, copy=None):
        out = self.decode(np.arange(len(self))).numpy()
        return out if dtype is None else out.astype(dtype)


def _map(path: Path) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")
