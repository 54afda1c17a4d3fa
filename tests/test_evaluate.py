"""evaluate(): ten-crop numbers against a hand computation with torchvision's TenCrop."""

import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn
from torch.nn import functional as F

from alexnet.data.transforms import EvalTransform, Normalization
from alexnet.evaluate import evaluate


def test_ten_crop_averages_softmax_over_torchvision_views():
    torch.manual_seed(0)
    classes, size, crop = 7, 12, 8
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, classes))
    images = torch.randint(0, 256, (10, size, size, 3), dtype=torch.uint8)
    labels = torch.randint(0, classes, (10,))
    batches = [(images[:6], labels[:6]), (images[6:], labels[6:])]  # an uneven last batch too
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    transform = EvalTransform(crop, Normalization(mean=mean, std=std), ten_crop=True)

    result = evaluate(model, batches, transform, classes, torch.device("cpu"))

    # By hand: torchvision's ten crops of each normalised image, softmax averaged over the views.
    with torch.no_grad():
        x = images.permute(0, 3, 1, 2).float() / 255
        x = TF.normalize(x, mean, std)
        views = torch.stack([torch.stack(TF.ten_crop(img, [crop, crop])) for img in x])  # [B, 10, C, h, w]
        probs = model(views.flatten(0, 1)).softmax(1).view(10, 10, classes).mean(1)
    top5 = probs.topk(5, 1).indices
    expected_top1 = 100 * (1 - (top5[:, 0] == labels).double().mean())
    expected_top5 = 100 * (1 - (top5 == labels[:, None]).any(1).double().mean())
    expected_loss = F.nll_loss(probs.log(), labels)

    assert result["count"] == 10
    assert abs(result["top1_error"] - float(expected_top1)) < 1e-9
    assert abs(result["top5_error"] - float(expected_top5)) < 1e-9
    assert abs(result["loss"] - float(expected_loss)) < 1e-5
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    for label, guess in zip(labels.tolist(), top5[:, 0].tolist(), strict=True):
        confusion[label, guess] += 1
    assert result["confusion"] == confusion.tolist()
    per_class = [  # right guesses of a class over its images, counted by hand; no images: no accuracy
        100.0
        * sum(1 for y, g in zip(labels.tolist(), top5[:, 0].tolist(), strict=True) if y == g == c)
        / labels.tolist().count(c)
        if c in labels.tolist()
        else None
        for c in range(classes)
    ]
    assert None in per_class  # the test's labels leave a class out
    assert result["per_class"] == pytest.approx(per_class)
