"""ImageNet as users download it: the official archives (read in place) and Kaggle's layout give the
classes, labels and names of torchvision's ImageNet; an interrupted prepare continues exactly."""

import csv
import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cifar_slice

from alexnet.cli import main
from alexnet.data import open_store, prepare
from alexnet.data.prepare import read_skipped

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from prepare_archives import meta_mat, tar_bytes

shards_module = importlib.import_module("alexnet.data.shards")
# Three leaf synsets (ILSVRC2012_IDs not in wnid order, as in the real devkit) and one inner node
SYNSETS = [(3, "n01440764", "tench, Tinca tinca", 0), (1, "n01443537", "goldfish, Carassius auratus", 0),
           (2, "n01484850", "great white shark, white shark", 0), (4, "n00001740", "entity", 3)]  # fmt: skip
VAL = ["n01484850", "n01440764", "n01443537", "n01440764", "n01484850", "n01443537"]  # file order


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real JPEG files (the CIFAR-10 sample's), 5 per training class and 6 for validation."""
    root = cifar_slice(tmp_path_factory.mktemp("jpegs"), {"train": 7})
    return [f.read_bytes() for f in sorted((root / "train").rglob("*.jpg"))]


@pytest.fixture(scope="module")
def archives(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("ilsvrc")
    inner = {}
    for c, (_, wnid, _, _) in enumerate(SYNSETS[:3]):
        members = {f"{wnid}_{i}.JPEG": photos[5 * c + i] for i in range(5)}
        if c == 1:
            members[f"{wnid}_9.JPEG"] = b"\xff\xd8 damaged download"  # a corrupt member
        inner[f"{wnid}.tar"] = tar_bytes(members)
    (folder / "ILSVRC2012_img_train.tar").write_bytes(tar_bytes(inner))
    val = {f"ILSVRC2012_val_{i + 1:08d}.JPEG": photos[20 + i] for i in range(len(VAL))}
    (folder / "ILSVRC2012_img_val.tar").write_bytes(tar_bytes(val))
    ids = {wnid: idx for idx, wnid, _, _ in SYNSETS}
    devkit = {"ILSVRC2012_devkit_t12/data/meta.mat": meta_mat(SYNSETS),
              "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt":
                  "".join(f"{ids[w]}\n" for w in VAL).encode()}  # fmt: skip
    (folder / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(tar_bytes(devkit, gz=True))
    return folder


@pytest.fixture(autouse=True)
def _our_md5(monkeypatch):
    # torchvision checks the archives' published md5; these miniature ones have their own
    import torchvision.datasets.imagenet as tv_imagenet

    monkeypatch.setattr(tv_imagenet, "check_integrity", lambda path, md5=None: Path(path).is_file())


def test_the_official_archives_give_torchvisions_imagenet(archives, tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    summary = prepare(archives, tmp_path / "store", workers=2, progress=False, size=32)
    store = open_store(tmp_path / "store")
    # torchvision's ImageNet on a copy of the same archives (it extracts them into its root)
    root = tmp_path / "torchvision"
    shutil.copytree(archives, root)
    for split in ("train", "val"):
        reference = torchvision.datasets.ImageNet(str(root), split=split)
        assert store.meta["class_ids"] == reference.wnids == ["n01440764", "n01443537", "n01484850"]
        assert (
            store.classes
            == [names[0] for names in reference.classes]
            == ["tench", "goldfish", "great white shark"]
        )
        usable = [(p, t) for p, t in reference.samples if not p.endswith("_9.JPEG")]
        if split == "val":  # torchvision moves val images into class folders; the store keeps file order
            usable = sorted(usable, key=lambda pt: Path(pt[0]).name)
        assert store.split(split).labels.tolist() == [t for _, t in usable]
        images = np.asarray(store.split(split).images)
        first = np.asarray(reference.loader(usable[0][0]).convert("RGB"))
        assert images.shape[1:] == (32, 32, 3) and np.array_equal(images[0], first)
    assert summary.counts == {"train": 15, "val": 6} and summary.skipped == {"train": 1, "val": 0}
    [(name, reason)] = read_skipped(tmp_path / "store" / "train" / "skipped.jsonl")
    assert name.endswith("ILSVRC2012_img_train.tar:n01443537.tar/n01443537_9.JPEG")
    assert reason.startswith("cannot be decoded") or reason == "not an image Pillow can identify"
    # nothing was extracted: the data folder holds its three archives, no temporary folder remains
    assert sorted(p.name for p in archives.iterdir()) == sorted(
        ["ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"])  # fmt: skip
    assert list((tmp_path / "tmp").iterdir()) == []
    assert sorted(p.name for p in (tmp_path).iterdir() if p.name.startswith(".store")) == [".store.lock"]


def test_kaggles_layout_gives_the_same_store(archives, photos, tmp_path):
    folder = tmp_path / "kaggle"
    for c, (_, wnid, _, _) in enumerate(SYNSETS[:3]):
        (folder / "ILSVRC" / "Data" / "CLS-LOC" / "train" / wnid).mkdir(parents=True)
        for i in range(5):
            (folder / "ILSVRC" / "Data" / "CLS-LOC" / "train" / wnid / f"{wnid}_{i}.JPEG").write_bytes(
                photos[5 * c + i]
            )
    (folder / "ILSVRC" / "Data" / "CLS-LOC" / "val").mkdir()
    with open(folder / "LOC_val_solution.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "PredictionString"])
        for i, wnid in enumerate(VAL):
            name = f"ILSVRC2012_val_{i + 1:08d}"
            (folder / "ILSVRC" / "Data" / "CLS-LOC" / "val" / f"{name}.JPEG").write_bytes(photos[20 + i])
            writer.writerow([name, f"{wnid} 10 20 30 40"])
    (folder / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} {words}\n" for _, w, words, c in SYNSETS if not c)
    )
    kaggle = open_store(prepare(folder, tmp_path / "kaggle-store", workers=1, progress=False, size=32).out)
    official = open_store(prepare(archives, tmp_path / "official", workers=1, progress=False, size=32).out)
    assert kaggle.classes == official.classes and kaggle.meta["class_ids"] == official.meta["class_ids"]
    for split in ("train", "val"):
        assert kaggle.split(split).labels.tolist() == official.split(split).labels.tolist()
        assert np.array_equal(
            np.asarray(kaggle.split(split).images), np.asarray(official.split(split).images)
        )


@pytest.mark.parametrize("image_format", ["raw", "jpeg"])
def test_an_interrupted_prepare_continues_to_the_same_bytes(archives, tmp_path, monkeypatch, image_format):
    monkeypatch.setattr(
        shards_module, "shard_ranges", lambda n, size: [(i, min(i + 2, n)) for i in range(0, n, 2)]
    )
    whole = prepare(
        archives, tmp_path / "whole", workers=1, progress=False, size=32, image_format=image_format
    )
    real, calls = shards_module.run_shard, []

    def killed_after_three(job):
        calls.append(job[0])
        if len(calls) == 4:
            raise KeyboardInterrupt  # the kill, after three shards of the train split were recorded
        return real(job)

    with monkeypatch.context() as m:
        m.setattr(shards_module, "run_shard", killed_after_three)
        with pytest.raises(KeyboardInterrupt):
            prepare(archives, tmp_path / "cut", workers=1, progress=False, size=32, image_format=image_format)
    redone = []
    monkeypatch.setattr(shards_module, "run_shard", lambda job: redone.append(job[0]) or real(job))
    prepare(archives, tmp_path / "cut", workers=1, progress=False, size=32, image_format=image_format)
    assert redone[:5] == [3, 4, 5, 6, 7]  # the train split's remaining shards, then val's
    files = sorted(p.relative_to(whole.out) for p in whole.out.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(tmp_path / "cut") for p in (tmp_path / "cut").rglob("*") if p.is_file()
    )
    for f in files:
        a, b = (whole.out / f).read_bytes(), (tmp_path / "cut" / f).read_bytes()
        if f.name == "store.json":  # names its own source, the same folder: identical too
            assert a == b
        assert a == b, f


def test_a_missing_or_truncated_archive_is_one_line(archives, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(archives, broken)
    data = (broken / "ILSVRC2012_img_train.tar").read_bytes()
    (broken / "ILSVRC2012_img_train.tar").write_bytes(data[: len(data) // 2 + 100])
    assert main(["prepare", str(broken), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ILSVRC2012_img_train.tar is truncated or not a tar archive" in err[0], err
    (broken / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"not gzip")
    assert main(["prepare", str(broken), str(tmp_path / "out")]) == 2
    assert "ILSVRC2012_devkit_t12.tar.gz" in capsys.readouterr().err
