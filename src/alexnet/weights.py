"""Weight files: reading and writing them, and torchvision's published weights by name.

A leaf module (torch, torchvision and the optional safetensors only): the models, the checkpoint
module and the loading of a model from any file all read weights through these functions.

- torchvision's weights go through its own weights API (``torchvision.models.get_weight``), which
  downloads once into ``$TORCH_HOME/hub/checkpoints`` and loads from there afterwards, also offline.
- A bare state_dict file (torchvision's ``alexnet-owt-7be5be79.pth``, or ``{"state_dict": …}``)
  loads with ``weights_only=True``.
- ``alexnet export --format safetensors`` writes the weights plus a JSON entry of how to build the
  model and prepare its input; ``read_safetensors`` gives both back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .errors import AlexNetError
from .fileio import first_line

META_KEY = "alexnet"  # the safetensors metadata entry holding our JSON
EXTRA_PREFIX = "_alexnet."  # tensors of ours beside the weights (the mean image), not the model's
MEAN_IMAGE_KEY = EXTRA_PREFIX + "mean_image"


def require(module: str, extra: str):
    """Import an optional dependency, or one line naming the extra that brings it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise AlexNetError(
            f"this needs {module}: pip install 'alexnet[{extra}]' (or pip install {module})"
        ) from None


# ---------------------------------------------------------------------------- torchvision's weights


def torchvision_weights(name: str, model: str = "alexnet"):
    """torchvision's weights enum member for ``name``: ``DEFAULT`` or ``IMAGENET1K_V1`` of ``model``'s
    weights, or a full name such as ``AlexNet_Weights.IMAGENET1K_V1`` or ``ResNet18_Weights.DEFAULT``.
    ``None`` when ``name`` is not a weights name (a file path, say)."""
    import torchvision.models

    if "." in name and "_Weights." in name:
        try:
            return torchvision.models.get_weight(name)
        except (KeyError, ValueError, AttributeError):
            raise AlexNetError(
                f"torchvision has no weights {name!r} (e.g. AlexNet_Weights.IMAGENET1K_V1)"
            ) from None
    if not name.replace("_", "").isalnum() or not name.isupper():
        return None
    try:
        enum = torchvision.models.get_model_weights(model)
    except (KeyError, ValueError):
        raise AlexNetError(f"torchvision publishes no weights for {model!r}") from None
    if name == "DEFAULT":
        return enum.DEFAULT
    if name not in enum.__members__:
        raise AlexNetError(
            f"{model} has no torchvision weights {name!r}; choose DEFAULT or {', '.join(enum.__members__)}"
        )
    return enum[name]


def torchvision_model_of(weights) -> str:
    """The torchvision builder name (``alexnet``, ``resnet18``, …) whose weights enum ``weights`` is in."""
    import torchvision.models

    for name in torchvision.models.list_models(module=torchvision.models):
        try:
            if torchvision.models.get_model_weights(name) is type(weights):
                return name
        except (KeyError, ValueError):
            continue
    raise AlexNetError(f"no torchvision model takes {weights}")


def pretrained_state(weights) -> dict:
    """The state_dict of a torchvision weights enum member, through torchvision's download cache."""
    import torch.hub

    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False, weights_only=True)
    except Exception as exc:  # offline: URLError; a damaged cached file: a load error
        raise AlexNetError(
            f"cannot get torchvision's {weights} ({first_line(exc)[:120]}); without a network, "
            f"put {file.name} (from {weights.url}) at {file}"
        ) from None


# ---------------------------------------------------------------------------- state_dict files


def read_state_file(path: str | Path) -> dict:
    """A state_dict from a file: a bare dict of tensors, or one under ``state_dict``/``model``."""
    path = Path(path)
    if not path.is_file():
        raise AlexNetError(f"weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise AlexNetError(f"weights file {path} is empty (0 bytes); download or copy it again")
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, … for bad files
        raise AlexNetError(
            f"{path} is not a loadable weights file ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AlexNetError(f"{path} holds a {type(state).__name__} that is not a state_dict of tensors")
    return state


def state_differences(model: nn.Module, state: dict, skip: tuple[str, ...] = ()) -> list[str]:
    """What keeps ``state`` from loading into ``model`` strictly: every missing, unexpected or
    differently shaped tensor, one phrase each (keys in ``skip`` are left out of the comparison)."""
    own = {k: v for k, v in model.state_dict().items() if k not in skip}
    theirs = {k: v for k, v in state.items() if k not in skip}
    out = [  # shapes first: they say most about what the file is
        f"{k} {tuple(theirs[k].shape)} where the model has {tuple(own[k].shape)}"
        for k in own
        if k in theirs and tuple(own[k].shape) != tuple(theirs[k].shape)
    ]
    out += [f"{k} missing" for k in own if k not in theirs]
    out += [f"{k} unexpected" for k in theirs if k not in own]
    return out


def check_state_fits(model: nn.Module, state: dict, source: str | Path, skip: tuple[str, ...] = ()) -> None:
    """Raise, naming the tensors that differ, unless ``state`` has exactly ``model``'s keys and shapes."""
    diffs = state_differences(model, state, skip)
    if diffs:
        more = f" and {len(diffs) - 6} more" if len(diffs) > 6 else ""
        raise AlexNetError(
            f"{source} does not fit this model: {'; '.join(diffs[:6])}{more} "
            f"(another architecture or number of classes?)"
        )


# ---------------------------------------------------------------------------- safetensors


def safetensors_bytes(state: dict, extra: dict, meta: dict) -> bytes:
    """A safetensors file of the weights, our extra tensors (names without the prefix) and the
    JSON ``meta``, in memory (the caller writes it atomically)."""
    st = require("safetensors.torch", "export")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    tensors.update({EXTRA_PREFIX + k: v.detach().cpu().float().contiguous() for k, v in extra.items()})
    return st.save(tensors, metadata={META_KEY: json.dumps(meta)})


def read_safetensors(path: Path, *, tensors: bool = True) -> tuple[dict, dict, dict]:
    """(the state_dict, our extra tensors by their short names, our metadata) of a safetensors file;
    ``tensors=False`` reads the metadata alone."""
    st = require("safetensors", "export")
    try:
        with st.safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
            keys = list(f.keys()) if tensors else []
            state = {k: f.get_tensor(k) for k in keys if not k.startswith(EXTRA_PREFIX)}
            extra = {k[len(EXTRA_PREFIX) :]: f.get_tensor(k) for k in keys if k.startswith(EXTRA_PREFIX)}
    except Exception as exc:  # SafetensorError for damaged files, ValueError for bad JSON
        raise AlexNetError(
            f"{path} is not a readable safetensors file ({type(exc).__name__}: {first_line(exc)[:120]})"
        ) from None
    if not isinstance(meta, dict):
        raise AlexNetError(f"{path}: its {META_KEY!r} metadata is not a JSON object; export it again")
    return state, extra, meta
