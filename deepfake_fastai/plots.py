"""Figures of runs: data in, matplotlib Figure out. No pyplot (no global state), no files; ``png_bytes`` renders.

Every figure is FIGSIZE_IN at DPI (780 x 585 px) unless asked otherwise, drawn on the Agg canvas, so this
module works headless and in tests. Probabilities are of the positive ("fake") class, labels are 1 = positive.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

log = logging.getLogger(__name__)

FIGSIZE_IN = (7.8, 5.85)  # inches: 780 x 585 px at DPI
DPI = 100
ENSEMBLE_STYLE = {"color": "black", "linestyle": "--", "linewidth": 2.4}  # stands out from the runs
PRETTY = {"train_loss": "train loss", "valid_loss": "valid loss", "roc_auc_score": "ROC AUC"}


def new_figure(figsize: tuple[float, float] = FIGSIZE_IN) -> Figure:
    """An empty figure on its own Agg canvas (never registered with pyplot)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes (figsize x dpi pixels exactly: no tight bounding box)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})  # no tool URL in the file
    return buf.getvalue()


def plain(text: str) -> str:
    """Text matplotlib shows as written: a run name with two "$" must not turn into mathtext."""
    return str(text).replace("$", r"\$")


def _as_arrays(y: Sequence, p: Sequence) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y).astype(int).reshape(-1), np.asarray(p, dtype=np.float64).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} probabilities")
    return y, p


# ------------------------------------------------------------------------------------------------- ROC
def roc_figure(series: Sequence[tuple[str, Sequence, Sequence]],
               ensemble: tuple[str, Sequence, Sequence] | None = None,
               title: str = "ROC curves (validation set)") -> Figure:
    """ROC curves of several runs ``(name, y, p)`` (+ an ensemble, dashed black) with each AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="chance")
    curves = [(plain(name), *_as_arrays(y, p), {}) for name, y, p in series]
    if ensemble is not None:
        curves.append((plain(ensemble[0]), *_as_arrays(ensemble[1], ensemble[2]), ENSEMBLE_STYLE))
    scored = []
    for name, y, p, style in curves:
        if len(np.unique(y)) < 2:  # AUC is undefined: say so rather than draw a misleading line
            scored.append((float("-inf"), name, None, style, f"{name}  AUC n/a (one class)"))
            continue
        auc = float(roc_auc_score(y, p))
        scored.append((auc, name, roc_curve(y, p)[:2], style, f"{name}  AUC {auc:.4f}"))
    for _, _, fpr_tpr, style, label in sorted(scored, key=lambda s: -s[0]):  # legend reads like a leaderboard
        if fpr_tpr is None:
            ax.plot([], [], label=label, **style)
        else:
            ax.plot(*fpr_tpr, label=label, **{"linewidth": 1.6, **style})  # straight segments: ties count half
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal", title=plain(title),
           xlabel="false positive rate (real images called fake)", ylabel="true positive rate (fakes caught)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    return fig


# -------------------------------------------------------------------------------------------- confusion
def confusion_counts(y: Sequence, p: Sequence, threshold: float = 0.5) -> np.ndarray:
    """2x2 counts: rows = true (negative, positive), columns = predicted, positive when p >= threshold."""
    y, p = _as_arrays(y, p)
    pred = (p >= threshold).astype(int)
    return np.array([[int(((y == t) & (pred == q)).sum()) for q in (0, 1)] for t in (0, 1)])


def confusion_figure(y: Sequence, p: Sequence, classes: tuple[str, str] = ("real", "fake"),
                     threshold: float = 0.5, title: str | None = None) -> Figure:
    """Confusion matrix with class names, counts and row percentages; ``classes`` = (negative, positive)."""
    counts = confusion_counts(y, p, threshold)
    classes = (plain(classes[0]), plain(classes[1]))
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)  # colour: row share
    fig = new_figure()
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (t, q), n in np.ndenumerate(counts):
        ax.text(q, t, f"{n}\n{share[t, q]:.1%} of {classes[t]}", ha="center", va="center", fontsize=13,
                color="white" if share[t, q] > 0.6 else "black")
    ax.set_xticks([0, 1], [f"predicted {c}" for c in classes], fontsize=11)
    ax.set_yticks([0, 1], [f"true {c}" for c in classes], fontsize=11)
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(plain(title) if title else f"Confusion matrix at threshold {threshold:g}: n={counts.sum()}, "
                          f"accuracy {accuracy:.4f}", fontsize=12)
    fig.colorbar(image, ax=ax, label="share of the true class", shrink=0.8)
    return fig


# ------------------------------------------------------------------------------------- learning curves
def learning_curves_figure(history: pd.DataFrame, title: str = "Learning curves") -> Figure:
    """Losses (left) and metrics (right) per epoch from a run's history.csv."""
    fig, title = new_figure(), plain(title)
    x = history["epoch"] if "epoch" in history else pd.Series(range(len(history)))
    columns = [c for c in history.columns if c != "epoch"]
    panels = [("loss", [c for c in columns if "loss" in c]), ("metric", [c for c in columns if "loss" not in c])]
    panels = [(what, cols) for what, cols in panels if cols]
    if history.empty or not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no per-epoch history recorded", ha="center", va="center", fontsize=12)
        ax.set_axis_off()
        fig.suptitle(title, fontsize=12)
        return fig
    for i, (what, cols) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), i)
        for c in cols:
            ax.plot(x, history[c], marker="o", label=plain(PRETTY.get(c, c.replace("_", " "))))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(x) < 2:  # one epoch: give the single point room, or matplotlib squeezes ticks onto it
            ax.set_xlim(float(min(x)) - 1, float(max(x)) + 1)
        ax.set(xlabel="epoch", ylabel=what, title="losses" if what == "loss" else "validation metrics")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    fig.suptitle(title, fontsize=12)
    return fig


# ----------------------------------------------------------------------------------------- calibration
@dataclass(frozen=True, eq=False)
class Calibration:
    """Reliability of positive-class probabilities in equal-width bins over [0, 1]."""

    edges: np.ndarray  # n_bins + 1 bin edges
    counts: np.ndarray  # predictions per bin
    confidence: np.ndarray  # mean predicted probability per bin (nan when empty)
    frequency: np.ndarray  # observed fraction of positives per bin (nan when empty)
    brier: float  # mean squared error of the probabilities
    ece: float  # expected calibration error: sum over bins of |frequency - confidence| * n_bin / n


def calibration(y: Sequence, p: Sequence, n_bins: int = 10) -> Calibration:
    """Per-bin confidence vs observed frequency, Brier score and ECE (bins [a, b), the last one closed)."""
    y, p = _as_arrays(y, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins: nan, left out of the ECE
        confidence = np.bincount(bins, weights=p, minlength=n_bins) / counts
        frequency = np.bincount(bins, weights=y, minlength=n_bins) / counts
    gaps = np.abs(frequency - confidence) * counts / max(len(p), 1)
    return Calibration(edges=edges, counts=counts, confidence=confidence, frequency=frequency,
                       brier=float(np.mean((p - y) ** 2)) if len(p) else float("nan"),
                       ece=float(np.nansum(gaps)))


def calibration_figure(y: Sequence, p: Sequence, n_bins: int = 10, positive: str = "fake",
                       title: str | None = None) -> Figure:
    """Reliability diagram (observed fraction of positives vs mean probability per bin) over a histogram."""
    cal, positive = calibration(y, p, n_bins), plain(positive)
    centers, width = (cal.edges[:-1] + cal.edges[1:]) / 2, 1.0 / n_bins
    fig = new_figure()
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], color="0.5", linestyle=":", label="perfectly calibrated")
    top.bar(centers, np.nan_to_num(cal.frequency), width=width * 0.9, color="tab:blue", alpha=0.35,
            edgecolor="tab:blue", label=f"observed fraction {positive} per bin")
    seen = cal.counts > 0
    top.plot(cal.confidence[seen], cal.frequency[seen], marker="o", color="tab:red",
             label="(mean probability, observed fraction)")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel=f"observed fraction {positive}")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=9)
    bottom.bar(centers, cal.counts, width=width * 0.9, color="0.5")
    bottom.set(xlabel=f"predicted probability of {positive}", ylabel="images")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    default = f"Calibration: Brier {cal.brier:.4f}, ECE {cal.ece:.4f} ({n_bins} bins)"
    top.set_title(plain(title) if title else default, fontsize=12)
    return fig
