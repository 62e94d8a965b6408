"""Every shipped sweep file runs in a shrunk form (as lightning-hydra-template tests every experiment):
same runs, same recipes and options, but timm's tiny test_* model of each family, 32 px, one epoch, a tiny
data set, in-process (the subprocess runner itself is covered by test_sweep_runs.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from deepfake_fastai.config import DataConfig, TrainConfig
from deepfake_fastai.sweep import expand, load_sweep
from deepfake_fastai.train import run

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))
FAMILY_MODELS = {"resnet": "test_resnet", "convnext": "test_convnext", "vit": "test_vit",
                 "efficientnet": "test_efficientnet"}


def tiny_model(arch: str) -> str:
    """The tiny timm model of an architecture's family (em_traces and npr_resnet are tiny already: they stay)."""
    if arch in ("em_traces", "npr_resnet"):
        return arch
    family = next((f for f in FAMILY_MODELS if f in arch), None)
    assert family, f"no tiny stand-in for {arch}: add its family to FAMILY_MODELS"
    return FAMILY_MODELS[family]


def shrink(cfg: TrainConfig, data: DataConfig, runs_dir: Path) -> TrainConfig:
    """The same run, CPU-test-sized."""
    return dataclasses.replace(
        cfg, arch=tiny_model(cfg.arch), size=32, item_resize_px=32, epochs=1, bs=16, tta_n=min(cfg.tta_n, 1),
        pretrained=False, weights_file=None, precision="fp32", runs_dir=str(runs_dir), data=data, name=None)


def shrunk_data(sweep_data: DataConfig, tiny_root: Path, tmp: Path) -> DataConfig:
    if sweep_data.source == "synthetic":  # keep the generator in the loop, at a tiny size
        return dataclasses.replace(sweep_data, synthetic_n=64, synthetic_px=32, data_dir=str(tmp / "data"))
    return DataConfig(source="folder", path=str(tiny_root), positive_class="fake", data_dir=str(tmp / "data"),
                      folds=sweep_data.folds)  # a fold sweep stays one


# CI runs the quickstart (the synthetic source and all four families); the others reuse the same tiny models
# on a folder, so they only run in `make test-all`.
CASES = [pytest.param(p, id=p.stem, marks=() if p.stem == "quickstart" else pytest.mark.slow) for p in SWEEPS]


@pytest.mark.parametrize("path", CASES)
def test_shipped_sweep_runs_shrunk(path, tiny_data, tmp_path):
    sweep = load_sweep(path)
    data = shrunk_data(sweep.data, tiny_data, tmp_path)
    shrunk = {c.run_name: c for c in (shrink(c, data, tmp_path / "runs") for c in expand(sweep))}
    families = {tiny_model(c.arch) for c in expand(sweep)}
    assert {c.arch for c in shrunk.values()} == families
    for cfg in shrunk.values():
        result = run(cfg)
        assert result.metrics["status"] == "complete"
        assert np.isfinite(np.load(result.run_dir / "valid_probs.npy")).all()
