"""What an experiment is: named variants of one recipe, the metrics to report, and the paper's claims.

Plain data (frozen dataclasses): studies.py and reproductions.py declare experiments with them,
framework.py runs them and report.py writes them up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Metric:
    key: str  # a key of each run's record (see ``run_record``)
    label: str  # column title
    digits: int = 2


@dataclass(frozen=True)
class Variant:
    name: str
    sets: Mapping[str, str] = field(default_factory=dict)  # config overrides against the base recipe
    claim: str = ""  # the paper's statement, shown beside the measurement
    claimed: float | None = None  # the paper's difference to the baseline in the primary metric
    at_least: bool = False  # the claim is a lower bound ("> 1 %")
    sign_only: bool = False  # the claim has a direction but no size (``claimed`` gives the sign)
    # An evaluation-time change (e.g. centre crop instead of ten crops): the baseline's own final
    # models evaluated again with these evaluate_checkpoint arguments, compared seed by seed.
    reevaluate: Mapping[str, object] | None = None


@dataclass(frozen=True)
class Tune:
    """A short grid per variant before the seeds run (Fig. 1: each net's own learning rate)."""

    key: str  # the config key tuned, e.g. optim.lr
    values: tuple[str, ...]
    epochs: int
    metric: str  # the run-record key minimised on seed 0


@dataclass(frozen=True)
class Prelude:
    sets: Mapping[str, str] = field(default_factory=dict)  # for every run
    variant_sets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # by variant name
    notes: tuple[str, ...] = ()  # what the report says about it
    results: Mapping[str, object] = field(default_factory=dict)  # its numbers, into results.json


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    preset: str
    variants: tuple[Variant, ...]  # the first is the baseline
    primary: Metric
    metrics: tuple[Metric, ...] = ()  # more columns of the table
    sets: Mapping[str, str] = field(default_factory=dict)  # the study's changes to the preset
    epochs: int = 10
    seeds: int = 3
    target: tuple[str, float] | None = None  # (history key, value): epochs until it is first reached
    tune: Tune | None = None
    notes: tuple[str, ...] = ()  # what the report must say about the setup
    per_run: Callable[[Path], dict] | None = None  # more numbers of a finished run, from its files
    # (results, OUT) → (more results, markdown lines); may write figures into OUT
    analyse: Callable[[dict, Path], tuple[dict, list[str]]] | None = None
    # (results, OUT) → markdown lines naming the PNGs it wrote
    figures: Callable[[dict, Path], list[str]] | None = None
    # Work every run depends on, done (or reused) before them: (data, OUT, the user's sets, progress,
    # say) → a Prelude of config values for every run and for named variants (e.g. the source model
    # a fine-tuned variant starts from), and lines for the report.
    prelude: Callable[..., Prelude] | None = None

    @property
    def baseline(self) -> Variant:
        return self.variants[0]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.=-]+", "-", text.lower()).strip("-")
