"""One run of an experiment: trained, resumed where it stopped, or reused when it finished."""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, config_differences
from ..errors import AlexNetError
from ..train import fit
from ..train.run_dir import RunDir


def train_or_resume(config: RunConfig, progress: bool | None) -> str:
    """Train the run of ``config`` unless it finished already; resume it if it started. Returns
    what was done: ``reused``, ``resumed`` or ``trained``."""
    root = Path(config.train.out)
    saved = RunDir(root, writer=False).saved_config() if (root / "config.yaml").is_file() else None
    if saved is not None:
        differences = [d for d in config_differences(saved, config) if d[0] != "data.source"]
        if saved.train.epochs != config.train.epochs and (root / "final.json").is_file():
            differences.append(("train.epochs", saved.train.epochs, config.train.epochs))
        if differences:
            shown = "; ".join(f"{k}: {a!r} → {b!r}" for k, a, b in differences[:3])
            raise AlexNetError(
                f"{root} holds a run of another setup ({shown}); give the experiment another --out "
                f"or the same options"
            )
        if (root / "final.json").is_file():
            return "reused"
    fit(config, resume=saved is not None, progress=progress)
    return "resumed" if saved is not None else "trained"
