"""Studies of the paper's claims and the published reproductions: ``alexnet experiment NAME``.

spec.py says what an experiment is; framework.py runs variants × seeds and writes the report;
studies.py and reproductions.py define the experiments; catalogue.py names them.
"""

from .catalogue import CATALOGUE, describe, experiment
from .framework import run_experiment
from .spec import Experiment, Metric, Tune, Variant

__all__ = ["CATALOGUE", "Experiment", "Metric", "Tune", "Variant", "describe", "experiment", "run_experiment"]
