"""Fine-tuning: a run that starts from weights (torchvision's by name, a run of ours, an export),
with a new last layer, frozen layers and a lower rate for the pretrained ones."""

import copy

import pytest
import torch
import torchvision
from conftest import cifar_slice
from torch.nn import functional as F

from alexnet import AlexNetError, build_model, load_model
from alexnet.checkpoint import load_checkpoint
from alexnet.cli import main
from alexnet.config import OptimConfig, ScheduleConfig, preset
from alexnet.data import StoreLoader, open_data
from alexnet.data.transforms import EvalTransform, Normalization
from alexnet.loading import resolve_run
from alexnet.recipe import build_for_run
from alexnet.train import Schedule, fit, make_optimizer, resume_config, train_one_epoch

TV_FILE = "alexnet-owt-7be5be79.pth"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A two-class photo folder in the tutorial's layout: train/ and val/ (8 and 2 images a class)."""
    root = tmp_path_factory.mktemp("photos")
    cifar_slice(root / "all", {"train": 10})
    for name in ("cat", "dog"):
        files = sorted((root / "all" / "train" / name).iterdir())
        for split, part in (("train", files[:8]), ("val", files[8:])):
            (root / "ants_bees" / split / name).mkdir(parents=True)
            for f in part:
                (root / "ants_bees" / split / name / f.name).write_bytes(f.read_bytes())
    return root / "ants_bees"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """torchvision's AlexNet weights file in a temporary $TORCH_HOME, and no network."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(1)
    torch.save(torchvision.models.alexnet().state_dict(), cache / TV_FILE)
    return cache / TV_FILE


def initial_head(config, classes, channels=3):
    """The new last layer as the run initialised it (fit seeds torch with train.seed, then builds)."""
    torch.manual_seed(config.train.seed)
    return build_for_run(config, classes, channels)


def test_the_finetune_preset_is_pytorchs_transfer_learning_tutorial():
    c = preset("finetune")
    assert (c.model.name, c.model.weights, c.model.init) == ("torchvision", "DEFAULT", "torch")
    assert (c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == ("sgd", 0.001, 0.9, 0.0)
    assert (c.schedule.name, c.schedule.step_size, c.schedule.factor) == ("step", 7, 0.1)
    assert (c.train.epochs, c.train.batch_size) == (25, 4)
    # RandomResizedCrop(224) + flip; Resize(256) + CenterCrop(224); ImageNet mean/std
    assert (c.data.crop_mode, c.data.crop, c.data.flip, c.data.size, c.data.lighting) == (
        "resized", 224, True, 256, "none")  # fmt: skip
    assert (c.data.normalize, c.data.mean, c.data.std) == (
        "channel", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # fmt: skip


def test_finetuning_torchvision_weights_with_frozen_features(photos, torch_home, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--preset", "finetune", "--weights", "DEFAULT", "--data", str(photos), "--out", str(run),
            "--epochs", "1", "--precision", "fp32", "--set", "train.freeze=features"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "started from torchvision's AlexNet_Weights.IMAGENET1K_V1; new last layer" in err
    assert "frozen (train.freeze=features): 10 tensors, 2,469,696 parameters" in err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    trained, file = state["model"], torch.load(torch_home, weights_only=True)
    for key in file:
        if key.startswith("features."):  # conv1 … conv5 exactly as loaded
            assert torch.equal(trained[key], file[key]), key
    assert not torch.equal(trained["classifier.1.weight"], file["classifier.1.weight"])  # fc6 trained
    assert trained["classifier.6.weight"].shape == (2, 4096)  # fc8 new, for the folder's 2 classes
    start = initial_head(resume_config(run), 2).classifier[6].weight
    assert not torch.equal(trained["classifier.6.weight"], start)  # and trained
    # the weights' preprocessing is the run's: evaluate and predict use it
    assert state["normalization"] == {
        "kind": "channel",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    assert (state["crop"], state["image_size"], state["classes"]) == (224, 256, ["cat", "dog"])
    loaded = load_model(run, device="cpu")
    assert (loaded.preprocessing.crop, loaded.image_size, loaded.classes) == (224, 256, ["cat", "dog"])
    predictions, _ = loaded.predict(sorted((photos / "val" / "cat").iterdir()))
    assert len(predictions) == 2 and {c for c, _ in predictions[0].top} == {"cat", "dog"}


def test_the_feature_extractor_trains_only_the_new_layer(photos, torch_home, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--preset", "finetune", "--data", str(photos), "--out", str(run), "--epochs", "1",
            "--precision", "fp32", "--set", "train.freeze=backbone"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    trained, file = load_checkpoint(run / "checkpoints" / "last.pt")["model"], torch.load(torch_home)
    assert [k for k in file if not torch.equal(trained[k], file[k])] == [
        "classifier.6.weight",
        "classifier.6.bias",
    ]


def test_the_pretrained_layers_step_at_their_fraction_of_the_rate(tmp_path):
    store = open_data("cifar10-sample")
    split = store.split("test").evenly_spaced(16)
    loader = StoreLoader(split, 16, shuffle=False, drop_last=True)
    model = build_model(
        "cifar10", dropout=0.0, input_size=28
    )  # no random masks: the step is a function of the batch
    reference = copy.deepcopy(model)
    cfg = OptimConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, backbone_lr_scale=0.1)
    optimizer = make_optimizer(model, cfg)
    assert [g["lr_scale"] for g in optimizer.param_groups] == [1.0, 0.1]
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {
        id(p) for p in model.layer("fc8").parameters()
    }
    transform = EvalTransform(28, Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    schedule = Schedule(ScheduleConfig(name="constant"), cfg.lr, len(loader), 1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train_one_epoch(model, loader, transform, optimizer, schedule, scaler, torch.Generator(), 0,
                    device=torch.device("cpu"))  # fmt: skip
    # by hand: one SGD step (the first, so the velocity is the gradient with its weight decay)
    images, labels = next(iter(StoreLoader(split, 16, shuffle=False)))
    loss = F.cross_entropy(reference(transform(images)).float(), labels)
    loss.backward()
    head = {id(p) for p in reference.layer("fc8").parameters()}
    for (name, before), after in zip(reference.named_parameters(), model.parameters(), strict=True):
        rate = 0.1 if id(before) in head else 0.01
        expected = before.detach() - rate * (before.grad + 5e-4 * before.detach())
        torch.testing.assert_close(after.detach(), expected, rtol=1e-5, atol=1e-7, msg=name)


@pytest.fixture(scope="module")
def source_run(small_run):
    """A cifar10-recipe run on ten classes (conftest's small_run): what a new task starts from."""
    return small_run / "run"


def finetune_sets(weights, out, epochs=1, **more):
    sets = {"model.weights": str(weights), "data.source": "cifar10-sample", "data.classes": "cat,dog,frog",
            "data.limit_per_class": "24", "train.freeze": "features", "train.epochs": str(epochs),
            "train.batch_size": "16", "train.precision": "fp32", "data.ten_crop": "false",
            "train.out": str(out), "train.deterministic": "true"}  # fmt: skip
    return {**sets, **more}


def test_finetuning_one_of_our_runs_and_its_safetensors_export(source_run, tmp_path):
    source = load_checkpoint(source_run / "checkpoints" / "best.pt")["model"]
    export = tmp_path / "source.safetensors"
    assert main(["export", str(source_run), "--format", "safetensors", "--out", str(export)]) == 0
    for weights in (source_run, export):
        out = tmp_path / f"from-{weights.name}"
        config = resolve_run("cifar10", sets=finetune_sets(weights, out))
        assert (config.model.groups, config.model.dropout) == (2, 0.25)  # the architecture of the source
        result = fit(config, progress=False)
        trained = load_checkpoint(out / "checkpoints" / "last.pt")
        assert (
            trained["classes"] == ["cat", "dog", "frog"]
            and trained["model"]["classifier.6.weight"].shape[0] == 3
        )
        for key, value in source.items():
            if key.startswith("features."):
                assert torch.equal(trained["model"][key], value), (weights, key)
        assert result.final["count"] == 150  # the sample's test images of the three classes


def test_frozen_layers_stay_frozen_through_resume(source_run, tmp_path):
    out = tmp_path / "run"
    fit(resolve_run("cifar10", sets=finetune_sets(source_run, out, epochs=1)), progress=False)
    fit(resume_config(out, {"train.epochs": "2"}), resume=True, progress=False)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and resume_config(out).train.freeze == ("features",)
    source = load_checkpoint(source_run / "checkpoints" / "best.pt")["model"]
    assert all(torch.equal(state["model"][k], v) for k, v in source.items() if k.startswith("features."))
    assert not torch.equal(
        state["model"]["classifier.0.weight"], source["classifier.0.weight"]
    )  # fc6 trained


def test_weights_that_do_not_fit_are_named_and_nothing_is_written(source_run, tmp_path, torch_home, capsys):
    bare = tmp_path / "cifar.pth"
    torch.save(load_checkpoint(source_run / "checkpoints" / "best.pt")["model"], bare)
    out = tmp_path / "run"
    code = main(["train", "--preset", "finetune", "--weights", str(bare), "--data", "cifar10-sample",
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert (
        f"{bare} does not fit this model: features.0.weight (64, 3, 5, 5) where the model has (64, 3, 11, 11)"
        in err[0]
    )
    assert not out.exists()
    assert (
        main(["train", "--preset", "finetune", "--weights", "nowhere.pth", "--data", "cifar10-sample"]) == 2
    )
    assert "weights 'nowhere.pth': no such file or folder" in capsys.readouterr().err
    with pytest.raises(AlexNetError, match=r"train\.freeze: this model has no layer 'conv9'"):
        fit(resolve_run("cifar10", sets=finetune_sets(source_run, out, **{"train.freeze": "conv9"})))
    assert not out.exists()
