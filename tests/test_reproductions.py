"""alexnet experiment sweep / compare, torchvision's classifiers by name, and the paddle preset."""

import json

import pytest
import torch
from conftest import slice_store

from alexnet.cli import main
from alexnet.config import preset
from alexnet.experiments import experiment, run_experiment
from alexnet.models import build_model
from alexnet.models.summary import summarize


@pytest.mark.parametrize("name", ["alexnet", "googlenet", "vgg11", "resnet18"])
def test_parameters_and_macs_equal_torchvisions_published_counts(name):
    from torchvision.models import get_model_weights

    meta = get_model_weights(name).DEFAULT.meta  # shipped with torchvision: no download
    summary = summarize(build_model(name, num_classes=1000), 224)
    assert summary.total_params == meta["num_params"]
    assert round(summary.total_macs / 1e9, 3) == meta["_ops"]  # torchvision's "GFLOPS" count multiply-adds


def test_torchvision_classifiers_build_from_scratch_with_the_datas_classes():
    model = build_model("googlenet", num_classes=5)
    assert model.aux_logits is False and model.fc.out_features == 5
    assert (model.arch, model.num_classes, model.in_channels) == ("googlenet", 5, 3)
    model.train()
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)  # one tensor: the auxiliary heads are off
    with pytest.raises(Exception, match="takes RGB input, not 1 channel"):
        build_model("resnet18", in_channels=1)
    with pytest.raises(Exception, match="takes no switch dropout"):
        build_model("resnet18", dropout=0.5)


def test_an_unknown_torchvision_model_is_one_line_and_exit_2(capsys):
    assert main(["experiment", "compare", "--models", "alexnet,resnet19", "--data", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alexnet: error: unknown model 'resnet19'")
    assert main(["train", "--preset", "torchvision", "--set", "model.name=resnet19", "--data", "x"]) == 2
    assert "model.name must be one of paper" in capsys.readouterr().err


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return slice_store(tmp_path_factory.mktemp("repro"), {"train": 20, "test": 5})


def test_compare_two_models_reports_every_row_with_their_own_counts(store, tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))  # the folder is prepared at 73 px there
    out = tmp_path / "compare"
    study = experiment("compare", models="alexnet,resnet18", input_size=64)
    results = run_experiment(
        study, str(store.parent / "src"), out, epochs=1, sets={"train.precision": "fp32"}, say=lambda _: None
    )
    runs = {r["variant"]: r for r in results["runs"]}
    assert sorted(runs) == ["alexnet", "resnet18"]
    for name, r in runs.items():
        model = build_model(name, num_classes=10)
        assert r["parameters"] == sum(p.numel() for p in model.parameters())
        assert r["macs_millions"] == pytest.approx(summarize(model, 64).total_macs / 1e6)
        assert r["test_accuracy"] == pytest.approx(100 - r["test_top1_error"])
        assert r["final_split"] == "test" and len(r["history"]) == 1
    report = (out / "report.md").read_text()
    assert "| alexnet | " in report and "| resnet18 | " in report
    assert f"{runs['resnet18']['parameters']:,}" in report
    assert (out / "curves.png").stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["experiment"] == "compare"


def test_a_sweep_runs_one_value_per_run(store, tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep"
    study = experiment("sweep", param="batch_size", values="16,32", scale_lr=True)
    assert [dict(v.sets) for v in study.variants] == [
        {"train.batch_size": "16", "optim.lr": "0.0025"},
        {"train.batch_size": "32", "optim.lr": "0.005"},
    ]
    results = run_experiment(
        study, str(store.parent / "src"), out, epochs=1, sets={"train.precision": "fp32"}, say=lambda _: None
    )
    configs = [json.loads((out / r["run_dir"] / "run.json").read_text()) for r in results["runs"]]
    assert len(configs) == 2
    import yaml

    saved = [yaml.safe_load((out / r["run_dir"] / "config.yaml").read_text()) for r in results["runs"]]
    assert [(c["train"]["batch_size"], c["optim"]["lr"]) for c in saved] == [(16, 0.0025), (32, 0.005)]
    report = (out / "report.md").read_text()
    assert "| batch_size=16 | " in report and "| batch_size=32 | " in report
    assert "0.01 × batch / 64" in report
    epochs = experiment("sweep", param="epochs", values="1,2")
    assert [v.sets["train.epochs"] for v in epochs.variants] == ["1", "2"]


def test_compare_and_sweep_report_val_on_a_train_val_folder(tmp_path, monkeypatch, capsys):
    # PyTorch's tutorial's layout: train/ and val/, no test/ ("store has no split 'test'" before)
    from conftest import cifar_slice

    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    src = cifar_slice(tmp_path / "photos", {"train": 12})
    for folder in sorted((src / "train").iterdir())[:3]:  # three classes: train 8, val 4 each
        (src / "val" / folder.name).mkdir(parents=True)
        for f in sorted(folder.iterdir())[8:]:
            f.rename(src / "val" / folder.name / f.name)
    for folder in sorted((src / "train").iterdir())[3:]:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    common = [
        "--data",
        str(src),
        "--epochs",
        "1",
        "--set",
        "train.precision=fp32",
        "--set",
        "train.batch_size=8",
    ]
    assert main(["experiment", "compare", "--models", "alexnet,resnet18", "--input-size", "64",
                 "--out", str(tmp_path / "compare"), *common]) == 0  # fmt: skip
    assert main(["experiment", "sweep", "--param", "lr", "--values", "0.01,0.02",
                 "--out", str(tmp_path / "sweep"), *common]) == 0  # fmt: skip
    for name in ("compare", "sweep"):
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert results["prelude"]["reported_split"] == "val"
        assert {r["final_split"] for r in results["runs"]} == {"val"}
        report = (tmp_path / name / "report.md").read_text()
        assert "Accuracy and loss are on its val split (it has no test split)." in report


def test_the_paddle_preset_is_the_tutorials_setup():
    from alexnet.recipe import build_for_run
    from alexnet.train.optim import make_optimizer

    config = preset("paddle")
    model = build_for_run(config, 10, 3)
    optimizer = make_optimizer(model, config.optim)
    assert type(optimizer) is torch.optim.Adam
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (
        0.001,
        (0.9, 0.999),
        1e-8,
        0.0,
    )
    d = config.data
    assert (d.source, d.crop, d.resize, d.flip, d.lighting) == ("cifar10", 32, 224, False, "none")
    pixels = torch.tensor([0.0, 127.5, 255.0]) / 255
    assert ((pixels - d.mean[0]) / d.std[0]).tolist() == pytest.approx([-1.0, 0.0, 1.0])  # (x − 127.5)/127.5
    assert (config.train.batch_size, config.train.epochs, config.schedule.name) == (128, 50, "constant")
    assert model.arch == "torchvision"  # the faithful network: a ReLU after every conv (README)
