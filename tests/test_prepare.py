import importlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import CIFAR, IMAGENET_SAMPLE, require
from PIL import Image

from alexnet import AlexNetError
from alexnet.cli import main
from alexnet.data import is_store, open_store, prepare, resolve_source
from alexnet.data.prepare import read_skipped
from alexnet.data.sources import class_names

prepare_module = importlib.import_module("alexnet.data.prepare")  # the package exports the function
shards_module = importlib.import_module("alexnet.data.shards")

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _solid(path, color, size=(24, 20), mode="RGB", **save):
    Image.new(mode, size, color).save(path, **save)


def make_corpus(root):
    """A train/val ImageFolder holding every kind of file real folders hold; returns expected skips."""
    a, b = root / "train" / "a", root / "train" / "b"
    for d in (a, b, root / "val" / "a", root / "val" / "b"):
        d.mkdir(parents=True)
    _solid(a / "rgb.jpg", RED, quality=95)
    _solid(a / "grey.png", 100, mode="L")
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(a / "cmyk.tif")  # pure red in CMYK
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # transparent left half …
    rgba.paste((10, 20, 30, 255), (10, 0, 20, 20))  # … opaque right half
    rgba.save(a / "rgba.png")
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(1, (0, 10, 20, 20))  # bottom half index 1 (green), top half index 0 (transparent)
    pal.save(a / "palette.png", transparency=0)
    sixteen = np.full((20, 20), 128 * 257, dtype=np.uint16)
    sixteen[:, 10:] = 65535
    Image.fromarray(sixteen).save(a / "sixteen.png")
    stored = Image.new("RGB", (40, 20), RED)  # landscape: left half red, right half blue …
    stored.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # … shown rotated 90° clockwise: red on top, blue below
    stored.save(b / "rotated.jpg", exif=exif, quality=95)
    _solid(b / "tiny.png", (7, 8, 9), size=(1, 1))
    (b / "empty.jpg").write_bytes(b"")
    full = root / "full.jpg"
    _solid(full, BLUE, size=(64, 64))
    (b / "truncated.jpg").write_bytes(full.read_bytes()[:300])
    (b / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(500))
    (b / "notes.txt").write_text("not an image")
    Image.new("1", (20000, 10000)).save(b / "bomb.png")  # 200 M pixels > 2× Pillow's limit
    _solid(root / "val" / "a" / "v.png", RED)
    _solid(root / "val" / "b" / "v.png", BLUE)
    return {"empty.jpg", "truncated.jpg", "corrupt.jpg", "notes.txt", "bomb.png"}


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    skips = make_corpus(root / "src")
    summary = prepare(root / "src", root / "store", size=16, workers=2, progress=False)
    return summary, open_store(root / "store"), skips


def test_broken_files_are_skipped_listed_and_counted(corpus_store):
    summary, store, skips = corpus_store
    assert summary.counts == {"train": 8, "val": 2}
    assert summary.skipped == {"train": 5, "val": 0}
    assert "skipped 5 (listed in " in summary.line() and "train/skipped.jsonl" in summary.line()
    rows = read_skipped(store.root / "train" / "skipped.jsonl")
    reasons = {os.path.basename(path): reason for path, reason in rows}
    assert set(reasons) == skips
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["notes.txt"] == "not an image Pillow can identify"
    assert reasons["bomb.png"].startswith("larger than Pillow's decompression-bomb limit")
    assert reasons["truncated.jpg"].startswith("cannot be decoded")
    assert reasons["corrupt.jpg"]  # corrupt JPEG data: identified as JPEG or not, never kept


def test_convertible_images_become_correct_rgb(corpus_store):
    _, store, _ = corpus_store
    train = store.split("train")
    assert train.images.shape == (8, 16, 16, 3) and train.images.dtype == np.uint8
    # class a, sorted by file name: cmyk.tif, grey.png, palette.png, rgb.jpg, rgba.png, sixteen.png
    cmyk, grey, palette, rgb, rgba, sixteen = (train.images[i].astype(int) for i in range(6))
    assert (cmyk == RED).all()
    assert (grey == 100).all()
    assert (palette[1, 8] == WHITE).all() and (palette[14, 8] == (0, 255, 0)).all()  # transparent → white
    assert np.abs(rgb - RED).max() <= 2
    assert (rgba[8, 1] == WHITE).all() and (rgba[8, 14] == (10, 20, 30)).all()
    assert (sixteen[8, 2] == 128).all() and (sixteen[8, 14] == 255).all()  # 16-bit scaled, not clipped
    rotated, tiny = train.images[6].astype(int), train.images[7].astype(int)
    assert np.abs(rotated[2, 8] - RED).max() < 40 and np.abs(rotated[13, 8] - BLUE).max() < 40  # upright
    assert (tiny == (7, 8, 9)).all()  # a 1×1 image scales to a uniform patch
    assert train.labels.tolist() == [0] * 6 + [1] * 2
    assert store.classes == ["a", "b"]


def test_mean_image_and_pca_are_those_of_the_stored_pixels(corpus_store):
    _, store, _ = corpus_store
    images = np.asarray(store.split("train").images, dtype=np.float64)
    np.testing.assert_allclose(store.mean, images.mean(0), rtol=0, atol=1e-4)
    cov = np.cov((images / 255).reshape(-1, 3).T, bias=True)
    np.testing.assert_allclose(store.eigvecs @ np.diag(store.eigvals) @ store.eigvecs.T, cov, atol=1e-6)
    assert list(store.eigvals) == sorted(store.eigvals, reverse=True)
    np.testing.assert_allclose(store.eigvecs.T @ store.eigvecs, np.eye(3), atol=1e-6)


def test_interrupted_prepare_leaves_nothing_that_loads_and_rerun_is_safe(tmp_path, monkeypatch):
    src = tmp_path / "src"
    for cls in ("x", "y"):
        (src / "train" / cls).mkdir(parents=True)
        for i in range(3):
            _solid(src / "train" / cls / f"{i}.png", (i * 40, 0, 0))
    monkeypatch.setattr(shards_module, "shard_ranges", lambda count, size: [(i, i + 1) for i in range(count)])
    real, calls = shards_module.run_shard, []

    def dying(job):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C half-way
        return real(job)

    with monkeypatch.context() as m:
        m.setattr(shards_module, "run_shard", dying)
        with pytest.raises(KeyboardInterrupt):
            prepare(src, tmp_path / "out", size=8, workers=1, progress=False)
    assert not (tmp_path / "out").exists() and not is_store(tmp_path / "out")
    assert len(list((tmp_path / ".out.partial" / "shards" / "train").glob("*.npz"))) == 2  # kept for later
    done = []
    monkeypatch.setattr(shards_module, "run_shard", lambda job: done.append(job[0]) or real(job))
    summary = prepare(src, tmp_path / "out", size=8, workers=1, progress=False)
    assert summary.counts == {"train": 6} and done == [2, 3, 4, 5]  # only the shards not yet done
    assert not (tmp_path / ".out.partial").exists()
    again = prepare(src, tmp_path / "out", size=8, progress=False)
    assert again.reused and "already prepared" in again.line()
    rebuilt = prepare(src, tmp_path / "out", size=8, workers=1, progress=False, force=True)
    assert not rebuilt.reused and open_store(tmp_path / "out").split("train").images.shape == (6, 8, 8, 3)
    with pytest.raises(AlexNetError, match=r"already holds a store .* at 8×8; pass --force"):
        prepare(src, tmp_path / "out", size=12, progress=False)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "is empty"),
        ("no-splits", "has no train/, val/ or test/ folder"),
        ("empty-class", "class folder .*/train/b has no images"),
    ],
)
def test_bad_sources_are_one_line_and_exit_2(tmp_path, capsys, layout, message):
    src = tmp_path / "src"
    if layout != "missing":
        src.mkdir()
    if layout == "no-splits":
        (src / "cat").mkdir()
    if layout == "empty-class":
        (src / "train" / "a").mkdir(parents=True)
        (src / "train" / "b").mkdir()
        _solid(src / "train" / "a" / "1.png", RED)
    assert main(["prepare", str(src), str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alexnet: error: ")
    import re

    assert re.search(message, err[0])
    assert not (tmp_path / "out").exists()


def test_out_that_is_not_a_store_is_refused(tmp_path):
    src = tmp_path / "src"
    (src / "train" / "a").mkdir(parents=True)
    _solid(src / "train" / "a" / "1.png", RED)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(AlexNetError, match="exists and is not an alexnet store"):
        prepare(src, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


def _link_subset(src_split, dst_split, classes, per_class):
    for cls in classes:
        (dst_split / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:per_class]:
            os.symlink(f, dst_split / cls.name / f.name)


def test_cifar_slice_keeps_its_32px_size(tmp_path):
    cifar = require(CIFAR)
    for split in ("train", "test"):
        _link_subset(cifar / split, tmp_path / "src" / split, sorted((cifar / split).iterdir()), 10)
    summary = prepare(tmp_path / "src", tmp_path / "store", workers=2, progress=False)
    store = open_store(tmp_path / "store")
    assert summary.size == 32 and store.split("train").images.shape == (100, 32, 32, 3)
    assert store.classes[:3] == ["airplane", "automobile", "bird"]
    assert store.split("test").labels.tolist() == sorted(store.split("test").labels.tolist())
    assert 0.02 < store.eigvals[0] < 0.3 and store.mean.shape == (32, 32, 3)


def test_imagenet_sample_at_full_resolution(tmp_path):
    sample = require(IMAGENET_SAMPLE)
    wnids = sorted(p.name for p in (sample / "val").iterdir())
    assert class_names(tuple(wnids))[:2] == ("tench", "goldfish")
    greys = []
    for d in sorted((sample / "val").iterdir()):
        f = next(d.iterdir())
        with Image.open(f) as im:
            if im.mode != "RGB":
                greys.append(d)
        if len(greys) == 2:
            break
    chosen = sorted((sample / "val").iterdir())[:6] + greys
    _link_subset(sample / "val", tmp_path / "src" / "val", chosen, 1)
    summary = prepare(tmp_path / "src", tmp_path / "store", workers=2, progress=False)
    val = open_store(tmp_path / "store").split("val")
    assert summary.size == 256 and val.images.shape == (8, 256, 256, 3)
    assert val.images.std() > 20  # real photographs, not blank
    grey = np.asarray(val.images[-1], dtype=int)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def _idx(path, magic, array):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_torchvision_set_from_supplied_files(tmp_path):
    raw = tmp_path / "cache" / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", 2051, rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, np.arange(n) % 10)
    source = resolve_source("mnist", cache_dir=tmp_path / "cache")
    summary = prepare(source, tmp_path / "store", progress=False)
    store = open_store(tmp_path / "store")
    assert summary.size == 28 and store.channels == 1
    assert store.split("train").images.shape == (12, 28, 28, 1)
    assert store.split("test").labels.tolist()[:3] == [0, 1, 2]
    assert store.classes[0] == "0 - zero"
    assert "pca" not in json.loads((tmp_path / "store" / "store.json").read_text())


def test_torchvision_set_offline_is_one_clear_line(tmp_path, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a closed port: every download fails at once
    with pytest.raises(AlexNetError, match=r"cannot get cifar10 into .*without a network, put cifar-10-py"):
        resolve_source("cifar10", cache_dir=tmp_path)
    assert not (tmp_path / "cifar10").exists()  # no empty folder left behind


def test_open_data_accepts_a_store_or_prepares_a_folder_once(tmp_path, monkeypatch):
    from alexnet.data import open_data

    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))  # not the data folder: it may be read-only
    src = tmp_path / "photos"
    for cls in ("x", "y"):
        (src / "train" / cls).mkdir(parents=True)
        _solid(src / "train" / cls / "1.png", RED)
    first = open_data(src, size=8, progress=False)
    assert first.root.parent == tmp_path / "cache" / "stores" and len(first.split("train")) == 2
    stamp = (first.root / "store.json").stat().st_mtime_ns
    again = open_data(src, size=8, progress=False)
    assert again.root == first.root and (again.root / "store.json").stat().st_mtime_ns == stamp  # reused
    assert open_data(first.root).root == first.root  # a store is taken as it is
    with pytest.raises(AlexNetError, match="does not exist"):
        open_data(tmp_path / "nowhere")


def test_a_changed_folder_is_prepared_again(tmp_path, monkeypatch, capsys):
    from alexnet.data import open_data

    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "photos"
    for cls, color in (("x", RED), ("y", BLUE)):
        (src / "train" / cls).mkdir(parents=True)
        _solid(src / "train" / cls / "1.png", color)
    first = open_data(src, size=8, progress=False)
    assert first.classes == ["x", "y"]
    (src / "train" / "z").mkdir()  # a class added
    _solid(src / "train" / "z" / "1.png", WHITE)
    second = open_data(src, size=8, progress=False)
    assert second.root == first.root and second.classes == ["x", "y", "z"]
    assert "changed since" in capsys.readouterr().err
    _solid(src / "train" / "x" / "1.png", WHITE, size=(30, 20))  # an image replaced
    third = open_data(src, size=8, progress=False)
    assert np.array_equal(third.split("train").images[0], np.full((8, 8, 3), 255, np.uint8))
    # an explicit store of the folder's earlier state is kept, and the change is said
    prepare(src, tmp_path / "store", size=8, workers=1, progress=False)
    _solid(src / "train" / "y" / "2.png", RED)
    assert main(["prepare", str(src), str(tmp_path / "store"), "--size", "8"]) == 2
    assert "holds a store of an earlier state of" in capsys.readouterr().err
    assert main(["prepare", str(src), str(tmp_path / "store"), "--size", "8", "--force", "--quiet"]) == 0
    assert len(open_store(tmp_path / "store").split("train")) == 4


def _labelled(root, swap):
    """Ten images in two classes; with ``swap`` the same files under each other's class name."""
    for i in range(10):
        cls = ("a", "b")[(i < 5) ^ swap]
        (root / "train" / cls).mkdir(parents=True, exist_ok=True)
        _solid(root / "train" / cls / f"{i}.png", (i * 20, 0, 0), size=(8, 8))
    return root


def _race(job, args_a, args_b):
    """Run ``job(*args)`` in two forked processes released at the same moment: their exit codes."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(2)

    def run(args, queue):
        start.wait()
        try:
            job(*args)
            queue.put(0)
        except AlexNetError as exc:
            queue.put(str(exc))

    queue = ctx.Queue()
    procs = [ctx.Process(target=run, args=(a, queue)) for a in (args_a, args_b)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    return sorted((queue.get() for _ in procs), key=lambda r: r != 0)  # successes first


def test_racing_prepares_end_with_one_whole_store(tmp_path, monkeypatch):
    from alexnet.data import open_data

    a, b = _labelled(tmp_path / "a", False), _labelled(tmp_path / "b", True)
    quiet = {"size": 8, "workers": 1, "progress": False}
    for trial in range(20):
        out = tmp_path / f"out{trial}"
        results = _race(lambda src, out: prepare(src, out, **quiet), (a, out), (b, out))
        assert results[0] == 0 and "already holds a store of" in str(results[1]), results
        store = open_store(out)
        source = Path(store.meta["source"])
        # the labels are the ones of the source the store says it holds, image by image
        files = sorted((source / "train").rglob("*.png"), key=lambda p: (p.parent.name, p.name))
        labels = [0 if p.parent.name == "a" else 1 for p in files]
        pixels = [int(np.asarray(Image.open(p))[0, 0, 0]) for p in files]
        assert store.split("train").labels.tolist() == labels and len(labels) == 10
        assert [int(v) for v in np.asarray(store.split("train").images)[:, 0, 0, 0]] == pixels
    # two first-use trainings of one folder: both open the one store the first prepared
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    for _ in range(5):
        results = _race(lambda src: open_data(src, **{"size": 8, "progress": False}), (a,), (a,))
        assert results == [0, 0]
    (cached,) = [p for p in (tmp_path / "cache" / "stores").iterdir() if not p.name.startswith(".")]
    assert open_store(cached).split("train").labels.tolist() == [0] * 5 + [1] * 5


def test_hidden_files_broken_links_and_odd_names_in_a_folder(tmp_path):
    src = tmp_path / "src"
    for cls in ("a", "b"):
        (src / "train" / cls).mkdir(parents=True)
        _solid(src / "train" / cls / "1.png", RED)
    (src / "train" / "a" / ".ipynb_checkpoints").mkdir()
    _solid(src / "train" / "a" / ".ipynb_checkpoints" / "1-checkpoint.png", BLUE)  # hidden: not an image of a
    (src / "train" / "b" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # dangling: listed, not dropped
    (src / "train" / "b" / "tab\tand\nnewline.jpg").write_bytes(b"junk")  # any name reads back exactly
    summary = prepare(src, tmp_path / "store", size=8, workers=1, progress=False)
    assert summary.counts == {"train": 2} and summary.skipped == {"train": 2}
    listed = dict(read_skipped(tmp_path / "store" / "train" / "skipped.jsonl"))
    odd = str(src / "train" / "b" / "tab\tand\nnewline.jpg")
    assert listed == {str(src / "train" / "b" / "gone.jpg"): "a broken symbolic link",
                      odd: "not an image Pillow can identify"}  # fmt: skip
    (src / "train" / "val").symlink_to(src / "train")  # a link to a split folder is no class
    with pytest.raises(
        AlexNetError, match=r"train/val is a link to a split folder .*, not a class; remove it"
    ):
        prepare(src, tmp_path / "other", size=8, workers=1, progress=False)
