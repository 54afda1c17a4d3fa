"""Top-1/top-5 error, loss, per-class accuracy and the confusion matrix (§4.1, §6).

Ten-crop evaluation averages the softmax of the ten views (§4.1). Under torch.distributed the
sums are added over ranks, so every rank returns the global numbers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import check_classes
from .data import StoreLoader, open_data
from .errors import AlexNetError
from .loading import load_model
from .runtime import DistInfo, all_reduce_sum, autocast


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
    if count == 0:  # no numbers to report: never a made-up 0 % error
        raise AlexNetError("nothing to evaluate: the split has no images")
    matrix = confusion.view(num_classes, num_classes).cpu()
    shown = matrix.sum(1)
    # a class with no image in the split has no accuracy (None), not 0 %
    per_class = [
        None if n == 0 else 100.0 * float(r) / float(n) for r, n in zip(matrix.diag(), shown, strict=True)
    ]
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
    limit: int | None = None,
) -> dict:
    """Evaluate a checkpoint (a run directory stands for its best.pt, else last.pt; ``"DEFAULT"``
    for torchvision's ImageNet weights) on a split of ``data``.

    The model, its classes and its input normalisation (mean image or mean/std, crop size) come
    from the checkpoint, so any store of the same classes can be evaluated.
    """
    loaded = load_model(path, device=device)
    store = open_data(data)
    check_classes(loaded.classes, store.classes, str(data), loaded.checkpoint)
    name = split or ("test" if "test" in store.splits else "val" if "val" in store.splits else None)
    if name is None:
        raise AlexNetError(f"{data} has no test or val split; name one with --split")
    if store.size != loaded.image_size:
        raise AlexNetError(
            f"{loaded.checkpoint} was trained on images prepared at {loaded.image_size}×{loaded.image_size}, "
            f"{data} holds {store.size}×{store.size}; prepare the data with --size {loaded.image_size}"
        )
    # ``limit``: the same evenly spaced images a run with data.limit_val evaluated on
    split = store.split(name).evenly_spaced(limit)
    loader = StoreLoader(split, batch_size, shuffle=False, device=loaded.device)
    transform = loaded.transform(ten_crop)
    result = evaluate(
        loaded.model, loader, transform, len(loaded.classes), loaded.device, precision=loaded.precision
    )
    result.update(split=name, ten_crop=ten_crop, classes=loaded.classes, checkpoint=str(loaded.checkpoint),
                  epoch=loaded.epoch)  # fmt: skip
    return result
