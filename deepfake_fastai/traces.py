"""EM "convolutional traces" (Guarnera, Giudice & Battiato 2020) + scikit-learn: the explainable classic baseline.

A generator's last up-sampling layers leave each pixel a fixed linear function of its neighbours. Per RGB
channel (float in [0, 1], reflect padding) each pixel is regressed on its k x k - 1 neighbours; EM re-weights the
pixels that fit the linear model; the k x k - 1 coefficients per channel are the image's features (24 for k = 3).

The algorithm, per channel (both modes start from ordinary least squares, weights 1):
  repeat em_iter times:
    r = y - X a                                   residual of every pixel
    gaussian: s2 = mean(r^2);            w = exp(-r^2 / (2 s2))
    mixture:  s2 = sum(w r^2) / sum(w);  w = p N(r; 0, s2) / (p N(r; 0, s2) + (1 - p) OUTLIER_DENSITY),
              p = mean(w)                 (linear-correlation Gaussian vs a uniform outlier model, the paper's EM)
    a = pinv(X^T W X) X^T W y             weighted least squares
No Python loop over pixels: on the CPU, compiled kernels (``em_kernels``, numba) do the per-pixel passes of an
iteration (residual -> weight exponent; weighted moments X^T W [X y]), each in one read of the plane; numpy does
exp, the variances and the solves for a group of planes at once; thread tasks run on all cores. ``unfold`` +
batched matmul in torch is the GPU path. A run (``arch: em_traces``) writes the same run folder as a CNN run,
with the fitted scikit-learn pipeline as ``model.pkl`` instead of ``learner.pkl``.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from . import atomic, em_kernels, metrics, runfolder
from .atomic import file_sha256
from .config import CLASSIFIERS, EM_MODES, ConfigError, TrainConfig
from .plots import new_figure, plain, png_bytes
from .progress import progress as bar
from .runfolder import RunResult

log = logging.getLogger(__name__)

MODEL_FILE = runfolder.MODEL  # the fitted StandardScaler + classifier pipeline (instead of a learner)
OUTLIER_DENSITY = 1.0  # mixture mode: uniform density of the outlier model over the [0, 1] pixel range
MIN_VAR = 1e-12  # floor of sigma^2: a flat channel has zero residuals and must not divide by zero
CHUNK_PX = 1 << 18  # pixels (all channels) per thread task: enough work to amortise the task, bounded memory
PINV_RCOND = 1e-15  # numpy's default cut-off of the pseudo-inverse, relative to the largest eigenvalue
EM_BATCH_PX = 1 << 18  # pixels per group of planes in one EM: amortises the per-call cost of numpy (eigh: ~60 us)
FEATURE_VERSION = 1  # bump when the features change, so no cache file of the old algorithm is reused
CHANNELS = ("R", "G", "B")


@dataclass(frozen=True)
class EMParams:
    """What the features depend on (and so what the feature cache is keyed by)."""

    mode: str = "gaussian"  # one of EM_MODES: gaussian (Gaussian weights) | mixture (Gaussian + uniform outliers)
    n_iter: int = 10  # EM iterations after the least-squares start
    kernel: int = 3  # odd side of the neighbourhood window, pixels

    def __post_init__(self) -> None:
        if self.mode not in EM_MODES:
            raise ConfigError(f"em_mode must be one of {', '.join(EM_MODES)}; got '{self.mode}'")
        if self.n_iter < 1 or self.kernel < 3 or self.kernel % 2 == 0:
            raise ConfigError(f"need em_iter >= 1 and an odd kernel >= 3, got {self.n_iter} and {self.kernel}")

    @property
    def n_coef(self) -> int:
        """Coefficients per channel: every window position but the centre."""
        return self.kernel * self.kernel - 1

    @classmethod
    def of(cls, cfg: TrainConfig) -> EMParams:
        return cls(mode=cfg.em_mode, n_iter=cfg.em_iter, kernel=cfg.kernel)


def feature_names(kernel: int = 3) -> list[str]:
    """Names like ``R(-1,+0)``: channel and (row, column) offset of the neighbour, channel-major."""
    h = kernel // 2
    offsets = [(dy, dx) for dy in range(-h, h + 1) for dx in range(-h, h + 1) if (dy, dx) != (0, 0)]
    return [f"{c}({dy:+d},{dx:+d})" for c in CHANNELS for dy, dx in offsets]


# --------------------------------------------------------------------------------------------- CPU core
def pad_planes(planes: np.ndarray, kernel: int) -> np.ndarray:
    """(N, H, W) -> (N, H + k - 1, W + k - 1), reflect padded (numpy's: it also takes sides of 1 pixel), C order
    (np.pad keeps Fortran order, which a 1-pixel-high image's planes view has; the kernels take C order only)."""
    h = kernel // 2
    return np.ascontiguousarray(np.pad(planes, ((0, 0), (h, h), (h, h)), mode="reflect"))


def design(planes: np.ndarray, kernel: int) -> np.ndarray:
    """(N, H, W) planes -> (N, k*k, H*W): the k*k-1 neighbours of every pixel (reflect padded), then the pixel."""
    n, hgt, wid = planes.shape
    windows = np.lib.stride_tricks.sliding_window_view(pad_planes(planes, kernel), (kernel, kernel), axis=(1, 2))
    z = np.empty((n, kernel * kernel, hgt, wid))
    for row, (dy, dx) in enumerate(em_kernels.offsets(kernel)):  # k*k strided copies, not one per pixel
        z[:, row] = windows[:, :, :, dy, dx]
    return z.reshape(n, kernel * kernel, hgt * wid)


class _Compiled:
    """The per-pixel passes of an EM iteration as compiled kernels over the padded planes (see ``em_kernels``)."""

    def __init__(self, planes: np.ndarray, kernel: int):
        self.padded = pad_planes(planes, kernel)
        self.kernel = kernel
        self.shape = (len(planes), kernel * kernel, planes.shape[1] * planes.shape[2])

    def exponents(self, coef: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
        out = np.empty((self.shape[0], self.shape[2]))
        em_kernels.compiled("exponents", self.kernel)(self.padded, np.ascontiguousarray(coef), scale, shift, out)
        return out

    def moments(self, e: np.ndarray, logistic: bool) -> tuple[np.ndarray, np.ndarray]:
        out, wsum = np.empty((self.shape[0], self.shape[1], self.shape[1])), np.empty(self.shape[0])
        em_kernels.compiled("moments_logistic" if logistic else "moments", self.kernel)(self.padded, e, out, wsum)
        return out, wsum


class _Design:
    """The same passes in numpy over the design matrix: any window size, slower (memory-bound)."""

    def __init__(self, planes: np.ndarray, kernel: int):
        self.z = design(planes, kernel)
        self.shape = self.z.shape

    def exponents(self, coef: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
        r = (coef[:, None, :] @ self.z)[:, 0, :]
        return np.clip(r * r * scale[:, None] + shift[:, None], -em_kernels.MAX_EXPONENT, em_kernels.MAX_EXPONENT)

    def moments(self, e: np.ndarray, logistic: bool) -> tuple[np.ndarray, np.ndarray]:
        w = 1 / (1 + e) if logistic else e
        return (self.z * w[:, None, :]) @ self.z.transpose(0, 2, 1), w.sum(1)


def window_passes(planes: np.ndarray, kernel: int, compiled: bool | None = None) -> _Compiled | _Design:
    """The EM passes for these planes: compiled kernels when the window allows (default), else numpy."""
    planes = planes.astype(np.float64, copy=False)
    use_compiled = kernel <= em_kernels.MAX_KERNEL if compiled is None else compiled
    return _Compiled(planes, kernel) if use_compiled else _Design(planes, kernel)


def solve_pinv(moments: np.ndarray) -> np.ndarray:
    """Weighted least squares per plane: pinv(X^T W X) X^T W y from [[X^T W X, X^T W y], [., .]] (N, m+1, m+1).

    The pseudo-inverse of the symmetric Gram matrix from its eigen-decomposition with numpy's default cut-off
    (1e-15 of the largest magnitude): what ``np.linalg.pinv(hermitian=True)`` does, at half its cost per call.
    """
    m = moments.shape[1] - 1
    vals, vecs = np.linalg.eigh(moments[:, :m, :m])
    mag = np.abs(vals)
    keep = mag > PINV_RCOND * mag.max(1, keepdims=True)
    inv = np.divide(1.0, vals, out=np.zeros_like(vals), where=keep)
    return (vecs @ (inv[:, :, None] * (vecs.transpose(0, 2, 1) @ moments[:, :m, m:])))[:, :, 0]


def em_planes(planes: np.ndarray, params: EMParams, compiled: bool | None = None) -> np.ndarray:
    """EM kernel coefficients of each (H, W) plane in [0, 1]: (N, H, W) -> (N, k*k-1).

    The variance of the new residuals needs no pass of its own: sum_p w_p r_p^2 = c^T M c for the residual
    coefficients c = [-a, 1] and the moments M = sum_p w_p z z^T of the weights w that gave a (all ones for
    the Gaussian mode's plain mean).
    """
    passes = window_passes(planes, params.kernel, compiled)
    n, _, n_px = passes.shape
    plain, n_w = passes.moments(np.ones((n, n_px)), logistic=False)  # unweighted: the least-squares start
    moments, prior = plain, np.full(n, 0.5)  # mixture: share of pixels the linear model explains
    a = solve_pinv(moments)
    for _ in range(params.n_iter):
        coef = np.concatenate([-a, np.ones((n, 1))], axis=1)  # r = y - X a = [-a, 1] . z
        if params.mode == "gaussian":
            var = np.maximum(_quadratic(coef, plain) / n_px, MIN_VAR)
            e = _exp(passes.exponents(coef, -0.5 / var, np.zeros(n)))  # w = exp(-r^2 / (2 s2))
            moments, n_w = passes.moments(e, logistic=False)
        else:
            var = np.maximum(_quadratic(coef, moments) / n_w, MIN_VAR)  # sum(w r^2) / sum(w), w of the last step
            e = _exp(passes.exponents(coef, 0.5 / var, _log_outlier_odds(prior, var)))
            moments, n_w = passes.moments(e, logistic=True)  # w = 1 / (1 + e): the posterior, see below
            prior = n_w / n_px
        a = solve_pinv(moments)
    return a


def _exp(t: np.ndarray) -> np.ndarray:
    return np.exp(t, out=t)  # in place: one buffer per pass, kept in cache


def _quadratic(coef: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """c^T M c per plane."""
    return np.einsum("ni,nij,nj->n", coef, moments, coef)


def _log_outlier_odds(prior: np.ndarray, var: np.ndarray) -> np.ndarray:
    """log((1 - p) U sqrt(2 pi s2) / p): the mixture's posterior p N(r; 0, s2) / (p N + (1 - p) U) is
    1 / (1 + exp(r^2 / (2 s2) + this)), one exp per pixel and no division by an underflowed density.
    p = 1 gives -inf (weight 1), p = 0 gives +inf (weight ~0): the exponent's clip keeps both finite."""
    with np.errstate(divide="ignore"):
        return np.log((1 - prior) * OUTLIER_DENSITY) + 0.5 * np.log(2 * np.pi * var) - np.log(prior)


def em_features(images: np.ndarray, params: EMParams, compiled: bool | None = None) -> np.ndarray:
    """(B, H, W, 3) images, uint8 or float in [0, 1] -> (B, 3 * (k*k-1)) features, channel-major (R first).

    Planes go through EM in groups of about ``EM_BATCH_PX`` pixels: numpy's per-call cost is paid per group,
    memory stays bounded, and uint8 images become float64 a group at a time.
    """
    b, hgt, wid, c = images.shape
    planes = np.moveaxis(images, 3, 1).reshape(b * c, hgt, wid)
    step = max(1, EM_BATCH_PX // (hgt * wid))
    groups = [em_planes(unit_range(planes[i:i + step]), params, compiled) for i in range(0, len(planes), step)]
    return np.concatenate(groups).reshape(b, c * params.n_coef)


def unit_range(pixels: np.ndarray) -> np.ndarray:
    """uint8 -> float64 in [0, 1] (x / 255); float arrays as they are."""
    return pixels / 255.0 if pixels.dtype == np.uint8 else pixels


# ------------------------------------------------------------------------------------------- torch core
def em_features_torch(images: np.ndarray, params: EMParams, device: str | None = None) -> np.ndarray:
    """Same as ``em_features`` in torch (float64) on ``device`` (default: CUDA when there is one)."""
    import torch
    import torch.nn.functional as F

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    b, hgt, wid, c = images.shape
    k = params.kernel
    padded = pad_planes(np.moveaxis(unit_range(images), 3, 1).reshape(b * c, hgt, wid), k)  # torch's refuses 1 px
    cols = F.unfold(torch.as_tensor(padded[:, None], dtype=torch.float64, device=dev), k)  # (N, k*k, P)
    order = [dy * k + dx for dy, dx in em_kernels.offsets(k)]  # unfold's raster order -> neighbours, then pixel
    xt = cols[:, order[:-1], :].contiguous()  # (N, m, P)
    y = cols[:, order[-1], :].contiguous()  # the pixel itself

    def wls(w: torch.Tensor) -> torch.Tensor:
        xtw = xt * w[:, None, :]
        return (torch.linalg.pinv(xtw @ xt.transpose(1, 2), hermitian=True) @ (xtw @ y[:, :, None]))[:, :, 0]

    w, prior = torch.ones_like(y), torch.full((len(y), 1), 0.5, dtype=y.dtype, device=dev)
    a = wls(w)
    for _ in range(params.n_iter):
        r2 = (y - (a[:, None, :] @ xt)[:, 0, :]) ** 2
        if params.mode == "gaussian":
            var = r2.mean(1, keepdim=True).clamp_min(MIN_VAR)
            w = torch.exp(-r2 / (2 * var))
        else:
            var = ((w * r2).sum(1, keepdim=True) / w.sum(1, keepdim=True)).clamp_min(MIN_VAR)
            inlier = prior * torch.exp(-r2 / (2 * var)) / torch.sqrt(2 * torch.pi * var)
            w = inlier / (inlier + (1 - prior) * OUTLIER_DENSITY)
            prior = w.mean(1, keepdim=True)
        a = wls(w)
    return a.reshape(b, c * params.n_coef).cpu().numpy()


def pick_backend(backend: str = "auto") -> str:
    """cpu | torch; ``auto``: torch when a CUDA GPU is there, else cpu (compiled kernels on CPU threads)."""
    if backend != "auto":
        if backend not in ("cpu", "torch"):
            raise ValueError(f"backend must be auto, cpu or torch; got '{backend}'")
        return backend
    try:
        import torch
    except ImportError:
        return "cpu"
    return "torch" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------- many image files
def load_rgb8(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8: an eighth of the bytes to stack and reorder as float64."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _featurise_chunk(paths: Sequence[str], params: EMParams, backend: str) -> np.ndarray:
    """Load and featurise a few files; same-shape images are stacked into one batch."""
    images = [load_rgb8(p) for p in paths]
    out = np.empty((len(images), 3 * params.n_coef))
    fn = em_features_torch if backend == "torch" else em_features
    for shape in {im.shape for im in images}:
        idx = [i for i, im in enumerate(images) if im.shape == shape]
        out[idx] = fn(np.stack([images[i] for i in idx]), params)
    return out


def _chunks(paths: Sequence[str], size: int) -> list[Sequence[str]]:
    return [paths[i:i + size] for i in range(0, len(paths), size)]


def featurise_paths(paths: Sequence[str], params: EMParams, backend: str = "auto",
                    workers: int | None = None, progress: bool = True) -> np.ndarray:
    """EM features of image files, (n, 3 * (k*k-1)); chunks run on ``workers`` threads (default: all cores)."""
    paths = [str(p) for p in paths]
    if not paths:
        return np.zeros((0, 3 * params.n_coef))
    backend = pick_backend(backend)
    with Image.open(paths[0]) as first:
        per_image = first.size[0] * first.size[1] * 3
    size = max(1, CHUNK_PX // per_image) * (8 if backend == "torch" else 1)  # a GPU wants big batches
    workers = 1 if backend == "torch" else (workers or os.cpu_count() or 1)
    chunks = _chunks(paths, size)
    if len(chunks) < workers * 4:  # smaller chunks so that every core gets several
        chunks = _chunks(paths, max(1, -(-len(paths) // (workers * 4))))
    with _one_blas_thread(), ThreadPoolExecutor(workers) as pool:  # kernels, numpy, PIL release the GIL
        results = pool.map(lambda c: _featurise_chunk(c, params, backend), chunks)
        if progress:
            results = bar(results, len(chunks), f"EM traces of {len(paths)} images", n_items=len(paths))
        return np.concatenate(list(results))


def _one_blas_thread():
    """Our threads already use every core; BLAS threads on top of them would only fight for the cores."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


# ------------------------------------------------------------------------------------------ feature cache
def cache_file(px_dir: Path, params: EMParams) -> Path:
    """Where a data set's features at one size and one set of EM parameters live."""
    return Path(px_dir) / f"_traces_{params.mode}_k{params.kernel}_i{params.n_iter}.npz"


def cached_features(paths: Sequence[str], px_dir: Path, params: EMParams, backend: str = "auto") -> np.ndarray:
    """Features of cached images, computing only those not in the cache file (or changed since)."""
    file = cache_file(px_dir, params)
    keys = np.array([os.path.relpath(p, px_dir) for p in paths])
    stamps = np.array([os.stat(p).st_mtime_ns for p in paths], dtype=np.int64)
    known = _read_cache(file)
    found = [known.get(k) for k in keys]
    hit = np.array([f is not None and f[0] == s for f, s in zip(found, stamps, strict=True)], dtype=bool)
    feats = np.zeros((len(paths), 3 * params.n_coef))
    if hit.any():
        feats[hit] = np.stack([f[1] for f, h in zip(found, hit, strict=True) if h])
    if not hit.all():
        feats[~hit] = featurise_paths([p for p, h in zip(paths, hit, strict=True) if not h], params, backend)
        known.update({k: (s, f) for k, s, f in zip(keys, stamps, feats, strict=True)})
        _write_cache(file, known)
    return feats


def _read_cache(file: Path) -> dict[str, tuple[int, np.ndarray]]:
    """key -> (mtime_ns, features); empty when the file is missing or from another feature version."""
    try:
        with np.load(file, allow_pickle=False) as z:
            if int(z["version"]) != FEATURE_VERSION:
                return {}
            return {str(k): (int(s), f) for k, s, f in zip(z["keys"], z["stamps"], z["features"], strict=True)}
    except (OSError, ValueError, KeyError):
        return {}


def _write_cache(file: Path, known: dict[str, tuple[int, np.ndarray]]) -> None:
    keys = sorted(known)

    def write(p: Path) -> None:
        with open(p, "wb") as f:  # np.savez on a path would append ".npz" to the temp name
            np.savez(f, version=FEATURE_VERSION, keys=np.array(keys), features=np.stack([known[k][1] for k in keys]),
                     stamps=np.array([known[k][0] for k in keys], dtype=np.int64))

    atomic.write_with(file, write)


# ------------------------------------------------------------------------------------------- classifiers
def _classifier_table(seed: int) -> dict[str, Callable[[], Any]]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    return {
        # Platt-scaled SVC: what SVC(probability=True) did, in the form scikit-learn keeps after 1.11
        "svc": lambda: CalibratedClassifierCV(SVC(random_state=seed), method="sigmoid", cv=5, ensemble=False),
        "rf": lambda: RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=-1),
        "logreg": lambda: LogisticRegression(max_iter=1000),
        "hgb": lambda: HistGradientBoostingClassifier(random_state=seed),
    }


def make_classifier(name: str, seed: int = 42):
    """StandardScaler + the named scikit-learn classifier, as one Pipeline."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    table = _classifier_table(seed)
    if name not in table:
        raise ConfigError(f"classifier must be one of {', '.join(CLASSIFIERS)}; got '{name}'")
    return Pipeline([("scale", StandardScaler()), ("clf", table[name]())])


def positive_probs(model, x: np.ndarray) -> np.ndarray:
    """Probability of class 1 (the positive class), empty for no rows."""
    return model.predict_proba(x)[:, 1] if len(x) else np.zeros(0)


def save_model(model, path: Path) -> str:
    """Pickle the fitted pipeline atomically; returns its SHA-256 (recorded in metrics.json)."""
    atomic.write_bytes(path, pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    return file_sha256(path)


def load_model(run_dir: Path, trust: bool = False):
    """A complete em_traces run's pipeline; refused unless the run's manifest lists it with this hash
    (``trust=True`` loads it anyway, with a warning: unpickling runs code)."""
    from . import manifest

    return manifest.load_pickle(Path(run_dir) / MODEL_FILE, trust)


# ---------------------------------------------------------------------------------------------- figures
def mean_kernels(features: np.ndarray, kernel: int = 3) -> np.ndarray:
    """(n, 3 * (k*k-1)) features -> (3, k, k) mean kernel per channel, NaN at the centre."""
    m = kernel * kernel - 1
    coef = features.reshape(len(features), 3, m).mean(0)
    centre = m // 2
    full = np.concatenate([coef[:, :centre], np.full((3, 1), np.nan), coef[:, centre:]], axis=1)
    return full.reshape(3, kernel, kernel)


def kernels_figure(features: np.ndarray, y: np.ndarray, kernel: int, classes: tuple[str, str],
                   title: str = "Mean EM kernel") -> Figure:
    """Mean kernel per class (rows, plus their difference) and channel (columns); the blank centre is the pixel."""
    rows = [(classes[0], mean_kernels(features[y == 0], kernel)), (classes[1], mean_kernels(features[y == 1], kernel))]
    rows.append((f"{classes[1]} - {classes[0]}", rows[1][1] - rows[0][1]))
    fig = new_figure((7.8, 7.8))
    axes = fig.subplots(3, 3)
    for r, (name, kernels) in enumerate(rows):
        lim = float(np.nanmax(np.abs(kernels))) or 1.0  # one symmetric scale per row: signs comparable
        for c, channel in enumerate(CHANNELS):
            ax = axes[r, c]
            im = ax.imshow(kernels[c], cmap="coolwarm", vmin=-lim, vmax=lim)
            for (i, j), v in np.ndenumerate(kernels[c]):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
            ax.set(xticks=[], yticks=[], title=plain(f"{name}: {channel}"))
        fig.colorbar(im, ax=axes[r, :].tolist(), shrink=0.8)
    fig.suptitle(plain(title), fontsize=12)
    return fig


def importances(model, x: np.ndarray, y: np.ndarray, seed: int = 42) -> tuple[np.ndarray, str]:
    """Per-feature importance: the forest's impurity importances, else permutation importance (AUC drop)."""
    clf = model.named_steps["clf"]
    if hasattr(clf, "feature_importances_"):
        return np.asarray(clf.feature_importances_), "mean decrease in impurity"
    from sklearn.inspection import permutation_importance

    result = permutation_importance(model, x, y, scoring="roc_auc", n_repeats=5, random_state=seed)
    return result.importances_mean, "permutation importance (validation AUC drop)"


def importance_figure(values: np.ndarray, names: Sequence[str], what: str, title: str = "Feature importance") -> Figure:
    """Horizontal bars, most important on top."""
    order = np.argsort(values)
    fig = new_figure((7.8, max(4.0, 0.22 * len(values) + 1.5)))
    ax = fig.add_subplot()
    ax.barh([plain(names[i]) for i in order], values[order], color="tab:blue")
    ax.set(xlabel=plain(what), title=plain(title))
    ax.grid(axis="x", alpha=0.3)
    return fig


# ------------------------------------------------------------------------------------------------ a run
@dataclass(frozen=True)
class _Features:
    """Features of every image of a prepared data set, by part."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    unseen: np.ndarray
    labelled_test: np.ndarray
    seconds: float


def _features_of(prepared, params: EMParams) -> _Features:
    """All features of a prepared data set, through the cache next to its images."""
    parts = [prepared.items[~prepared.items.is_valid], prepared.items[prepared.items.is_valid],
             prepared.test, prepared.unseen, prepared.labelled_test]
    paths = [p for part in parts for p in part.path]
    start = time.perf_counter()
    feats = cached_features(paths, prepared.cache_dir, params)
    bounds = np.cumsum([0] + [len(p) for p in parts])
    return _Features(*(feats[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)),
                     seconds=time.perf_counter() - start)


def _labels(frame: pd.DataFrame, positive: str) -> np.ndarray:
    return (frame.label == positive).to_numpy().astype(int)


def run_traces(cfg: TrainConfig, run_dir: Path) -> RunResult:
    """An ``arch: em_traces`` run: features, classifier, the CNN run folder contract, explanation plots."""
    from . import data

    prepared = data.prepare(cfg.data, item_resize_px=cfg.item_resize_px, crop=cfg.keeps_grid)
    params = EMParams.of(cfg)
    feats = _features_of(prepared, params)
    train_items, valid = prepared.items[~prepared.items.is_valid], prepared.items[prepared.items.is_valid]
    y_train, y = _labels(train_items, prepared.positive_class), _labels(valid, prepared.positive_class)
    start = time.perf_counter()
    model = make_classifier(cfg.classifier, cfg.seed).fit(feats.train, y_train)
    fit_s = time.perf_counter() - start
    valid_probs = positive_probs(model, feats.valid)
    runfolder.write_predictions(run_dir, valid, valid_probs, prepared.test, positive_probs(model, feats.test))
    held_out = runfolder.score_held_out(prepared, run_dir, lambda part, _: positive_probs(model, getattr(feats, part)))
    scores = metrics.validation_scores(y, valid_probs, valid.get("group"))
    runfolder.write_history(run_dir, pd.DataFrame([{
        "epoch": 0, "train_loss": metrics.classification(y_train, positive_probs(model, feats.train))["log_loss"],
        "valid_loss": scores["log_loss"], "roc_auc_score": scores["auc"]}]))  # a CNN's columns, one "epoch"
    model_sha = save_model(model, run_dir / MODEL_FILE)
    classes = (prepared.negative_class, prepared.positive_class)
    _write_plots(run_dir / runfolder.PLOTS, cfg, model, feats, y_train, y, classes)
    result = {**scores, **held_out, **_run_record(cfg, prepared, feats, fit_s), "model_sha256": model_sha}
    return runfolder.finish(run_dir, result)


def _run_record(cfg: TrainConfig, prepared, feats: _Features, fit_s: float) -> dict[str, Any]:
    """metrics.json fields besides the scores: the same keys as a CNN run's, plus the EM parameters."""
    n_train = len(feats.train)
    total_s = feats.seconds + fit_s
    return {
        "status": "complete", "run": cfg.run_name, "arch": cfg.arch, "size": cfg.item_resize_px,
        "recipe": f"{cfg.em_mode}+{cfg.classifier}",
        "item_resize_px": cfg.item_resize_px, "epochs": 0, "precision_mode": "fp64",
        "classifier": cfg.classifier, "em_mode": cfg.em_mode, "em_iter": cfg.em_iter, "kernel": cfg.kernel,
        "n_features": feats.train.shape[1], "n_train": n_train, "n_valid": len(feats.valid),
        "n_test": len(feats.test), "positive_class": prepared.positive_class,
        "negative_class": prepared.negative_class, "data_key": prepared.key,
        "split_file": str(prepared.split_file.resolve()), "cache_dir": str(prepared.cache_dir.resolve()),
        "features_time_s": round(feats.seconds, 2),
        "fit_time_s": round(total_s, 2), "classifier_fit_s": round(fit_s, 2),
        "images_per_s": round(n_train / max(total_s, 1e-9), 1), "model_file": MODEL_FILE,
        "bad_images": len(prepared.bad_images),
    }


PLOT_FILES = ("em_kernels.png", "feature_importance.png")  # in <run>/plots/; the report embeds them


def _write_plots(out: Path, cfg: TrainConfig, model, feats: _Features, y_train: np.ndarray, y: np.ndarray,
                 classes: tuple[str, str]) -> None:
    """The explanation: mean kernels per class (all labelled images) and feature importances (validation set)."""
    values, what = importances(model, feats.valid, y, cfg.seed)
    figures = {
        PLOT_FILES[0]: kernels_figure(np.concatenate([feats.train, feats.valid]), np.concatenate([y_train, y]),
                                         cfg.kernel, classes, f"Mean EM kernel per class: {cfg.run_name}"),
        PLOT_FILES[1]: importance_figure(values, feature_names(cfg.kernel), what,
                                                    f"Feature importance: {cfg.run_name}"),
    }
    for name, fig in figures.items():
        atomic.write_bytes(out / name, png_bytes(fig))
