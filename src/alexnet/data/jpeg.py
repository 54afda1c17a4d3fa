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

import functools
import io
import os
import sys
import warnings
from collections.abc import Callable
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
    one decoded image, an index array or a slice a decoded batch (numpy, on the CPU).

    A damaged index (offsets out of order, past the end of jpeg.bin) is refused when the split opens.
    An image whose bytes do not decode (or decode to another size) is found when it is read: the
    loader skips it and says so once (``decode_batch``); direct indexing raises one line naming it.
    """

    def __init__(self, folder: Path, size: int, channels: int) -> None:
        try:
            self.offsets = np.load(folder / "offsets.npy", allow_pickle=False)
            self.data = _map(folder / "jpeg.bin")
        except (OSError, ValueError) as exc:
            raise AlexNetError(
                f"{folder} cannot be read as a JPEG split ({exc}); prepare the store again"
            ) from None
        index = folder / "offsets.npy"
        if (
            self.offsets.ndim != 1
            or len(self.offsets) < 1
            or not np.issubdtype(self.offsets.dtype, np.integer)
        ):
            raise AlexNetError(f"{index} is not a list of byte offsets; prepare the store again")
        if int(self.offsets[0]) != 0 or int(self.offsets[-1]) != len(self.data):
            raise AlexNetError(
                f"{index} does not match {folder / 'jpeg.bin'} ({len(self.data)} bytes: offsets run from "
                f"{int(self.offsets[0])} to {int(self.offsets[-1])}); prepare the store again"
            )
        steps = np.diff(self.offsets)
        if (steps <= 0).any():
            first = int(np.flatnonzero(steps <= 0)[0])
            raise AlexNetError(
                f"{index}: image {first} has {int(steps[first])} bytes (offsets out of order); "
                "prepare the store again"
            )
        self.folder, self.shape, self.dtype = folder, (len(self.offsets) - 1, size, size, channels), np.uint8
        self.threads = max(1, torch.get_num_threads())  # decode_jpeg releases the GIL
        self.pool: ThreadPoolExecutor | None = None
        self.reported: set[int] = set()  # damaged rows already said

    def __len__(self) -> int:
        return self.shape[0]

    def encoded(self, rows) -> list[torch.Tensor]:
        """The JPEG bytes of ``rows`` as uint8 tensors (views of the memory map)."""
        # copies (a JPEG is a few KB): torch wants writable memory, the map is read-only
        return [torch.from_numpy(np.array(self.data[self.offsets[r] : self.offsets[r + 1]])) for r in rows]

    def decode(self, rows, device: torch.device | str = "cpu") -> torch.Tensor:
        """Images of ``rows`` decoded on ``device``; a damaged one is an error naming it."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        batch, bad = self.decode_batch(rows, device, report=False)
        if bad:
            row, reason = bad[0]
            raise AlexNetError(f"{self.folder / 'jpeg.bin'}: image {row} {reason}; prepare the store again")
        return batch

    def decode_batch(
        self, rows, device: torch.device | str = "cpu", report: bool = True
    ) -> tuple[torch.Tensor, list[tuple[int, str]]]:
        """(the images of ``rows`` that decode, shaped [k, H, W, C] uint8 like the raw store's but
        channels-first underneath, in order; the (row, reason) of those that do not).

        On CUDA one ``decode_jpeg(list, device="cuda")`` call (nvJPEG); on the CPU a slice of the
        batch per thread. decode_jpeg returns [C, H, W] and the transforms turn the batch
        channels-first anyway, so no transposing copy is made. ``report``: say each damaged row on
        stderr once.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        device = torch.device(device)
        h, w, c = self.shape[1:]
        data = self.encoded(rows)
        images: list[torch.Tensor | None] = [None] * len(rows)
        if device.type == "cuda" and len(rows):
            try:
                images = list(_decode(data, c, device))
            except RuntimeError:  # one damaged image fails the call: decode them one by one
                images = [self._one(d, device) for d in data]
        elif len(rows):

            def work(part: np.ndarray) -> None:
                try:
                    decoded = _decode([data[i] for i in part], c, device)
                except RuntimeError:
                    decoded = [self._one(data[i], device) for i in part]
                for i, image in zip(part, decoded, strict=True):
                    images[i] = image

            parts = np.array_split(np.arange(len(rows)), min(self.threads, len(rows)))
            list(self._pool().map(work, parts))
        bad = []
        for i, image in enumerate(images):
            if image is None:
                bad.append((int(rows[i]), "cannot be decoded (damaged JPEG data)"))
            elif tuple(image.shape) != (c, h, w):
                bad.append(
                    (int(rows[i]), f"decodes to {tuple(image.shape)} (C, H, W), not the store's {(c, h, w)}")
                )
        kept = [image for image, row in zip(images, rows, strict=True) if int(row) not in {b for b, _ in bad}]
        if report:
            for row, reason in bad:
                if row not in self.reported:
                    self.reported.add(row)
                    print(f"skipped image {row} of {self.folder / 'jpeg.bin'}: it {reason}", file=sys.stderr)
        if not kept:
            return torch.empty((0, h, w, c), dtype=torch.uint8, device=device), bad
        if device.type == "cuda":
            batch = torch.stack(kept)
        else:  # numpy row copies: torch.stack of hundreds of small tensors measured up to 10× slower
            out = np.empty((len(kept), c, h, w), np.uint8)
            for i, image in enumerate(kept):
                out[i] = image.numpy()
            batch = torch.from_numpy(out)
        return batch.permute(0, 2, 3, 1), bad

    def _one(self, data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        try:
            return _decode([data], self.shape[-1], device)[0]
        except RuntimeError:
            return None

    def _pool(self) -> ThreadPoolExecutor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="jpeg")
        return self.pool

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


# Which library decodes JPEGs: TorchCodec where it is installed (torchvision 0.29 deprecates its
# decoders for it; its CUDA decoder orders its work against the caller's stream), torchvision.io
# otherwise. ALEXNET_JPEG_DECODER=torchcodec|torchvision picks one (benchmarks time both).
DECODER_ENV = "ALEXNET_JPEG_DECODER"


@functools.cache
def jpeg_decoder() -> tuple[str, Callable]:
    """(the decoder's name and version, a function (list of JPEG bytes tensors, channels, device)
    → list of [C, H, W] uint8 tensors), chosen once per process."""
    wanted = os.environ.get(DECODER_ENV, "auto")
    if wanted not in ("auto", "torchcodec", "torchvision"):
        raise AlexNetError(f"{DECODER_ENV}={wanted!r}; use torchcodec or torchvision")
    if wanted != "torchvision":
        try:
            import torchcodec
            from torchcodec.decoders import decode_jpeg as codec_decode
        except ImportError:
            if wanted == "torchcodec":
                raise AlexNetError(
                    f"{DECODER_ENV}=torchcodec, but it is not installed: pip install 'alexnet[jpeg]'"
                ) from None
        else:

            def codec(data, channels, device):
                return codec_decode(data, mode="RGB" if channels == 3 else "GRAY", device=device)

            return f"TorchCodec {torchcodec.__version__}", codec
    import torchvision
    from torchvision.io import ImageReadMode, decode_jpeg

    def vision(data, channels, device):
        mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
        with (
            warnings.catch_warnings()
        ):  # deprecated for TorchCodec (0.29): the fallback, said once in the run
            warnings.simplefilter("ignore", DeprecationWarning)
            if device.type == "cuda":
                return decode_jpeg(data, mode=mode, device=device)
            return decode_jpeg(data, mode=mode)

    return f"torchvision.io {torchvision.__version__}", vision


def _decode(data: list[torch.Tensor], channels: int, device: torch.device) -> list[torch.Tensor]:
    """JPEG bytes to [C, H, W] uint8 images on ``device`` (nvJPEG on CUDA)."""
    return list(jpeg_decoder()[1](data, channels, device))


def _map(path: Path) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")
