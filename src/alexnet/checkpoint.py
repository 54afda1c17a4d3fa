"""The one checkpoint module: one schema, atomic writes, safe loads, clear mismatch errors.

A checkpoint is a dict of tensors and plain Python values (no pickled objects), so it loads with
``torch.load(weights_only=True)``: a file carrying a pickle that would run code is refused before
any of it runs. Files are written to a temporary name in the same folder, fsynced and renamed, so
a crash or a full disk leaves the previous checkpoint intact.

Weights are always saved from the bare model in its one-device form: a two-tower run
(``TwoTowerAlexNet``, §3.2) saves the grouped ``AlexNet("paper")``'s parameter names, so every
checkpoint loads into ``build_model`` and ``alexnet evaluate``, and converts back on resume.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from .errors import AlexNetError
from .fileio import first_line, write_atomic
from .models.registry import check_state_fits
from .models.two_tower import TwoTowerAlexNet

CHECKPOINT_FORMAT = "alexnet-checkpoint"
CHECKPOINT_VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def model_state(model: nn.Module) -> dict:
    """The weights to save: the bare model's state_dict, a two-tower model in its grouped form."""
    bare = unwrap(model)
    if isinstance(bare, TwoTowerAlexNet):
        return bare.to_grouped().state_dict()
    return bare.state_dict()


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, os.replace, fsync of the folder)."""
    state = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}
    write_atomic(path, lambda f: torch.save(state, f))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's best.pt (else its last.pt)."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints"
        for name in ("best.pt", "last.pt"):
            if (folder / name).is_file():
                return folder / name
        raise AlexNetError(f"{path} holds no checkpoint (no checkpoints/best.pt or last.pt)")
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False
) -> dict:
    """Load a checkpoint with ``weights_only=True``; anything else is one clear error.

    A run directory stands for its best.pt, or its last.pt when it has no best. ``mmap`` maps the
    tensors instead of reading them: for a caller that wants only the config or history.
    """
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise AlexNetError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise AlexNetError(f"{path} is empty (0 bytes): the write that made it did not finish")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise AlexNetError(
            f"refused to load {path}: it holds pickled objects that could run code, not just "
            f"weights ({first_line(exc)}); load only checkpoints you trust"
        ) from None
    except Exception as exc:  # truncated or not a torch file
        raise AlexNetError(
            f"{path} is not a readable checkpoint: it is truncated or not a torch file "
            f"({type(exc).__name__}: {first_line(exc)})"
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
    arch = state.get("arch", {})
    if isinstance(target, TwoTowerAlexNet):  # the checkpoint holds the grouped form
        grouped = target.to_grouped()
        load_model_state(grouped, state, path)
        target.load_grouped(grouped)
        return
    own_classes = getattr(target, "num_classes", None)
    if arch.get("num_classes") not in (None, own_classes):
        raise AlexNetError(
            f"{path} was trained for {arch['num_classes']} classes, this model has {own_classes}"
        )
    if arch.get("name") not in (None, getattr(target, "arch", None)):
        raise AlexNetError(f"{path} holds a {arch['name']!r} model, not {getattr(target, 'arch', '?')!r}")
    check_state_fits(target, state["model"], path)
    target.load_state_dict(state["model"])


def check_classes(saved: list[str], found: list[str], data: str, path: str | Path) -> None:
    """Refuse data whose classes are not the checkpoint's, naming the first ones that differ."""
    if list(saved) == list(found):
        return
    if len(saved) != len(found):
        raise AlexNetError(
            f"{data} has {len(found)} classes, the checkpoint {path} was trained on {len(saved)}; "
            f"use the data the model was trained on"
        )
    diffs = [(i, a, b) for i, (a, b) in enumerate(zip(saved, found, strict=True)) if a != b]
    shown = ", ".join(f"#{i} {b!r} (checkpoint: {a!r})" for i, a, b in diffs[:3])
    more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
    raise AlexNetError(
        f"{data} has {len(diffs)} class name(s) that differ from the checkpoint {path}: {shown}{more}; "
        f"use the data the model was trained on"
    )
