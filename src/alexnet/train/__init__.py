"""Training: the loop, optimisers and schedules, the run directory, logging."""

from .loop import RunResult, fit, resume_config, train_one_epoch
from .optim import PaperSGD, Schedule, make_optimizer
from .run_dir import RunDir

__all__ = [
    "PaperSGD",
    "RunDir",
    "RunResult",
    "Schedule",
    "fit",
    "make_optimizer",
    "resume_config",
    "train_one_epoch",
]
