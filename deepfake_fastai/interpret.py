"""Look inside a trained run: its top losses, Grad-CAM heatmaps and a t-SNE map of its embeddings.

    run = load_run("runs/quickstart/resnet18_r64-64_fine_tune_s42")
    frame = valid_images(run)                                # validation rows + the path of each cached image
    top_losses_figure(top_losses(frame, classes_of(run)))    # no model: losses from the saved probabilities
    learn = run.learner()
    cam = grad_cam(learn, frame.path[:8])                    # .images, .heat (n, h, w) in [0, 1], .probs, ...
    grad_cam_figure(cam, frame.label[:8])                    # each image above its heatmap overlay
    tsne_figure(tsne_points(learn, frame), classes_of(run))  # penultimate-layer embeddings in 2-D
    figures, notes = run_figures(run)                        # all three as the report shows them (never raises)

Images come from the run's data cache (``runfolder.cache_dir``: the folder its images were cached in) and go through the
learner's own validation transforms, so the model sees what it was scored on. Grad-CAM explains the body's
last feature map (CNNs); for a ViT, the patch tokens entering its last attention, class/register tokens dropped
and the rest reshaped to the patch grid. The cores (losses, Grad-CAM maps, overlays, token grids, t-SNE) are
pure numpy; torch and fastai are imported only inside the functions that run a model. Figures follow plots.py:
data in, matplotlib Figure out, no pyplot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import runfolder
from .config import TRACES_ARCH
from .inspection import Run
from .metrics import EPS
from .plots import FIGSIZE_IN, new_figure, plain

log = logging.getLogger(__name__)

CAM_ALPHA = 0.5  # heatmap opacity over the image: both stay visible
CAM_CMAP = "jet"  # the usual Grad-CAM colours: blue = no evidence, red = strongest
TSNE_MAX_IMAGES = 500  # t-SNE and a CPU forward pass over more would make a report slow for little gain
CLASS_COLOURS = ("tab:blue", "tab:red")  # negative (real), positive (fake)

Grid = Callable[[np.ndarray, tuple[int, int]], np.ndarray]  # layer output, input (h, w) -> (n, c, h', w')


# ------------------------------------------------------------------------------------------- pure cores
def sample_losses(y: Sequence, p: Sequence) -> np.ndarray:
    """Cross-entropy of each image, -log p(actual class), with p clipped as the log-loss metric clips it."""
    y, p = np.asarray(y).astype(int), np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return -np.log(np.where(y == 1, p, 1 - p))


def top_losses(valid: pd.DataFrame, classes: tuple[str, str], k: int | None = 12) -> pd.DataFrame:
    """The ``k`` validation rows with the highest loss, highest first, with rank, predicted class and loss.

    ``valid`` has y (1 = positive) and prob (of the positive class); ``classes`` = (negative, positive).
    """
    losses = sample_losses(valid["y"], valid["prob"])
    order = np.argsort(-losses, kind="stable")[:k]  # ties: the earlier row first
    rows = valid.iloc[order].assign(loss=losses[order]).reset_index(drop=True)
    positive = rows["prob"].to_numpy() >= 0.5  # the threshold the metrics use
    rows["predicted"] = np.where(positive, classes[1], classes[0])
    rows["p_predicted"] = np.where(positive, rows["prob"], 1 - rows["prob"])
    return rows.assign(rank=np.arange(1, len(rows) + 1))


def pick_per_class(valid: pd.DataFrame, n: int, seed: int = 0) -> list[pd.DataFrame]:
    """Up to ``n`` seeded random rows of each class, negative class first (a representative sample)."""
    picks = []
    for y in (0, 1):
        rows = valid[valid["y"] == y]
        picks.append(rows.sample(min(n, len(rows)), random_state=seed).sort_values("id"))
    return picks


def grad_cam_map(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) of one image: ReLU(sum over channels of mean gradient x activation).

    ``acts`` and ``grads`` are (channels, h, w); returns (h, w).
    """
    weights = grads.mean(axis=(1, 2))
    return np.maximum(np.tensordot(weights, acts, axes=1), 0.0)


def to_unit(a: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] (min -> 0, max -> 1); all zeros when constant (there is nothing to show)."""
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a, dtype=np.float64)


def upsample(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a coarse (h, w) map to the image's (height, width)."""
    from skimage.transform import resize

    return resize(heat.astype(np.float64), shape, order=1, mode="edge", anti_aliasing=False)


def heatmap(acts: np.ndarray, grads: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Grad-CAM of one image at the image's size, in [0, 1]."""
    return to_unit(upsample(grad_cam_map(acts, grads), shape))


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = CAM_ALPHA, cmap: str = CAM_CMAP) -> np.ndarray:
    """The heatmap in colour, blended over an (h, w, 3) image in [0, 1]; returns (h, w, 3) in [0, 1]."""
    from matplotlib import colormaps

    colour = colormaps[cmap](np.clip(heat, 0, 1))[..., :3]
    return np.clip((1 - alpha) * image + alpha * colour, 0, 1)


def tokens_to_grid(tokens: np.ndarray, n_prefix: int, grid: tuple[int, int]) -> np.ndarray:
    """ViT tokens (n, tokens, c) -> (n, c, rows, cols): drop the class/register tokens, patches row by row."""
    n, count, c = tokens.shape
    if count - n_prefix != grid[0] * grid[1]:
        raise NotImplementedError(f"{count} tokens - {n_prefix} prefix tokens do not fill a {grid[0]}x{grid[1]} "
                                  f"patch grid; Grad-CAM supports ViTs with a fixed patch grid only")
    return tokens[:, n_prefix:].reshape(n, grid[0], grid[1], c).transpose(0, 3, 1, 2)


def embed_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE of (n, d) features to (n, 2); perplexity shrinks for small sets (it must stay below n)."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 3:  # t-SNE needs a few neighbours; one or two points have no shape to show
        return np.zeros((n, 2))
    perplexity = min(30.0, max(1.0, (n - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(features, dtype=np.float32))


# ------------------------------------------------------------------------------------------ run folders
def classes_of(run: Run) -> tuple[str, str]:
    """(negative, positive) class names of a run."""
    return run.negative_class, run.positive_class


def cache_dir(run: Run) -> Path:
    """The folder of the run's cached images, at the size they were fed to the model."""
    folder = runfolder.cache_dir(run.path, run.metrics)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: the run's image cache is not here (relative paths are relative to the "
                                f"folder the run was trained in); prepare the same data again to re-create it")
    return folder


def valid_images(run: Run) -> pd.DataFrame:
    """The run's validation rows (id, label, prob, y) with the path of each cached image."""
    from .data import cache_name  # the cache's own naming rule (odd ids are hashed)

    folder = cache_dir(run)
    return run.valid.assign(path=[str(folder / cache_name(i)) for i in run.valid["id"]])


def load_image(path: str | Path) -> np.ndarray:
    """An image file as (h, w, 3) floats in [0, 1]."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64) / 255


# ------------------------------------------------------------------------------------------- the model
def _loader(learn, paths: Sequence[str], bs: int):
    """The learner's validation transforms over image files, in order."""
    return learn.dls.test_dl(list(paths), bs=bs)


def cam_layer(model) -> tuple[Any, Grid]:
    """The module Grad-CAM explains (the body's last feature map) and how to turn its output into a grid."""
    body = model[0]
    inner = getattr(body, "model", body)  # fastai's TimmBody wraps the timm model
    if all(hasattr(inner, a) for a in ("blocks", "patch_embed", "num_prefix_tokens")):  # a ViT
        patch, n_prefix = inner.patch_embed.patch_size, inner.num_prefix_tokens

        def vit_grid(out: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
            return tokens_to_grid(out, n_prefix, (hw[0] // patch[0], hw[1] // patch[1]))

        # The last block's norm1, not its output: after the last block a class-token head reads the class
        # token only, so the patch tokens there get no gradient; norm1 feeds the attention that mixes them in.
        return inner.blocks[-1].norm1, vit_grid
    if getattr(inner, "output_fmt", "NCHW") == "NHWC":  # timm's Swin, MambaOut...: channels last
        return body, lambda out, hw: _spatial_grid(out.transpose(0, 3, 1, 2), hw)
    return body, _spatial_grid


def _spatial_grid(out: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A CNN body's output is already (n, c, h, w); anything else has no map to explain."""
    if out.ndim != 4:
        raise NotImplementedError(f"Grad-CAM needs a spatial feature map; this body outputs shape {out.shape}")
    return out


@dataclass(frozen=True, eq=False)
class GradCam:
    """Grad-CAM of a set of images."""

    images: np.ndarray  # (n, h, w, 3) in [0, 1]: the model's inputs (after its resize), denormalised
    heat: np.ndarray  # (n, h, w) in [0, 1], scaled per image
    probs: np.ndarray  # (n, classes) softmax probabilities
    target: np.ndarray  # (n,) index of the class each map explains
    vocab: tuple[str, ...]  # class names by index


def grad_cam(learn, paths: Sequence[str], target: str | None = None, bs: int = 16) -> GradCam:
    """Grad-CAM of each image for class ``target`` (default: the predicted class) on the body's last map."""
    model = learn.model.eval()
    layer, grid = cam_layer(model)
    vocab = tuple(str(v) for v in learn.dls.vocab)
    dl = _loader(learn, paths, bs)
    parts = []
    for (xb,) in dl:
        images = dl.decode((xb,))[0].permute(0, 2, 3, 1).cpu().numpy() / 255
        probs, idx, acts, grads = _cam_batch(model, layer, xb, None if target is None else vocab.index(target))
        hw = tuple(xb.shape[-2:])
        heat = [heatmap(a, g, hw) for a, g in zip(grid(acts, hw), grid(grads, hw), strict=True)]
        parts.append((images, np.stack(heat), probs, idx))
    images, heat, probs, idx = (np.concatenate(p) for p in zip(*parts, strict=True))
    return GradCam(images, heat, probs, idx, vocab)


def _cam_batch(model, layer, xb, target: int | None) -> tuple[np.ndarray, ...]:
    """One batch: probabilities, explained class, and the layer's output and its gradient for that class."""
    import torch
    from fastai.callback.hook import hook_output

    x = xb.as_subclass(torch.Tensor).detach().requires_grad_(True)  # a graph even if the body is frozen
    with hook_output(layer, detach=False) as hook, torch.enable_grad():
        logits = model(x)
        idx = logits.argmax(1) if target is None else torch.full((len(x),), target, device=logits.device)
        # log p(class), not the raw logit of the paper: a softmax ignores a shift shared by all logits, which a
        # raw logit carries; with two classes this is the log-odds up to a positive factor per image.
        score = logits.log_softmax(1).gather(1, idx[:, None]).sum()
        grads = torch.autograd.grad(score, hook.stored)[0]
    acts = hook.stored.detach().float().cpu().numpy()
    return logits.softmax(1).detach().cpu().numpy(), idx.cpu().numpy(), acts, grads.float().cpu().numpy()


def embeddings(learn, paths: Sequence[str], bs: int = 64) -> np.ndarray:
    """Penultimate-layer features of each image: the input of the model's last Linear (pooled, in the head)."""
    import torch
    from fastai.callback.hook import Hook

    model = learn.model.eval()
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    out = []
    with Hook(last, lambda m, i, o: i[0], detach=True, cpu=True) as hook, torch.no_grad():
        for (xb,) in _loader(learn, paths, bs):
            model(xb)
            out.append(hook.stored.float().numpy())
    return np.concatenate(out)


def tsne_points(learn, valid: pd.DataFrame, max_images: int = TSNE_MAX_IMAGES, seed: int = 0) -> pd.DataFrame:
    """Validation rows (a seeded sample of at most ``max_images``) with their embedding mapped to 2-D (x1, x2)."""
    rows = valid if len(valid) <= max_images else valid.sample(max_images, random_state=seed).sort_index()
    xy = embed_2d(embeddings(learn, rows["path"].tolist()), seed)
    return rows.assign(x1=xy[:, 0], x2=xy[:, 1]).reset_index(drop=True)


# -------------------------------------------------------------------------------------------- figures
def _image_axes(fig: Figure, n: int, ncols: int) -> list:
    """A grid of image panels without ticks or frames."""
    nrows = max(1, -(-n // ncols))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    return list(axes)


def top_losses_figure(rows: pd.DataFrame, title: str = "Top losses", ncols: int = 4) -> Figure:
    """The highest-loss images, each titled with actual and predicted class, probability and loss."""
    nrows = max(1, -(-len(rows) // ncols))
    fig = new_figure((2.6 * ncols, 2.75 * nrows + 0.7))
    for ax, r in zip(_image_axes(fig, len(rows), ncols), rows.itertuples(), strict=False):
        ax.imshow(load_image(r.path))  # matplotlib shows big pixels (nearest) when enlarging, smooths when shrinking
        wrong = r.predicted != r.label
        ax.set_title(f"#{r.rank} actual: {plain(r.label)}\npredicted: {plain(r.predicted)} ({r.p_predicted:.2f})"
                     f"\nloss {r.loss:.2f}", fontsize=11, color="tab:red" if wrong else "black")
    fig.suptitle(plain(title), fontsize=12)
    return fig


def cam_slots(labels: Sequence[str], ncols: int) -> list[tuple[int, int]]:
    """(row, column) of each image in the Grad-CAM grid: each class starts a new row (labels come grouped)."""
    slots, row, col = [], -1, ncols
    for i, label in enumerate(labels):
        if col == ncols or (i and label != labels[i - 1]):
            row, col = row + 1, 0
        slots.append((row, col))
        col += 1
    return slots


def grad_cam_figure(cam: GradCam, labels: Sequence[str], title: str = "Grad-CAM", ncols: int = 4) -> Figure:
    """Each image above its Grad-CAM overlay; ``labels`` are the actual classes, in the order of ``cam``."""
    from matplotlib.cm import ScalarMappable

    labels = [str(v) for v in labels]  # positions, whatever index a Series had
    slots = cam_slots(labels, ncols)
    pairs = max([r for r, _ in slots], default=0) + 1
    fig = new_figure((2.4 * ncols + 1.0, 4.9 * pairs + 0.7))
    axes = np.array(_image_axes(fig, 2 * pairs * ncols, ncols)).reshape(2 * pairs, ncols)
    for i, (label, (row, col)) in enumerate(zip(labels, slots, strict=True)):
        top, bottom = axes[2 * row, col], axes[2 * row + 1, col]
        pred = int(cam.probs[i].argmax())
        top.imshow(cam.images[i])
        top.set_title(f"actual: {plain(label)}\npredicted: {plain(cam.vocab[pred])} ({cam.probs[i, pred]:.2f})",
                      fontsize=11, color="black" if cam.vocab[pred] == label else "tab:red")
        bottom.imshow(overlay(cam.images[i], cam.heat[i]))
        flat = ":\nno positive evidence" if cam.heat[i].max() <= 0 else ""  # ReLU left nothing: say so
        bottom.set_title(f"Grad-CAM for {plain(cam.vocab[cam.target[i]])}{flat}", fontsize=11)
    bar = ScalarMappable(cmap=CAM_CMAP)
    bar.set_clim(0, 1)
    fig.colorbar(bar, ax=axes.ravel().tolist(), shrink=0.5, label="evidence for the class (scaled per image)")
    fig.suptitle(plain(title), fontsize=12)
    return fig


def tsne_figure(points: pd.DataFrame, classes: tuple[str, str], title: str = "t-SNE of embeddings") -> Figure:
    """Points coloured by actual class; misclassified ones (threshold 0.5) drawn as crosses."""
    fig = new_figure(FIGSIZE_IN)
    ax = fig.add_subplot()
    wrong = (points["prob"] >= 0.5).astype(int) != points["y"]
    for y, (name, colour) in enumerate(zip(classes, CLASS_COLOURS, strict=True)):
        for miss, style in ((False, {"s": 28, "alpha": 0.75}),
                            (True, {"s": 60, "marker": "X", "edgecolors": "black", "linewidths": 0.6})):
            mine = (points["y"] == y) & (wrong == miss)
            if mine.any():
                ax.scatter(points.x1[mine], points.x2[mine], color=colour, **style,
                           label=f"{plain(name)}: {int(mine.sum())} {'wrong' if miss else 'right'}")
    ax.set(xlabel="t-SNE 1", ylabel="t-SNE 2", title=plain(title))
    ax.text(0.01, 0.01, "no units: neighbours matter, distances between clusters mean little",
            transform=ax.transAxes, fontsize=8, color="0.35")
    ax.grid(alpha=0.3)
    ax.legend(title="actual class", fontsize=9, loc="best", framealpha=0.9)
    return fig


# ------------------------------------------------------------------------------------------ one run
def run_figures(run: Run, n_top: int = 12, n_per_class: int = 4,
                max_tsne: int = TSNE_MAX_IMAGES) -> tuple[list[tuple[str, Figure]], list[str]]:
    """A run's top-losses, Grad-CAM and t-SNE figures as (name, figure), and a note for each that failed."""
    notes: list[str] = []
    frame = _attempt(notes, run, "validation images", lambda: valid_images(run))
    if frame is None:
        return [], notes
    figures = [("top losses", _attempt(notes, run, "top losses", lambda: _top_losses_of(run, frame, n_top)))]
    if run.config.arch == TRACES_ARCH:  # no network to look into: its kernel plots explain it (traces.py)
        return [(name, fig) for name, fig in figures if fig is not None], notes
    learn = _attempt(notes, run, "learner", lambda: _learner(run))
    if "fold" in frame.columns:  # a K-fold run: the learner is fold 0's, so only the images it never trained on
        frame = frame[frame["fold"].astype(str) == "0"].reset_index(drop=True)
    if learn is not None:  # the top losses need no model; the other two do
        figures.append(("Grad-CAM", _attempt(notes, run, "Grad-CAM", lambda: _grad_cam_of(run, learn, frame,
                                                                                       n_per_class))))
        figures.append(("t-SNE", _attempt(notes, run, "t-SNE", lambda: _tsne_of(run, learn, frame, max_tsne))))
    return [(name, fig) for name, fig in figures if fig is not None], notes


def _learner(run: Run):
    """The run's exported learner on the CPU (a missing file says so before torch is imported)."""
    if not runfolder.learner_path(run.path).is_file():
        raise FileNotFoundError(f"{runfolder.learner_path(run.path)} does not exist")
    return run.learner()


def _top_losses_of(run: Run, frame: pd.DataFrame, k: int) -> Figure:
    """The run's ``k`` highest-loss validation images."""
    return top_losses_figure(top_losses(frame, classes_of(run), k),
                             f"Top losses: {run.name}\nloss = -log p(actual class), from the saved probabilities")


def _tsne_of(run: Run, learn, frame: pd.DataFrame, max_images: int) -> Figure:
    """t-SNE of the run's validation embeddings."""
    return tsne_figure(tsne_points(learn, frame, max_images), classes_of(run),
                       f"t-SNE of penultimate-layer embeddings: {run.name}")


def _grad_cam_of(run: Run, learn, frame: pd.DataFrame, n_per_class: int) -> Figure:
    """Grad-CAM of a seeded sample of each class's validation images."""
    rows = pd.concat(pick_per_class(frame, n_per_class))
    cam = grad_cam(learn, rows["path"].tolist())
    return grad_cam_figure(cam, rows["label"].tolist(), f"Grad-CAM on the body's last feature map: {run.name}",
                           ncols=n_per_class)


def _attempt(notes: list[str], run: Run, what: str, make: Callable[[], Any]) -> Any | None:
    """``make()``, or None and a note: a report must survive one run's missing cache or unloadable learner."""
    try:
        return make()
    except Exception as e:  # anything from unpickling or a model; the note names it
        log.warning("%s: no %s: %s: %s", run.name, what, type(e).__name__, e)
        notes.append(f"{what}: {type(e).__name__}: {e}")
        return None
