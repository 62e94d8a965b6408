"""Why ensemble.score is not sklearn's: a greedy build (fit + honest halves, 50 steps) with the old hand-written
ranks, with scipy's rankdata (what ensemble.auc uses) and with sklearn's roc_auc_score / log_loss.

Usage: .venv/bin/python -m benchmarks.greedy_scoring   (the numbers are quoted in deepfake_fastai/ensemble.py)
"""

from __future__ import annotations

import time

import numpy as np

from deepfake_fastai import ensemble as E
from deepfake_fastai import metrics


def ranks(x):
    x = np.asarray(x)
    sorter = np.argsort(x, kind="mergesort")
    inverse = np.empty(len(x), dtype=np.intp)
    inverse[sorter] = np.arange(len(x))
    xs = x[sorter]
    first = np.r_[True, xs[1:] != xs[:-1]]
    dense = first.cumsum()[inverse]
    bounds = np.r_[np.nonzero(first)[0], len(x)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def hand(metric, y, p):
    if metric == "auc":
        y = np.asarray(y).astype(bool)
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        return float((ranks(p)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    p = np.clip(np.asarray(p, dtype=np.float64), metrics.EPS, 1 - metrics.EPS)
    return float(-np.mean(np.where(np.asarray(y) == 1, np.log(p), np.log1p(-p))))


def rankdata_mw(metric, y, p):
    from scipy.stats import rankdata

    if metric != "auc":
        return hand(metric, y, p)
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((rankdata(p)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def sk(metric, y, p):  # sklearn's roc_auc_score / log_loss (deepfake_fastai.metrics)
    return metrics.auc(y, p) if metric == "auc" else metrics.log_loss(y, p)


rankdata_mw("auc", np.array([0, 1]), np.array([0.2, 0.8]))
sk("auc", np.array([0, 1]), np.array([0.2, 0.8])), sk("log_loss", np.array([0, 1]), np.array([0.2, 0.8]))  # imports
rng = np.random.default_rng(0)
for n_runs, n in ((10, 500), (10, 5000)):
    y = rng.integers(0, 2, n)
    probs = np.clip(y[None, :] * 0.3 + rng.random((n_runs, n)) * 0.7, 0, 1)
    for metric in ("auc", "log_loss"):
        out = {}
        for name, fn in (("hand", hand), ("scipy_rankdata", rankdata_mw), ("sklearn", sk)):
            E.score = fn
            t = time.perf_counter()
            w, _ = E.fit_weights("greedy", metric, y, probs, None, 50)
            E.honest_scores("greedy", metric, y, probs, None, 50, 0)
            out[name] = (time.perf_counter() - t, w)
        E.score = sk
        same = np.allclose(out["hand"][1], out["sklearn"][1])
        print(f"{n_runs} runs x {n} images, {metric}: hand {out['hand'][0]:.2f} s, scipy rankdata "
              f"{out['scipy_rankdata'][0]:.2f} s, sklearn {out['sklearn'][0]:.2f} s "
              f"(greedy fit + honest halves, 50 steps); same weights: {same}")
