"""Read a finished run, or a whole sweep, back from its folders (for notebooks and the HTML report).

Artifacts only: nothing here imports torch or fastai. ``Run.learner()`` loads the exported learner on demand::

    run = load_run("runs/quickstart/resnet18_r64-64_fine_tune_s42")
    run.metrics["auc"], run.valid.head(), run.history
    learn = run.learner()          # fastai Learner, on the CPU

    sweep = load_sweep("runs/quickstart")
    sweep.leaderboard, [r.name for r in sweep.runs], sweep.others
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from . import runfolder
from .config import TrainConfig, load_yaml
from .runfolder import RunError, is_complete

__all__ = ["Run", "RunError", "RunStatus", "Sweep", "load_run", "load_sweep"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Run:
    """One complete run, as its folder records it."""

    path: Path  # the run folder
    config: TrainConfig  # resolved config the run was made with
    metrics: dict[str, Any]  # metrics.json
    history: pd.DataFrame  # history.csv: epoch, train_loss, valid_loss and the metrics, one row per epoch
    valid: pd.DataFrame  # id, label (class name), prob (of the positive class), y (1 = positive class)
    test: pd.DataFrame  # id, prob (empty when the data set has no test images)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def positive_class(self) -> str:
        return str(self.metrics.get("positive_class", "fake"))

    @property
    def negative_class(self) -> str:
        return str(self.metrics.get("negative_class", "real"))

    def learner(self, cpu: bool = True, trust: bool = False):
        """The exported fastai learner (imports fastai now; see deepfake_fastai.learner.load_learner)."""
        from .learner import load_learner

        return load_learner(runfolder.learner_path(self.path), cpu=cpu, trust=trust)  # a K-fold run: fold 0's


class RunStatus(NamedTuple):
    """A run of a sweep that is not complete (or not readable): its name, status and error."""

    name: str
    status: str  # failed | running | not started | unreadable
    error: str


@dataclass(frozen=True, eq=False)
class Sweep:
    """A sweep folder: its leaderboard, its complete runs (best first) and the others."""

    path: Path  # runs/<sweep name>
    metric: str  # leaderboard metric (auc | accuracy | log_loss)
    leaderboard: pd.DataFrame  # the columns of leaderboard.csv, best first
    runs: tuple[Run, ...]  # complete runs, in leaderboard order
    others: tuple[RunStatus, ...]  # failed, running, not started or unreadable runs, in leaderboard order

    @property
    def name(self) -> str:
        return self.path.name

    def run(self, name: str) -> Run:
        """The complete run called ``name``."""
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(f"{self.path}: no complete run named {name!r}; complete: {[r.name for r in self.runs]}")


# ----------------------------------------------------------------------------------------------- one run
def _why_incomplete(path: Path) -> str:
    """What the folder says about itself, for the error message."""
    if not path.is_dir():
        return "no such folder"
    record = runfolder.read_record(path)
    error = record.get("error")
    return f"status: {record.get('status', 'unknown')}" + (f", error: {error}" if error else "")


def load_run(path: Path | str) -> Run:
    """Read a complete run folder; RunError naming the folder when it is not one."""
    path = Path(path)
    if not is_complete(path):
        raise RunError(f"{path} is not a complete run ({_why_incomplete(path)}); a run is complete when its "
                       f"{runfolder.METRICS} says status 'complete'")
    metrics = runfolder.read_metrics(path)
    try:
        valid = runfolder.read_part(path, "valid", str(metrics.get("positive_class", "fake")))
        test = runfolder.read_part(path, "test")
        history = runfolder.read_history(path)
    except RunError:
        raise
    except (OSError, ValueError, KeyError) as e:  # a missing/garbled artifact in a folder marked complete
        raise RunError(f"{path}: cannot read the run's artifacts: {e}") from e
    return Run(path=path, config=runfolder.read_config(path), metrics=metrics, history=history, valid=valid,
               test=test)


# --------------------------------------------------------------------------------------------- a sweep
def load_sweep(path: Path | str) -> Sweep:
    """Read a sweep folder: its leaderboard (recomputed from the run folders) and every run's state."""
    from .sweep import LEADERBOARD_COLUMNS, load_leaderboard

    path = Path(path)
    rows = load_leaderboard(path)  # FileNotFoundError naming the folder when there is no sweep.yaml
    metric = str(load_yaml(path / "sweep.yaml").get("metric", "auc"))
    runs, others = [], []
    for row in rows:
        if row.get("status") != "complete":
            others.append(RunStatus(row["run"], str(row.get("status", "unknown")), str(row.get("error") or "")))
            continue
        try:
            runs.append(load_run(path / row["run"]))
        except (RunError, ValueError) as e:  # ConfigError is a ValueError too
            log.warning("%s: %s", row["run"], e)
            others.append(RunStatus(row["run"], "unreadable", str(e)))
    leaderboard = pd.DataFrame(rows).reindex(columns=LEADERBOARD_COLUMNS)
    return Sweep(path=path, metric=metric, leaderboard=leaderboard, runs=tuple(runs), others=tuple(others))
