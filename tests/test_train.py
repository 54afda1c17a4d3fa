import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from conftest import cifar_slice

from alexnet import AlexNetError, build_model
from alexnet.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from alexnet.cli import main
from alexnet.config import override, preset, resolve, to_dict
from alexnet.data import prepare
from alexnet.train import fit


@pytest.fixture(scope="module")
def cifar_store(tmp_path_factory):
    """A 2,500-image CIFAR-10 slice: 200 training and 50 test images per class."""
    root = tmp_path_factory.mktemp("cifar")
    cifar_slice(root / "src", {"train": 200, "test": 50})
    prepare(root / "src", root / "store", workers=2, progress=False)
    return root / "store"


def quick(store, out, **sets):
    values = {
        "data.source": str(store),
        "train.out": str(out),
        "train.epochs": "1",
        "train.batch_size": "32",
        "data.limit_train": "200",
        "data.limit_val": "100",
        "train.log_every": "1000",
    }
    values.update({k: str(v) for k, v in sets.items()})
    return resolve("figure1", sets=values)


def test_cli_train_one_epoch_then_evaluate(cifar_store, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--preset",
            "figure1",
            "--data",
            str(cifar_store),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--out",
            str(run),
            "--set",
            "data.limit_train=200",
            "--set",
            "data.limit_val=100",
            "--precision",
            "fp32",
        ]
    )
    assert code == 0
    assert re.search(r"run .*: best validation top-1 error \d+\.\d\d %", capsys.readouterr().out)
    assert {p.name for p in run.iterdir()} >= {
        "config.yaml",
        "metrics.jsonl",
        "run.json",
        "checkpoints",
        "final.json",
    }
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    row = __import__("json").loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert set(row) == {
        "epoch",
        "train_loss",
        "train_top1_error",
        "val_loss",
        "val_top1_error",
        "val_top5_error",
        "lr",
        "seconds",
        "images_per_second",
    }
    out_json = tmp_path / "eval.json"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(cifar_store), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"{run / 'checkpoints' / 'best.pt'} (epoch 1) on test (500 images")
    assert printed[1].split() == ["class", "images", "accuracy"]
    assert [line.split()[:2] for line in printed[2:]] == [
        [c, "50"]
        for c in sorted(
            ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        )
    ]
    result = __import__("json").loads(out_json.read_text())
    assert result["count"] == 500 and len(result["per_class"]) == 10 and len(result["confusion"]) == 10
    first = result["per_class"][0]
    assert first["class"] == "airplane" and first["images"] == 50
    assert first["accuracy"] == pytest.approx(100 * result["confusion"][0][0] / 50)
    assert sum(map(sum, result["confusion"])) == 500
    # the same numbers as the run's own closing evaluation of that model (epoch 1, centre crop, on
    # the 100 evenly spaced test images data.limit_val gave it)
    from alexnet.evaluate import evaluate_checkpoint

    final = __import__("json").loads((run / "final.json").read_text())
    assert (final["epoch"], final["split"], final["count"], final["ten_crop"]) == (1, "test", 100, False)
    again = evaluate_checkpoint(run, cifar_store, limit=100)
    assert again["top1_error"] == pytest.approx(final["top1_error"], abs=1e-9)
    assert again["top5_error"] == pytest.approx(final["top5_error"], abs=1e-9)
    assert again["loss"] == pytest.approx(final["loss"], rel=1e-5)
    assert again["confusion"] == final["confusion"]
    assert (
        main(["evaluate", str(run / "checkpoints" / "best.pt"), "--data", str(cifar_store), "--ten-crop"])
        == 0
    )
    assert "ten-crop" in capsys.readouterr().out


def test_a_small_net_really_learns_on_2000_images(cifar_store, tmp_path):
    config = quick(
        cifar_store,
        tmp_path / "run",
        **{
            "train.epochs": 6,
            "data.limit_train": 2000,
            "data.limit_val": 500,
            "optim.lr": 0.01,
            "data.crop": 28,
        },
    )
    result = fit(config, progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0] - 0.3  # measured: 2.19 → 1.54
    assert result.final["top1_error"] < 70.0  # chance is 90 % error; measured 60.4 % after 6 epochs (~6 s)


def test_two_tower_split_trains_through_the_same_loop(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    for split in ("train", "val"):
        for c in range(2):
            (src / split / f"c{c}").mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (240, 240), (c * 200, i * 50, 30)).save(src / split / f"c{c}" / f"{i}.png")
    prepare(src, tmp_path / "store", size=227, workers=1, progress=False)
    config = resolve(
        "paper",
        sets={
            "data.source": str(tmp_path / "store"),
            "train.out": str(tmp_path / "run"),
            "train.epochs": "1",
            "train.batch_size": "2",
            "train.two_devices": "cpu,cpu",
            "data.ten_crop": "false",
        },
    )
    result = fit(config, progress=False)
    assert len(result.history) == 1 and result.final["count"] == 4
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert "features.0.weight" in state["model"]  # one schema: the grouped model's names
    # the checkpoint evaluates like any other, to the numbers the run itself reported
    evaluated = main(["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "store"), "--split", "val"])
    assert evaluated == 0
    # and resumes into two towers for a second epoch
    more = fit(override(config, {"train.epochs": "2"}), resume=True, progress=False)
    assert [r["epoch"] for r in more.history] == [1, 2]


class Evil:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["EVIL_MARKER"]),))


def test_a_checkpoint_that_runs_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"format": "alexnet-checkpoint", "model": Evil()}, f, protocol=2)
    with pytest.raises(
        AlexNetError, match=r"refused to load .*evil\.pt: it holds pickled objects that could run code"
    ):
        load_checkpoint(bad)
    assert not marker.exists()
    assert main(["evaluate", str(bad), "--data", str(tmp_path)]) == 2
    assert not marker.exists()


def test_checkpoint_for_another_model_or_class_count(tmp_path):
    path = tmp_path / "c.pt"
    model = build_model("cifar10")
    record = {"config": to_dict(preset("cifar10")), "classes": [str(i) for i in range(10)], "crop": 28,
              "normalization": {"kind": "channel", "mean": [0.5] * 3, "std": [0.5] * 3}}  # fmt: skip
    save_checkpoint(
        path, {"model": model.state_dict(), "arch": {"name": "cifar10", "num_classes": 10}, **record}
    )
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary file
    state = load_checkpoint(path)
    with pytest.raises(AlexNetError, match="trained for 10 classes, this model has 100"):
        load_model_state(build_model("cifar10", num_classes=100), state, path)
    with pytest.raises(AlexNetError, match="holds a 'cifar10' model, not 'figure1'"):
        load_model_state(build_model("figure1"), state, path)
    with pytest.raises(AlexNetError, match=r"not an alexnet checkpoint \(a bare state_dict\?"):
        torch.save(model.state_dict(), tmp_path / "bare.pt")
        load_checkpoint(tmp_path / "bare.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(AlexNetError, match=r"cut\.pt is not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(cifar_store, tmp_path):
    good = quick(cifar_store, tmp_path / "run")
    fit(good, progress=False)
    before = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    exploding = override(good, {"optim.lr": "1e30", "train.epochs": "2"})  # overflows float32
    with pytest.raises(AlexNetError, match=r"loss became NaN or infinite in epoch 2 .* last good checkpoint"):
        fit(exploding, resume=True, progress=False)
    after = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert after["epoch"] == 1
    assert all(torch.equal(before[k], after["model"][k]) for k in before)


def test_bad_config_values_are_one_line_and_exit_2(capsys):
    assert main(["train", "--preset", "cifar10", "--data", "x", "--set", "optim.lr=abc"]) == 2
    assert capsys.readouterr().err.strip() == "alexnet: error: optim.lr: 'abc' is not a number"
    assert main(["train", "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["train", "--set", "schedule.name=linear"]) == 2
    assert "schedule.name: 'linear' is not one of plateau, step, cosine, constant" in capsys.readouterr().err
    assert main(["train", "--set", "optim.momentum=1.5"]) == 2
    assert "optim.momentum must be in [0, 1)" in capsys.readouterr().err
    assert main(["train", "--set", "nolr"]) == 2
    assert "--set takes key=value" in capsys.readouterr().err


def test_presets_follow_their_sources():
    paper = preset("paper")
    assert (paper.optim.lr, paper.optim.momentum, paper.optim.weight_decay) == (0.01, 0.9, 5e-4)
    assert (paper.train.batch_size, paper.train.epochs, paper.data.crop) == (128, 90, 227)
    assert (paper.schedule.name, paper.schedule.factor, paper.schedule.max_drops) == ("plateau", 0.1, 3)
    assert paper.data.ten_crop and paper.data.lighting == "store" and paper.data.normalize == "mean_image"
    assert paper.model.init is None and build_model("paper").layer("fc6").bias[0] == 1.0  # paper init
    tv = preset("torchvision")
    assert (tv.optim.weight_decay, tv.train.batch_size) == (1e-4, 256)
    assert (tv.schedule.name, tv.schedule.step_size) == ("step", 30)
    d2l = preset("d2l")
    assert (d2l.data.source, d2l.data.resize) == ("fashion-mnist", 224)
    assert (d2l.optim.lr, d2l.train.epochs) == (0.01, 10)


def test_paper_init_leaves_no_input_signal_and_he_init_keeps_it(cifar_store):
    from alexnet.experiments.init_signal import signal_at_init

    paper = signal_at_init(str(cifar_store), "paper")
    he = signal_at_init(str(cifar_store), "kaiming")
    mean, std = paper["relu_mean_std"][1]  # conv2: measured 1.00 ± 0.018, the bias of 1 dwarfs the input
    assert mean > 0.9 and std < 0.05
    assert paper["logit_spread"] < 1e-4  # measured 3e-6: every image gets the same logits
    assert he["logit_spread"] > 0.05  # measured 0.36
    assert min(d for _, d in he["relu_mean_std"]) > 0.2  # the signal survives every layer
