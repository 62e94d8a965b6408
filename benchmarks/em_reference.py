"""The EM traces algorithm as the issue states it, one pixel at a time in plain Python: the reference that
tests/test_traces.py checks the vectorised traces.py against, and that benchmarks/bench_traces.py times.

Slow by design (tiny images only); it uses only traces.py's public constants.
"""

from __future__ import annotations

import math

import numpy as np

from deepfake_fastai import traces


def reference_plane(plane: np.ndarray, mode: str, n_iter: int, kernel: int) -> list[float]:
    """The algorithm as the issue states it, one pixel at a time (slow: tiny images only)."""
    h = kernel // 2
    padded = np.pad(plane, h, mode="reflect")
    rows, targets = [], []
    for i in range(plane.shape[0]):
        for j in range(plane.shape[1]):
            window = padded[i:i + kernel, j:j + kernel].ravel().tolist()
            targets.append(window.pop(len(window) // 2))  # the pixel; the rest are its neighbours
            rows.append(window)
    weights, prior = [1.0] * len(rows), 0.5
    coef = reference_wls(rows, targets, weights)
    for _ in range(n_iter):
        res2 = [(t - sum(c * v for c, v in zip(coef, row, strict=True))) ** 2 for row, t in zip(rows, targets,
                                                                                               strict=True)]
        if mode == "gaussian":
            var = max(sum(res2) / len(res2), traces.MIN_VAR)
            weights = [math.exp(-r / (2 * var)) for r in res2]
        else:
            var = max(sum(w * r for w, r in zip(weights, res2, strict=True)) / sum(weights), traces.MIN_VAR)
            dens = [prior * math.exp(-r / (2 * var)) / math.sqrt(2 * math.pi * var) for r in res2]
            weights = [d / (d + (1 - prior) * traces.OUTLIER_DENSITY) for d in dens]
            prior = sum(weights) / len(weights)
        coef = reference_wls(rows, targets, weights)
    return coef


def reference_wls(rows: list[list[float]], targets: list[float], weights: list[float]) -> list[float]:
    m = len(rows[0])
    gram, rhs = [[0.0] * m for _ in range(m)], [0.0] * m
    for row, t, w in zip(rows, targets, weights, strict=True):
        for p in range(m):
            rhs[p] += w * row[p] * t
            for q in range(m):
                gram[p][q] += w * row[p] * row[q]
    return list(np.linalg.pinv(np.array(gram)) @ np.array(rhs))


def reference_features(image: np.ndarray, mode: str, n_iter: int = 10, kernel: int = 3) -> np.ndarray:
    return np.array([v for c in range(3) for v in reference_plane(image[:, :, c], mode, n_iter, kernel)])
