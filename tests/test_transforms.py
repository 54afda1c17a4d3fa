import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from alexnet import AlexNetError
from alexnet.data import (
    IMAGENET_EIGVALS,
    IMAGENET_EIGVECS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    center_crop,
    crop,
    lighting,
    sample_crops,
    ten_crop,
)
from alexnet.data.transforms import Crops, Normalization


def batch(b=6, h=20, w=24, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, h, w, c), dtype=torch.uint8, generator=g)


def test_corner_and_centre_crops_are_the_right_slices():
    x = batch()
    tens = ten_crop(x, 8)
    assert tens.shape == (6, 10, 8, 8, 3)
    assert torch.equal(tens[:, 0], x[:, :8, :8])
    assert torch.equal(tens[:, 1], x[:, :8, 16:])
    assert torch.equal(tens[:, 2], x[:, 12:, :8])
    assert torch.equal(tens[:, 3], x[:, 12:, 16:])
    assert torch.equal(tens[:, 4], x[:, 6:14, 8:16])
    assert torch.equal(tens[:, 5], x[:, :8, 16:].flip(2))  # top-left of the mirror = mirrored top-right
    assert torch.equal(center_crop(x, 8), x[:, 6:14, 8:16])


def test_ten_crop_equals_torchvision():
    x = batch(b=2, h=15, w=17)
    ours = ten_crop(x, 9).permute(0, 1, 4, 2, 3)  # [B, 10, C, h, w]
    for i in range(2):
        theirs = torch.stack(TF.ten_crop(x[i].permute(2, 0, 1), [9, 9]))
        assert torch.equal(ours[i], theirs)


def test_random_crops_and_flips_are_exact():
    x = batch()
    crops = Crops(
        torch.tensor([0, 1, 2, 3, 4, 12]),
        torch.tensor([0, 16, 3, 5, 7, 16]),
        torch.tensor([False, True, False, True, False, True]),
        8,
    )
    out = crop(x, crops)
    for i in range(6):
        top, left = crops.top[i].item(), crops.left[i].item()
        want = x[i, top : top + 8, left : left + 8]
        assert torch.equal(out[i], want.flip(1) if crops.flip[i] else want)


def test_same_seed_same_batch_and_both_paths_agree():
    x = batch(b=16, h=32, w=32)
    mean_image = torch.rand(32, 32, 3) * 255
    t = TrainTransform(
        24,
        Normalization(mean_image=mean_image),
        eigvals=torch.tensor(IMAGENET_EIGVALS),
        eigvecs=torch.tensor(IMAGENET_EIGVECS),
    )
    a = t(x, torch.Generator().manual_seed(3))
    b = t(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (16, 3, 24, 24)
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(a, t(x, torch.Generator().manual_seed(4)))
    # the gather path (used on CUDA) gives the same numbers as the CPU slicing path
    g = torch.Generator().manual_seed(3)
    crops = sample_crops(16, 32, 32, 24, g)
    shift = lighting(16, torch.tensor(IMAGENET_EIGVALS), torch.tensor(IMAGENET_EIGVECS), g)
    want = crop(x, crops).float() - crop(mean_image, crops) + shift[:, None, None, :] * 255
    torch.testing.assert_close(a, want.permute(0, 3, 1, 2), rtol=0, atol=1e-4)
    out = torch.empty(16, 24, 24, 3)
    assert t(x, torch.Generator().manual_seed(3), out=out).data_ptr() == out.data_ptr()
    assert torch.equal(out.permute(0, 3, 1, 2), a)


@pytest.mark.parametrize("path", ["copy", "gather"])
def test_cutout_zeroes_one_clipped_square_per_crop_after_normalisation(path):
    # DeVries & Taylor 2017: a side×side square at a uniform centre, clipped by the crop's edges, set
    # to 0 after normalisation (the mean pixel); the rest of the crop is what it was without cutout
    x = batch(b=64, h=32, w=32)
    norm = Normalization(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    pca = {"eigvals": torch.tensor(IMAGENET_EIGVALS), "eigvecs": torch.tensor(IMAGENET_EIGVECS)}
    plain = TrainTransform(28, norm, path=path, **pca)(x, torch.Generator().manual_seed(5))
    cut = TrainTransform(28, norm, cutout=12, path=path, **pca)(x, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    sample_crops(64, 32, 32, 28, g)
    lighting(64, torch.tensor(IMAGENET_EIGVALS), torch.tensor(IMAGENET_EIGVECS), g)
    centres = torch.randint(0, 28, (64, 2), generator=g)  # drawn after the crops and the lighting
    sides = set()
    for i, (r, c) in enumerate(centres.tolist()):
        r0, r1, c0, c1 = max(r - 6, 0), min(r + 6, 28), max(c - 6, 0), min(c + 6, 28)
        want = plain[i].clone()
        want[:, r0:r1, c0:c1] = 0.0
        assert torch.equal(cut[i], want), i
        sides.add((r1 - r0, c1 - c0))
    assert (12, 12) in sides and any(s != (12, 12) for s in sides)  # whole squares and clipped ones
    copy = TrainTransform(28, norm, cutout=12, path="copy", **pca)(x, torch.Generator().manual_seed(5))
    torch.testing.assert_close(cut, copy, rtol=0, atol=1e-5)  # both paths, the same squares


def test_paper_normalisation_without_lighting_is_crop_minus_mean_crop():
    x = batch(b=4, h=16, w=16)
    mean_image = torch.rand(16, 16, 3) * 255
    t = TrainTransform(12, Normalization(mean_image=mean_image), flip=False)
    g = torch.Generator().manual_seed(0)
    out = t(x, g)
    crops = sample_crops(4, 16, 16, 12, torch.Generator().manual_seed(0), flip=False)
    for i in range(4):
        tp, lf = crops.top[i], crops.left[i]
        want = x[i, tp : tp + 12, lf : lf + 12].float() - mean_image[tp : tp + 12, lf : lf + 12]
        assert torch.equal(out[i].permute(1, 2, 0), want)


def test_per_channel_normalisation_matches_torchvision():
    x = batch(b=3, h=10, w=10)
    t = EvalTransform(6, Normalization(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    ours = t(x)
    for i in range(3):
        img = TF.center_crop(x[i].permute(2, 0, 1), [6, 6])
        theirs = TF.normalize(img.float() / 255, list(IMAGENET_MEAN), list(IMAGENET_STD))
        torch.testing.assert_close(ours[i], theirs, rtol=1e-5, atol=1e-5)
    train = TrainTransform(10, Normalization(mean=IMAGENET_MEAN, std=IMAGENET_STD), flip=False)
    torch.testing.assert_close(
        train(x, torch.Generator()),
        EvalTransform(10, Normalization(mean=IMAGENET_MEAN, std=IMAGENET_STD))(x),
        rtol=1e-5,
        atol=1e-5,
    )


def test_ten_crop_eval_shape_and_mean_image():
    x = batch(b=2, h=16, w=16)
    mean_image = torch.rand(16, 16, 3) * 255
    out = EvalTransform(12, Normalization(mean_image=mean_image), ten_crop=True)(x)
    assert out.shape == (2, 10, 3, 12, 12)
    want = (x[:, 4:, 4:].float() - mean_image[4:, 4:]).permute(0, 3, 1, 2)  # bottom-right corner
    assert torch.equal(out[:, 3], want)


def test_lighting_shift_is_one_rgb_offset_per_image_along_the_eigenvectors():
    x = torch.full((4, 8, 8, 3), 100, dtype=torch.uint8)
    eigvals, eigvecs = torch.tensor(IMAGENET_EIGVALS), torch.tensor(IMAGENET_EIGVECS)
    t = TrainTransform(8, Normalization(mean_image=torch.zeros(8, 8, 3)), eigvals=eigvals, eigvecs=eigvecs)
    out = t(x, torch.Generator().manual_seed(0)) - 100  # [B, 3, 8, 8]
    per_image = out[:, :, 0, 0]
    assert torch.allclose(out, per_image[:, :, None, None].expand_as(out))  # constant over pixels
    assert not torch.allclose(per_image[0], per_image[1])
    # many draws: covariance of the shift is V diag((0.1 λ)²) Vᵀ (§4.1)
    shifts = lighting(200_000, eigvals, eigvecs, torch.Generator().manual_seed(1))
    want = eigvecs @ torch.diag((0.1 * eigvals) ** 2) @ eigvecs.T
    torch.testing.assert_close(torch.cov(shifts.T), want, rtol=0.02, atol=2e-7)


def test_bad_crop_sizes():
    with pytest.raises(AlexNetError, match=r"cannot crop 227×227 from 32×32 images; prepare them larger"):
        sample_crops(2, 32, 32, 227, torch.Generator())
    with pytest.raises(AlexNetError, match="cannot crop"):
        ten_crop(batch(), 30)
    with pytest.raises(AlexNetError, match="either a mean image or a per-channel mean/std"):
        Normalization()
