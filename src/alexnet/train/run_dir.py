"""The run directory: one writer at a time, files that are whole or absent, history that agrees.

``RunDir`` owns everything under ``--out``:

    config.yaml          the resolved config (written atomically before training starts)
    run.json             versions, device, precision and why, world size
    metrics.jsonl        one row per finished epoch: rewritten from the checkpoint's history at
                         every epoch end and on resume, so it never holds a row twice
    checkpoints/last.pt  every epoch end (and every train.checkpoint_every steps)
    checkpoints/best.pt  the epoch with the lowest validation error so far
    final.json           the closing evaluation
    .lock                held (flock) by the process that writes the run; the kernel drops it
                         when that process dies, so a killed run never stays locked

At an epoch end best.pt is written before last.pt: last.pt's history is what a resumed run
believes, and it can name a best epoch only once that epoch's best.pt exists. A kill between the
first epoch's best.pt and its last.pt leaves best.pt, no last.pt and no row: best.pt then holds the
very state last.pt would have, and a resumed run continues from it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import yaml

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import RunConfig, config_differences, from_dict, to_dict
from ..errors import AlexNetError
from ..fileio import first_line, remove_temporaries, reporting_write_errors, write_atomic

LOCK_FILE = ".lock"


class RunDir:
    """The folder of one training run; ``writer=False`` (ranks other than 0) never touches it."""

    def __init__(self, root: str | Path, *, writer: bool = True) -> None:
        self.root = Path(root)
        self.writer = writer
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"
        self._lock_fd: int | None = None
        # what this process made (the folder, its lock file): removed again when nothing was written
        self._created = self._lock_created = False

    # -- ownership -------------------------------------------------------------------------
    def __enter__(self) -> RunDir:
        if self.writer:
            self.lock()
        return self

    def __exit__(self, *exc) -> None:
        self.unlock()
        if self._lock_created and self.root.is_dir() and {p.name for p in self.root.iterdir()} == {LOCK_FILE}:
            # a refused run (bad weights, bad freeze, too few images…) leaves no empty run behind
            (self.root / LOCK_FILE).unlink(missing_ok=True)
            if self._created:
                with contextlib.suppress(OSError):
                    self.root.rmdir()

    def lock(self) -> None:
        """Take the run for this process, or refuse at once naming the process that holds it."""
        with reporting_write_errors(self.root):
            self._created = not self.root.exists()
            self._lock_created = not (self.root / LOCK_FILE).exists()
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; a second writer is not detected there
            self._lock_fd = fd
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise AlexNetError(
                f"{self.root} is in use by {holder}; wait for it to finish (or stop it), "
                f"then --resume, or choose another --out"
            ) from None
        self._lock_fd = fd
        try:
            with reporting_write_errors(self.root / LOCK_FILE):  # the holder's name, for a refused writer
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"process {os.getpid()}\n".encode(), 0)
        except BaseException:
            self.unlock()  # __exit__ does not run when __enter__ fails
            raise

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def clean(self) -> int:
        """Remove the temporary files of writes a killed process did not finish."""
        return remove_temporaries(self.root) + remove_temporaries(self.checkpoints) if self.writer else 0

    # -- config ----------------------------------------------------------------------------
    def resume_point(self) -> Path | None:
        """The checkpoint a resumed run continues from: last.pt, or best.pt when a kill came between
        the first epoch's best.pt and last.pt (no row written yet); None when there is neither. A
        best.pt beside written rows but no last.pt (last.pt deleted) is no resume point: it is
        older than the rows."""
        if self.last.is_file():
            return self.last
        if self.best.is_file() and not self._rows_written():
            return self.best
        return None

    def has_checkpoint(self) -> bool:
        return self.resume_point() is not None

    def _rows_written(self) -> int:
        path = self.root / "metrics.jsonl"
        if not path.is_file():
            return 0
        return sum(1 for line in path.read_text(errors="replace").splitlines() if line.strip())

    def holds_a_run(self) -> bool:
        """Whether a run has written anything here (its config, rows, checkpoints or results)."""
        return any(
            (self.root / name).exists() for name in ("config.yaml", "metrics.jsonl", "final.json")
        ) or (self.best.is_file())

    def saved_config(self) -> RunConfig | None:
        """The run's own config: the last checkpoint's, else config.yaml's, else None."""
        point = self.resume_point()
        if point is not None:
            return from_dict(load_checkpoint(point, mmap=True)["config"])  # the config, not 0.7 GB of weights
        path = self.root / "config.yaml"
        if not path.is_file():
            return None
        try:
            tree = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise AlexNetError(
                f"{path} is damaged ({first_line(exc)}); delete it to start the run afresh"
            ) from None
        if not isinstance(tree, dict) or not tree:
            raise AlexNetError(f"{path} is empty or not a config mapping; delete it to start the run afresh")
        return from_dict(tree)

    def check_resumable(self, config: RunConfig) -> None:
        """Refuse to resume with a config that changes the run (other than the fields a resume may change)."""
        saved = self.saved_config()
        if saved is None:
            return
        diffs = config_differences(saved, config)
        if diffs:
            shown = "; ".join(f"{k}: {a!r} → {b!r}" for k, a, b in diffs[:4])
            raise AlexNetError(
                f"--resume of {self.root} with a different config ({shown}); resume with the run's "
                f"own config (leave those options out) or start a new run with another --out"
            )

    def start(self, config: RunConfig, info: dict) -> None:
        """A fresh run: config.yaml and run.json written whole, no rows, no final.json."""
        if not self.writer:
            return
        write_atomic(self.root / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
        write_atomic(self.root / "run.json", json.dumps(info, indent=1))
        self.write_history([])
        (self.root / "final.json").unlink(missing_ok=True)

    # -- checkpoints and rows ----------------------------------------------------------------
    def save(self, path: Path, state: dict) -> None:
        if self.writer:
            save_checkpoint(path, state)

    def write_history(self, history: list[dict]) -> None:
        """metrics.jsonl as exactly the given rows (the checkpoint's history), replaced whole."""
        if self.writer:
            write_atomic(self.root / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))

    def write_final(self, summary: dict) -> None:
        if self.writer:
            write_atomic(self.root / "final.json", json.dumps(summary, indent=1))
