"""train(): one fastai vision_learner run on a timm architecture, written to a run folder.

The run folder is the contract with later stages (sweep, ensemble, report):
  config.yaml        resolved TrainConfig (reproduce the run from it)
  status.json        running | failed (with the error) | complete
  history.csv        per-epoch losses and metrics
  valid_probs.npy    TTA probability of the positive class, rows = valid_ids.csv (id,label)
  test_probs.npy     same for the (unlabelled, e.g. Kaggle) test images, rows = test_ids.csv (id)
  labelled_test_probs.npy / labelled_test_ids.csv   the split's labelled test part (data.test_pct), if any;
                     its scores are the test_* keys of metrics.json (unseen_* likewise for unseen/)
  learner.pkl        exported fastai learner (load with deepfake_fastai.load_learner)
  manifest.json      SHA-256 of every artifact above, what load_learner trusts (checkpoints: last.json, best.json)
  metrics.json       written last: its presence with status "complete" marks the run complete
  train.log          the run's log
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import atomic, metrics
from .config import DataConfig, TrainConfig, dump_yaml, resolve_paths
from .manifest import MANIFEST_FILE
from .manifest import write as write_manifest
from .models import check_arch, check_size

log = logging.getLogger(__name__)

LEARNER_FILE = "learner.pkl"


@dataclass(frozen=True)
class RunResult:
    """What a finished run produced: its folder and its metrics."""

    run_dir: Path
    metrics: dict[str, Any]

    @property
    def learner_path(self) -> Path:
        return self.run_dir / LEARNER_FILE


def train(arch: str = "resnet18", size: int = 64, item_tfms: int | None = None, accum: int = 1,
          epochs: int = 3, *, lr: float = 2e-3, bs: int = 64, pretrained: bool = False, seed: int = 42,
          recipe: str = "fine_tune", data: DataConfig | None = None, runs_dir: str = "runs",
          **options: Any) -> RunResult:
    """Train ``arch`` at ``size`` px (items first resized to ``item_tfms`` px) and write a run folder.

    ``options`` are the remaining TrainConfig fields (precision, tta_n, aug, weights_file, name, ...).
    """
    cfg = TrainConfig(arch=arch, size=size, item_resize=item_tfms, accum=accum, epochs=epochs, lr=lr, bs=bs,
                      pretrained=pretrained, seed=seed, recipe=recipe, data=data or DataConfig(),
                      runs_dir=runs_dir, **options)
    return run(cfg)


def is_complete(run_dir: Path) -> bool:
    """A run is complete iff its metrics.json parses and says so (it is written last, atomically)."""
    try:
        return json.loads((Path(run_dir) / "metrics.json").read_text()).get("status") == "complete"
    except (OSError, ValueError):
        return False


def run(cfg: TrainConfig) -> RunResult:
    """Run one config: skip if complete, else train, predict, score, export; always record status."""
    from .data import check_source

    cfg = resolve_paths(cfg)  # config.yaml must find the data from any working folder
    run_dir = (Path(cfg.runs_dir) / cfg.run_name).resolve()
    if is_complete(run_dir):
        _same_config_or_raise(run_dir, cfg)
        log.info("%s is complete; skipping (delete the folder to redo it)", run_dir)
        return RunResult(run_dir, json.loads((run_dir / "metrics.json").read_text()))
    check_arch(cfg.arch)  # before any data work: a typo must cost milliseconds
    check_size(cfg.arch, cfg.size)
    check_source(cfg.data)
    _start(run_dir, cfg)
    handler = _attach_log(run_dir / "train.log")
    try:
        result = _train_steps(cfg, run_dir)
    except BaseException as e:
        _record_failure(run_dir, e)
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return result


def _record_failure(run_dir: Path, e: BaseException) -> None:
    """status.json "failed" with the error; best effort, so a full or read-only disk never hides the real error."""
    try:
        atomic.write_json(run_dir / "status.json", {
            "status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
    except OSError as write_error:
        log.error("could not record the failure in %s: %s", run_dir / "status.json", write_error)


def _same_config_or_raise(run_dir: Path, cfg: TrainConfig) -> None:
    """A complete folder of the same name but another config (e.g. other data) is never taken as this run."""
    stored = resolve_paths(config_of(run_dir))  # older runs stored a relative path as given
    if stored != cfg:
        a, b = dataclasses.asdict(stored), dataclasses.asdict(cfg)
        diff = sorted(k for k in a if a[k] != b[k])
        raise ValueError(f"{run_dir} holds a complete run with a different config (differs in {diff}); "
                         f"use --name / --runs-dir for this one, or delete that folder to replace it")


def _start(run_dir: Path, cfg: TrainConfig) -> None:
    """Clear what an interrupted attempt left (only our own files) and record the config."""
    atomic.make_dir(run_dir)
    for name in ("metrics.json", "status.json", MANIFEST_FILE, LEARNER_FILE, "valid_probs.npy", "test_probs.npy",
                 "unseen_probs.npy", "labelled_test_probs.npy"):
        (run_dir / name).unlink(missing_ok=True)
    for partial in [*run_dir.glob(".tmp-*"), *run_dir.glob("checkpoints/.tmp-*")]:  # a killed write's leftovers
        partial.unlink(missing_ok=True)
    atomic.write_text(run_dir / "config.yaml", dump_yaml(cfg))
    atomic.write_json(run_dir / "status.json", {"status": "running", "pid": os.getpid()})


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def _train_steps(cfg: TrainConfig, run_dir: Path) -> RunResult:
    """The run as a list of named steps."""
    from .config import TRACES_ARCH

    if cfg.arch == TRACES_ARCH:  # the classic baseline: no learner (nor torch), the same run folder (traces.py)
        from .traces import run_traces

        return run_traces(cfg, run_dir)
    from . import data, learner

    prepared = data.prepare(cfg.data, max_px=cfg.resize_px)
    learn, precision = learner.build(cfg, prepared, run_dir)
    fit_s = learner.fit(learn, cfg)
    history = learner.history(learn)  # before predicting: get_preds/tta reset the Recorder
    valid_probs, test_probs = learner.predict(learn, prepared, cfg)
    valid = prepared.items[prepared.items.is_valid]
    y = (valid.label == prepared.positive_class).to_numpy().astype(int)
    write_predictions(run_dir, valid, valid_probs, prepared.test, test_probs)
    held_out = score_held_out(prepared, run_dir, lambda _, frame: learner.predict_paths(
        learn, frame.path.tolist(), prepared.positive_class, cfg))
    atomic.write_csv(run_dir / "history.csv", history)
    learner_sha = learner.export(learn, run_dir / LEARNER_FILE)
    n_train = int((~prepared.items.is_valid).sum())
    result = {
        **metrics.classification(y, valid_probs), **held_out,
        "status": "complete", "run": cfg.run_name, "arch": cfg.arch, "recipe": cfg.recipe, "size": cfg.size,
        "item_resize": cfg.resize_px, "epochs": cfg.epochs, "precision_mode": precision,
        "n_train": n_train, "n_valid": len(valid), "n_test": len(prepared.test),
        "positive_class": prepared.positive_class, "negative_class": prepared.negative_class,
        "data_key": prepared.key, "split_file": str(prepared.split_file.resolve()),
        "tta": {"n": cfg.tta_n, "beta": cfg.tta_beta}, "fit_time_s": round(fit_s, 2),
        "images_per_s": round(n_train * cfg.epochs / max(fit_s, 1e-9), 1),
        "learner_sha256": learner_sha, "bad_images": len(prepared.bad_images),
    }
    write_manifest(run_dir)  # after every artifact, before metrics.json marks the run complete
    atomic.write_json(run_dir / "metrics.json", result)
    atomic.write_json(run_dir / "status.json", {"status": "complete"})
    log.info("run %s: AUC %.4f, accuracy %.4f", cfg.run_name, result["auc"], result["accuracy"])
    return RunResult(run_dir, result)


TEST_KEYS = ("auc", "accuracy", "precision", "recall", "f1", "log_loss")  # scored on the labelled test part
UNSEEN_KEYS = ("auc", "accuracy", "log_loss")
HELD_OUT_PARTS = {"labelled_test": ("test_", TEST_KEYS), "unseen": ("unseen_", UNSEEN_KEYS)}  # name -> prefix, keys


def score_held_out(prepared, run_dir: Path, predict: Callable[[str, pd.DataFrame], np.ndarray]) -> dict[str, Any]:
    """Scores on the images that were neither trained on nor used to pick anything.

    The split's labelled test part (``data.test_pct``) as ``test_*`` with a confusion matrix, and the
    optional unseen/ set (e.g. held-out generator families) as ``unseen_*``; ``predict(part name, frame)``
    gives the probabilities of the positive class. Each part's probabilities go to <part>_probs.npy + _ids.csv.
    """
    scores: dict[str, Any] = {}
    for name, (prefix, keys) in HELD_OUT_PARTS.items():
        frame = getattr(prepared, name)
        if frame.empty:
            continue
        probs = predict(name, frame)
        atomic.write_csv(run_dir / f"{name}_ids.csv", frame[["id", "label"]])
        atomic.write_with(run_dir / f"{name}_probs.npy", lambda p, probs=probs: _save_npy(p, probs))
        y = (frame.label == prepared.positive_class).to_numpy().astype(int)
        found = metrics.classification(y, probs)
        scores |= {f"{prefix}{k}": found[k] for k in keys} | {f"n_{name}": len(probs)}
        if name == "labelled_test":
            scores["test_confusion"] = metrics.confusion(y, probs)
    return scores


def write_predictions(run_dir: Path, valid: pd.DataFrame, valid_probs: np.ndarray,
                      test: pd.DataFrame, test_probs: np.ndarray) -> None:
    """Probabilities of the positive class with their image ids."""
    atomic.write_csv(run_dir / "valid_ids.csv", valid[["id", "label"]])
    atomic.write_with(run_dir / "valid_probs.npy", lambda p: _save_npy(p, valid_probs))
    atomic.write_csv(run_dir / "test_ids.csv", test[["id"]])
    atomic.write_with(run_dir / "test_probs.npy", lambda p: _save_npy(p, test_probs))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save on a path would append ".npy" to the temp name
        np.save(f, np.asarray(arr, dtype=np.float32))


def config_of(run_dir: Path) -> TrainConfig:
    """The resolved config a run folder was made with."""
    from .config import load_train_config

    return load_train_config(Path(run_dir) / "config.yaml")

