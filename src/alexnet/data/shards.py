"""A split of files or archive members prepared in shards that survive an interruption.

The split's images are cut into shards of about ``SHARD_BYTES`` of pixels each; ``workers``
processes decode them. A raw store's shard writes its rows straight into the preallocated
images.npy, at the rows reserved for it; a JPEG store's shard writes its own file of JPEGs. Each
finished shard leaves a record (its labels, skipped files and pixel statistics), written whole or
not at all, so a prepare that is killed and run again redoes only the shards without one. When all
are done the split is assembled in shard order (rows moved up past any skipped images, the JPEG
files concatenated, the statistics summed), so the result does not depend on which worker finished
first or on how many runs it took: it is byte for byte the store of an uninterrupted prepare.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import numpy as np

from ..errors import AlexNetError
from .decode import decode
from .imagenet import read_member
from .jpeg import JpegWriter, encode
from .splits import ArchiveSplit, FolderSplit
from .stats import PixelStats, merge
from .store import reserve, shrink_rows

SHARD_BYTES = 1 << 26  # ~64 MB of decoded pixels per shard: a worker's memory, whatever the data set
PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies (Linux)


def items(split) -> int:
    return len(split.labels)


def shard_ranges(count: int, size: int) -> list[tuple[int, int]]:
    per = max(8, min(4096, SHARD_BYTES // (size * size * 3)))
    return [(start, min(start + per, count)) for start in range(0, count, per)]


def _record(shards: Path, k: int) -> Path:
    return shards / f"{k:06d}.npz"


def _job(split, k: int, start: int, stop: int, size: int, with_stats: bool, encoding, split_dir: Path,
         shards: Path):  # fmt: skip
    """What a worker needs for shard k: plain values, cheap to send to another process."""
    if isinstance(split, ArchiveSplit):
        where = [split.archives[i] for i in split.where[start:stop]]
        source = ("archive", where, split.offsets[start:stop].tolist(), split.sizes[start:stop].tolist(),
                  list(split.names[start:stop]))  # fmt: skip
    else:
        source = ("files", [str(p) for p in split.files[start:stop]])
    labels = [int(v) for v in split.labels[start:stop]]
    return (k, start, source, labels, size, with_stats, encoding, str(split_dir), str(shards))


_HANDLES: dict = {}  # archives a worker keeps open


def run_shard(job) -> tuple[int, int, int]:
    """Decode shard k, put its images in place, then write its record; (k, kept, skipped)."""
    k, start, source, labels, size, with_stats, encoding, split_dir, shards = job
    images, kept, skipped = [], [], []
    for i, label in enumerate(labels):
        if source[0] == "archive":
            _, where, offsets, sizes, names = source
            name = f"{where[i]}:{names[i]}"
            try:
                data = read_member(where[i], offsets[i], sizes[i], _HANDLES)
            except OSError as exc:
                skipped.append((name, f"cannot be read ({exc})"))
                continue
            result = decode(data, size)
        else:
            name = source[1][i]
            result = decode(name, size)
        if isinstance(result, str):
            skipped.append((name, result))
        else:
            images.append(result)
            kept.append(label)
    array = np.stack(images) if images else np.empty((0, size, size, 3), np.uint8)
    record: dict = {"labels": np.asarray(kept, np.int64),
                    "skipped": np.frombuffer(json.dumps(skipped).encode(), np.uint8)}  # fmt: skip
    if encoding[0] == "jpeg":
        files = encode(array, encoding[1])
        Path(shards, f"{k:06d}.bin").write_bytes(b"".join(files))
        record["lengths"] = np.asarray([len(f) for f in files], np.int64)
    else:
        rows = np.lib.format.open_memmap(Path(split_dir) / "images.npy", mode="r+")
        rows[start : start + len(array)] = array
        rows.flush()
        del rows
    if with_stats and images:
        stats = PixelStats.of(array)
        record.update(image_sum=stats.image_sum, pixel_sum=stats.pixel_sum, pixel_outer=stats.pixel_outer,
                      counts=np.asarray([stats.images, stats.pixels], np.int64))  # fmt: skip
    _write_record(_record(Path(shards), k), record)
    return k, len(kept), len(skipped)


def _write_record(path: Path, record: dict) -> None:
    """The shard's record, whole or absent (a temporary name, fsync, rename)."""
    tmp = path.with_suffix(".tmp.npz")
    with open(tmp, "wb") as f:
        np.savez(f, **record)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_split(split: FolderSplit | ArchiveSplit, split_dir: Path, shards: Path, size: int, workers: int,
                with_stats: bool, bar, encoding) -> dict:  # fmt: skip
    """Prepare ``split`` into ``split_dir`` shard by shard (``shards`` holds the records); the
    split's count, skipped count, channels, JPEG bytes and PCA, as prepare's ``_write_split``."""
    count = items(split)
    raw = encoding[0] != "jpeg"
    path = split_dir / "images.npy"
    assembling = split_dir / ".assembling"
    if assembling.exists():  # killed while rows were being moved: this split's rows start again
        for leftover in (*shards.glob("*"), path, assembling):
            leftover.unlink(missing_ok=True)
    shards.mkdir(parents=True, exist_ok=True)
    if raw:
        if not path.exists():  # a resumed run keeps the rows its finished shards wrote
            np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, size, size, 3)).flush()
        reserve(path)  # every run: blocks a full disk refused before stay unallocated until then
    ranges = shard_ranges(count, size)
    todo = [k for k in range(len(ranges)) if not _record(shards, k).is_file()]
    done = sum(stop - start for k, (start, stop) in enumerate(ranges) if k not in set(todo))
    bar.update(done)
    bar.resumed += done
    jobs = [_job(split, k, *ranges[k], size, with_stats, encoding, split_dir, shards) for k in todo]
    for _, kept, skipped in _run(jobs, workers):
        bar.update(kept + skipped)
    assembling.touch()
    result = _assemble(split, split_dir, shards, ranges, size, raw, with_stats, encoding)
    assembling.unlink()
    return result


def _run(jobs: list, workers: int):
    if workers == 1 or len(jobs) <= 1:
        yield from map(run_shard, jobs)
        return
    # fork on Linux: workers use only Pillow, numpy and files, and start in milliseconds.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, initializer=_quiet_worker) as pool:
        yield from pool.imap_unordered(run_shard, jobs)


def _quiet_worker() -> None:
    """A decoding worker leaves Ctrl-C to the parent (which ends the pool) and dies with it: a
    killed ``prepare`` must not leave workers printing BrokenPipe tracebacks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(AttributeError, OSError):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _assemble(split, split_dir: Path, shards: Path, ranges, size: int, raw: bool, with_stats: bool,
              encoding) -> dict:  # fmt: skip
    """The split's files from its shards, in shard order."""
    labels: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    stats: PixelStats | None = None
    writer = JpegWriter(split_dir, encoding[1], 1) if not raw else None
    rows = np.lib.format.open_memmap(split_dir / "images.npy", mode="r+") if raw else None
    filled = 0
    for k, (start, _stop) in enumerate(ranges):
        with np.load(_record(shards, k)) as record:
            kept = record["labels"]
            skipped += [tuple(s) for s in json.loads(bytes(record["skipped"]).decode())]
            if "image_sum" in record:
                part = PixelStats(record["image_sum"], record["pixel_sum"], record["pixel_outer"],
                                  int(record["counts"][0]), int(record["counts"][1]))  # fmt: skip
                stats = merge(stats, part)
            lengths = record.get("lengths")  # NpzFile is a Mapping
        if raw and filled != start and len(kept):  # move this shard's rows up over earlier skips
            for a in range(
                0, len(kept), 256
            ):  # in order, front to back: a destination is never a later source
                b = min(a + 256, len(kept))
                rows[filled + a : filled + b] = rows[start + a : start + b]
        if writer is not None:
            data = (shards / f"{k:06d}.bin").read_bytes()
            ends = np.cumsum(lengths)
            writer.add_encoded([data[e - n : e] for e, n in zip(ends, lengths, strict=True)])
        labels.append(kept)
        filled += len(kept)
    if not filled:
        example = f", e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        where = getattr(split, "root", "the split")
        raise AlexNetError(f"no usable image in {where} ({len(skipped)} skipped{example})")
    if rows is not None:
        rows.flush()
        del rows
        if filled < items(split):
            shrink_rows(split_dir / "images.npy", filled)
    if writer is not None:
        writer.close()
    np.save(split_dir / "labels.npy", np.concatenate(labels))
    result = {"count": filled, "skipped": skipped, "channels": 3}
    if writer is not None:
        result["bytes"] = writer.bytes
    if with_stats and stats is not None:
        np.save(split_dir / "mean.npy", stats.mean_image())
        result["pca"] = stats.pca()
    return result
