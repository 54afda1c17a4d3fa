"""prepare --format jpeg: one file of JPEGs with an offsets index, decoded in batches."""

import json

import numpy as np
import pytest
import torch
from conftest import cifar_slice

from alexnet.cli import main
from alexnet.data import StoreLoader, open_store, prepare


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpeg")
    src = cifar_slice(root / "src", {"train": 20, "test": 4})
    raw = prepare(src, root / "raw", size=40, workers=1, progress=False)
    jpeg = prepare(src, root / "jpeg", size=40, workers=2, progress=False, image_format="jpeg", quality=95)
    return root, raw, jpeg


def test_the_jpeg_store_is_one_file_per_split_with_offsets_and_the_same_statistics(stores):
    root, raw, jpeg = stores
    meta = json.loads((root / "jpeg" / "store.json").read_text())
    assert (meta["image_format"], meta["quality"]) == ("jpeg", 95)
    offsets = np.load(root / "jpeg" / "train" / "offsets.npy")
    data = (root / "jpeg" / "train" / "jpeg.bin").read_bytes()
    assert offsets[0] == 0 and offsets[-1] == len(data) == meta["splits"]["train"]["bytes"]
    assert len(offsets) == 201 and np.all(np.diff(offsets) > 0)
    assert all(data[a : a + 2] == b"\xff\xd8" for a in offsets[:-1])  # each entry starts a JPEG
    assert not (root / "jpeg" / "train" / "images.npy").exists()
    total = meta["splits"]["train"]["bytes"] + meta["splits"]["test"]["bytes"]
    assert jpeg.bytes_per_image == pytest.approx(total / 240) and raw.bytes_per_image is None
    r, j = open_store(root / "raw"), open_store(root / "jpeg")
    np.testing.assert_array_equal(r.mean, j.mean)  # statistics of the pixels before encoding
    np.testing.assert_array_equal(r.eigvals, j.eigvals)
    assert r.classes == j.classes and r.split("train").labels.tolist() == j.split("train").labels.tolist()


def test_decoded_images_are_the_raw_ones_up_to_jpeg_loss(stores):
    root, _, _ = stores
    r, j = open_store(root / "raw").split("train"), open_store(root / "jpeg").split("train")
    decoded = np.asarray(j.images).astype(float)
    assert decoded.shape == r.images.shape
    assert np.abs(decoded - np.asarray(r.images)).mean() < 2.0  # quality 95: under 2 of 255 levels
    np.testing.assert_array_equal(j.images[7], decoded[7])  # one image, a batch: the same pixels
    np.testing.assert_array_equal(j.subset(np.array([9, 3])).images[1], decoded[3])


def test_the_loader_shards_and_resumes_a_jpeg_split_like_a_raw_one(stores):
    root, _, _ = stores
    j, r = open_store(root / "jpeg").split("train"), open_store(root / "raw").split("train")
    full = list(StoreLoader(r, 16, seed=3, drop_last=True))
    ranks = [list(StoreLoader(j, 8, seed=3, drop_last=True, rank=k, world_size=2)) for k in (0, 1)]
    labels = torch.cat([lab for rank in ranks for _, lab in rank]).sort().values
    assert torch.equal(labels, torch.cat([lab for _, lab in full]).sort().values)
    loader = StoreLoader(j, 16, seed=3)
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    rest = [lab for _, lab in iterator]
    again = StoreLoader(j, 16, seed=3)
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for (_, a), b in zip(again, rest, strict=True))


def test_training_and_evaluation_read_a_jpeg_store(stores, tmp_path):
    from alexnet.config import resolve
    from alexnet.train import fit

    root, _, _ = stores
    sets = {"data.source": str(root / "jpeg"), "train.out": str(tmp_path / "run"), "train.epochs": "1",
            "train.batch_size": "32", "data.crop": "32", "data.ten_crop": "true",
            "train.precision": "fp32"}  # fmt: skip
    result = fit(resolve("cifar10", sets=sets), progress=False)
    assert result.final["split"] == "test" and 0 <= result.final["top1_error"] <= 100
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(root / "jpeg")]) == 0


def test_prepare_jpeg_from_the_cli_reports_bytes_per_image(tmp_path, capsys):
    src = cifar_slice(tmp_path / "src", {"test": 2})
    assert (
        main(["prepare", str(src), str(tmp_path / "s"), "--format", "jpeg", "--quality", "80", "--quiet"])
        == 0
    )
    line = capsys.readouterr().out
    assert "JPEG q80:" in line and "bytes/image (raw 3,072)" in line
    assert main(["prepare", str(src), str(tmp_path / "s2"), "--format", "jpeg", "--quality", "0"]) == 2
    assert "--quality must be in 1..100, got 0" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG decoding needs a CUDA device")
def test_nvjpeg_decodes_the_same_batch_on_the_gpu(stores):
    root, _, _ = stores
    images = open_store(root / "jpeg").split("train").images
    cpu = images.decode(np.arange(16)).int()
    gpu = images.decode(np.arange(16), torch.device("cuda")).cpu().int()
    assert gpu.shape == cpu.shape and (gpu - cpu).abs().float().mean() < 2.0  # decoders may round apart


def _copy(stores, tmp_path):
    import shutil

    root, _, _ = stores
    shutil.copytree(root / "jpeg", tmp_path / "jpeg")
    return tmp_path / "jpeg"


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        (lambda o: np.concatenate([o[:5], o[6:7], o[5:6], o[7:]]), "offsets.npy: image 5 has -"),
        (lambda o: np.concatenate([o[:-1], [o[-1] + 100]]), "offsets.npy does not match"),
        (lambda o: o - 1, "offsets run from -1"),
        (lambda o: o.astype(np.float64), "offsets.npy is not a list of byte offsets"),
    ],
)
def test_a_damaged_jpeg_index_is_refused_when_the_store_opens(stores, tmp_path, capsys, offsets, message):
    store = _copy(stores, tmp_path)
    np.save(store / "train" / "offsets.npy", offsets(np.load(store / "train" / "offsets.npy")))
    assert main(["train", "--preset", "cifar10", "--data", str(store), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].endswith("prepare the store again"), err


def test_damaged_jpeg_bytes_are_skipped_and_said_not_a_crash(stores, tmp_path, capsys):
    from alexnet.config import resolve
    from alexnet.train import fit

    store = _copy(stores, tmp_path)
    for split, row in (("train", 7), ("test", 3)):  # one image of each split overwritten with junk
        offsets = np.load(store / split / "offsets.npy")
        with open(store / split / "jpeg.bin", "r+b") as f:
            f.seek(int(offsets[row]))
            f.write(b"\0" * int(offsets[row + 1] - offsets[row]))
    sets = {"data.source": str(store), "train.out": str(tmp_path / "run"), "train.epochs": "1",
            "train.batch_size": "20", "data.crop": "32", "train.precision": "fp32"}  # fmt: skip
    result = fit(resolve("cifar10", sets=sets), progress=False)
    err = capsys.readouterr().err
    assert (
        f"skipped image 3 of {store / 'test' / 'jpeg.bin'}: it cannot be decoded (damaged JPEG data)" in err
    )
    assert result.final["count"] == 39  # 40 test images, one of them damaged
    with pytest.raises(Exception, match=r"jpeg\.bin: image 3 cannot be decoded \(damaged JPEG data\)"):
        open_store(store).split("test").images[3]


def test_torchcodec_and_torchvision_decode_the_same_batch_and_the_run_names_its_decoder(
    stores, monkeypatch, tmp_path, capsys
):
    from alexnet.config import resolve
    from alexnet.data.jpeg import jpeg_decoder
    from alexnet.train import fit

    root, _, _ = stores
    batches = {}
    for name in ("torchcodec", "torchvision"):
        monkeypatch.setenv("ALEXNET_JPEG_DECODER", name)
        jpeg_decoder.cache_clear()
        batches[name] = open_store(root / "jpeg").split("train").images.decode(np.arange(32))
        assert jpeg_decoder()[0].lower().startswith(name)
    assert torch.equal(batches["torchcodec"], batches["torchvision"])
    monkeypatch.delenv("ALEXNET_JPEG_DECODER")
    jpeg_decoder.cache_clear()
    sets = {"data.source": str(root / "jpeg"), "train.out": str(tmp_path / "run"), "train.epochs": "1",
            "train.batch_size": "32", "data.crop": "32", "train.precision": "fp32",
            "data.ten_crop": "false"}  # fmt: skip
    fit(resolve("cifar10", sets=sets), progress=False)
    assert "JPEG store decoded by TorchCodec" in capsys.readouterr().err  # installed with the dev extra
