"""The run folder, the contract between stages: this module alone names, writes and reads its files.

A run folder describes itself (nanoGPT's checkpoint-holds-its-config): ``config.yaml`` is the resolved
TrainConfig it was made with, so any stage can rebuild the run's setting from the folder alone.

  config.yaml          resolved TrainConfig                                 start (train), write_config (worker)
  status.json          running | failed (with the error) | complete        start, record_failure, finish
  history.csv          per-epoch losses and metrics                         write_history
  <part>_ids.csv       image ids (and labels) of a part, rows in order      write_part
  <part>_probs.npy     probability of the positive class, one per id row    write_part
                       parts: valid, test (unlabelled, e.g. Kaggle), labelled_test (data.test_pct), unseen
  learner.pkl          exported fastai learner (em_traces runs: model.pkl, named by metrics.json's model_file)
  manifest.json        SHA-256 of every artifact above (what load_learner trusts)      finish
  metrics.json         written last: status "complete" marks the run complete          finish
  train.log, worker.log  the run's log; its console output when a sweep runs quiet
  plots/, checkpoints/ later stages' plots; the effnetv2_bce recipe's checkpoints (their own SHA-256 records)

Writers are ``start``, ``write_part``, ``write_history``, ``finish``; readers are ``is_complete``,
``read_metrics``, ``read_record``, ``read_config``, ``read_ids``, ``read_probs``, ``read_part``,
``model_path``, ``cache_dir``. Ids are always read as text with ``keep_default_na=False``: an image called
"NA" or "null" is an id, never a missing value.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import atomic, metrics
from .atomic import file_sha256
from .config import TrainConfig, dump_yaml, load_train_config

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
STATUS = "status.json"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
HISTORY = "history.csv"
LEARNER = "learner.pkl"
MODEL = "model.pkl"  # em_traces: the fitted scikit-learn pipeline instead of a learner
TRAIN_LOG = "train.log"
WORKER_LOG = "worker.log"  # a run's console output (bars, epoch tables) when the sweep runs quiet
PLOTS = "plots"
CHECKPOINTS = "checkpoints"
PARTS = ("valid", "test", "labelled_test", "unseen")  # prediction parts, each <part>_ids.csv + <part>_probs.npy
MUTABLE = {MANIFEST, METRICS, STATUS, TRAIN_LOG}  # rewritten after the run, or still open
# not in the manifest: plots/ is written by later stages (report); checkpoints/ carry their own SHA-256 in
# last.json / best.json, which resume checks (hashing them again here cost a read of each, optimizer state too)
LATER_DIRS = {PLOTS, CHECKPOINTS}
FOLD_PREFIX = "fold_"  # a K-fold run's sub-runs: fold_0/ .. fold_<K-1>/, each a run folder with its own manifest


def fold_name(k: int) -> str:
    return f"{FOLD_PREFIX}{k}"


def is_fold_dir(path: Path) -> bool:
    """A fold sub-run of a K-fold run (fold_<k>/ beside the parent's config.yaml): never a run of its own in
    listings, leaderboards or ensembles (the parent holds its out-of-fold predictions)."""
    path = Path(path)
    return path.name.startswith(FOLD_PREFIX) and path.name[len(FOLD_PREFIX):].isdigit() and \
        (path.parent / CONFIG).is_file()


def fold_dirs(run_dir: Path, found: dict[str, Any] | None = None) -> list[Path]:
    """The fold sub-runs of a complete K-fold run (metrics.json's fold_runs), or [] for an ordinary run."""
    found = read_metrics(run_dir) if found is None else found
    return [Path(run_dir) / name for name in found.get("fold_runs", [])]


class RunError(ValueError):
    """A folder is not a complete, readable run; the message names the folder and why."""


ID_COLUMNS = ("label", "group", "fold")  # beside the id in a labelled part's ids file, when known


def ids_file(part: str) -> str:
    return f"{part}_ids.csv"


def probs_file(part: str) -> str:
    return f"{part}_probs.npy"


@dataclass(frozen=True)
class RunResult:
    """What a finished run produced: its folder and its metrics."""

    run_dir: Path
    metrics: dict[str, Any]

    @property
    def learner_path(self) -> Path:
        return self.run_dir / LEARNER

    @property
    def model_path(self) -> Path:
        """The learner, or an em_traces run's scikit-learn model."""
        return self.run_dir / self.metrics.get("model_file", LEARNER)


# ------------------------------------------------------------------------------------------------ writing
def start(run_dir: Path, cfg: TrainConfig) -> None:
    """Clear what an interrupted attempt left (only our own files), record the config and status "running"."""
    atomic.make_dir(run_dir)  # read-only or a file in the way: one line naming the folder and the fix
    for name in (METRICS, STATUS, MANIFEST, LEARNER, MODEL, *(probs_file(p) for p in PARTS)):
        (run_dir / name).unlink(missing_ok=True)
    for partial in [*run_dir.glob(".tmp-*"), *run_dir.glob(f"{CHECKPOINTS}/.tmp-*")]:  # a killed write's leftovers
        partial.unlink(missing_ok=True)
    write_config(run_dir, cfg)
    write_status(run_dir, {"status": "running", "pid": os.getpid()})


def write_config(run_dir: Path, cfg: TrainConfig) -> Path:
    return atomic.write_text(Path(run_dir) / CONFIG, dump_yaml(cfg))


def write_status(run_dir: Path, record: dict[str, Any]) -> Path:
    return atomic.write_json(Path(run_dir) / STATUS, record)


def record_failure(run_dir: Path, e: BaseException) -> None:
    """status.json "failed" with the error; best effort, so a full or read-only disk never hides the real error."""
    try:
        write_status(run_dir, {"status": "failed", "error": f"{type(e).__name__}: {e}",
                               "traceback": traceback.format_exc()})
    except OSError as write_error:
        log.error("could not record the failure in %s: %s", Path(run_dir) / STATUS, write_error)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save on a path would append ".npy" to the temp name
        np.save(f, np.asarray(arr, dtype=np.float32))


def write_part(run_dir: Path, part: str, frame: pd.DataFrame, probs: np.ndarray) -> None:
    """A part's ids (with labels, groups and folds when the frame has them) and its probabilities of the positive
    class. Groups and folds go with the ids because the ensembler scores per group and selects across folds."""
    columns = ["id", *(c for c in ID_COLUMNS if c in frame.columns and part != "test")]
    atomic.write_csv(run_dir / ids_file(part), frame[columns])
    atomic.write_with(run_dir / probs_file(part), lambda p: _save_npy(p, probs))


def write_predictions(run_dir: Path, valid: pd.DataFrame, valid_probs: np.ndarray,
                      test: pd.DataFrame, test_probs: np.ndarray) -> None:
    """Validation (id, label) and unlabelled test (id) probabilities of the positive class with their ids."""
    write_part(run_dir, "valid", valid, valid_probs)
    write_part(run_dir, "test", test, test_probs)


def write_history(run_dir: Path, history: pd.DataFrame) -> Path:
    return atomic.write_csv(Path(run_dir) / HISTORY, history)


TEST_KEYS = ("auc", "accuracy", "precision", "recall", "f1", "log_loss")  # scored on the labelled test part
UNSEEN_KEYS = ("auc", "accuracy", "log_loss")
HELD_OUT_PARTS = {"labelled_test": ("test_", TEST_KEYS), "unseen": ("unseen_", UNSEEN_KEYS)}  # part -> prefix, keys


def score_held_out(prepared, run_dir: Path, predict: Callable[[str, pd.DataFrame], np.ndarray]) -> dict[str, Any]:
    """Scores on the images that were neither trained on nor used to pick anything, each part written.

    The split's labelled test part (``data.test_pct``) as ``test_*`` with a confusion matrix, and the
    optional unseen/ set (e.g. held-out generator families) as ``unseen_*``; ``predict(part name, frame)``
    gives the probabilities of the positive class.
    """
    scores: dict[str, Any] = {}
    for name, (prefix, keys) in HELD_OUT_PARTS.items():
        frame = getattr(prepared, name)
        if frame.empty:
            continue
        probs = predict(name, frame)
        write_part(run_dir, name, frame, probs)
        y = (frame.label == prepared.positive_class).to_numpy().astype(int)
        found = metrics.classification(y, probs)
        scores |= {f"{prefix}{k}": found[k] for k in keys} | {f"n_{name}": len(probs)}
        if name == "labelled_test":
            scores["test_confusion"] = metrics.confusion(y, probs)
    return scores


def build_manifest(run_dir: Path) -> dict[str, Any]:
    """{"files": {relative path: sha256}} of every artifact in ``run_dir`` (not the mutable or later files)."""
    run_dir = Path(run_dir)
    files = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(run_dir)
        if rel.name in MUTABLE or rel.name.startswith(".") or rel.parts[0] in LATER_DIRS or \
                (len(rel.parts) > 1 and is_fold_dir(run_dir / rel.parts[0])):
            continue
        files[rel.as_posix()] = file_sha256(path)
    return {"files": files}


def finish(run_dir: Path, result: dict[str, Any]) -> RunResult:
    """The one way a run completes: manifest (after every artifact), metrics.json (marks it complete), status."""
    atomic.write_json(run_dir / MANIFEST, build_manifest(run_dir))
    atomic.write_json(run_dir / METRICS, {**result, "status": "complete"})
    write_status(run_dir, {"status": "complete"})
    log.info("run %s: AUC %.4f, accuracy %.4f", result.get("run", run_dir.name), result["auc"], result["accuracy"])
    return RunResult(run_dir, {**result, "status": "complete"})


def add_metrics(run_dir: Path, extra: dict[str, Any]) -> Path:
    """Add keys to a complete run's metrics.json (atomic rewrite; everything else unchanged, still complete)."""
    return atomic.write_json(Path(run_dir) / METRICS, {**read_metrics(run_dir), **extra})


# ------------------------------------------------------------------------------------------------ reading
RENAMED_METRICS = {"item_resize": "item_resize_px"}  # metrics.json keys of older run folders -> today's


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """metrics.json, with the keys of older run folders under today's names."""
    found = json.loads((Path(run_dir) / METRICS).read_text())
    for old, new in RENAMED_METRICS.items():
        if old in found:
            found.setdefault(new, found.pop(old))
    return found


def is_complete(run_dir: Path) -> bool:
    """A run is complete iff its metrics.json parses and says so (it is written last, atomically)."""
    try:
        return read_metrics(run_dir).get("status") == "complete"
    except (OSError, ValueError, AttributeError):
        return False


def read_record(run_dir: Path) -> dict[str, Any]:
    """What a leaderboard knows of one run folder: its metrics if complete, else its status and error."""
    run_dir = Path(run_dir)
    if is_complete(run_dir):
        return {"run": run_dir.name, **read_metrics(run_dir)}
    try:
        return {"run": run_dir.name, **_interrupted_if_gone(json.loads((run_dir / STATUS).read_text()))}
    except (OSError, ValueError, TypeError):
        return {"run": run_dir.name, "status": "not started"}


def _interrupted_if_gone(record: dict[str, Any]) -> dict[str, Any]:
    """A "running" record whose process is gone (killed, e.g. with its sweep) is shown as interrupted."""
    pid = record.get("pid")
    if record.get("status") != "running" or not isinstance(pid, int) or _alive(pid):
        return record
    return {**record, "status": "interrupted", "error": f"its process ({pid}) is gone: rerun the sweep to redo it"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def read_config(run_dir: Path) -> TrainConfig:
    """The resolved config a run folder was made with."""
    return load_train_config(Path(run_dir) / CONFIG)


def find_runs(folder: Path) -> list[Path]:
    """``folder`` if it is a run folder, else the run folders (complete or not) one or two levels below it."""
    folder = Path(folder)
    if (folder / METRICS).is_file():
        return [folder]
    found = (p.parent for pattern in (f"*/{METRICS}", f"*/*/{METRICS}") for p in folder.glob(pattern))
    return sorted(p for p in found if not is_fold_dir(p))


def has_part(run_dir: Path, part: str) -> bool:
    return (Path(run_dir) / ids_file(part)).is_file()


def read_ids(run_dir: Path, part: str) -> pd.DataFrame:
    """A part's ids (and labels) with every column as text: ids like 000123, NA or null stay strings."""
    return pd.read_csv(Path(run_dir) / ids_file(part), dtype=str, keep_default_na=False)


def read_probs(run_dir: Path, part: str, n: int) -> np.ndarray:
    """A part's probabilities, checked to be ``n`` finite values in [0, 1]; RunError otherwise."""
    path = Path(run_dir) / probs_file(part)
    probs = np.load(path).astype(np.float64).reshape(-1)
    if len(probs) != n:
        raise RunError(f"{path}: {len(probs)} probabilities for {n} ids; the run folder is inconsistent")
    if not np.isfinite(probs).all() or probs.min(initial=0) < 0 or probs.max(initial=1) > 1:
        raise RunError(f"{path}: probabilities must be finite and in [0, 1]")
    return probs


def read_part(run_dir: Path, part: str, positive: str | None = None) -> pd.DataFrame:
    """A part's ids joined with its probabilities (``prob``), and ``y`` (1 = positive) when ``positive`` is given.

    A run without the part (e.g. no test images) gives an empty frame with id and prob.
    """
    if not has_part(run_dir, part):
        return pd.DataFrame({"id": pd.Series([], dtype=object), "prob": pd.Series([], dtype=float)})
    ids = read_ids(run_dir, part)
    frame = ids.assign(prob=read_probs(run_dir, part, len(ids)))
    if positive is not None:
        frame["y"] = (frame["label"] == positive).astype(int)
    return frame


def read_history(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / HISTORY
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def same_split(run_a: Path, run_b: Path) -> bool:
    """Whether two runs hold the same validation ids and labels, in the same order (byte-identical files)."""
    return (Path(run_a) / ids_file("valid")).read_bytes() == (Path(run_b) / ids_file("valid")).read_bytes()


def model_path(run_dir: Path, found: dict[str, Any] | None = None) -> Path:
    """The run's learner.pkl, or the file metrics.json names as its model (em_traces: model.pkl)."""
    found = read_metrics(run_dir) if found is None and (Path(run_dir) / METRICS).is_file() else (found or {})
    return Path(run_dir) / found.get("model_file", LEARNER)


def learner_path(run_dir: Path) -> Path:
    """The run's exported fastai learner; for a K-fold run, fold 0's (each fold's is in its own folder)."""
    found = read_metrics(run_dir) if is_complete(run_dir) else {}
    folds = fold_dirs(run_dir, found)
    return (folds[0] if folds else Path(run_dir)) / LEARNER


def cache_dir(run_dir: Path, found: dict[str, Any] | None = None) -> Path:
    """The data-cache folder of the images the run was fed (recorded by the run as ``cache_dir``).

    Run folders written before ``cache_dir`` was recorded: the folder data.prepare used then, beside the split.
    """
    found = read_metrics(run_dir) if found is None else found
    if found.get("cache_dir"):
        return Path(found["cache_dir"])
    if not found.get("split_file"):
        raise FileNotFoundError(f"{Path(run_dir) / METRICS} records neither cache_dir nor split_file, so the "
                                f"run's images cannot be found")
    px = found.get("item_resize_px") or read_config(run_dir).item_resize_px
    return Path(found["split_file"]).parent / f"{px}px"


def config_differences(stored: TrainConfig, cfg: TrainConfig) -> list[str]:
    """Top-level TrainConfig fields that differ between two configs."""
    a, b = dataclasses.asdict(stored), dataclasses.asdict(cfg)
    return sorted(k for k in a if a[k] != b[k])
