"""Ensembling: combine the validation/test probabilities of finished runs, read from their run folders only.

Methods (``METHODS``):
  mean      plain mean of the runs' TTA probabilities (what the seed notebook did)
  weighted  weighted mean; weights given, or proportional to each run's validation skill above chance
  rank      mean of per-run normalised ranks: good for AUC when runs are calibrated differently
  greedy    forward selection with replacement on the validation set (Caruana et al. 2004, auto-sklearn's
            ensemble selection); its first pick is the best single run and the best bag seen is kept, so it
            never scores below the best single run on the data it selected on

Selecting on the validation set flatters the selected ensemble, so ``build`` also scores it honestly: select
on one stratified half of the validation set, score on the other half, and the other way round. K-fold runs
(their validation ids carry a ``fold`` column: out-of-fold predictions of every labelled image) are scored
across folds instead: for each fold, select on the other folds and predict its rows; the pooled score of these
out-of-selection predictions is the honest one, with the per-fold spread beside it.

With groups (a ``group`` column: the video of each frame) the scores add group-level ones (a group's
probability is the mean of its images'). For log-loss competitions the submitted probabilities can be
temperature-scaled (one T fitted on the validation / out-of-fold rows) and clipped.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import metrics, runfolder
from .runfolder import is_complete

log = logging.getLogger(__name__)

METHODS = ("mean", "weighted", "rank", "greedy")
METRICS = {"auc": True, "accuracy": True, "log_loss": False}  # metric -> higher is better
CHANCE = {"auc": 0.5, "accuracy": 0.5, "log_loss": float(np.log(2))}  # a coin flip's score, for skill weights
GREEDY_ITERATIONS = 50  # bag size of greedy selection (auto-sklearn's default ensemble_size)
SHOW = 5  # ids named in an error message
FALLBACK_PROB = 0.5  # an undecodable test image's prediction: the uninformed prior (DFDC entries used 0.5). A
# guess, but a submission needs a row for every test file: Kaggle rejects or mis-scores one that lacks a row.


class EnsembleError(ValueError):
    """The runs cannot be ensembled as given; the message names the runs and the fix."""


@dataclass(frozen=True, eq=False)
class RunPredictions:
    """One complete run's predictions, as read from its folder."""

    name: str  # run name (folder name; "<sweep>/<run>" when two sweeps share one)
    run_dir: Path
    valid_ids: np.ndarray  # str, rows in the fixed split order
    y_valid: np.ndarray  # int 0/1, 1 = positive class
    valid_probs: np.ndarray  # float64 probability of the positive class
    test_ids: np.ndarray  # str
    test_probs: np.ndarray  # float64
    positive_class: str
    negative_class: str
    metrics: dict[str, Any] = field(default_factory=dict)  # the run's metrics.json
    # the split's labelled test part (data.test_pct), if the run has one: scored, never used to choose
    ltest_ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    y_ltest: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))
    ltest_probs: np.ndarray = field(default_factory=lambda: np.array([]))
    valid_groups: np.ndarray | None = None  # str: each validation row's group (video), when groups are configured
    valid_folds: np.ndarray | None = None  # int: each validation row's fold, for K-fold (out-of-fold) runs
    ltest_groups: np.ndarray | None = None  # str: the labelled test part's groups


@dataclass(frozen=True, eq=False)
class EnsembleResult:
    """An ensemble: weights over the candidate runs, its probabilities and its validation scores."""

    method: str
    metric: str  # the metric greedy selection and skill weights optimise
    runs: tuple[str, ...]  # every candidate run, in input order
    run_dirs: tuple[str, ...]
    weights: tuple[float, ...]  # one per candidate run, summing to 1
    valid_ids: np.ndarray
    y_valid: np.ndarray
    valid_probs: np.ndarray  # the combined validation probabilities, before temperature and clip
    test_ids: np.ndarray
    test_probs: np.ndarray  # what is submitted: combined, then temperature-scaled and clipped when asked
    positive_class: str
    negative_class: str
    scores: dict[str, Any]  # ensemble / plain_mean / best_single metric dicts, per-run scores (full valid set)
    holdout: dict[str, Any]  # select on one half (or the other folds), score on the rest (see honest_scores)
    trace: tuple[float, ...] = ()  # greedy: the bag's score after each step
    labelled_test: dict[str, Any] = field(default_factory=dict)  # ensemble / plain_mean / best_single on the
    # split's labelled test part, when every run has it (weights chosen on validation only)
    fallback_ids: tuple[str, ...] = ()  # test ids no run could predict (undecodable images): FALLBACK_PROB
    valid_groups: np.ndarray | None = None
    valid_folds: np.ndarray | None = None
    calibration: dict[str, Any] = field(default_factory=dict)  # temperature, clip and validation log losses

    @property
    def members(self) -> dict[str, float]:
        """Runs with a non-zero weight."""
        return {name: w for name, w in zip(self.runs, self.weights, strict=True) if w > 0}


# ------------------------------------------------------------------------------------------- finding runs
def _runs_under(folder: Path) -> list[Path]:
    """``folder`` if it is a run, else the run folders one or two levels below it (a sweep, or runs/)."""
    found = runfolder.find_runs(folder)
    if found == [folder]:
        return found
    incomplete = [p.name for p in found if not is_complete(p)]
    if incomplete:
        log.warning("skipping %d incomplete run(s) in %s: %s", len(incomplete), folder, incomplete)
    return [p for p in found if is_complete(p)]


def resolve_run_dirs(specs: Sequence[str | Path], runs_dir: Path = Path("runs")) -> list[Path]:
    """Run folders named by ``specs``: run folders, sweep folders, globs, or names under ``runs_dir``."""
    dirs: list[Path] = []
    for spec in specs:
        text = str(spec)
        if any(c in text for c in "*?["):
            matches = sorted(glob.glob(text)) or sorted(glob.glob(str(Path(runs_dir) / text)))
            candidates = [Path(m) for m in matches if Path(m).is_dir()]
        else:
            candidates = [p for p in (Path(text), Path(runs_dir) / text) if p.is_dir()][:1]
        if not candidates:
            raise EnsembleError(f"{text}: no run folder, sweep folder or glob match (looked in . and {runs_dir}/)")
        found = [run for folder in candidates for run in _runs_under(folder)]
        if not found:
            raise EnsembleError(f"{text}: no complete run folders (a run folder has {runfolder.METRICS})")
        dirs.extend(found)
    unique = list(dict.fromkeys(p.resolve() for p in dirs))  # keep order, drop repeats
    return unique


# -------------------------------------------------------------------------------------------- reading runs
def load_run(run_dir: Path, name: str | None = None) -> RunPredictions:
    """Read one complete run folder (metrics, valid/test ids and probabilities) through the run-folder contract."""
    run_dir = Path(run_dir)
    if not is_complete(run_dir):
        raise EnsembleError(f"{run_dir}: not a complete run (its {runfolder.METRICS} is missing or not 'complete')")
    info = runfolder.read_metrics(run_dir)
    positive = str(info["positive_class"])
    try:
        valid, test = runfolder.read_part(run_dir, "valid", positive), runfolder.read_part(run_dir, "test")
        ltest = runfolder.read_part(run_dir, "labelled_test", positive)
    except runfolder.RunError as e:
        raise EnsembleError(str(e)) from None
    held = dict(ltest_ids=ltest["id"].to_numpy(), y_ltest=ltest["y"].to_numpy(),
                ltest_probs=ltest["prob"].to_numpy(), ltest_groups=_column(ltest, "group")) if len(ltest) else {}
    return RunPredictions(
        name=name or run_dir.name, run_dir=run_dir,
        valid_ids=valid["id"].to_numpy(), y_valid=valid["y"].to_numpy(), valid_probs=valid["prob"].to_numpy(),
        test_ids=test["id"].to_numpy(), test_probs=test["prob"].to_numpy(),
        positive_class=positive, negative_class=str(info.get("negative_class", "")), metrics=info,
        valid_groups=_column(valid, "group"), valid_folds=_folds_of(valid, run_dir), **held,
    )


def _column(frame: pd.DataFrame, name: str) -> np.ndarray | None:
    return frame[name].to_numpy() if name in frame.columns else None


def _folds_of(valid: pd.DataFrame, run_dir: Path) -> np.ndarray | None:
    """The validation rows' fold numbers (a K-fold run's out-of-fold layout), or None for a single split."""
    if "fold" not in valid.columns:
        return None
    try:
        folds = valid["fold"].astype(int).to_numpy()
    except ValueError:
        raise EnsembleError(f"{run_dir / runfolder.ids_file('valid')}: its fold column holds non-integers; the run "
                            f"folder is damaged: rerun the run") from None
    return folds if len(np.unique(folds)) > 1 else None  # one fold's model (fold_<j>/): a single split


def _unique_names(run_dirs: Sequence[Path]) -> list[str]:
    """Folder names, or "<parent>/<name>" for every run whose folder name is not unique."""
    names = [p.name for p in run_dirs]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in run_dirs]


def load_runs(run_dirs: Sequence[Path]) -> list[RunPredictions]:
    """Read run folders and check they share one validation split and one test set (rows aligned)."""
    if not run_dirs:
        raise EnsembleError("no runs to ensemble")
    paths = [Path(d) for d in run_dirs]
    runs = [load_run(d, name) for d, name in zip(paths, _unique_names(paths), strict=True)]
    return align(runs)


# -------------------------------------------------------------------------------------------- alignment
def _order(ref_ids: np.ndarray, ids: np.ndarray, what: str, ref_name: str, name: str) -> np.ndarray | None:
    """Row order that puts ``ids`` in the order of ``ref_ids`` (None if already so); refuses other id sets."""
    if len(ids) == len(ref_ids) and (ids == ref_ids).all():
        return None
    ref_set, id_set = set(ref_ids), set(ids)
    if ref_set == id_set and len(id_set) == len(ids) == len(ref_ids):
        return pd.Index(ids).get_indexer(ref_ids)  # same ids, other order: realign rather than refuse
    missing, extra = sorted(ref_set - id_set), sorted(id_set - ref_set)
    raise EnsembleError(
        f"{name} and {ref_name} do not share the same {what} ids: {len(missing)} of {ref_name}'s are missing "
        f"(first: {missing[:SHOW]}), {len(extra)} are extra (first: {extra[:SHOW]}). Ensemble only runs of "
        f"one data set and split: pass one sweep folder or the run names."
    )


def align(runs: Sequence[RunPredictions]) -> list[RunPredictions]:
    """The runs with rows in the first run's order; refuses different splits, test sets, labels or classes."""
    ref, out = runs[0], [runs[0]]
    for run in runs[1:]:
        if run.positive_class != ref.positive_class:
            raise EnsembleError(f"{run.name} predicts '{run.positive_class}', {ref.name} '{ref.positive_class}'")
        _check_same_kind(ref, run)
        v = _order(ref.valid_ids, run.valid_ids, "validation", ref.name, run.name)
        t = _order(ref.test_ids, run.test_ids, "test", ref.name, run.name)
        y, vp = (run.y_valid, run.valid_probs) if v is None else (run.y_valid[v], run.valid_probs[v])
        if (y != ref.y_valid).any():
            raise EnsembleError(f"{run.name} and {ref.name} disagree on validation labels of the same ids")
        tp = run.test_probs if t is None else run.test_probs[t]
        lt = _order(ref.ltest_ids, run.ltest_ids, "labelled test", ref.name, run.name)
        lp = run.ltest_probs if lt is None else run.ltest_probs[lt]
        _check_same_folds(ref, run, v)
        out.append(RunPredictions(run.name, run.run_dir, ref.valid_ids, ref.y_valid, vp, ref.test_ids, tp,
                                  run.positive_class, run.negative_class, run.metrics,
                                  ref.ltest_ids, ref.y_ltest, lp, _reordered(run.valid_groups, v),
                                  ref.valid_folds, _reordered(run.ltest_groups, lt)))
    return out


def _reordered(values: np.ndarray | None, order: np.ndarray | None) -> np.ndarray | None:
    return values if values is None or order is None else values[order]


FOLD_FIX = ("make every run of an ensemble with one split file (the same data.folds, data.split_seed and group "
            "rule: the runs of one sweep share it), or ensemble the two kinds separately")


def _check_same_kind(ref: RunPredictions, run: RunPredictions) -> None:
    """Refuse K-fold runs (out-of-fold validation over every labelled image) mixed with single-split runs: their
    validation rows are not the same images, and a fold run's rows come from K models."""
    if (ref.valid_folds is None) == (run.valid_folds is None):
        return
    folded, single = (ref, run) if run.valid_folds is None else (run, ref)
    k = len(np.unique(folded.valid_folds))
    raise EnsembleError(f"{folded.name} is a {k}-fold run (out-of-fold predictions of every labelled image) and "
                        f"{single.name} a single-split run (one validation part): they cannot be ensembled "
                        f"together; {FOLD_FIX}")


def _check_same_folds(ref: RunPredictions, run: RunPredictions, order: np.ndarray | None) -> None:
    """Refuse fold runs whose folds cut the same images differently: selecting on "the other folds" would then
    select on rows some run predicted with a model that had trained on them."""
    if ref.valid_folds is None:
        return
    folds = _reordered(run.valid_folds, order)
    moved = np.flatnonzero(folds != ref.valid_folds)
    if not len(moved):
        return
    shown = ", ".join(f"{ref.valid_ids[i]} (fold {ref.valid_folds[i]} vs {folds[i]})" for i in moved[:SHOW])
    raise EnsembleError(f"{run.name} and {ref.name} have different fold layouts: {len(moved)} of "
                        f"{len(ref.valid_ids)} images are in another fold (first: {shown}); {FOLD_FIX}")


# ----------------------------------------------------------------------------------------------- scoring
# The greedy loop scores thousands of candidate bags. sklearn's roc_auc_score and log_loss give the same numbers
# (tests/test_ensemble.py checks it) but spend milliseconds a call on input checks: a greedy build of 10 runs x
# 500 validation images (fit + honest halves, 50 steps) took 4.85 s (AUC) and 3.94 s (log loss) with them,
# 0.24 s and 0.04 s with these; 5000 images: 7.5 s vs 1.1 s (benchmarks/greedy_scoring.py, shared 2-core box).
def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic on scipy's ranks (ties: average rank); nan with one class only."""
    from scipy.stats import rankdata  # lazy: the CLI imports this module; scipy.stats takes seconds

    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    return float((rankdata(p)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    """One validation metric, fast enough for the greedy loop (see the measurement above)."""
    if metric == "auc":
        return auc(y, p)
    if metric == "accuracy":
        return float(((np.asarray(p) >= 0.5) == np.asarray(y).astype(bool)).mean())
    if metric == "log_loss":  # sklearn's log_loss with clipping, as numpy
        p = np.clip(np.asarray(p, dtype=np.float64), metrics.EPS, 1 - metrics.EPS)
        return float(-np.mean(np.where(np.asarray(y) == 1, np.log(p), np.log1p(-p))))
    raise EnsembleError(f"metric {metric!r}: choose from {list(METRICS)}")


def _better(metric: str, a: float, b: float) -> bool:
    """True if score ``a`` is strictly better than ``b``; a nan score is worse than any number."""
    if np.isnan(a) or np.isnan(b):
        return not np.isnan(a) and np.isnan(b)
    return bool(a > b) if METRICS[metric] else bool(a < b)


def _best(metric: str, values: Sequence[float]) -> int:
    """Index of the best score (the first of equals)."""
    best = 0
    for i, v in enumerate(values):
        if _better(metric, v, values[best]):
            best = i
    return best


# ------------------------------------------------------------------------------------ combining (pure)
def weighted_mean(probs: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Weighted mean over runs of ``probs`` (runs x rows); weights are normalised to sum to 1."""
    w = np.asarray(weights, dtype=np.float64)
    return (w / w.sum()) @ np.asarray(probs, dtype=np.float64)


def rank_average(probs: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of each run's ranks (ties: their average rank) scaled into (0, 1): (rank - 0.5) / rows."""
    from scipy.stats import rankdata  # lazy: the CLI imports this module; scipy.stats takes seconds

    probs = np.asarray(probs, dtype=np.float64)
    scaled = np.stack([(rankdata(row) - 0.5) / len(row) for row in probs]) if probs.shape[1] else probs
    return weighted_mean(scaled, np.ones(len(probs)) if weights is None else weights)


def combine(method: str, probs: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """The ensemble's scores for rows of ``probs`` (runs x rows) given weights over runs."""
    return rank_average(probs, weights) if method == "rank" else weighted_mean(probs, weights)


def skill_weights(metric: str, y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Weights proportional to each run's skill above chance on (y, probs); equal when no run has any."""
    gains = np.array([score(metric, y, p) - CHANCE[metric] for p in probs])
    gains = np.nan_to_num(-gains if not METRICS[metric] else gains, nan=0.0).clip(min=0)
    return gains / gains.sum() if gains.sum() > 0 else np.full(len(probs), 1 / len(probs))


def greedy_selection(metric: str, y: np.ndarray, probs: np.ndarray,
                     iterations: int = GREEDY_ITERATIONS) -> tuple[np.ndarray, list[float]]:
    """Caruana forward selection with replacement: (weights of the best bag seen, bag score per step).

    Each step adds the run (a run may be added again) whose addition scores best; the bag with the best score
    over all steps is kept, so the result is never below the best single run (the first step's pick).
    """
    probs = np.asarray(probs, dtype=np.float64)
    counts, total = np.zeros(len(probs)), np.zeros(probs.shape[1])
    best_counts, best_score, trace = None, float("nan"), []
    for step in range(1, iterations + 1):
        candidates = [score(metric, y, (total + p) / step) for p in probs]
        pick = _best(metric, candidates)
        counts[pick] += 1
        total += probs[pick]
        trace.append(candidates[pick])
        if best_counts is None or _better(metric, candidates[pick], best_score):
            best_counts, best_score = counts.copy(), candidates[pick]
    return best_counts / best_counts.sum(), trace


def fit_weights(method: str, metric: str, y: np.ndarray, probs: np.ndarray,
                weights: Sequence[float] | None = None,
                iterations: int = GREEDY_ITERATIONS) -> tuple[np.ndarray, list[float]]:
    """Weights over runs chosen by ``method`` on (y, probs), and greedy's score trace (else empty)."""
    n = len(probs)
    if weights is not None:
        if len(weights) != n or min(weights) < 0 or sum(weights) <= 0:
            raise EnsembleError(f"weights {list(weights)}: need {n} non-negative numbers, not all zero")
        return np.asarray(weights, dtype=np.float64) / sum(weights), []
    if method in ("mean", "rank"):
        return np.full(n, 1 / n), []
    if method == "weighted":
        return skill_weights(metric, y, probs), []
    if method == "greedy":
        return greedy_selection(metric, y, probs, iterations)
    raise EnsembleError(f"method {method!r}: choose from {list(METHODS)}")


# --------------------------------------------------------------------------------- honest validation
def halves(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint index sets splitting the rows in half, stratified by label."""
    rng = np.random.default_rng(seed)
    # Shuffle within each class, line the classes up and deal the rows alternately: both halves get each
    # class to within one row, and sizes to within one row (an odd class's extra row alternates halves).
    order = np.concatenate([rng.permutation(np.flatnonzero(y == label)) for label in np.unique(y)])
    return np.sort(order[0::2]), np.sort(order[1::2])


@dataclass(frozen=True)
class PostProcess:
    """What happens to the ensemble's probabilities before they are submitted (for log-loss competitions):
    temperature scaling fitted on labelled rows, then clipping to [clip, 1 - clip]."""

    calibrate: bool = False
    clip: float | None = None

    def __post_init__(self) -> None:
        if self.clip is not None and not 0 < self.clip < 0.5:
            raise EnsembleError(f"clip {self.clip}: give a number in (0, 0.5), e.g. 1e-3 (probabilities are "
                                f"clipped to [clip, 1 - clip])")

    def fit(self, y: np.ndarray, p: np.ndarray) -> float | None:
        """The temperature fitted on (y, p), or None without calibration."""
        return metrics.fit_temperature(y, p) if self.calibrate else None

    def apply(self, p: np.ndarray, temperature: float | None) -> np.ndarray:
        p = metrics.apply_temperature(p, temperature) if temperature is not None else np.asarray(p, dtype=float)
        return np.clip(p, self.clip, 1 - self.clip) if self.clip else p


def _fold(method: str, metric: str, y: np.ndarray, probs: np.ndarray, select: np.ndarray, held: np.ndarray,
          weights: Sequence[float] | None, iterations: int,
          post: PostProcess) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Select on rows ``select`` (weights, best single run, temperature), score on rows ``held``.

    Returns the scores (ensemble, best single, plain mean on ``held``; ensemble and best single on ``select``)
    and the ensemble's and the chosen single run's predictions of every row.
    """
    w, _ = fit_weights(method, metric, y[select], probs[:, select], weights, iterations)
    # combined over every row: rank averaging then ranks all rows on one scale (ranks use no labels), so the
    # predictions of different folds can be pooled
    combined = combine(method, probs, w)
    temperature = post.fit(y[select], combined[select])
    pred = post.apply(combined, temperature)
    single_sel = [score(metric, y[select], p[select]) for p in probs]
    best = _best(metric, single_sel)
    single = post.apply(probs[best], None)
    found = {
        "ensemble": score(metric, y[held], pred[held]),
        "best_single": score(metric, y[held], single[held]),
        "plain_mean": score(metric, y[held], post.apply(probs[:, held].mean(axis=0), None)),
        "selection_ensemble": score(metric, y[select], pred[select]),
        "selection_best_single": single_sel[best],
    }
    return (found | ({"temperature": temperature} if temperature is not None else {})), pred, single


def honest_scores(method: str, metric: str, y: np.ndarray, probs: np.ndarray,
                  weights: Sequence[float] | None = None, iterations: int = GREEDY_ITERATIONS,
                  seed: int = 0, folds: np.ndarray | None = None, post: PostProcess | None = None) -> dict[str, Any]:
    """The method's scores on rows it did not select on (weights, best single run and temperature chosen on
    other rows). Without ``folds``: on one stratified half and the other, both ways, and their mean (scheme
    "halves"). With ``folds`` (out-of-fold runs): for each fold, chosen on the other folds and predicting its
    rows; the pooled score over all rows, and each fold's scores with their spread (scheme "folds")."""
    post = post or PostProcess()
    if folds is None or len(np.unique(folds)) < 2:
        a, b = halves(y, seed)
        found = [_fold(method, metric, y, probs, s, h, weights, iterations, post)[0] for s, h in ((a, b), (b, a))]
        mean = {key: float(np.mean([f[key] for f in found])) for key in found[0]}
        return {"scheme": "halves", "metric": metric, "seed": seed, "folds": found, **mean}
    pred, single = np.zeros(len(y)), np.zeros(len(y))
    per_fold = []
    for j in np.unique(folds):
        held, select = np.flatnonzero(folds == j), np.flatnonzero(folds != j)
        found, fold_pred, fold_single = _fold(method, metric, y, probs, select, held, weights, iterations, post)
        pred[held], single[held] = fold_pred[held], fold_single[held]
        per_fold.append({"fold": int(j), "n": len(held), **found})
    keys = ("ensemble", "best_single", "plain_mean")
    return {
        "scheme": "folds", "metric": metric, "n_folds": len(per_fold), "folds": per_fold,
        "ensemble": score(metric, y, pred), "best_single": score(metric, y, single),
        "plain_mean": score(metric, y, post.apply(probs.mean(axis=0), None)),
        "fold_mean": {k: float(np.nanmean([f[k] for f in per_fold])) for k in keys},
        "fold_std": {k: float(np.nanstd([f[k] for f in per_fold])) for k in keys},
    }


# ------------------------------------------------------------------------------------------------- build
def build(runs: Sequence[RunPredictions], method: str = "greedy", metric: str = "auc",
          weights: Sequence[float] | None = None, iterations: int = GREEDY_ITERATIONS,
          seed: int = 0, calibrate: bool = False, clip: float | None = None) -> EnsembleResult:
    """Ensemble aligned runs (see ``load_runs``) with ``method``, scored on the full and on held-out rows.

    ``calibrate``: temperature-scale the submitted test probabilities (T fitted on the validation rows);
    ``clip``: clip them to [clip, 1 - clip]. The validation scores are of the combined probabilities; the
    honest scores of what is submitted (T fitted on the selection rows only).
    """
    if metric not in METRICS:
        raise EnsembleError(f"metric {metric!r}: choose from {list(METRICS)}")
    if not runs:
        raise EnsembleError("no runs to ensemble")
    if weights is not None and len(weights) != len(runs):
        raise EnsembleError(f"{len(weights)} weights for {len(runs)} runs; give one per run, in this order: "
                            f"{', '.join(r.name for r in runs)}")
    post = PostProcess(calibrate, clip)
    ref = runs[0]
    y, groups = ref.y_valid, shared_groups(runs)
    valid = np.stack([r.valid_probs for r in runs])
    test = np.stack([r.test_probs for r in runs])
    w, trace = fit_weights(method, metric, y, valid, weights, iterations)
    valid_p, test_p = combine(method, valid, w), combine(method, test, w)
    if method == "rank":
        log.warning("rank averaging gives ranks scaled into (0, 1), not calibrated probabilities: fine for AUC, "
                    "not for log loss or a 0.5 threshold")
    temperature = post.fit(y, valid_p)
    per_run = {r.name: score(metric, y, r.valid_probs) for r in runs}
    best = runs[_best(metric, list(per_run.values()))]
    scores = {
        "ensemble": metrics.validation_scores(y, valid_p, groups, clip),
        "plain_mean": metrics.validation_scores(y, valid.mean(axis=0), groups, clip),
        "best_single": {"run": best.name, **metrics.validation_scores(y, best.valid_probs, groups, clip)},
        "runs": per_run,
    }
    if groups is not None:
        scores["run_groups"] = {r.name: metrics.group_scores(y, r.valid_probs, groups, clip or metrics.EPS)
                                for r in runs}
    return EnsembleResult(
        method=method, metric=metric, runs=tuple(r.name for r in runs),
        run_dirs=tuple(str(r.run_dir) for r in runs), weights=tuple(float(v) for v in w),
        valid_ids=ref.valid_ids, y_valid=y, valid_probs=valid_p, test_ids=ref.test_ids,
        test_probs=post.apply(test_p, temperature),
        positive_class=ref.positive_class, negative_class=ref.negative_class, scores=scores,
        holdout=honest_scores(method, metric, y, valid, weights, iterations, seed, ref.valid_folds, post),
        trace=tuple(trace), labelled_test=_labelled_test_scores(method, runs, w, best, clip),
        valid_groups=groups, valid_folds=ref.valid_folds,
        calibration=_calibration(post, temperature, y, valid_p, groups),
    )


def shared_groups(runs: Sequence[RunPredictions]) -> np.ndarray | None:
    """The validation rows' groups when every run has them (and they agree), else None."""
    have = [r for r in runs if r.valid_groups is not None]
    if len(have) < len(runs):
        if have:
            log.warning("only %d of %d runs record groups (%s): no group-level scores", len(have), len(runs),
                        ", ".join(r.name for r in have))
        return None
    ref = have[0]
    for run in have[1:]:
        differ = np.flatnonzero(run.valid_groups != ref.valid_groups)
        if len(differ):
            i = differ[0]
            raise EnsembleError(f"{run.name} and {ref.name} put the same images in different groups ({len(differ)} "
                                f"images, e.g. {ref.valid_ids[i]}: {run.valid_groups[i]!r} vs "
                                f"{ref.valid_groups[i]!r}); make the runs with one group rule "
                                f"(data.group_from_name / data.group_col)")
    return ref.valid_groups


def _calibration(post: PostProcess, temperature: float | None, y: np.ndarray, p: np.ndarray,
                 groups: np.ndarray | None) -> dict[str, Any]:
    """The post-processing of the submitted probabilities and the validation log loss before and after it
    (after: with T fitted on these same rows, so flattering; the honest scores fit it on other rows)."""
    if not post.calibrate and not post.clip:
        return {}
    after = post.apply(p, temperature)
    found = {"temperature": temperature, "clip": post.clip, "log_loss": metrics.log_loss(y, p),
             "submitted_log_loss": metrics.log_loss(y, after, post.clip or metrics.EPS)}
    if groups is not None:
        found |= {"group_log_loss": metrics.group_scores(y, p, groups)["group_log_loss"],
                  "submitted_group_log_loss": metrics.group_scores(y, after, groups,
                                                                   post.clip or metrics.EPS)["group_log_loss"]}
    return found


def _labelled_test_scores(method: str, runs: Sequence[RunPredictions], w: np.ndarray,
                          best: RunPredictions, clip: float | None = None) -> dict[str, Any]:
    """The ensemble (weights fixed on validation), plain mean and best single run on the labelled test part."""
    if not len(runs[0].ltest_ids):
        return {}
    y, probs, groups = runs[0].y_ltest, np.stack([r.ltest_probs for r in runs]), runs[0].ltest_groups
    return {"n": len(y), "ensemble": metrics.validation_scores(y, combine(method, probs, w), groups, clip),
            "plain_mean": metrics.validation_scores(y, probs.mean(axis=0), groups, clip),
            "best_single": {"run": best.name, **metrics.validation_scores(y, best.ltest_probs, groups, clip)}}


def cover(result: EnsembleResult, test_ids: Sequence[str]) -> EnsembleResult:
    """``result`` with a FALLBACK_PROB row for each of ``test_ids`` (the test folder's) that no run predicted."""
    predicted = set(result.test_ids)
    missing = [i for i in test_ids if i not in predicted]
    if not missing:
        return result
    return dataclasses.replace(
        result, test_ids=np.concatenate([result.test_ids, np.array(missing, dtype=object)]),
        test_probs=np.concatenate([result.test_probs, np.full(len(missing), FALLBACK_PROB)]),
        fallback_ids=tuple(missing))


# ------------------------------------------------------------------------------------------ per group
def group_rule(run_dirs: Sequence[Path]) -> str:
    """The runs' ``data.group_from_name`` (the regex naming each image's group); refuses none or several."""
    found = {}
    for run_dir in run_dirs:
        try:
            pattern = runfolder.read_config(run_dir).data.group_from_name
        except (ValueError, OSError):  # ConfigError is a ValueError; no config.yaml: an older run folder
            pattern = None
        found[Path(run_dir).name] = pattern
    patterns = sorted({p for p in found.values() if p})
    if not patterns:
        raise EnsembleError(f"--per-group: the runs' configs have no data.group_from_name, so test images cannot "
                            f"be put into groups (videos); set data.group_from_name (e.g. '^([^_]+)_': the video "
                            f"id of <video>_<frame>_<face>.jpg; with a CSV source it replaces data.group_col, as the "
                            f"test images are not in the CSV) and rerun the runs (runs: {', '.join(found)})")
    if len(patterns) > 1:
        raise EnsembleError(f"--per-group: the runs name groups with different rules {patterns} ({found}); "
                            f"ensemble runs of one group rule")
    return patterns[0]


def per_group_rows(result: EnsembleResult, pattern: str,
                   expected: Sequence[str]) -> tuple[list[str], list[float], dict[str, Any]]:
    """The submission's rows when a competition scores groups (videos): each group's mean probability
    (``group_probs``), and FALLBACK_PROB for each ``expected`` id (the sample submission's, e.g. `abc.mp4`) whose
    group has no test image (DFDC: no face found in the video); with what the record says about it."""
    groups, probs = group_probs(result.test_ids, result.test_probs, pattern, result.fallback_ids)
    have = set(groups)
    empty = [e for e in expected if Path(e).stem not in have and e not in have]
    record = {"group_from_name": pattern, "n_groups": len(groups), "n_images": len(result.test_ids),
              "prob": "mean of the group's images' submitted probabilities",
              "no_frames": {"ids": empty, "prob": FALLBACK_PROB}}
    return [*groups, *empty], [*probs, *[FALLBACK_PROB] * len(empty)], record


def group_probs(test_ids: Sequence[str], test_probs: np.ndarray, pattern: str,
                fallback: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """One row per group of the test images (``splits.name_groups`` with ``pattern``): (groups, the mean of each
    group's image probabilities), groups sorted. ``fallback`` images (undecodable, given FALLBACK_PROB) count only
    in a group that has no other image: a prior would only pull a video's real predictions toward 0.5. Refuses
    test images the pattern does not match."""
    from .splits import name_groups

    groups = name_groups(list(test_ids), pattern)
    unmatched = [i for i, g in zip(test_ids, groups, strict=True) if not g]
    if unmatched:
        raise EnsembleError(f"--per-group: {len(unmatched)} test image(s) do not match data.group_from_name "
                            f"'{pattern}' (e.g. {unmatched[:SHOW]}); fix the pattern or the file names")
    frame = pd.DataFrame({"group": groups, "prob": np.asarray(test_probs, dtype=float),
                          "predicted": ~np.isin(np.asarray(test_ids, dtype=object), list(fallback))})
    predicted_groups = set(frame.group[frame.predicted])
    kept = frame[frame.predicted | ~frame.group.isin(predicted_groups)]
    means = kept.groupby("group", sort=True).prob.mean()
    return means.index.to_numpy(dtype=object), means.to_numpy()


# ------------------------------------------------------------------------------------------------ output
def to_record(result: EnsembleResult) -> dict[str, Any]:
    """JSON-able description of the ensemble: method, members, weights, scores, source runs."""
    parents = sorted({str(Path(d).parent) for d in result.run_dirs})
    return {
        "method": result.method, "metric": result.metric,
        "members": [{"run": name, "weight": round(w, 6)} for name, w in result.members.items()],
        "candidates": [{"run": name, "run_dir": d, "weight": round(w, 6)}
                       for name, w, d in zip(result.runs, result.weights, result.run_dirs, strict=True)],
        "source_sweep": parents[0] if len(parents) == 1 else parents,
        "positive_class": result.positive_class, "negative_class": result.negative_class,
        "n_valid": len(result.valid_ids), "n_test": len(result.test_ids),
        "folds": len(np.unique(result.valid_folds)) if result.valid_folds is not None else 0,
        "n_valid_groups": len(np.unique(result.valid_groups)) if result.valid_groups is not None else 0,
        "validation": result.scores, "holdout": result.holdout, "greedy_trace": list(result.trace),
        "labelled_test": result.labelled_test, "calibration": result.calibration,
        "fallback": {"prob": FALLBACK_PROB, "ids": list(result.fallback_ids),
                     "why": "test images no run could decode (see bad_images.csv): predicted with the prior"},
    }


def probs_frame(result: EnsembleResult) -> pd.DataFrame:
    """The ensemble's test probabilities as submitted (after temperature and clip): id, prob (positive class)."""
    return pd.DataFrame({"id": result.test_ids, "prob": result.test_probs})


HOLDOUT_HEADS = {"halves": "held-out half", "folds": "other folds"}


def summary_lines(result: EnsembleResult) -> list[str]:
    """A small table for humans: ensemble vs best single vs plain mean, on all and on held-out rows."""
    m, s, h, lt = result.metric, result.scores, result.holdout, result.labelled_test
    rows = [
        (f"ensemble ({result.method}, {len(result.members)} of {len(result.runs)} runs)", s["ensemble"][m],
         h["ensemble"], lt.get("ensemble", {}).get(m)),
        (f"best single ({s['best_single']['run']})", s["best_single"][m], h["best_single"],
         lt.get("best_single", {}).get(m)),
        ("plain mean", s["plain_mean"][m], h["plain_mean"], lt.get("plain_mean", {}).get(m)),
    ]
    width = max(len(r[0]) for r in rows)
    head = HOLDOUT_HEADS[h.get("scheme", "halves")]
    test_head = f"  {'labelled test':>13}" if lt else ""
    lines = [f"{'validation ' + m:<{width}}  {'all rows':>9}  {head:>13}{test_head}"]
    lines += [f"{name:<{width}}  {full:9.4f}  {held:13.4f}" + (f"  {test:13.4f}" if lt else "")
              for name, full, held, test in rows]
    if h.get("scheme") == "folds":
        lines.append(f"other folds: for each of {h['n_folds']} folds, chosen on the other folds and scored on it; "
                     f"pooled over all out-of-fold rows (ensemble per fold {h['fold_mean']['ensemble']:.4f} "
                     f"+- {h['fold_std']['ensemble']:.4f})")
    else:
        lines.append("held-out half: chosen on one half of the validation set, scored on the other (mean of both "
                     "ways)")
    if result.calibration:
        lines.append(f"{head}: the ensemble as submitted (temperature fitted on the selection rows, clip); all rows: "
                     f"the combined probabilities before either")
    if lt:
        lines.append(f"labelled test: the split's {lt['n']} test images, never used to choose runs or weights")
    lines += _group_lines(result) + _calibration_lines(result)
    lines += [f"  {w:.3f}  {name}" for name, w in sorted(result.members.items(), key=lambda kv: -kv[1])]
    return lines


def _group_lines(result: EnsembleResult) -> list[str]:
    """Group-level validation scores (a group's probability = the mean of its images')."""
    s = result.scores
    if "group_auc" not in s["ensemble"]:
        return []
    lines = [f"groups ({s['ensemble']['n_groups']} in validation; a group's probability = its images' mean):"]
    for name, found in (("ensemble", s["ensemble"]), (f"best single ({s['best_single']['run']})", s["best_single"]),
                        ("plain mean", s["plain_mean"])):
        lines.append(f"  {name}: group AUC {found['group_auc']:.4f}, accuracy {found['group_accuracy']:.4f}, "
                     f"log loss {found['group_log_loss']:.4f}")
    return lines


def _calibration_lines(result: EnsembleResult) -> list[str]:
    c = result.calibration
    if not c:
        return []
    rows = "out-of-fold rows" if result.valid_folds is not None else "validation rows"
    done = ([f"temperature {c['temperature']:.3f} (fitted on the {rows})"] if c["temperature"] else [])
    done += [f"clipped to [{c['clip']:g}, {1 - c['clip']:g}]"] if c["clip"] else []
    text = (f"submitted probabilities: {', '.join(done)}; log loss on those rows {c['log_loss']:.4f} -> "
            f"{c['submitted_log_loss']:.4f} (out of sample: the honest column)")
    if "group_log_loss" in c:
        text += f", group log loss {c['group_log_loss']:.4f} -> {c['submitted_group_log_loss']:.4f}"
    return [text]
