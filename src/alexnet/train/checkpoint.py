"""The one checkpoint module: atomic writes, safe loads, clear mismatch errors.

A checkpoint is a dict of tensors and plain Python values (no pickled objects), so it loads with
``torch.load(weights_only=True)``: a file carrying a pickle that would run code is refused before
any of it runs. Files are written to a temporary name in the same folder, fsynced and renamed, so
a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..errors import AlexNetError
from ..models.registry import check_state_fits

CHECKPOINT_FORMAT = "alexnet-checkpoint"
CHECKPOINT_VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, os.replace, fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; anything else is one clear error."""
    path = Path(path)
    if path.is_dir():  # a run directory
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise AlexNetError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise AlexNetError(
            f"refused to load {path}: it holds pickled objects that could run code, not just "
            f"weights ({first}); load only checkpoints you trust"
        ) from None
    except Exception as exc:  # truncated or not a torch file
        raise AlexNetError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise AlexNetError(
            f"{path} is not an alexnet checkpoint (a bare state_dict? load it with "
            f"build_model(..., weights=PATH))"
        )
    return state


def load_model_state(model: nn.Module, state: dict, path: str | Path = "checkpoint") -> None:
    """Load the checkpoint's weights into ``model``, naming any architecture or class-count mismatch."""
    target = unwrap(model)
    saved = state["model"]
    arch = state.get("arch", {})
    own_classes = getattr(target, "num_classes", None)
    if arch.get("num_classes") not in (None, own_classes):
        raise AlexNetError(
            f"{path} was trained for {arch['num_classes']} classes, this model has {own_classes}"
        )
    if arch.get("name") not in (None, getattr(target, "arch", None)) and not hasattr(target, "tower_a"):
        raise AlexNetError(f"{path} holds a {arch['name']!r} model, not {getattr(target, 'arch', '?')!r}")
    check_state_fits(target, saved, path)
    target.load_state_dict(saved)
