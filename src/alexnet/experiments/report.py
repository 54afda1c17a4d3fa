"""report.md of an experiment, written from its results.json numbers only."""

from __future__ import annotations

from .spec import Experiment


def _cell(summary: dict, digits: int) -> str:
    """mean ± std, and how many seeds have no number (diverged, or never reached a target)."""
    of, diverged, missing = summary["of"], summary.get("diverged", 0), summary["of"] - summary["n"]
    if summary["mean"] is None:
        return (
            (f"diverged ({diverged} of {of})" if diverged else f"not reached ({missing} of {of})")
            if of
            else "—"
        )
    text = f"{summary['mean']:,.{digits}f}"
    if summary["n"] > 1 and summary["std"] > 0:  # a count that every seed shares has no spread to show
        text += f" ± {summary['std']:,.{digits}f}"
    if missing:
        text += f" ({diverged} of {of} diverged)" if diverged else f" ({missing} of {of} not reached)"
    return text


def _difference(entry: dict, digits: int) -> str:
    if "difference" not in entry:
        return "baseline"
    d = entry["difference"]
    if d is None:
        return "—"
    return f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"


def _epochs(results: dict) -> str:
    """The epochs the runs were given: one number, or each variant's own (an epochs sweep)."""
    given = sorted({int(r["epochs"]) for r in results["runs"] if not r.get("diverged")})
    return (
        f"{given[0]} epochs"
        if len(given) == 1
        else f"{', '.join(map(str, given))} epochs (each variant's own)"
    )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def report_markdown(experiment: Experiment, results: dict, extra: list[str], figures: list[str]) -> str:
    p = experiment.primary
    runs = results["runs"]
    lines = [
        f"# {experiment.title}",
        "",
        f"`{results['command']}`" if results["command"] else "",
        "",
        f"- Data: `{results['data']}`; recipe `{results['preset']}`"
        + (
            f" with {', '.join(f'{k}={v}' for k, v in results['study_sets'].items())}"
            if results["study_sets"]
            else ""
        )
        + (f"; and {', '.join(f'{k}={v}' for k, v in results['sets'].items())}" if results["sets"] else "")
        + ".",
        f"- Budget: {_epochs(results)}, "
        + (
            f"seeds 0–{results['seeds'] - 1} ({results['seeds']} per variant)"
            if results["seeds"] > 1
            else "seed 0"
        )
        + f"; precision {', '.join(results['precision']) or '?'}; "
        f"machine: {results['machine']}.",
        f"- Total training time: {_minutes(sum(r['wall_seconds'] for r in runs if not r.get('reevaluated')))}"
        ".",
    ]
    lines += [f"- {note}" for note in results["notes"]]
    if results.get("tuning"):
        t = results["tuning"]
        picked = ", ".join(f"{name}: {value}" for name, value in t["picked"].items())
        lines.append(
            f"- {t['key']} picked per variant from {{{', '.join(t['values'])}}} by the lowest "
            f"{t['metric']} after {t['epochs']} epochs on seed 0: {picked}."
        )
    lines += [
        "",
        "Mean ± std over seeds; Δ is the variant minus the baseline with its 95 % interval "
        "(Welch's t; paired over seeds where a variant re-evaluates the baseline's own models).",
        "",
    ]
    header = [
        "variant",
        p.label,
        "Δ [95 % CI]",
        "paper",
        "agreement",
        *(m.label for m in experiment.metrics),
        "images/s",
        "train time",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in results["variants"]:
        mine = [r for r in runs if r["variant"] == entry["name"]]
        s = entry["summary"]
        reeval = any(r.get("reevaluated") for r in mine)
        rates = [r["images_per_second"] for r in mine if r.get("images_per_second")]
        speed = "same runs" if reeval else f"{sum(rates) / len(rates):.0f}" if rates else "—"
        wall = "same runs" if reeval else _minutes(sum(r["wall_seconds"] for r in mine) / len(mine))
        row = [
            entry["name"],
            _cell(s[p.key], p.digits),
            _difference(entry, p.digits),
            entry["claim"] or "—",
            entry.get("verdict", "—"),
            *(_cell(s[m.key], m.digits) for m in experiment.metrics),
            speed,
            wall,
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Train time is per run (mean over seeds); images/s is the median over epochs of the training "
        "rate, and a time to a target is the epochs to it × the run's median epoch time: medians, "
        "so that other work on the machine for a while does not count.",
    ]
    if extra:
        lines += ["", *extra]
    if figures:
        lines += ["", "## Figures", "", *figures]
    lines += [
        "",
        "## Per seed",
        "",
        "| variant | seed | " + " | ".join([p.label, *(m.label for m in experiment.metrics)]) + " |",
        "|" + "---|" * (3 + len(experiment.metrics)),
    ]
    for r in runs:
        missing = "diverged" if r.get("diverged") else "not reached"
        shown = [
            missing if r.get(m.key) is None else f"{r[m.key]:,.{m.digits}f}" for m in (p, *experiment.metrics)
        ]
        lines.append(f"| {r['variant']} | {r['seed']} | " + " | ".join(shown) + " |")
    lines += [
        "",
        "Every number above is in results.json beside this file; the run directories are under "
        "runs/ where the experiment ran (not committed: checkpoints).",
    ]
    return "\n".join(lines) + "\n"
