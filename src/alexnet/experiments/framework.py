"""One way to run a study: named variants of one recipe, each trained with ``fit`` for n seeds.

Every (variant, seed) is its own run directory under ``OUT/runs/``, trained one after another,
so a killed experiment started again resumes the unfinished run and does not redo finished ones
(a run is finished when its final.json is there). Everything the report says is first written to
``OUT/results.json``; ``report.md`` and the figures are drawn from it.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ..config import RunConfig, to_dict
from ..errors import AlexNetError
from ..evaluate import evaluate_checkpoint
from ..fileio import write_atomic
from ..loading import resolve_run
from ..runtime import cpu_flags
from ..train.run_dir import RunDir
from .launchers import Launch, launch
from .report import report_markdown
from .spec import Experiment, Prelude, Variant, slug
from .stats import crossing, difference_interval, mean_std, verdict


def run_config(
    experiment: Experiment,
    variant: Variant,
    data: str,
    seed: int,
    epochs: int,
    out: Path,
    sets: Mapping[str, str] | None = None,
) -> RunConfig:
    # the budget first: an epochs sweep's variants set their own
    values = {"train.epochs": str(epochs), **experiment.sets, **variant.sets, **(sets or {})}
    values.update({"data.source": data, "train.seed": str(seed), "train.out": str(out)})
    return resolve_run(experiment.preset, sets=values)


def _diverged_record(root: Path, reason: str) -> dict:
    rows = root / "metrics.jsonl"
    history = [json.loads(line) for line in rows.read_text().splitlines() if line] if rows.is_file() else []
    return {
        "diverged": reason.split(";")[0],
        "history": history,
        "epochs": len(history),
        "wall_seconds": sum(r["seconds"] for r in history),
        "images_per_second": None,
    }


def run_record(root: Path, target: tuple[str, float] | None) -> dict:
    """The numbers of one finished run, read from its files (so fresh and reused runs are alike)."""
    history = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines() if line]
    final = json.loads((root / "final.json").read_text())
    info = json.loads((root / "run.json").read_text())
    record = {
        "test_top1_error": final["top1_error"],
        "test_accuracy": 100.0 - final["top1_error"],
        "test_top5_error": final["top5_error"],
        "test_loss": final["loss"],
        "final_split": final.get("split"),
        "train_top1_error": history[-1]["train_top1_error"],
        "train_loss": history[-1]["train_loss"],
        "val_top1_error": history[-1]["val_top1_error"],
        "epochs": len(history),
        # medians over epochs: robust to other work sharing the machine for a while
        "images_per_second": statistics.median(r["images_per_second"] for r in history),
        "epoch_seconds": statistics.median(r["seconds"] for r in history),
        "wall_seconds": sum(r["seconds"] for r in history),
        "precision": info.get("precision"),
        "device": info.get("device"),
        "history": history,
    }
    if target is not None:
        key, value = target
        at = crossing(history, key, value)
        record["epochs_to_target"] = at
        record["seconds_to_target"] = None if at is None else at * record["epoch_seconds"]
    return record


def machine() -> str:
    """The CPU kind a number came from (the project compares speed only within one kind)."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    flags = cpu_flags()
    kind = (
        "AMX bf16"
        if "amx_bf16" in flags
        else "AVX-512"
        if "avx512f" in flags
        else "AVX2"
        if "avx2" in flags
        else "?"
    )
    threads = torch.get_num_threads()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{name} ({kind}, {threads} threads){gpu}; torch {torch.__version__}"


def run_experiment(
    experiment: Experiment,
    data: str,
    out: str | Path,
    *,
    seeds: int | None = None,
    epochs: int | None = None,
    sets: Mapping[str, str] | None = None,
    command: str = "",
    progress: bool | None = None,
    say: Callable[[str], None] = print,
    how: Launch | None = None,
) -> dict:
    """Train every (variant, seed) not yet finished, then write results.json, report.md and figures.

    ``how``: the launcher that runs them (one after another here by default; local processes, Ray
    or SLURM). The report is written once every run has finished, from the run directories alone;
    runs that did not (failed, or busy in another launch) are named, and the command run again
    finishes them.
    """
    out = Path(out)
    seeds = seeds or experiment.seeds
    epochs = epochs or experiment.epochs
    sets = dict(sets or {})
    how = how or Launch()
    prelude = experiment.prelude(data, out, sets, progress, say) if experiment.prelude else Prelude()
    run_sets = {**prelude.sets, **sets}  # the user's own win
    picks = _tune(experiment, data, out, run_sets, progress, say, how) if experiment.tune else {}
    planned = []  # (variant, seed, run directory, config)
    for variant in (v for v in experiment.variants if v.reevaluate is None):
        extra = {experiment.tune.key: picks[variant.name]} if variant.name in picks else {}
        extra.update(prelude.variant_sets.get(variant.name, {}))
        for seed in range(seeds):
            root = out / "runs" / slug(variant.name) / f"seed{seed}"
            planned.append((variant, seed, root, run_config(experiment, variant, data, seed, epochs, root,
                                                            {**run_sets, **extra})))  # fmt: skip
    say(f"[{experiment.name}] {len(planned)} runs under {out / 'runs'}")
    statuses = launch([to_dict(c) for *_, c in planned], how, say)
    unfinished = [(root, status) for (_, _, root, _), status in zip(planned, statuses, strict=True)
                  if status.startswith(("failed", "busy"))]  # fmt: skip
    if unfinished:
        root, status = unfinished[0]
        raise AlexNetError(
            f"{len(unfinished)} of {len(planned)} runs have not finished ({root}: "
            f"{status.splitlines()[0][:200]}); run the command again: finished runs are reused, started "
            "ones resume"
        )
    records = []
    for (variant, seed, root, _), status in zip(planned, statuses, strict=True):
        record = {"variant": variant.name, "seed": seed, "run_dir": str(root.relative_to(out))}
        if status.startswith("diverged"):
            records.append({**record, **_diverged_record(root, status.removeprefix("diverged: "))})
            continue
        record.update(run_record(root, experiment.target))
        if experiment.per_run:
            record.update(experiment.per_run(root))
        records.append(record)
    for variant in experiment.variants:
        if variant.reevaluate is not None:
            records += _reevaluate(
                experiment,
                variant,
                data,
                out,
                [r for r in records if r["variant"] == experiment.baseline.name],
                say,
            )
    results = summarise(experiment, records)
    results.update(
        experiment=experiment.name,
        title=experiment.title,
        command=command,
        data=data,
        seeds=seeds,
        epochs=epochs,
        sets=sets,
        preset=experiment.preset,
        study_sets=dict(experiment.sets),
        machine=machine(),
        precision=sorted({r["precision"] for r in records if r.get("precision")}),
        tuning=picks
        and {
            "key": experiment.tune.key,
            "values": list(experiment.tune.values),
            "epochs": experiment.tune.epochs,
            "metric": experiment.tune.metric,
            "picked": picks,
        },
        target=experiment.target,
        notes=[*experiment.notes, *prelude.notes],
        prelude=dict(prelude.results),
    )
    write_outputs(experiment, results, out)
    return results


def _tune(
    experiment: Experiment, data: str, out: Path, sets: dict, progress, say, how: Launch
) -> dict[str, str]:
    """Each variant's value of the tuned key: its grid's runs (through the launcher, all at once),
    then the value with the lowest metric on seed 0."""
    tune = experiment.tune
    variants = [v for v in experiment.variants if v.reevaluate is None and tune.key not in sets]
    grid = [(v, value, out / "runs" / "tune" / slug(v.name) / slug(f"{tune.key}={value}"))
            for v in variants for value in tune.values]  # fmt: skip
    say(f"[{experiment.name}] grid: {tune.key} in {{{', '.join(tune.values)}}}, {tune.epochs} epochs")
    configs = [to_dict(run_config(experiment, v, data, 0, tune.epochs, root, {**sets, tune.key: value}))
               for v, value, root in grid]  # fmt: skip
    failed = [
        (root, s)
        for (_, _, root), s in zip(grid, launch(configs, how, say), strict=True)
        if s.startswith(("failed", "busy"))
    ]
    if failed:
        raise AlexNetError(
            f"{len(failed)} grid run(s) have not finished ({failed[0][0]}: {failed[0][1][:200]}); "
            "run the command again"
        )
    picks = {}
    for variant in variants:
        scores = {
            value: run_record(root, experiment.target)[tune.metric] for v, value, root in grid if v is variant
        }
        picks[variant.name] = min(tune.values, key=lambda v: scores[v])
        say(
            f"  picked {tune.key}={picks[variant.name]} ({tune.metric}: "
            + ", ".join(f"{v}: {s:.2f}" for v, s in scores.items())
            + ")"
        )
    return picks


def _reevaluate(
    experiment: Experiment, variant: Variant, data: str, out: Path, base: list[dict], say
) -> list[dict]:
    records = []
    for record in base:
        path = out / "runs" / slug(variant.name) / f"seed{record['seed']}.json"
        if path.is_file():
            result = json.loads(path.read_text())
        else:
            say(
                f"[{experiment.name}] {variant.name}, seed {record['seed']}: "
                f"evaluating the final model of {record['run_dir']}"
            )
            run = RunDir(out / record["run_dir"], writer=False)
            limit = run.saved_config().data.limit_val  # the images the run's own final evaluation used
            with contextlib.redirect_stderr(io.StringIO()):
                full = evaluate_checkpoint(run.last, data, limit=limit, **dict(variant.reevaluate))
            result = {k: full[k] for k in ("top1_error", "top5_error", "loss", "split")}
            result["images"] = full["count"]
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(result, indent=1))
        records.append(
            {
                **{
                    k: v
                    for k, v in record.items()
                    if k not in ("test_top1_error", "test_top5_error", "test_loss")
                },
                "variant": variant.name,
                "test_top1_error": result["top1_error"],
                "test_top5_error": result["top5_error"],
                "test_loss": result["loss"],
                "reevaluated": True,
            }
        )
    return records


def summarise(experiment: Experiment, records: list[dict]) -> dict:
    """Per variant: mean ± std of every metric over its seeds, and the primary metric's difference
    to the baseline with its 95 % interval and the verdict against the paper's claim."""
    keys = [experiment.primary.key, *(m.key for m in experiment.metrics)]

    primary = experiment.primary.key
    base = {r["seed"]: r.get(primary) for r in records if r["variant"] == experiment.baseline.name}
    variants = []
    for variant in experiment.variants:
        runs = [r for r in records if r["variant"] == variant.name]
        summary = {}
        for key in keys:
            values = [r.get(key) for r in runs]
            known = [v for v in values if v is not None]
            mean, std = mean_std(known) if known else (None, None)
            summary[key] = {
                "mean": mean,
                "std": std,
                "n": len(known),
                "of": len(values),
                "values": values,
                "diverged": sum(1 for r in runs if r.get("diverged")),
            }
        entry = {
            "name": variant.name,
            "sets": dict(variant.sets),
            "claim": variant.claim,
            "claimed": variant.claimed,
            "summary": summary,
        }
        if variant is not experiment.baseline:
            paired = variant.reevaluate is not None
            mine = {r["seed"]: r.get(primary) for r in runs}
            if paired:  # the same seeds' models: compare seed by seed
                seeds = [s for s in mine if mine[s] is not None and base.get(s) is not None]
                a, b = [mine[s] for s in seeds], [base[s] for s in seeds]
            else:  # a diverged or never-reached run has no number to average
                a = [v for v in mine.values() if v is not None]
                b = [v for v in base.values() if v is not None]
            interval = difference_interval(a, b, paired=paired) if a and b else None
            entry["difference"] = (
                None if interval is None else dict(zip(("mean", "low", "high"), interval, strict=True))
            )
            entry["verdict"] = verdict(
                interval, variant.claimed, at_least=variant.at_least, sign_only=variant.sign_only
            )
            entry["paired"] = paired
        variants.append(entry)
    return {"variants": variants, "runs": records}


def write_outputs(experiment: Experiment, results: dict, out: Path) -> None:
    extra_lines: list[str] = []
    if experiment.analyse:
        extra, extra_lines = experiment.analyse(results, out)
        results["analysis"] = extra
    write_atomic(out / "results.json", json.dumps(results, indent=1))
    figure_lines = experiment.figures(results, out) if experiment.figures else []
    write_atomic(out / "report.md", report_markdown(experiment, results, extra_lines, figure_lines))
