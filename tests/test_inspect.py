"""features, neighbors, filters, plot, export and predict --figure: the numbers behind each command."""

import json

import numpy as np
import pytest
import torch

from alexnet import AlexNetError, build_model, load_model
from alexnet.analysis.features import extract, layer_activations, nearest
from alexnet.analysis.filters import FilterReport, colour_scores, conv1_report, tile_layout
from alexnet.cli import main
from alexnet.data import open_store
from alexnet.weights import require


@pytest.fixture
def trained(small_run):
    return small_run  # the cifar10 recipe, groups 2: two towers in conv1's report


def test_features_are_the_layer_activations_and_resume(trained, tmp_path):
    loaded = load_model(trained / "run", device="cpu")
    split = open_store(trained / "store").split("test")
    out = tmp_path / "f.npy"
    feats = extract(loaded, split, "fc7", out, batch_size=16)
    direct = layer_activations(loaded, torch.from_numpy(np.array(split.images)), "fc7")
    assert feats.values.shape == (50, 512) and (direct >= 0).all()  # after fc7's ReLU
    np.testing.assert_allclose(feats.values, direct.numpy(), rtol=1e-5, atol=1e-6)
    meta = json.loads((tmp_path / "f.npy.json").read_text())
    assert meta["done"] == 50
    # an interrupted extraction: rows from 32 on were never written; the rerun fills exactly those
    values = np.load(out, mmap_mode="r+")
    values[32:] = -1
    values.flush()
    del values
    (tmp_path / "f.npy.json").write_text(json.dumps({**meta, "done": 32}))
    again = extract(loaded, split, "fc7", out, batch_size=16)
    np.testing.assert_allclose(again.values, direct.numpy(), rtol=1e-5, atol=1e-6)


def test_features_of_another_data_set_are_never_reused(trained, tmp_path):
    from conftest import cifar_slice

    from alexnet.analysis.reports import split_features
    from alexnet.data import prepare

    src = cifar_slice(tmp_path / "src", {"test": 10})  # other test images, as many per class as the run's
    for folder in (src / "test").iterdir():
        for f in sorted(folder.iterdir())[:5]:
            f.unlink()
    prepare(src, tmp_path / "other", workers=1, progress=False)
    loaded = load_model(trained / "run", device="cpu")
    mine, other = open_store(trained / "store"), open_store(tmp_path / "other")
    first = split_features(loaded, mine, "test")
    second = split_features(loaded, other, "test")  # same model, layer, split name and size: same file
    assert first.path == second.path and len(second.labels) == 50
    direct = layer_activations(loaded, torch.from_numpy(np.array(other.split("test").images)), "fc7")
    np.testing.assert_allclose(second.values, direct.numpy(), rtol=1e-5, atol=1e-6)  # computed again


def test_features_on_a_full_disk_are_one_line(trained, tmp_path, monkeypatch, capsys):
    import errno

    out = tmp_path / "f.npy"
    monkeypatch.setattr(
        "os.posix_fallocate", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space"))
    )
    args = [
        "features",
        str(trained / "run"),
        "--data",
        str(trained / "store"),
        "--split",
        "test",
        "--out",
        str(out),
    ]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"alexnet: error: cannot write {out}: the disk is full (no space left on device); "
        "free some space and run the command again"
    )


def test_nearest_equals_a_numpy_brute_force():
    rng = np.random.default_rng(0)
    base, queries = rng.normal(size=(300, 20)), rng.normal(size=(7, 20))
    d, i = nearest(queries, base, 5, chunk=64)  # several chunks: the running top-k merge is exercised
    brute = np.sqrt(((queries[:, None, :] - base[None]) ** 2).sum(-1))
    want = np.argsort(brute, axis=1)[:, :5]
    assert np.array_equal(i, want)
    np.testing.assert_allclose(d, np.take_along_axis(brute, want, 1), rtol=1e-9)


def test_neighbors_command_reports_the_share_of_same_class_neighbours(trained, tmp_path, capsys):
    figure = tmp_path / "nn.png"
    code = main(["neighbors", str(trained / "run"), "--data", str(trained / "store"), "--query", "test",
                 "--k", "4", "--figure", str(figure), "--json", str(tmp_path / "all.json"),
                 "--device", "cpu"])  # fmt: skip
    assert code == 0 and figure.stat().st_size > 0
    report = json.loads(
        (tmp_path / "all.json").read_text()
    )  # every query; the figure's JSON has the drawn ones
    drawn = json.loads(figure.with_suffix(".json").read_text())["queries"]
    assert [q["query"] for q in drawn] == [f"test[{i}]" for i in (0, 7, 14, 21, 28, 35, 42, 49)]
    train = np.load(next((trained / "run" / "features").glob("train-fc7-*.npy")))
    test = np.load(next((trained / "run" / "features").glob("test-fc7-*.npy")))
    store = open_store(trained / "store")
    brute = ((test[:, None, :].astype(np.float64) - train[None]) ** 2).sum(-1)
    want = np.argsort(brute, axis=1)[:, :4]
    assert [q["neighbours"] for q in report["queries"]] == want.tolist()
    share = (store.split("train").labels[want] == store.split("test").labels[:, None]).mean()
    assert report["same_class_fraction"] == pytest.approx(share)
    assert f"{100 * share:.1f} % of the 4 nearest train (400 images)" in capsys.readouterr().out


def test_colour_score_and_the_tower_blocks_of_the_filter_grid(trained, tmp_path, capsys):
    grey = torch.randn(1, 1, 5, 5).expand(1, 3, 5, 5)  # the same in R, G and B: colour-agnostic
    chroma = torch.randn(1, 3, 5, 5)
    chroma = chroma - chroma.mean(dim=1, keepdim=True)  # no luminance at all
    assert colour_scores(torch.cat([grey, chroma])).tolist() == pytest.approx([0.0, 1.0], abs=1e-6)
    report = conv1_report(build_model("paper"))
    layout = tile_layout(report, per_row=16)
    assert len(layout) == 96 and sorted(k for k, *_ in layout) == list(range(96))
    assert {(t, r) for _, t, r, _ in layout} == {
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 3),
        (1, 4),
        (1, 5),
    }  # tower 1 on top
    assert FilterReport(report.weight, 1, None).tower_scores() == []
    out = tmp_path / "conv1.png"
    assert main(["filters", str(trained / "run"), "--out", str(out)]) == 0
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert (numbers["kernels"], numbers["towers"], len(numbers["tower_colour_scores"])) == (64, 2, 2)
    assert "tower 2: mean colour score" in capsys.readouterr().out


def test_plot_draws_the_runs_metrics_and_the_confusion_matrix(trained, tmp_path):
    out = tmp_path / "curves.png"
    assert main(["plot", str(trained / "run"), "--out", str(out)]) == 0
    numbers = json.loads(out.with_suffix(".json").read_text())
    rows = [json.loads(line) for line in (trained / "run" / "metrics.jsonl").read_text().splitlines()]
    assert numbers["runs"]["run"] == rows and out.stat().st_size > 0
    final = json.loads((trained / "run" / "final.json").read_text())
    assert numbers["confusion"]["matrix"] == final["confusion"] and len(final["classes"]) == 10
    assert (tmp_path / "curves-confusion.png").stat().st_size > 0
    assert main(["plot", str(tmp_path), "--out", str(out)]) == 2


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_on_real_images(trained, tmp_path, capsys, fmt):
    out = tmp_path / f"m.{fmt}"
    assert main(["export", str(trained / "run"), "--format", fmt, "--out", str(out),
                 "--data", str(trained / "store")]) == 0  # fmt: skip
    line = capsys.readouterr().out
    diff = float(line.rsplit(": ", 1)[1])
    assert diff < 1e-4 and "on 16 images of" in line


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
def test_export_on_a_full_disk_or_to_a_folder_is_one_line_and_keeps_the_old_file(
    trained, tmp_path, capsys, monkeypatch, fmt
):
    import errno

    out = tmp_path / "model.bin"
    out.write_bytes(b"the previous export")
    with monkeypatch.context() as m:
        m.setattr(
            "alexnet.fileio.os.fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space"))
        )
        assert main(["export", str(trained / "run"), "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"alexnet: error: cannot write {out}: the disk is full (no space left on device); "
                   "free some space and run the command again"]  # fmt: skip
    assert out.read_bytes() == b"the previous export" and sorted(p.name for p in tmp_path.iterdir()) == [
        "model.bin"
    ]
    assert main(["export", str(trained / "run"), "--format", fmt, "--out", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"alexnet: error: cannot write {tmp_path}: it is a folder; give a file name"
    )


def test_leftovers_of_a_killed_write_are_cleared_where_the_file_is_written(tmp_path):
    from alexnet.fileio import write_atomic

    target = tmp_path / "eval.json"
    (tmp_path / ".eval.json.abc123.tmp").write_text("a killed writer's half file")
    (tmp_path / ".other.json.abc123.tmp").write_text("another file's: not ours to touch")
    write_atomic(target, "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abc123.tmp", "eval.json"]


def test_safetensors_export_loads_back_through_build_model(trained, tmp_path):
    out = tmp_path / "m.safetensors"
    assert main(["export", str(trained / "run"), "--format", "safetensors", "--out", str(out)]) == 0
    loaded = load_model(trained / "run", device="cpu")
    model = build_model("cifar10", weights=out).eval()  # groups, init and size come from the file
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), loaded.model(x), rtol=0, atol=1e-6)
    with pytest.raises(AlexNetError, match=r"pip install 'alexnet\[export\]'"):
        require("no_such_module_here", "export")


def test_predict_figure(trained, tmp_path):
    out = tmp_path / "fig4.png"
    folder = trained / "src" / "test" / "cat"
    args = ["predict", str(trained / "run"), str(folder), "--figure", str(out)]
    args += ["--json", str(tmp_path / "p.json")]
    code = main(args)
    assert code == 0
    printed = json.loads((tmp_path / "p.json").read_text())["predictions"]
    drawn = json.loads(out.with_suffix(".json").read_text())["predictions"]  # what the figure shows
    assert [d["truth"] for d in drawn] == ["cat"] * 5  # the folder's name is a class: the true class
    assert [(d["path"], d["top"]) for d in drawn] == [(p["path"], p["top"]) for p in printed]
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(out).shape
    assert 0.7 < height / width < 1.0  # 5 images: 2 rows of 4 panels (4.6 × 2 in high, 3.2 × 4 in wide)


def test_a_curve_that_is_zero_in_every_epoch_is_said_not_drawn():
    # 5 classes: top-5 error is 0 by construction, which a flat line would dress up as a result
    from alexnet.analysis import figures

    rows = [{"epoch": e, "train_loss": 1.6, "val_loss": 1.6, "train_top1_error": 75.0,
             "val_top1_error": 75.5, "val_top5_error": 0.0, "lr": 0.01} for e in (1, 2)]  # fmt: skip
    fig = figures.training_curves({"run": rows})
    panels = {ax.get_title(): ax for ax in fig.axes}
    top5, top1 = panels["validation top-5 error (%)"], panels["validation top-1 error (%)"]
    assert not top5.lines and [t.get_text() for t in top5.texts] == ["0 in every epoch"]
    assert len(top1.lines) == 1 and not top1.texts
