"""train(): one fastai vision_learner run on a timm architecture, written to a run folder.

The run folder is the contract with later stages (sweep, ensemble, report); runfolder.py names, writes and
reads its files. ``run(cfg)`` is a list of named steps with a status that is always recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import metrics, runfolder
from .config import TRACES_ARCH, DataConfig, TrainConfig, resolve_paths
from .models import check_arch, check_size
from .runfolder import RunResult, is_complete

__all__ = ["RunResult", "is_complete", "run", "train"]

log = logging.getLogger(__name__)


def train(arch: str = "resnet18", size: int = 64, item_tfms: int | None = None, accum: int = 1,
          epochs: int = 3, *, lr: float = 2e-3, bs: int = 64, pretrained: bool = False, seed: int = 42,
          recipe: str = "fine_tune", data: DataConfig | None = None, runs_dir: str = "runs",
          **options: Any) -> RunResult:
    """Train ``arch`` at ``size`` px (items first resized to ``item_tfms`` px) and write a run folder.

    ``item_tfms`` is the product brief's name for TrainConfig's ``item_resize_px`` (YAML, CLI, metrics.json).
    ``options`` are the remaining TrainConfig fields (precision, tta_n, aug, weights_file, name, ...).
    """
    cfg = TrainConfig(arch=arch, size=size, item_resize_px=item_tfms, accum=accum, epochs=epochs, lr=lr, bs=bs,
                      pretrained=pretrained, seed=seed, recipe=recipe, data=data or DataConfig(),
                      runs_dir=runs_dir, **options)
    return run(cfg)


def run(cfg: TrainConfig) -> RunResult:
    """Run one config: skip if complete, else train, predict, score, export; always record status."""
    from .data import check_source

    cfg = resolve_paths(cfg)  # config.yaml must find the data from any working folder
    run_dir = (Path(cfg.runs_dir) / cfg.run_name).resolve()
    if is_complete(run_dir):
        _same_config_or_raise(run_dir, cfg)
        log.info("%s is complete; skipping (delete the folder to redo it)", run_dir)
        return RunResult(run_dir, runfolder.read_metrics(run_dir))
    check_arch(cfg.arch)  # before any data work: a typo must cost milliseconds
    check_size(cfg.arch, cfg.size)
    check_source(cfg.data)
    runfolder.start(run_dir, cfg)
    handler = _attach_log(run_dir / runfolder.TRAIN_LOG)
    try:
        result = _run_folds(cfg, run_dir) if cfg.data.folds and cfg.data.fold is None else _train_steps(cfg, run_dir)
    except BaseException as e:
        runfolder.record_failure(run_dir, e)
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return result


def _run_folds(cfg: TrainConfig, run_dir: Path) -> RunResult:
    """K-fold: one ordinary run per fold in ``fold_<k>/`` (each skipped when complete, so a killed run redoes only
    the fold it was in), then the out-of-fold predictions and the mean test predictions at the top (folds.py)."""
    from . import folds

    fold_dirs = []
    for k in range(cfg.data.folds):
        log.info("%s: %s (%d of %d)", cfg.run_name, runfolder.fold_name(k), k + 1, cfg.data.folds)
        fold_dirs.append(run(folds.fold_config(cfg, k, run_dir)).run_dir)  # a complete fold is skipped by run()
    return folds.combine(cfg, run_dir, fold_dirs)


SAME_RUN_ANYWAY = {"accum"}  # how the same effective batch is split into micro-batches: the sweep's CUDA OOM retry
# doubles it and reruns the folder, so the folds (or the run) finished before the retry are this run, not another


def _same_config_or_raise(run_dir: Path, cfg: TrainConfig) -> None:
    """A complete folder of the same name but another config (e.g. other data) is never taken as this run."""
    stored = resolve_paths(runfolder.read_config(run_dir))  # older runs stored a relative path as given
    diff = [k for k in runfolder.config_differences(stored, cfg) if k not in SAME_RUN_ANYWAY]
    if diff:
        raise ValueError(f"{run_dir} holds a complete run with a different config (differs in {diff}); "
                         f"use --name / --runs-dir for this one, or delete that folder to replace it")


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def _train_steps(cfg: TrainConfig, run_dir: Path) -> RunResult:
    """The run as a list of named steps."""
    if cfg.arch == TRACES_ARCH:  # the classic baseline: no learner (nor torch), the same run folder (traces.py)
        from .traces import run_traces

        return run_traces(cfg, run_dir)
    from . import data, learner

    prepared = data.prepare(cfg.data, item_resize_px=cfg.item_resize_px, crop=cfg.keeps_grid)
    learn, precision = learner.build(cfg, prepared, run_dir)
    fit_s = learner.fit(learn, cfg)
    history = learner.history(learn)  # before predicting: get_preds/tta reset the Recorder
    valid_probs, test_probs = learner.predict(learn, prepared, cfg)
    valid = prepared.items[prepared.items.is_valid]
    y = (valid.label == prepared.positive_class).to_numpy().astype(int)
    runfolder.write_predictions(run_dir, valid, valid_probs, prepared.test, test_probs)
    held_out = runfolder.score_held_out(prepared, run_dir, lambda _, frame: learner.predict_paths(
        learn, frame.path.tolist(), prepared.positive_class, cfg))
    runfolder.write_history(run_dir, history)
    learner_sha = learner.export(learn, run_dir / runfolder.LEARNER)
    n_train = int((~prepared.items.is_valid).sum())
    result = {
        **metrics.validation_scores(y, valid_probs, valid.get("group")), **held_out,
        "status": "complete", "run": cfg.run_name, "arch": cfg.arch, "recipe": cfg.recipe, "input": cfg.input,
        "size": cfg.size, "item_resize_px": cfg.item_resize_px, "epochs": cfg.epochs, "precision_mode": precision,
        "n_train": n_train, "n_valid": len(valid), "n_test": len(prepared.test),
        "positive_class": prepared.positive_class, "negative_class": prepared.negative_class,
        "data_key": prepared.key, "split_file": str(prepared.split_file.resolve()),
        "cache_dir": str(prepared.cache_dir.resolve()), "tta": {"n": cfg.tta_n, "beta": cfg.tta_beta},
        "fit_time_s": round(fit_s, 2),
        "images_per_s": round(n_train * cfg.epochs / max(fit_s, 1e-9), 1),
        "learner_sha256": learner_sha, "bad_images": len(prepared.bad_images),
    }
    return runfolder.finish(run_dir, result)
