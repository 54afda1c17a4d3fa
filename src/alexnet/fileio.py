"""Writing files so that a crash or a full disk never leaves a half-written one behind.

``write_atomic`` writes a temporary file in the same folder, fsyncs it and renames it over the
target, so readers see the old content or the new, never a mixture or an empty file. Errors from
the operating system (a full disk, a read-only folder) become one ``AlexNetError`` line that names
the path and the cause.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import AlexNetError

TEMP_SUFFIX = ".tmp"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_error(path: Path, exc: BaseException) -> AlexNetError:
    """One line for a failed write: the path, the cause, and what to do about it."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "No space left" in str(exc) or "file write failed" in str(exc):
        cause = "the disk is full (no space left on device)"
        fix = "free some space and run the command again"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        cause = f"it cannot be written ({os.strerror(code)})"
        fix = "choose a writable folder"
    else:
        cause = first_line(exc)
        fix = "check the folder and run the command again"
    return AlexNetError(f"cannot write {path}: {cause}; {fix}")


@contextlib.contextmanager
def reporting_write_errors(path: str | Path) -> Iterator[None]:
    """Turn OSError (and torch's RuntimeError from its file writer) into one clear line about ``path``."""
    try:
        yield
    except AlexNetError:
        raise
    except (OSError, RuntimeError) as exc:
        cause = _os_error_in(exc)
        if cause is None and "write" not in str(exc).lower():
            raise
        raise write_error(Path(path), cause or exc) from None


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: torch's zip writer reports a full disk as a RuntimeError
    ("unexpected pos") raised while handling the OSError of the failed write."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def write_atomic(path: str | Path, data: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Replace ``path`` with ``data`` (bytes, text, or a function that writes to a binary file).

    The temporary file is ``.NAME.*.tmp`` beside the target, locked (flock) while it is written;
    the unlocked ones of the same NAME, which a killed process left behind, are removed first, so
    leftovers never pile up wherever files are written (``remove_temporaries`` clears a folder).
    """
    path = Path(path)
    if path.is_dir():
        raise AlexNetError(f"cannot write {path}: it is a folder; give a file name")
    with reporting_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        _lock(fd)
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file should read like any other
            with os.fdopen(fd, "wb") as f:
                if callable(data):
                    data(f)
                else:
                    f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)


def _lock(fd: int) -> bool:
    """Take a non-blocking exclusive flock on ``fd``; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``.NAME.*.tmp`` files beside ``path`` that no live writer holds."""
    for leftover in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
        try:
            fd = os.open(leftover, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _lock(fd):  # its writer is gone (the kernel dropped the lock when it died)
                leftover.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_temporaries(folder: Path) -> int:
    """Delete the ``.NAME.*.tmp`` files a killed writer left in ``folder``; returns how many."""
    removed = 0
    if folder.is_dir():
        for leftover in folder.glob(f".*{TEMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def check_writable_target(path: str | Path) -> Path:
    """Fail early (before hours of work) when ``path``'s folder does not exist or is a file."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise AlexNetError(f"cannot write {path}: the folder {parent} does not exist; create it first")
    if path.is_dir():
        raise AlexNetError(f"cannot write {path}: it is a folder; give a file name")
    return path


RENAME_EXCHANGE = 2  # renameat2 flag (Linux ≥ 3.15): swap two paths in one step
AT_FDCWD = -100


def replace_folder(new: Path, out: Path) -> None:
    """Put folder ``new`` at ``out``; an existing ``out`` stays whole until the new one replaces it.

    A folder cannot be renamed over a non-empty one, so where ``out`` exists the two are swapped
    in one step (renameat2 with RENAME_EXCHANGE) and the old one, now at ``new``, is removed.
    Where that call is missing (not Linux, or an old C library) the old folder is moved aside
    first, which leaves ``out`` absent for the moment between two renames.
    """
    if not out.exists():
        os.replace(new, out)
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        swapped = libc.renameat2(AT_FDCWD, os.fsencode(new), AT_FDCWD, os.fsencode(out), RENAME_EXCHANGE) == 0
    except (AttributeError, OSError):
        swapped = False
    if not swapped:
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(new, out)
        new = old
    shutil.rmtree(new, ignore_errors=True)


@contextlib.contextmanager
def exclusive(lock_path: Path, waiting: str | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on ``lock_path`` for the block; when another process
    holds it, say ``waiting`` (if given) once and wait for it. The kernel drops the lock when its
    holder dies, so a killed process never leaves it held. (No-op where there is no fcntl.)"""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        yield
        return
    with reporting_write_errors(lock_path):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if waiting:
                print(waiting, file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock
