"""Recipe effnetv2_bce: the report's head, BCE + mixup, best-AUC checkpoint, resume after an interruption."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from fastai.callback.core import Callback

from deepfake_fastai import bce_recipe
from deepfake_fastai.config import TrainConfig
from deepfake_fastai.metrics import classification
from deepfake_fastai.train import train
from tests.conftest import tiny_train_kwargs


def _cfg(tmp, data, **kw) -> dict:
    return tiny_train_kwargs(tmp, data, arch="test_efficientnet", recipe="effnetv2_bce", lr=1e-3, **kw)


def test_head_is_the_reports_and_gives_one_logit():
    model = bce_recipe.create_model(TrainConfig(arch="test_efficientnet", size=32, recipe="effnetv2_bce"))
    layers = list(model.head)
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert layers[0].out_features == 512 and layers[2].p == 0.3 and layers[3].out_features == 1
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1)


def test_truncated_cosine_schedule():
    from deepfake_fastai.callbacks import TruncatedCosine

    s = TruncatedCosine(1e-4, 8 / 10)
    assert s(0) == pytest.approx(1e-4) and s(1) == pytest.approx(1e-4 * (1 + np.cos(0.8 * np.pi)) / 2)


class _Capture(Callback):
    order = 95  # after MixUp (order 90) has mixed the batch

    def before_batch(self):
        if self.training:
            self.learn.seen_targets = self.yb[0].detach().clone()

    def after_loss(self):
        if self.training:
            self.learn.seen_loss = float(self.loss)


def test_mixup_with_bce_gives_soft_targets_and_a_finite_loss(tiny_data, tmp_path):
    from fastai.callback.mixup import MixUp

    from deepfake_fastai import data, learner

    cfg = TrainConfig(**{k: v for k, v in _cfg(tmp_path, tiny_data).items()})
    prepared = data.prepare(cfg.data, item_resize_px=32)
    learn, _ = learner.build(cfg, prepared, tmp_path)
    learn.add_cb(_Capture())
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, cbs=[MixUp(0.2)])
    t = learn.seen_targets
    assert t.dtype == torch.float32 and ((t > 0) & (t < 1)).any() and np.isfinite(learn.seen_loss)


def test_best_auc_checkpoint_is_the_best_logged_epoch(tiny_data, tmp_path):
    result = train(**_cfg(tmp_path, tiny_data, epochs=3, tta_n=0))
    history = pd.read_csv(result.run_dir / "history.csv")
    best = json.loads((result.run_dir / "checkpoints" / "best.json").read_text())
    assert best["epoch"] == int(history.roc_auc_score.idxmax())
    assert (result.run_dir / "checkpoints" / "best.pth").is_file()
    # the exported model is the best one: its saved validation probabilities score the best logged AUC
    ids = pd.read_csv(result.run_dir / "valid_ids.csv", dtype=str)
    auc = classification((ids.label == "fake").astype(int), np.load(result.run_dir / "valid_probs.npy"))["auc"]
    assert auc == pytest.approx(history.roc_auc_score.max(), abs=1e-6)


class _Interrupt(Callback):
    order = 99  # after the checkpoint callbacks

    def after_epoch(self):
        if self.epoch == 1:
            raise KeyboardInterrupt


class _CountEpochs(Callback):
    n = 0

    def after_epoch(self):
        self.n += 1


def test_an_interrupted_run_resumes_from_its_last_epoch(tiny_data, tmp_path):
    from deepfake_fastai import data, learner

    cfg = TrainConfig(**_cfg(tmp_path, tiny_data, epochs=4))
    run_dir = tmp_path / "run"
    prepared = data.prepare(cfg.data, item_resize_px=32)
    learn, _ = learner.build(cfg, prepared, run_dir)
    learn.add_cb(_Interrupt())
    with pytest.raises(KeyboardInterrupt):
        bce_recipe.fit(learn, cfg, run_dir)
    before = json.loads((run_dir / "checkpoints" / "last.json").read_text())
    assert before["epoch"] == 1 and len(before["history"]) == 2
    assert bce_recipe.resume_point(run_dir, dataclasses.replace(cfg, lr=0.5)) is None  # other config: no resume
    learn, _ = learner.build(cfg, prepared, run_dir)
    counter = _CountEpochs()
    learn.add_cb(counter)
    with learn.no_bar():
        bce_recipe.fit(learn, cfg, run_dir)
    assert json.loads((run_dir / "checkpoints" / "last.json").read_text())["epoch"] == 3
    assert counter.n == 2  # epochs 2 and 3 only: 0 and 1 were not redone
    history = learner.history(learn)  # ... but the run's history has all four, the first two as logged before
    assert len(history) == 4 and history.drop(columns="epoch").iloc[:2].to_numpy().tolist() == before["history"]
