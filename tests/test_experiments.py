"""alexnet experiment: the statistics, the framework on a tiny slice, resume, --list."""

import json
import math

import pytest
from conftest import slice_store

from alexnet.cli import main
from alexnet.errors import DivergedError
from alexnet.experiments import Experiment, Metric, Variant, run_experiment
from alexnet.experiments import runs as runs_module
from alexnet.experiments.stats import (
    crossing,
    difference_interval,
    mean_std,
    permutation_p,
    ratio_interval,
    verdict,
)


def rows(errors, seconds=10.0):
    return [{"epoch": i + 1, "train_top1_error": e, "seconds": seconds} for i, e in enumerate(errors)]


def test_the_25_percent_crossing_is_read_from_a_history():
    assert crossing(rows([60, 40, 30, 20, 10]), "train_top1_error", 25.0) == pytest.approx(3.5)  # 30 → 20
    assert crossing(rows([60, 40, 25, 20]), "train_top1_error", 25.0) == pytest.approx(3.0)  # exactly 25
    assert crossing(rows([20, 10]), "train_top1_error", 25.0) == 1.0  # already there after epoch 1
    assert crossing(rows([60, 40, 30]), "train_top1_error", 25.0) is None  # never
    assert crossing(rows([60, 20, 30, 10]), "train_top1_error", 25.0) == pytest.approx(
        1.875
    )  # the first time


def test_mean_std_and_the_95_percent_intervals_by_hand():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert (mean, std) == (2.5, pytest.approx(math.sqrt(5 / 3)))  # n − 1
    assert mean_std([7.0]) == (7.0, 0.0)
    # Welch: means 2 and 4, variances of the means 1/3 and 4/3, df = (5/3)² / ((1/9)/2 + (16/9)/2)
    # = 50/17 ≈ 2.94 → t(2) = 4.303, half width 4.303·√(5/3) = 5.555
    diff, low, high = difference_interval([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert diff == -2.0 and (low, high) == (pytest.approx(-7.555, abs=1e-3), pytest.approx(3.555, abs=1e-3))
    # paired: differences 1, 2, 2 → mean 5/3, std √(1/3), half width 4.303·√(1/3)/√3 = 1.4343
    diff, low, high = difference_interval([1.0, 2.0, 3.0], [0.0, 0.0, 1.0], paired=True)
    assert diff == pytest.approx(5 / 3) and high - diff == pytest.approx(1.4343, abs=1e-4)
    assert difference_interval([1.0], [2.0, 3.0]) is None  # one seed: no interval
    ratio, low, high = ratio_interval([12.0, 12.0, 12.0], [2.0, 2.0, 2.0])
    assert (ratio, low, high) == (pytest.approx(6.0), pytest.approx(6.0), pytest.approx(6.0))


def test_verdicts_compare_sign_and_size_with_the_paper():
    assert verdict((2.1, 1.0, 3.0), 2.0) == "agrees in sign and size"
    assert verdict((0.5, 0.2, 0.8), 2.0) == "same sign, smaller than the paper's"
    assert verdict((0.5, -0.3, 1.3), 2.0).startswith("no difference resolved")
    assert verdict((-1.0, -1.5, -0.5), 2.0) == "opposite sign to the paper"
    assert verdict(None, 2.0) == "needs ≥ 2 seeds to tell"
    assert verdict((5.0, 3.0, 7.0), 1.0, sign_only=True) == "agrees in sign (the paper gives no size)"
    assert verdict((0.6, 0.1, 1.2), 1.0, at_least=True).startswith("agrees")
    assert verdict((0.6, 0.1, 0.9), 1.0, at_least=True) == "same sign, smaller than the paper's"


def test_permutation_p_of_towers_that_split_and_of_towers_that_do_not():
    gap, p = permutation_p([0.1] * 48 + [0.9] * 48, permutations=500)
    assert gap == pytest.approx(0.8) and p == pytest.approx(1 / 501)  # no random split is as far apart
    gap, p = permutation_p([0.1, 0.9] * 48, permutations=500)
    assert gap == pytest.approx(0.0) and p == 1.0  # interleaved: every split is as far apart


def tiny(seeds_ten_crop=True) -> Experiment:
    variants = [Variant("ReLU"), Variant("tanh", {"model.activation": "tanh"}, "made up: +1", 1.0)]
    if seeds_ten_crop:
        variants.append(Variant("ten crops", claim="re-evaluated", reevaluate={"ten_crop": True}))
    return Experiment(
        name="tiny",
        title="Tiny",
        preset="figure1",
        variants=tuple(variants),
        primary=Metric("test_top1_error", "test error"),
        metrics=(Metric("train_top1_error", "train error"), Metric("epochs_to_target", "to 85 %")),
        sets={"train.batch_size": "32", "train.precision": "fp32", "data.limit_val": "30"},
        epochs=1,
        seeds=2,
        target=("train_top1_error", 85.0),
    )


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return slice_store(tmp_path_factory.mktemp("exp"), {"train": 20, "test": 5})


def test_an_experiment_reports_every_variant_and_seed_and_resumes_without_redoing_runs(
    tiny_store, tmp_path, monkeypatch
):
    out = tmp_path / "exp"
    said = []
    results = run_experiment(tiny(), str(tiny_store), out, command="alexnet experiment tiny", say=said.append)
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(results["runs"]))
    assert [(r["variant"], r["seed"]) for r in saved["runs"]] == [
        ("ReLU", 0),
        ("ReLU", 1),
        ("tanh", 0),
        ("tanh", 1),
        ("ten crops", 0),
        ("ten crops", 1),
    ]
    for entry in saved["variants"]:
        values = [r["test_top1_error"] for r in saved["runs"] if r["variant"] == entry["name"]]
        mean, std = mean_std(values)
        assert entry["summary"]["test_top1_error"]["values"] == values
        assert entry["summary"]["test_top1_error"]["mean"] == pytest.approx(mean)
        assert entry["summary"]["test_top1_error"]["std"] == pytest.approx(std)
    tanh = saved["variants"][1]
    relu_errors = saved["variants"][0]["summary"]["test_top1_error"]["values"]
    expected = difference_interval(tanh["summary"]["test_top1_error"]["values"], relu_errors)
    assert [tanh["difference"][k] for k in ("mean", "low", "high")] == pytest.approx(list(expected))
    for r in saved["runs"]:
        rates = sorted(h["images_per_second"] for h in r["history"])
        assert r["images_per_second"] == rates[len(rates) // 2]  # the median over epochs (one here)
        if r["epochs_to_target"] is not None:
            assert r["seconds_to_target"] == pytest.approx(r["epochs_to_target"] * r["epoch_seconds"])
    reevaluated = [r for r in saved["runs"] if r["variant"] == "ten crops"]
    assert all(r["reevaluated"] and r["run_dir"].startswith("runs/relu/") for r in reevaluated)
    assert saved["variants"][2]["paired"] is True
    # re-evaluated on the very images the runs' own final evaluation used (30 of the 50 test images)
    assert json.loads((out / "runs" / "ten-crops" / "seed0.json").read_text())["images"] == 30
    assert json.loads((out / "runs" / "relu" / "seed0" / "final.json").read_text())["count"] == 30
    report = (out / "report.md").read_text()
    for name in ("ReLU", "tanh", "ten crops", "made up: +1", "alexnet experiment tiny"):
        assert name in report
    for r in saved["runs"]:
        assert f"| {r['variant']} | {r['seed']} | {r['test_top1_error']:.2f} |" in report

    # A killed experiment: one run never started, one stopped before its closing evaluation.
    import shutil

    shutil.rmtree(out / "runs" / "tanh" / "seed1")
    (out / "runs" / "relu" / "seed1" / "final.json").unlink()
    finished = (out / "runs" / "relu" / "seed0" / "final.json").stat().st_mtime_ns
    calls = []
    real_fit = runs_module.fit

    def spy(config, *, resume=False, progress=None):
        calls.append((config.train.out, resume))
        return real_fit(config, resume=resume, progress=False)

    monkeypatch.setattr(runs_module, "fit", spy)
    again = run_experiment(tiny(), str(tiny_store), out, say=said.append)
    assert sorted(calls) == [
        (str(out / "runs" / "relu" / "seed1"), True),
        (str(out / "runs" / "tanh" / "seed1"), False),
    ]
    assert (out / "runs" / "relu" / "seed0" / "final.json").stat().st_mtime_ns == finished
    assert [r["test_top1_error"] for r in again["runs"][:2]] == [
        r["test_top1_error"] for r in saved["runs"][:2]
    ]

    # Asking for another budget in the same folder is refused, naming the run and the difference.
    with pytest.raises(Exception, match=r"seed0 holds a run of another setup \(train.epochs: 1 → 2\)"):
        run_experiment(tiny(), str(tiny_store), out, epochs=2, say=said.append)


def test_a_diverged_run_is_recorded_not_raised_and_not_retried(tiny_store, tmp_path, monkeypatch):
    calls = []

    def diverging(config, *, resume=False, progress=None):
        calls.append(config.train.out)
        raise DivergedError("the loss became NaN or infinite in epoch 1 (by step 3); stopped. No checkpoint")

    monkeypatch.setattr(runs_module, "fit", diverging)
    out = tmp_path / "exp"
    results = run_experiment(tiny(False), str(tiny_store), out, seeds=1, say=lambda _: None)
    assert len(calls) == 2 and all(r["diverged"].startswith("the loss became NaN") for r in results["runs"])
    assert results["variants"][1]["difference"] is None
    report = (out / "report.md").read_text()
    assert "| ReLU | diverged (1 of 1) | baseline |" in report and "| tanh | 0 | diverged |" in report
    run_experiment(tiny(False), str(tiny_store), out, seeds=1, say=lambda _: None)
    assert len(calls) == 2  # recorded in diverged.json, not trained again


def test_experiment_list_and_an_unknown_name(capsys):
    assert main(["experiment", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = ["relu-tanh", "ablate", "towers", "init", "sweep", "compare", "transfer"]
    assert [line.split()[0] for line in lines] == names
    assert main(["experiment", "fig9", "--data", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "alexnet: error: unknown experiment 'fig9'; choose one of " + ", ".join(names)


def test_tower_scores_of_a_two_tower_run(small_run):
    from alexnet.analysis.filters import conv1_report
    from alexnet.experiments.studies import PERMUTATIONS, _tower_scores
    from alexnet.loading import load_model

    scores = _tower_scores(small_run / "run")
    report = conv1_report(load_model(small_run / "run" / "checkpoints" / "last.pt", device="cpu").model)
    a, b = report.tower_scores()
    assert scores["tower_scores"] == pytest.approx([a, b])
    assert scores["tower_gap"] == pytest.approx(abs(a - b), abs=1e-6)
    assert len(scores["colour_scores"]) == 64
    assert scores["colour_scores"] == pytest.approx(report.scores.tolist())
    gap, p = permutation_p(scores["colour_scores"], PERMUTATIONS)  # the same test, recomputed
    assert (scores["tower_gap"], scores["permutation_p"]) == pytest.approx((gap, p))


def test_transfer_trains_one_source_model_and_fine_tunes_from_it(tiny_store, tmp_path):
    out = tmp_path / "transfer"
    args = ["experiment", "transfer", "--data", str(tiny_store), "--per-class", "8", "--source-epochs", "1",
            "--epochs", "2", "--seeds", "2", "--out", str(out), "--set", "train.precision=fp32",
            "--set", "train.batch_size=16"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["prelude"]["source_classes"] == ["airplane", "automobile", "bird", "cat", "deer"]
    assert results["prelude"]["target_classes"] == ["dog", "frog", "horse", "ship", "truck"]
    source = json.loads((out / "runs" / "source" / "run.json").read_text())
    assert source["classes"] == 5 and source["weights"] is None
    for seed in (0, 1):
        scratch = json.loads((out / "runs" / "from-scratch" / f"seed{seed}" / "run.json").read_text())
        tuned = json.loads((out / "runs" / "fine-tuned" / f"seed{seed}" / "run.json").read_text())
        assert scratch["weights"] is None and tuned["weights"] == str(out / "runs" / "source")
    runs = {(r["variant"], r["seed"]): r for r in results["runs"]}
    assert set(runs) == {(v, s) for v in ("from scratch", "fine-tuned") for s in (0, 1)}
    assert all(r["epochs"] == 2 and r["final_split"] == "test" for r in runs.values())
    fine = next(v for v in results["variants"] if v["name"] == "fine-tuned")
    values = [
        runs["fine-tuned", s]["test_accuracy"] - runs["from scratch", s]["test_accuracy"] for s in (0, 1)
    ]
    assert fine["difference"]["mean"] == pytest.approx(sum(values) / 2)
    report = (out / "report.md").read_text()
    assert "Source model: the cifar10 recipe on all training images of airplane, automobile" in report
    assert "| fine-tuned |" in report and "| from scratch |" in report
    # a second launch reuses the source model and every run
    assert main(args) == 0
    assert json.loads((out / "results.json").read_text())["runs"] == results["runs"]
