"""Training: the loop, optimisers and schedules, checkpoints, logging, torch.distributed glue."""

from .checkpoint import load_checkpoint, save_checkpoint
from .loop import RunResult, fit, train_one_epoch
from .optim import PaperSGD, Schedule, make_optimizer

__all__ = [
    "PaperSGD",
    "RunResult",
    "Schedule",
    "fit",
    "load_checkpoint",
    "make_optimizer",
    "save_checkpoint",
    "train_one_epoch",
]
