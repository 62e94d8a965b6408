"""num_workers auto: 0 on CPU; on CUDA one worker per core (capped), persistent, pinned; a number wins.

CUDA is faked at the one function that decides (loaders.cuda_available); the DataLoaders are fastai's own,
built from a real tiny data set.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from deepfake_fastai import data, learner, loaders
from deepfake_fastai.config import ConfigError, TrainConfig, from_dict
from tests.conftest import tiny_train_kwargs


@pytest.mark.parametrize("requested, cuda, cpus, expected", [
    ("auto", False, 16, 0),  # CPU: workers would take the training's cores
    ("auto", True, 4, 4),  # a Kaggle GPU notebook: every core decodes
    ("auto", True, 64, loaders.MAX_AUTO_WORKERS),  # a big cloud box: capped
    ("auto", True, 1, 1),
    (3, False, 2, 3),  # an explicit count wins on CPU ...
    (0, True, 16, 0),  # ... and on CUDA
])
def test_resolve_num_workers(requested, cuda, cpus, expected):
    assert loaders.resolve_num_workers(requested, cuda, cpus) == expected


@pytest.mark.parametrize("value, ok", [("auto", True), (0, True), (6, True), ("many", False), (-1, False),
                                       (True, False), (2.0, False)])
def test_num_workers_config_accepts_auto_or_a_count(value, ok):
    assert TrainConfig().num_workers == "auto"
    if ok:
        assert from_dict(TrainConfig, {"num_workers": value}).num_workers == value
    else:
        with pytest.raises(ConfigError, match="num_workers"):
            from_dict(TrainConfig, {"num_workers": value}, "x.yaml")


@pytest.fixture(scope="module")
def prepared(tiny_data, tmp_path_factory):
    cfg = TrainConfig(**tiny_train_kwargs(tmp_path_factory.mktemp("loaders"), tiny_data))
    return cfg, data.prepare(cfg.data, item_resize_px=cfg.item_resize_px)


def test_auto_on_this_cpu_loads_in_process_on_the_cpu(prepared):
    cfg, prep = prepared
    if loaders.cuda_available():
        pytest.skip("this machine has CUDA")
    dls = learner.dataloaders(cfg, prep)
    assert dls.device.type == "cpu" and dls.train.fake_l.num_workers == 0 and not dls.train.pin_memory
    x, _ = dls.train.one_batch()
    assert x.shape == (16, 3, 32, 32)


def test_auto_on_cuda_feeds_the_gpu_from_persistent_pinned_workers(monkeypatch):
    monkeypatch.setattr(loaders, "cuda_available", lambda: True)
    workers = min(loaders.MAX_AUTO_WORKERS, os.cpu_count())
    assert loaders.loader_kwargs("auto") == {"device": torch.device("cuda"), "num_workers": workers,
                                             "persistent_workers": True, "pin_memory": True}
    assert loaders.loader_kwargs(0)["num_workers"] == 0  # an explicit count wins
    assert learner.resolve_precision("auto", 64) == "fp16"  # the same answer decides the precision
    # (fastai's DataLoaders move their transforms to the device when built, so the rest needs a real GPU:
    # benchmarks/gpu_check.py checks that a batch arrives on CUDA after the batch transforms)


def test_an_explicit_count_gives_fastai_persistent_worker_processes(prepared):
    cfg, prep = prepared
    dls = learner.dataloaders(dataclasses.replace(cfg, num_workers=2), prep)
    assert dls.train.fake_l.num_workers == 2 and dls.train.fake_l.persistent_workers
    # fastai moves a batch to dls.device before after_batch: on CUDA the flip and the normalisation run there
    assert [type(t).__name__ for t in dls.train.after_batch.fs][-2:] == ["Flip", "Normalize"]
    x, y = dls.train.one_batch()
    assert x.shape == (16, 3, 32, 32) and x.device == dls.device
