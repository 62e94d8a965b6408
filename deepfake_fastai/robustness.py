"""How a finished detector degrades: validation AUC after JPEG re-compression, blur and down/up-scaling.

Reads a complete run folder (learner, validation ids, the data cache), writes ``robustness`` into its
metrics.json (atomically; the run stays complete) and returns the table.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from . import degrade, runfolder
from .metrics import classification

log = logging.getLogger(__name__)


def validation_images(run_dir: Path) -> tuple[list[Path], np.ndarray]:
    """Cached validation image paths of a run (rows of its validation ids) and labels (1 = positive class)."""
    from .data import cache_name

    m = runfolder.read_metrics(run_dir)
    ids = runfolder.read_ids(run_dir, "valid")
    cache = runfolder.cache_dir(run_dir, m)
    paths = [cache / cache_name(i) for i in ids.id]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} cached validation images are gone (e.g. {missing[0]}); re-run "
                                f"`deepfake-fastai data --item-resize-px {m['item_resize_px']}` for this data set")
    return paths, (ids.label == m["positive_class"]).to_numpy().astype(int)


def degraded_copies(paths: list[Path], name: str, out_dir: Path) -> list[Path]:
    """Lossless PNG copies of ``paths`` after degradation ``name`` (so the degradation is exactly what is scored)."""
    out = []
    for i, p in enumerate(paths):
        with Image.open(p) as img:
            dest = out_dir / name / f"{i:06d}.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            degrade.apply(img.convert("RGB"), name).save(dest)
            out.append(dest)
    return out


def evaluate(run_dir: Path, names: tuple[str, ...] = tuple(degrade.DEGRADATIONS)) -> dict[str, float]:
    """AUC on clean and on each degraded copy of the validation set (plain predictions, no TTA).

    A K-fold run: each fold's model on its own validation fold, pooled (the out-of-fold AUC, degraded)."""
    run_dir = Path(run_dir)
    members = runfolder.fold_dirs(run_dir) or [run_dir]
    labels, probs = [], {name: [] for name in ("clean", *names)}
    with tempfile.TemporaryDirectory() as tmp:
        for i, member in enumerate(members):
            predict = predictor(member)
            paths, y = validation_images(member)
            labels.append(y)
            probs["clean"].append(predict(paths))
            for name in names:
                probs[name].append(predict(degraded_copies(paths, name, Path(tmp) / str(i))))
    y = np.concatenate(labels)
    table = {name: round(classification(y, np.concatenate(p))["auc"], 4) for name, p in probs.items()}
    log.info("robustness of %s: %s", run_dir.name, table)
    return table


def predictor(run_dir: Path) -> Callable[[list[Path]], np.ndarray]:
    """Image files -> probability of the positive class, for a fastai run or an em_traces run."""
    from .config import TRACES_ARCH, TrainConfig

    cfg = runfolder.read_config(run_dir)
    if cfg.arch == TRACES_ARCH:
        from . import traces

        model, params = traces.load_model(run_dir), traces.EMParams.of(cfg)
        return lambda files: traces.positive_probs(model, traces.featurise_paths(files, params, progress=False))
    from .learner import load_learner, positive_probs

    learn = load_learner(runfolder.learner_path(run_dir))
    positive = runfolder.read_metrics(run_dir)["positive_class"]
    plain = TrainConfig(tta_n=0)

    def predict(files: list[Path]) -> np.ndarray:
        with learn.no_bar():
            return positive_probs(learn, learn.dls.test_dl([str(f) for f in files]), positive, plain)

    return predict


def record(run_dir: Path, table: dict[str, float]) -> None:
    """Add the table to the run's metrics (atomic rewrite; everything else unchanged)."""
    runfolder.add_metrics(run_dir, {"robustness": table})


def format_table(table: dict[str, float]) -> str:
    """Two lines: degradation names, AUCs."""
    names = list(table)
    return "  ".join(f"{n:>10}" for n in names) + "\n" + "  ".join(f"{table[n]:>10.4f}" for n in names)
