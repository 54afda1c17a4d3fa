"""The one checkpoint module: one schema, atomic writes, safe loads, clear mismatch errors.

A checkpoint is a dict of tensors and plain Python values (no pickled objects), so it loads with
``torch.load(weights_only=True)``: a file carrying a pickle that would run code is refused before
any of it runs. Files are written to a temporary name in the same folder, fsynced and renamed, so
a crash or a full disk leaves the previous checkpoint intact.

Weights are always saved from the bare model (no DDP or compile wrapper), in the model's own
``state_dict`` form: a two-tower run (``TwoTowerAlexNet``, §3.2) gives the grouped
``AlexNet("paper")``'s parameter names, so every checkpoint loads into ``build_model``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from .errors import AlexNetError
from .fileio import first_line, write_atomic
from .weights import check_state_fits

CHECKPOINT_FORMAT = "alexnet-checkpoint"
CHECKPOINT_VERSION = 1
# What every checkpoint holds, with the type each must have (a file with our format tag but a
# field missing or malformed is refused by name, not met as a KeyError later).
REQUIRED = {"model": dict, "config": dict, "arch": dict, "classes": list, "normalization": dict, "crop": int}


class NotACheckpoint(AlexNetError):
    """A readable torch file that is not one of our checkpoints (a bare state_dict, say)."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def model_arch(model: nn.Module) -> str:
    """The architecture name a checkpoint records: a build_model name, or ``custom:<class>`` for a
    module of the user's own (``fit(config, model=...)``)."""
    bare = unwrap(model)
    return getattr(bare, "arch", None) or f"custom:{type(bare).__qualname__}"


def model_state(model: nn.Module) -> dict:
    """The weights to save: the bare model's state_dict."""
    return unwrap(model).state_dict()


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
        reason = _unpickler_reason(str(exc))
        if "global" not in reason.lower():  # not a pickle of objects at all: random bytes, say
            raise AlexNetError(f"{path} is not a torch checkpoint (unreadable data: {reason})") from None
        raise AlexNetError(
            f"refused to load {path}: it holds pickled objects that could run code, not just "
            f"weights ({reason}); load only checkpoints you trust"
        ) from None
    except Exception as exc:  # truncated or not a torch file
        raise AlexNetError(
            f"{path} is not a readable checkpoint: it is truncated or not a torch file "
            f"({type(exc).__name__}: {first_line(exc)})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise NotACheckpoint(
            f"{path} is not an alexnet checkpoint (a bare state_dict? load it with "
            f"build_model(..., weights=PATH))"
        )
    for key, kind in REQUIRED.items():
        if not isinstance(state.get(key), kind):
            what = "missing" if key not in state else "malformed"
            raise AlexNetError(f"{path} is a damaged checkpoint: its {key!r} is {what}")
    if not state["classes"] or not all(isinstance(c, str) for c in state["classes"]):
        raise AlexNetError(f"{path} is a damaged checkpoint: 'classes' must be a list of names")
    return state


def _unpickler_reason(message: str) -> str:
    """The line of torch's weights_only refusal that says what it met (its first lines are advice)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip() or (
                lines[i + 1] if i + 1 < len(lines) else ""
            )
            return rest[:160]
    return (lines[0] if lines else "no message")[:160]


def load_model_state(model: nn.Module, state: dict, path: str | Path = "checkpoint") -> None:
    """Load the checkpoint's weights into ``model``, naming any architecture or class-count mismatch."""
    target = unwrap(model)
    arch = state.get("arch", {})
    own_classes = getattr(target, "num_classes", None)
    if arch.get("num_classes") not in (None, own_classes) and own_classes is not None:
        raise AlexNetError(
            f"{path} was trained for {arch['num_classes']} classes, this model has {own_classes}"
        )
    if arch.get("name") not in (None, model_arch(target)):
        raise AlexNetError(f"{path} holds a {arch['name']!r} model, not {model_arch(target)!r}")
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
