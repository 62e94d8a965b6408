"""Recipe "effnetv2_bce": the EfficientNetV2-S detector of the project's reference report, on fastai.

timm backbone (num_classes=0, global average pooling) + head Linear(n -> 512), ReLU, Dropout(0.3),
Linear(512 -> 1); BCE-with-logits on one logit; mixup (alpha 0.2) on images and targets; AdamW (lr from the
config, the report used 1e-4; weight decay 1e-5); cosine annealing with T_max = 10 epochs, truncated at the
run's epoch count; train: random resized crop (scale 0.8-1), flip, AutoAugment (ImageNet policy); valid:
resize + centre crop. Checkpoints in <run>/checkpoints/: best validation AUC (model + optimizer + epoch) and
the last epoch, from which an interrupted run resumes. Each is written to a temp name and renamed (a kill never
leaves a torn .pth), and its JSON record holds its SHA-256: a checkpoint that does not match is never unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.mixup import MixUp
from fastai.callback.schedule import ParamScheduler
from fastai.callback.tracker import SaveModelCallback
from fastai.data.block import ColReader, ColSplitter, DataBlock, RegressionBlock
from fastai.learner import Learner, save_model
from fastai.losses import BCEWithLogitsLossFlat
from fastai.metrics import AccumMetric, ActivationType
from fastai.optimizer import Adam
from fastai.vision.augment import Flip, Normalize, RandomResizedCrop
from fastai.vision.core import PILImage
from fastai.vision.data import ImageBlock
from fastcore.foundation import L
from sklearn.metrics import roc_auc_score
from torch import nn

from . import atomic, runfolder
from .callbacks import AutoAugmentTfm, GridCrop, RandomDegrade, TruncatedCosine
from .config import TrainConfig, dump_yaml
from .data import Prepared
from .loaders import loader_kwargs
from .manifest import file_sha256
from .models import norm_stats, timm_kwargs
from .npr import for_input

log = logging.getLogger(__name__)

T_MAX_EPOCHS = 10  # the report's CosineAnnealingLR(T_max=10), run for 8 epochs
WEIGHT_DECAY = 1e-5
MIXUP_ALPHA = 0.2
AUC_NAME = "roc_auc_score"


class BinaryDetector(nn.Module):
    """timm body with global average pooling and the report's one-logit head."""

    def __init__(self, body: nn.Module, n_features: int):
        super().__init__()
        self.body = body
        self.head = nn.Sequential(nn.Linear(n_features, 512), nn.ReLU(), nn.Dropout(0.3), nn.Linear(512, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def create_model(cfg: TrainConfig) -> BinaryDetector:
    import timm

    body = timm.create_model(cfg.arch, pretrained=cfg.pretrained, num_classes=0, global_pool="avg",
                             **timm_kwargs(cfg.arch, cfg.size, cfg.weights_file))
    for_input(body, cfg.input, cfg.arch)
    return BinaryDetector(body, body.num_features)


def dataloaders(cfg: TrainConfig, prepared: Prepared):
    """Float targets (1 = positive class) for BCE; RandomResizedCrop is a centre crop on validation."""
    stats = norm_stats(cfg.arch)
    items = prepared.items.assign(target=(prepared.items.label == prepared.positive_class).astype("float32"))
    train_only = [RandomDegrade(cfg.degrade_p)] if cfg.degrade_p else []
    block = DataBlock(
        blocks=(ImageBlock(PILImage), RegressionBlock()), get_x=ColReader("path"), get_y=ColReader("target"),
        splitter=ColSplitter("is_valid"),
        item_tfms=[*train_only, *item_sizing(cfg)],
        batch_tfms=[Flip(p=0.5), Normalize.from_stats(stats.mean, stats.std)],
    )
    return block.dataloaders(items, bs=cfg.micro_bs, **loader_kwargs(cfg.num_workers))


def item_sizing(cfg: TrainConfig) -> list:
    """The report's AutoAugment + random resized crop; NPR networks get crops at even offsets instead
    (AutoAugment's rotations and shears and the crop's resize would erase the up-sampling trace)."""
    if cfg.keeps_grid:
        return [GridCrop(cfg.size)]
    return [AutoAugmentTfm(), RandomResizedCrop(cfg.size, min_scale=0.8, val_xtra=0.14)]


def auc_metric() -> AccumMetric:
    # invert_arg: sklearn takes (y_true, y_score), fastai passes (preds, targs) unless told otherwise
    return AccumMetric(roc_auc_score, activation=ActivationType.Sigmoid, flatten=True, invert_arg=True, name=AUC_NAME)


def build(cfg: TrainConfig, dls, run_dir: Path) -> Learner:
    """The learner, writing checkpoints to run_dir/checkpoints."""
    learn = Learner(dls, create_model(cfg), loss_func=BCEWithLogitsLossFlat(), opt_func=Adam,
                    lr=cfg.lr, wd=WEIGHT_DECAY, metrics=[auc_metric()], path=run_dir, model_dir=runfolder.CHECKPOINTS)
    return learn


def save_atomic(learn: Learner, name: str, with_opt: bool) -> Path:
    """What learn.save writes, through atomic.write_with: a kill mid-save never leaves a torn checkpoint, a
    failed write leaves no temp file, a full disk is a WriteError naming the file."""
    return atomic.write_with(learn.path / learn.model_dir / f"{name}.pth",
                             lambda tmp: save_model(tmp, learn.model, getattr(learn, "opt", None), with_opt=with_opt))


class AtomicSaveModelCallback(SaveModelCallback):
    """fastai's best-model checkpoint, written atomically."""

    def _save(self, name: str) -> None:
        self.last_saved_path = save_atomic(self.learn, name, self.with_opt)


class LastCheckpoint(Callback):
    """Save model + optimizer after every epoch, and which epoch it was (and its hash), so a killed run resumes."""

    order = 70  # after the recorder has the epoch's metrics

    def __init__(self, config_key: str, first_epoch: int = 0, prior_history: list | None = None):
        self.config_key, self.first_epoch = config_key, first_epoch
        self.prior_history = prior_history or []  # recorder rows of the epochs before a resume

    def after_epoch(self) -> None:
        path = save_atomic(self.learn, "last", with_opt=True)
        best = next((cb for cb in self.learn.cbs if isinstance(cb, SaveModelCallback)), None)
        rows = self.prior_history + [[float(v) for v in row] for row in self.recorder.values]
        atomic.write_json(path.with_suffix(".json"), {
            "epoch": self.first_epoch + self.epoch, "config": self.config_key, "sha256": file_sha256(path),
            "best_auc": None if best is None else float(best.best), "history": rows})


def config_key(cfg: TrainConfig) -> str:
    return hashlib.sha256(dump_yaml(cfg).encode()).hexdigest()[:16]


def resume_point(run_dir: Path, cfg: TrainConfig) -> dict | None:
    """The last finished epoch of an interrupted run of the same config, if any."""
    try:
        state = json.loads((run_dir / runfolder.CHECKPOINTS / "last.json").read_text())
    except (OSError, ValueError):
        return None
    if state.get("config") != config_key(cfg) or state["epoch"] + 1 >= cfg.epochs:
        return None
    if not _matches_record(run_dir / runfolder.CHECKPOINTS / "last.pth", state):
        log.warning("%s does not match the SHA-256 in last.json (interrupted write, or changed by hand): not loaded, "
                    "since unpickling runs code; training from epoch 0", run_dir / runfolder.CHECKPOINTS / "last.pth")
        return None
    return state


def _matches_record(path: Path, record: dict) -> bool:
    """True if ``path`` exists and has the SHA-256 its JSON record holds."""
    return path.is_file() and record.get("sha256") == file_sha256(path)


def _best_so_far(run_dir: Path, state: dict) -> float:
    """The best AUC to beat after a resume; -inf (so best.pth is rewritten) unless best.pth matches best.json."""
    try:
        record = json.loads((run_dir / runfolder.CHECKPOINTS / "best.json").read_text())
    except (OSError, ValueError):
        record = {}
    trusted = _matches_record(run_dir / runfolder.CHECKPOINTS / "best.pth", record)
    return state["best_auc"] if trusted and state["best_auc"] is not None else -np.inf


def fit(learn: Learner, cfg: TrainConfig, run_dir: Path) -> None:
    """Mixup + truncated cosine; best-AUC and last checkpoints; resumes from the last one when there is one."""
    best = AtomicSaveModelCallback(monitor=AUC_NAME, comp=np.greater, fname="best", with_opt=True,
                                   reset_on_fit=False)
    start, prior = 0, []
    state = resume_point(run_dir, cfg)
    if state:
        learn.load("last", with_opt=True)
        best.best = _best_so_far(run_dir, state)
        start, prior = state["epoch"] + 1, state.get("history", [])
        log.info("resuming %s at epoch %d of %d (best AUC so far %.4f)", run_dir.name, start, cfg.epochs, best.best)
    # Fit only the remaining epochs (fastai's start_epoch still calls after_epoch for skipped epochs, which
    # breaks SaveModelCallback on an empty Recorder); the schedule and epoch numbers are offset instead.
    schedule = ParamScheduler({"lr": TruncatedCosine(cfg.lr, cfg.epochs / T_MAX_EPOCHS, begin=start / cfg.epochs)})
    cbs = [MixUp(MIXUP_ALPHA), schedule, best, LastCheckpoint(config_key(cfg), start, prior), BestEpochLog(start)]
    learn.fit(cfg.epochs - start, lr=cfg.lr, cbs=cbs)
    if prior:  # the run's history.csv covers every epoch, also those trained before the interruption
        learn.recorder.values = L(prior) + learn.recorder.values


class BestEpochLog(Callback):
    """Record which epoch the best-AUC checkpoint holds (fastai saves model + optimizer, not the epoch)."""

    order = 71

    def __init__(self, first_epoch: int = 0):
        self.first_epoch = first_epoch

    def after_epoch(self) -> None:
        best = next(cb for cb in self.learn.cbs if isinstance(cb, SaveModelCallback))
        if best.best == self.recorder.values[-1][best.idx]:
            folder = self.learn.path / self.learn.model_dir
            atomic.write_json(folder / "best.json", {"epoch": self.first_epoch + self.epoch, AUC_NAME: float(best.best),
                                                     "sha256": file_sha256(folder / "best.pth")})
