"""Dispatching an experiment's runs: one after another here, N at a time in local processes, as
tasks on a Ray cluster, or as a SLURM job array through submitit.

Every run is independent and owns its run directory, so a run is a task that needs only its
config: ``run_task`` trains it (or reuses it when finished, or resumes it when started, or records
a NaN stop), in whatever process the engine gives it. A run another process is training is not
started twice: its run directory's lock refuses, and the task says "busy". We write no scheduler:
local processes are ``concurrent.futures``, the rest is Ray's and submitit's.

Ray and submitit are optional (the ``ray`` and ``slurm`` extras); a launcher whose library is
missing is one line naming the extra.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import from_dict
from ..errors import AlexNetError, DivergedError
from ..fileio import write_atomic
from .runs import train_or_resume

LAUNCHERS = ("sequential", "local", "ray", "slurm")
PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies (Linux)


@dataclass(frozen=True)
class Launch:
    """How an experiment's runs are dispatched (``alexnet experiment --launcher ...``)."""

    launcher: str = "sequential"
    jobs: int = 1  # local: runs at a time, the CPU threads split between them
    address: str | None = None  # ray: the cluster's address (None: a Ray instance on this machine)
    partition: str | None = None  # slurm
    time_min: int = 120  # slurm: each run's time limit, minutes
    gpus_per_run: int = 0  # ray and slurm
    cpus_per_run: int | None = None  # ray and slurm (default: the threads a local run would get)
    folder: str | None = None  # slurm: where submitit keeps its logs (default OUT/slurm)
    cluster: str | None = None  # slurm: submitit's cluster ("local" runs the array here, for tests)

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise AlexNetError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        if self.jobs < 1:
            raise AlexNetError(f"--jobs must be ≥ 1, got {self.jobs}")

    def threads(self) -> int:
        """CPU threads per run: the cores split between the runs at a time (2 × 1 thread beat
        1 × 2 threads on the 2-core machines here: the small nets do not use 2 threads fully)."""
        if self.cpus_per_run:
            return self.cpus_per_run
        return max(1, (os.cpu_count() or 1) // (self.jobs if self.launcher == "local" else 1))


def run_task(tree: dict, threads: int | None = None) -> str:
    """Train the run a config (``to_dict``'s tree) describes, in this process: ``trained``,
    ``resumed``, ``reused``, ``diverged: …`` (recorded in its diverged.json, not retried), or
    ``busy: …`` when another process holds the run."""
    if threads:
        torch.set_num_threads(threads)
    config = from_dict(tree)
    marker = Path(config.train.out) / "diverged.json"
    if marker.is_file():
        return f"diverged: {json.loads(marker.read_text())['reason']}"
    try:
        return train_or_resume(config, progress=False)
    except DivergedError as exc:
        write_atomic(marker, json.dumps({"reason": str(exc)}))
        return f"diverged: {exc}"
    except AlexNetError as exc:
        if "is in use by" in str(exc):  # its lock: another launch is training it
            return f"busy: {exc}"
        raise


def launch(trees: list[dict], launch: Launch, say: Callable[[str], None]) -> list[str]:
    """Run every config; the status of each (in order). Errors of a run are its status ("failed:
    …"), so one bad run does not stop the others."""
    if not trees:
        return []
    how = (
        f", {launch.jobs} at a time, {launch.threads()} thread(s) each" if launch.launcher == "local" else ""
    )
    say(f"{len(trees)} run(s) by the {launch.launcher} launcher{how}")
    runner = {"sequential": _sequential, "local": _local, "ray": _ray, "slurm": _slurm}[launch.launcher]
    return runner(trees, launch, say)


def _sequential(trees, launch, say) -> list[str]:
    out = []
    for tree in trees:
        say(f"  {tree['train']['out']}")
        try:
            out.append(run_task(tree))
        except AlexNetError as exc:
            out.append(f"failed: {exc}")
        say(f"    {out[-1].splitlines()[0][:160]}")
    return out


def _worker_init(threads: int) -> None:
    """A local worker: its share of the threads, and dead with the launcher (a killed launcher
    leaves no orphan training runs holding their locks). Ctrl-C reaches every process of the
    terminal's group: outside a run the worker ignores it; a training run's own handler saves its
    checkpoint and stops, so the next launch resumes it."""
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(AttributeError, OSError):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _local(trees, launch, say) -> list[str]:
    # spawn: a fresh interpreter per worker (fork after torch has started its thread pools can hang)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(launch.jobs, mp_context=context, initializer=_worker_init,
                             initargs=(launch.threads(),)) as pool:  # fmt: skip
        futures = [pool.submit(run_task, tree) for tree in trees]
        return _collect(trees, [f.result for f in futures], say, wrapped=False)


def _collect(trees: list[dict], results: list[Callable[[], str]], say, wrapped: bool = True) -> list[str]:
    """Each run's status in order, said as it arrives; a run's error is its status. ``wrapped``:
    the engine wraps the run's error in its own text (Ray's RayTaskError, submitit's
    FailedJobError), whose last line is the run's own."""
    out = []
    for tree, result in zip(trees, results, strict=True):
        try:
            out.append(result())
        except Exception as exc:  # AlexNetError and anything else a run raised
            out.append(f"failed: {str(exc).strip().splitlines()[-1][:300]}" if wrapped else f"failed: {exc}")
        say(f"  {tree['train']['out']}: {out[-1].splitlines()[0][:160]}")
    return out


def _require(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError:
        raise AlexNetError(f"--launcher {extra} needs {module}: pip install 'alexnet[{extra}]'") from None


def _ray(trees, launch, say) -> list[str]:
    ray = _require("ray", "ray")
    if not ray.is_initialized():
        ray.init(address=launch.address, log_to_driver=False, include_dashboard=False)
    remote = ray.remote(num_cpus=launch.threads(), num_gpus=launch.gpus_per_run)(run_task)
    refs = [remote.remote(tree, launch.threads()) for tree in trees]
    return _collect(trees, [lambda ref=ref: ray.get(ref) for ref in refs], say)


def _slurm(trees, launch, say) -> list[str]:
    submitit = _require("submitit", "slurm")
    folder = launch.folder or str(Path(trees[0]["train"]["out"]).parents[2] / "slurm")
    executor = submitit.AutoExecutor(folder=folder, cluster=launch.cluster)
    parameters = {"timeout_min": launch.time_min, "cpus_per_task": launch.threads(), "name": "alexnet"}
    if launch.gpus_per_run:
        parameters["gpus_per_node"] = launch.gpus_per_run
    if launch.partition:
        parameters["slurm_partition"] = launch.partition
    executor.update_parameters(**parameters)
    jobs = executor.map_array(run_task, trees, [launch.threads()] * len(trees))
    say(f"  submitted {len(jobs)} job(s), logs in {folder}")
    return _collect(trees, [job.result for job in jobs], say)
