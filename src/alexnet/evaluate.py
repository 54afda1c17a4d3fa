"""Top-1/top-5 error, loss, per-class accuracy and the confusion matrix (§4.1, §6).

Ten-crop evaluation averages the softmax of the ten views (§4.1). Under torch.distributed the
sums are added over ranks, so every rank returns the global numbers.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from .train.distributed import DistInfo, all_reduce_sum


def autocast(device: torch.device, precision: str):
    """The autocast context for a precision name (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    transform,
    num_classes: int,
    device: torch.device,
    *,
    precision: str = "fp32",
    dist: DistInfo | None = None,
    input_device: torch.device | None = None,
) -> dict:
    """Loss and errors (percent) over ``loader``; ``transform`` gives [B, C, h, w] or ten crops [B, 10, …]."""
    dist = dist or DistInfo()
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 right, top-5 right, count
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    k = min(5, num_classes)
    for images, labels in loader:
        x = transform(images)
        labels = labels.to(device)
        if input_device is not None:
            x = x.to(input_device)
        with autocast(device, precision):
            if x.dim() == 5:  # ten crops: average the softmax over the views (§4.1)
                # One view at a time: a batch of B, not 10·B, keeps the activations the size the
                # CPU allocator and caches already hold (a 10·B batch of fresh pages cost more
                # in page faults than in arithmetic).
                probs = sum(model(x[:, view]).float().softmax(1) for view in range(x.shape[1]))
                probs = probs / x.shape[1]
                loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum")
            else:
                logits = model(x).float()
                probs = logits.softmax(1)
                loss = F.cross_entropy(logits, labels, reduction="sum")
        top = probs.topk(k, dim=1).indices
        right = top == labels[:, None]
        totals += torch.stack(
            [
                loss.double(),
                right[:, 0].sum().double(),
                right.any(1).sum().double(),
                torch.tensor(float(len(labels)), dtype=torch.float64, device=device),
            ]
        )
        confusion += torch.bincount(labels * num_classes + top[:, 0], minlength=num_classes * num_classes)
    all_reduce_sum(totals, dist)
    all_reduce_sum(confusion, dist)
    model.train(was_training)
    loss_sum, top1, top5, count = totals.tolist()
    matrix = confusion.view(num_classes, num_classes).cpu()
    per_class = (matrix.diag().double() / matrix.sum(1).clamp_min(1).double() * 100).tolist()
    count = max(count, 1.0)
    return {
        "loss": loss_sum / count,
        "top1_error": 100.0 * (1 - top1 / count),
        "top5_error": 100.0 * (1 - top5 / count),
        "count": int(count),
        "per_class": per_class,
        "confusion": matrix.tolist(),
    }


def evaluate_checkpoint(
    path,
    data,
    *,
    split: str | None = None,
    ten_crop: bool = False,
    device: str = "auto",
    batch_size: int = 128,
) -> dict:
    """Evaluate a checkpoint (or a run directory's last one) on a split of ``data``.

    The model, its classes and its input normalisation (mean image or mean/std, crop size) come
    from the checkpoint, so any store of the same classes can be evaluated.
    """
    from .config import from_dict
    from .data import EvalTransform, StoreLoader, open_data
    from .data.transforms import Normalization
    from .errors import AlexNetError
    from .train.checkpoint import load_checkpoint, load_model_state
    from .train.loop import build_for_run, resolve_device, resolve_precision

    state = load_checkpoint(path)
    config = from_dict(state["config"])
    dev = resolve_device(device)
    store = open_data(data)
    if list(store.classes) != list(state["classes"]):
        raise AlexNetError(
            f"{data} has {len(store.classes)} classes that differ from the checkpoint's "
            f"{len(state['classes'])}; evaluate on the data the model was trained for"
        )
    name = split or ("val" if "val" in store.splits else "test")
    model = build_for_run(config, len(state["classes"]), state["arch"]["in_channels"])
    load_model_state(model, state, path)
    model = model.to(dev).to(memory_format=torch.channels_last)
    norm_state = state["normalization"]
    if norm_state["kind"] == "mean_image":
        norm = Normalization(mean_image=norm_state["mean_image"].float())
        if tuple(norm.mean_image.shape[:2]) != (store.size, store.size):
            raise AlexNetError(
                f"the checkpoint's mean image is {tuple(norm.mean_image.shape[:2])}, the store's images "
                f"{store.size}×{store.size}; prepare the data at the training size"
            )
    else:
        norm = Normalization(mean=tuple(norm_state["mean"]), std=tuple(norm_state["std"]))
    transform = EvalTransform(int(state["crop"]), norm, ten_crop=ten_crop)
    loader = StoreLoader(store.split(name), batch_size, shuffle=False, device=dev)
    result = evaluate(
        model,
        loader,
        transform,
        len(state["classes"]),
        dev,
        precision=resolve_precision(config.train.precision, dev),
    )
    result.update(split=name, ten_crop=ten_crop, classes=list(state["classes"]))
    return result
