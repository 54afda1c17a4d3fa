import subprocess
import sys

import pytest

from alexnet.cli import main


def test_summary_prints_table_and_totals(capsys):
    assert main(["summary", "paper"]) == 0
    out = capsys.readouterr().out
    assert "60,965,224 parameters, 724.4 M multiply-adds per image" in out
    assert "conv1    features.0     96×55×55" in out
    assert main(["summary", "torchvision"]) == 0
    assert "61,100,840 parameters, 714.2 M multiply-adds per image" in capsys.readouterr().out


def test_summary_num_classes(capsys):
    assert main(["summary", "cifar10", "--num-classes", "100"]) == 0
    assert "fc8      classifier.6   100 " in capsys.readouterr().out


def test_unknown_model_is_one_line_and_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "alexnet", "summary", "resnet"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "alexnet: error: unknown model 'resnet'; choose one of paper, torchvision, d2l, cifar10, figure1 "
        "or a torchvision classification model (resnet18, vgg11, googlenet, …)"
    ]


def test_input_too_small_is_exit_2(capsys):
    assert main(["summary", "paper", "--input-size", "224"]) == 2
    assert "fc6 expects 256×6×6 features" in capsys.readouterr().err


def test_version_and_print_config(capsys):
    import yaml

    from alexnet import __version__
    from alexnet.config import from_dict, resolve

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"alexnet {__version__}"
    assert (
        main(["train", "--preset", "d2l", "--set", "optim.lr=0.02", "--epochs", "3", "--print-config"]) == 0
    )
    printed = from_dict(yaml.safe_load(capsys.readouterr().out))
    assert printed == resolve("d2l", sets={"optim.lr": "0.02", "train.epochs": "3"})
