"""Detection metrics from probabilities of the positive ("fake") class. Pure numpy/sklearn."""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def classification(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, accuracy, error rate, log loss, precision/recall/F1 and per-class accuracy (1 = fake)."""
    from sklearn import metrics as skm  # lazy: keeps `import deepfake_fastai` light

    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    pred = (p >= threshold).astype(int)
    acc = float((pred == y).mean())
    return {
        "auc": auc(y, p),
        "accuracy": acc,
        "error_rate": 1.0 - acc,
        "log_loss": log_loss(y, p),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        # "real"/"fake" = negative/positive class, whatever the data set calls them
        "real_accuracy": float((pred[y == 0] == 0).mean()) if (y == 0).any() else float("nan"),
        "fake_accuracy": float((pred[y == 1] == 1).mean()) if (y == 1).any() else float("nan"),
    }


def validation_scores(y: np.ndarray, p: np.ndarray, groups=None, clip: float | None = None) -> dict[str, float]:
    """What a run (or an ensemble) records about labelled predictions: ``classification``, plus ``group_scores``
    (group log loss clipped to [clip, 1 - clip]) when the split has groups (videos)."""
    found = classification(y, p)
    return found if groups is None else {**found, **group_scores(y, p, groups, clip or EPS)}


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC (ties count half); nan when ``y`` holds one class only."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def log_loss(y: np.ndarray, p: np.ndarray, clip: float = EPS) -> float:
    """Mean binary cross-entropy of the positive-class probabilities, clipped to [clip, 1 - clip] (Kaggle clips
    at 1e-15; a competition that punishes confident mistakes is often played with a larger clip)."""
    from sklearn.metrics import log_loss as sk_log_loss

    p = np.clip(np.asarray(p, dtype=np.float64), clip, 1 - clip)
    return float(sk_log_loss(np.asarray(y).astype(int), p, labels=[0, 1]))


def confusion(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> list[list[int]]:
    """[[true real, real called fake], [fake called real, true fake]]: rows = truth, columns = prediction."""
    from sklearn.metrics import confusion_matrix

    pred = (np.asarray(p) >= threshold).astype(int)
    return confusion_matrix(np.asarray(y).astype(int), pred, labels=[0, 1]).astype(int).tolist()


def group_scores(y: np.ndarray, p: np.ndarray, groups, clip: float = EPS) -> dict[str, float]:
    """Scores per group (a video): its probability is the mean of its images' (as DFDC scored videos), its label
    the majority of its images' (a tie counts as positive). AUC, accuracy and log loss clipped to [clip, 1-clip]."""
    frame = _per_group(y, p, groups)
    y_g, p_g = frame.y.to_numpy(), frame.p.to_numpy()
    return {"group_auc": auc(y_g, p_g), "group_accuracy": float(((p_g >= 0.5) == y_g).mean()),
            "group_log_loss": log_loss(y_g, p_g, clip), "n_groups": len(frame)}


def _per_group(y: np.ndarray, p: np.ndarray, groups):
    import pandas as pd

    frame = pd.DataFrame({"y": np.asarray(y).astype(float), "p": np.asarray(p, dtype=np.float64),
                          "g": np.asarray(groups).astype(str)}).groupby("g", sort=True).mean()
    return frame.assign(y=(frame.y >= 0.5).astype(int))


# --------------------------------------------------------------------------------- temperature scaling
TEMPERATURE_BOUNDS = (1e-2, 1e2)  # T outside this is a broken model or one class only, not a calibration


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of probabilities clipped to [EPS, 1 - EPS] (a 0 or 1 would be an infinite logit)."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T): T > 1 softens over-confident probabilities, T < 1 sharpens them; order is kept."""
    return 1.0 / (1.0 + np.exp(-logit(p) / float(temperature)))


def fit_temperature(y: np.ndarray, p: np.ndarray) -> float:
    """The T minimising the log loss of ``apply_temperature(p, T)`` on labels ``y`` (temperature scaling, Guo
    et al. 2017, with its one parameter: it moves log loss, never AUC). Searched on log T within
    TEMPERATURE_BOUNDS; 1.0 when there is nothing to fit (no rows, or every probability 0.5)."""
    from scipy.optimize import minimize_scalar

    z = logit(p)
    if not len(z) or not np.any(z):
        return 1.0
    sign = np.where(np.asarray(y).astype(int) == 1, -1.0, 1.0)  # loss of a row: log(1 + exp(sign * z / T))

    def loss(log_t: float) -> float:
        return float(np.mean(np.logaddexp(0.0, sign * z / np.exp(log_t))))

    low, high = np.log(TEMPERATURE_BOUNDS)
    found = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(found.x))
