"""Activations of a named layer for a whole split (§6.1: fc7, the 4,096-d last hidden layer), and
exact nearest neighbours in Euclidean distance (Fig. 4, right).

Features are written batch by batch into a memory-mapped ``.npy`` (float32 [N, D]) with a small
JSON beside it that records what they are and how many rows are done, so an interrupted
extraction continues where it stopped and a finished one is reused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..data import StoreLoader
from ..data.store import Split, reserve
from ..errors import AlexNetError
from ..fileio import reporting_write_errors, write_atomic
from ..loading import LoadedModel
from ..runtime import autocast

DEFAULT_LAYER = (
    "fc7"  # §6.1: "the feature activations induced ... at the last, 4096-dimensional hidden layer"
)


@torch.no_grad()
def layer_activations(loaded: LoadedModel, images: torch.Tensor, layer: str) -> torch.Tensor:
    """float32 [B, D]: the layer's output after its ReLU (fc8: the logits) for uint8 [B, S, S, C] images."""
    model = loaded.model
    if not hasattr(model, "layer"):
        raise AlexNetError(f"{loaded.config.model.name} has no named layers to read features from")
    module = model.layer(layer)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().float().clone()))
    try:
        x = loaded.transform()(images.to(loaded.device))
        with autocast(loaded.device, loaded.precision):
            model(x)
    finally:
        handle.remove()
    out = captured[0] if layer == "fc8" else F.relu(captured[0])
    return out.flatten(1).cpu()


@dataclass(frozen=True)
class Features:
    values: np.ndarray  # float32 [N, D], memory-mapped
    labels: np.ndarray  # int64 [N]
    path: Path


def extract(loaded: LoadedModel, split: Split, layer: str, out: str | Path, *, batch_size: int = 128,
            progress=None, data: dict | None = None) -> Features:  # fmt: skip
    """The layer's activations for every image of ``split`` into ``out`` (resumed or reused).

    ``data`` identifies the data set the split comes from (its store and the fingerprint of its
    source): features are reused only for the same model, layer, split and data.
    """
    out = Path(out)
    meta_path = out.with_suffix(out.suffix + ".json")
    identity = {"checkpoint": str(loaded.checkpoint), "epoch": loaded.epoch, "layer": layer,
                "split": split.name, "count": len(split), **(data or {})}  # fmt: skip
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() and out.is_file() else None
    done = meta["done"] if meta and {k: meta.get(k) for k in identity} == identity else 0
    if done == len(split):  # finished earlier: reused, nothing recomputed
        return Features(np.load(out, mmap_mode="r"), np.asarray(split.labels), out)
    width = int(layer_activations(loaded, torch.from_numpy(np.array(split.images[:1])), layer).shape[1])
    with reporting_write_errors(out):
        mode = "r+" if done else "w+"
        if not done:
            out.parent.mkdir(parents=True, exist_ok=True)
        values = np.lib.format.open_memmap(out, mode=mode, dtype=np.float32, shape=(len(split), width))
        if not done:  # blocks allocated now: a full disk is ENOSPC here, not SIGBUS in the mapping
            reserve(out)
        loader = StoreLoader(split, batch_size, shuffle=False)
        loader.position = done // batch_size  # whole batches done: rows [0, done) are written
        row = loader.position * batch_size
        for images, _ in loader:
            values[row : row + len(images)] = layer_activations(loaded, images, layer).numpy()
            row += len(images)
            if loader.position % 20 == 0 or row == len(split):  # a resumable point every 20 batches
                values.flush()
                write_atomic(meta_path, json.dumps({**identity, "done": row}))
            if progress is not None:
                progress(len(images))
        values.flush()
        del values
    return Features(np.load(out, mmap_mode="r"), np.asarray(split.labels), out)


def nearest(queries: np.ndarray | torch.Tensor, base: np.ndarray, k: int, *, chunk: int = 8192):
    """Exact k nearest rows of ``base`` for each query in Euclidean distance: (distances, indices),
    each [Q, k], nearest first.

    ‖q − b‖² = ‖q‖² − 2 q·b + ‖b‖², one matrix product per chunk of the base (chunk × D floats at a
    time), merged with a running top-k: memory is O(Q·chunk), not O(Q·N).
    """
    q = torch.tensor(np.asarray(queries), dtype=torch.float64)  # a copy: queries may be a read-only map
    k = min(k, len(base))
    best_d = torch.full((len(q), k), float("inf"), dtype=torch.float64)
    best_i = torch.zeros((len(q), k), dtype=torch.int64)
    q_norm = (q * q).sum(1, keepdim=True)
    for start in range(0, len(base), chunk):
        b = torch.tensor(np.asarray(base[start : start + chunk]), dtype=torch.float64)
        d = (q_norm - 2 * q @ b.T + (b * b).sum(1)[None]).clamp_min(0)
        both_d = torch.cat([best_d, d], 1)
        both_i = torch.cat([best_i, torch.arange(start, start + len(b)).expand(len(q), -1)], 1)
        best_d, order = both_d.topk(k, dim=1, largest=False)
        best_i = both_i.gather(1, order)
    return best_d.sqrt().numpy(), best_i.numpy()
