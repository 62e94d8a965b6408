"""K-fold runs (``data.folds: K``): the fold runs' configs, and their results combined into the parent run folder.

A fold run is a run folder like any other, with one ordinary run per fold below it (``fold_<k>/``, validating on
fold k of the shared split file). At its top it holds what every later stage reads, so the leaderboard, the
ensembler, the report and submissions need nothing new: ``valid_*`` are the out-of-fold (OOF) predictions of
every labelled image (each predicted by the one model that did not train on it), ``test_*`` (and the labelled
test part, ``unseen_*``) the mean of the K models, metrics.json the OOF scores plus the per-fold spread.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import metrics, runfolder
from .config import TrainConfig
from .runfolder import RunResult
from .splits import read_split

log = logging.getLogger(__name__)

SHARED_KEYS = ("arch", "recipe", "input", "size", "item_resize_px", "epochs", "precision_mode", "n_test",
               "positive_class", "negative_class", "data_key", "split_file", "cache_dir", "tta", "bad_images")


def fold_config(cfg: TrainConfig, k: int, run_dir: Path) -> TrainConfig:
    """Fold k's run: the same config validating on fold k, in ``<run_dir>/fold_<k>/``."""
    return dataclasses.replace(cfg, name=runfolder.fold_name(k), runs_dir=str(run_dir),
                               data=dataclasses.replace(cfg.data, fold=k))


def combine(cfg: TrainConfig, run_dir: Path, fold_dirs: list[Path]) -> RunResult:
    """OOF validation, mean held-out predictions, mean history and the scores, written to ``run_dir``."""
    found = [runfolder.read_metrics(d) for d in fold_dirs]
    positive = found[0]["positive_class"]
    oof = out_of_fold(fold_dirs, positive, Path(found[0]["split_file"]))
    runfolder.write_part(run_dir, "valid", oof, oof.prob.to_numpy())
    held_out: dict[str, Any] = {}
    for part in runfolder.PARTS[1:]:
        mean = mean_part(fold_dirs, part)
        if mean is None:
            continue
        runfolder.write_part(run_dir, part, mean, mean.prob.to_numpy())
        held_out |= _held_out_scores(part, mean, positive)
    runfolder.write_history(run_dir, mean_history(fold_dirs))
    return runfolder.finish(run_dir, {**scores(oof, found), **held_out, **_record(cfg, found, fold_dirs, run_dir)})


def out_of_fold(fold_dirs: list[Path], positive: str, split_file: Path) -> pd.DataFrame:
    """id, label, [group,] fold, prob, y of every validated image, in split-file order; each image exactly once."""
    parts = [runfolder.read_part(d, "valid", positive).assign(fold=k) for k, d in enumerate(fold_dirs)]
    oof = pd.concat(parts, ignore_index=True)
    twice = oof.id[oof.id.duplicated()]
    if len(twice):
        raise runfolder.RunError(f"{len(twice)} image(s) validated in two folds (e.g. {list(twice[:3])}): the fold "
                                 f"runs under {fold_dirs[0].parent} used different splits; delete the folder")
    order = {i: n for n, i in enumerate(read_split(split_file).id)}
    return oof.assign(_at=oof.id.map(order)).sort_values("_at", kind="stable").drop(columns="_at") \
        .reset_index(drop=True)


def mean_part(fold_dirs: list[Path], part: str) -> pd.DataFrame | None:
    """A held-out part's ids with the mean probability of the K fold models (None when the runs have no such part)."""
    if not runfolder.has_part(fold_dirs[0], part):
        return None
    frames = [runfolder.read_part(d, part) for d in fold_dirs]
    for d, f in zip(fold_dirs[1:], frames[1:], strict=True):
        if list(f.id) != list(frames[0].id):
            raise runfolder.RunError(f"{d}: its {part} ids differ from {fold_dirs[0]}'s: the folds saw other data")
    return frames[0].assign(prob=np.mean([f.prob.to_numpy() for f in frames], axis=0))


def mean_history(fold_dirs: list[Path]) -> pd.DataFrame:
    """The per-epoch history averaged over folds (the learning curve of the fold run)."""
    histories = [h for h in (runfolder.read_history(d) for d in fold_dirs) if not h.empty]
    if not histories:
        return pd.DataFrame()
    joined = pd.concat(histories, ignore_index=True)
    numeric = joined.select_dtypes("number")
    return numeric.groupby("epoch", as_index=False).mean() if "epoch" in numeric else numeric.iloc[:0]


def scores(oof: pd.DataFrame, found: list[dict[str, Any]]) -> dict[str, Any]:
    """OOF metrics (and per group, when the split has groups), each fold's AUC and their spread."""
    y, p = oof.y.to_numpy(), oof.prob.to_numpy()
    out: dict[str, Any] = metrics.validation_scores(y, p, oof.get("group"))
    fold_auc = [round(float(f["auc"]), 4) for f in found]
    return {**out, "fold_auc": fold_auc, "auc_fold_std": round(float(np.std(fold_auc)), 4)}


def _held_out_scores(part: str, frame: pd.DataFrame, positive: str) -> dict[str, Any]:
    if part not in runfolder.HELD_OUT_PARTS or "label" not in frame.columns:
        return {}
    prefix, keys = runfolder.HELD_OUT_PARTS[part]
    y = (frame.label == positive).to_numpy().astype(int)
    found = metrics.classification(y, frame.prob.to_numpy())
    extra = {"test_confusion": metrics.confusion(y, frame.prob.to_numpy())} if part == "labelled_test" else {}
    return {f"{prefix}{k}": found[k] for k in keys} | {f"n_{part}": len(frame)} | extra


def _record(cfg: TrainConfig, found: list[dict[str, Any]], fold_dirs: list[Path], run_dir: Path) -> dict[str, Any]:
    fit_s = sum(float(f.get("fit_time_s", 0.0)) for f in found)
    n_train = sum(int(f.get("n_train", 0)) for f in found)
    return {
        **{k: found[0][k] for k in SHARED_KEYS if k in found[0]},
        "status": "complete", "run": cfg.run_name, "folds": len(fold_dirs),
        "fold_runs": [d.name for d in fold_dirs],
        "n_train": round(n_train / len(found)), "n_valid": sum(int(f.get("n_valid", 0)) for f in found),
        "fit_time_s": round(fit_s, 2), "images_per_s": round(n_train * cfg.epochs / max(fit_s, 1e-9), 1),
        "model_file": str((fold_dirs[0] / found[0].get("model_file", runfolder.LEARNER)).relative_to(run_dir)),
    }
