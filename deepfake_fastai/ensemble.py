"""Ensembling: combine the validation/test probabilities of finished runs, read from their run folders only.

Methods (``METHODS``):
  mean      plain mean of the runs' TTA probabilities (what the seed notebook did)
  weighted  weighted mean; weights given, or proportional to each run's validation skill above chance
  rank      mean of per-run normalised ranks: good for AUC when runs are calibrated differently
  greedy    forward selection with replacement on the validation set (Caruana et al. 2004, auto-sklearn's
            ensemble selection); its first pick is the best single run and the best bag seen is kept, so it
            never scores below the best single run on the data it selected on

Selecting on the validation set flatters the selected ensemble, so ``build`` also scores it honestly: select
on one stratified half of the validation set, score on the other half, and the other way round.
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
    valid_probs: np.ndarray
    test_ids: np.ndarray
    test_probs: np.ndarray
    positive_class: str
    negative_class: str
    scores: dict[str, Any]  # ensemble / plain_mean / best_single metric dicts, per-run scores (full valid set)
    holdout: dict[str, Any]  # select on one half, score on the other (see honest_scores)
    trace: tuple[float, ...] = ()  # greedy: the bag's score after each step
    labelled_test: dict[str, Any] = field(default_factory=dict)  # ensemble / plain_mean / best_single on the
    # split's labelled test part, when every run has it (weights chosen on validation only)
    fallback_ids: tuple[str, ...] = ()  # test ids no run could predict (undecodable images): FALLBACK_PROB

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
                ltest_probs=ltest["prob"].to_numpy()) if len(ltest) else {}
    return RunPredictions(
        name=name or run_dir.name, run_dir=run_dir,
        valid_ids=valid["id"].to_numpy(), y_valid=valid["y"].to_numpy(), valid_probs=valid["prob"].to_numpy(),
        test_ids=test["id"].to_numpy(), test_probs=test["prob"].to_numpy(),
        positive_class=positive, negative_class=str(info.get("negative_class", "")), metrics=info, **held,
    )


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
        v = _order(ref.valid_ids, run.valid_ids, "validation", ref.name, run.name)
        t = _order(ref.test_ids, run.test_ids, "test", ref.name, run.name)
        y, vp = (run.y_valid, run.valid_probs) if v is None else (run.y_valid[v], run.valid_probs[v])
        if (y != ref.y_valid).any():
            raise EnsembleError(f"{run.name} and {ref.name} disagree on validation labels of the same ids")
        tp = run.test_probs if t is None else run.test_probs[t]
        lt = _order(ref.ltest_ids, run.ltest_ids, "labelled test", ref.name, run.name)
        lp = run.ltest_probs if lt is None else run.ltest_probs[lt]
        out.append(RunPredictions(run.name, run.run_dir, ref.valid_ids, ref.y_valid, vp, ref.test_ids, tp,
                                  run.positive_class, run.negative_class, run.metrics,
                                  ref.ltest_ids, ref.y_ltest, lp))
    return out


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


def _fold(method: str, metric: str, y: np.ndarray, probs: np.ndarray, select: np.ndarray, held: np.ndarray,
          weights: Sequence[float] | None, iterations: int) -> dict[str, float]:
    """Select on rows ``select``, score on rows ``held``: ensemble, best single (picked on select), mean."""
    w, _ = fit_weights(method, metric, y[select], probs[:, select], weights, iterations)
    single_sel = [score(metric, y[select], p[select]) for p in probs]
    best = _best(metric, single_sel)
    return {
        "ensemble": score(metric, y[held], combine(method, probs[:, held], w)),
        "best_single": score(metric, y[held], probs[best, held]),
        "plain_mean": score(metric, y[held], probs[:, held].mean(axis=0)),
        "selection_ensemble": score(metric, y[select], combine(method, probs[:, select], w)),
        "selection_best_single": single_sel[best],
    }


def honest_scores(method: str, metric: str, y: np.ndarray, probs: np.ndarray,
                  weights: Sequence[float] | None = None, iterations: int = GREEDY_ITERATIONS,
                  seed: int = 0) -> dict[str, Any]:
    """Scores of the method selected on one half and scored on the other, both ways, and their mean."""
    a, b = halves(y, seed)
    folds = [_fold(method, metric, y, probs, s, h, weights, iterations) for s, h in ((a, b), (b, a))]
    mean = {key: float(np.mean([f[key] for f in folds])) for key in folds[0]}
    return {"metric": metric, "seed": seed, "folds": folds, **mean}


# ------------------------------------------------------------------------------------------------- build
def build(runs: Sequence[RunPredictions], method: str = "greedy", metric: str = "auc",
          weights: Sequence[float] | None = None, iterations: int = GREEDY_ITERATIONS,
          seed: int = 0) -> EnsembleResult:
    """Ensemble aligned runs (see ``load_runs``) with ``method``, scored on the full and on held-out halves."""
    if metric not in METRICS:
        raise EnsembleError(f"metric {metric!r}: choose from {list(METRICS)}")
    if not runs:
        raise EnsembleError("no runs to ensemble")
    if weights is not None and len(weights) != len(runs):
        raise EnsembleError(f"{len(weights)} weights for {len(runs)} runs; give one per run, in this order: "
                            f"{', '.join(r.name for r in runs)}")
    ref = runs[0]
    y = ref.y_valid
    valid = np.stack([r.valid_probs for r in runs])
    test = np.stack([r.test_probs for r in runs])
    w, trace = fit_weights(method, metric, y, valid, weights, iterations)
    valid_p, test_p = combine(method, valid, w), combine(method, test, w)
    if method == "rank":
        log.warning("rank averaging gives ranks scaled into (0, 1), not calibrated probabilities: fine for AUC, "
                    "not for log loss or a 0.5 threshold")
    per_run = {r.name: score(metric, y, r.valid_probs) for r in runs}
    best = runs[_best(metric, list(per_run.values()))]
    scores = {
        "ensemble": metrics.classification(y, valid_p),
        "plain_mean": metrics.classification(y, valid.mean(axis=0)),
        "best_single": {"run": best.name, **metrics.classification(y, best.valid_probs)},
        "runs": per_run,
    }
    return EnsembleResult(
        method=method, metric=metric, runs=tuple(r.name for r in runs),
        run_dirs=tuple(str(r.run_dir) for r in runs), weights=tuple(float(v) for v in w),
        valid_ids=ref.valid_ids, y_valid=y, valid_probs=valid_p, test_ids=ref.test_ids, test_probs=test_p,
        positive_class=ref.positive_class, negative_class=ref.negative_class, scores=scores,
        holdout=honest_scores(method, metric, y, valid, weights, iterations, seed), trace=tuple(trace),
        labelled_test=_labelled_test_scores(method, runs, w, best),
    )


def _labelled_test_scores(method: str, runs: Sequence[RunPredictions], w: np.ndarray,
                          best: RunPredictions) -> dict[str, Any]:
    """The ensemble (weights fixed on validation), plain mean and best single run on the labelled test part."""
    if not len(runs[0].ltest_ids):
        return {}
    y, probs = runs[0].y_ltest, np.stack([r.ltest_probs for r in runs])
    return {"n": len(y), "ensemble": metrics.classification(y, combine(method, probs, w)),
            "plain_mean": metrics.classification(y, probs.mean(axis=0)),
            "best_single": {"run": best.name, **metrics.classification(y, best.ltest_probs)}}


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
        "validation": result.scores, "holdout": result.holdout, "greedy_trace": list(result.trace),
        "labelled_test": result.labelled_test,
        "fallback": {"prob": FALLBACK_PROB, "ids": list(result.fallback_ids),
                     "why": "test images no run could decode (see bad_images.csv): predicted with the prior"},
    }


def probs_frame(result: EnsembleResult) -> pd.DataFrame:
    """The ensemble's test probabilities: id, prob (of the positive class)."""
    return pd.DataFrame({"id": result.test_ids, "prob": result.test_probs})


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
    test_head = f"  {'labelled test':>13}" if lt else ""
    lines = [f"{'validation ' + m:<{width}}  {'all rows':>9}  {'held-out half':>13}{test_head}"]
    lines += [f"{name:<{width}}  {full:9.4f}  {held:13.4f}" + (f"  {test:13.4f}" if lt else "")
              for name, full, held, test in rows]
    lines.append("held-out half: chosen on one half of the validation set, scored on the other (mean of both ways)")
    if lt:
        lines.append(f"labelled test: the split's {lt['n']} test images, never used to choose runs or weights")
    lines += [f"  {w:.3f}  {name}" for name, w in sorted(result.members.items(), key=lambda kv: -kv[1])]
    return lines
