"""Studies of the paper's claims: ``alexnet experiment NAME`` (framework.py runs, studies.py defines)."""

from .framework import Experiment, Metric, Tune, Variant, run_experiment
from .studies import EXPERIMENTS, describe, experiment

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "Metric",
    "Tune",
    "Variant",
    "describe",
    "experiment",
    "run_experiment",
]
