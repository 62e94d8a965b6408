"""Real tiny trainings (timm test_* models, CPU, 1 epoch) and the run folder they write."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake_fastai.config import load_train_config
from deepfake_fastai.metrics import classification
from deepfake_fastai.models import ArchError, WeightsUnavailable
from deepfake_fastai.train import is_complete, train
from tests.conftest import tiny_train_kwargs


@pytest.fixture(scope="module")
def smoke(tiny_data, tmp_path_factory):
    """One real training; tta_n=0 so saved valid probabilities = plain predictions (checked after load).

    A quarter of the labelled images is the split's labelled test part (data.test_pct).
    """
    tmp = tmp_path_factory.mktemp("smoke")
    kwargs = tiny_train_kwargs(tmp, tiny_data, tta_n=0)
    kwargs["data"] = dataclasses.replace(kwargs["data"], test_pct=0.25)
    return tmp, kwargs, train(**kwargs)


def test_run_folder_artifacts_are_valid(smoke):
    _, kwargs, result = smoke
    d = result.run_dir
    assert d.name == "test_resnet_r32-32_fine_tune_s42" and is_complete(d)
    ids = pd.read_csv(d / "valid_ids.csv", dtype=str)
    probs = np.load(d / "valid_probs.npy")
    assert len(ids) == len(probs) == result.metrics["n_valid"] and ((probs >= 0) & (probs <= 1)).all()
    split = pd.read_csv(result.metrics["split_file"], dtype={"id": str})
    assert list(ids.id) == list(split[split.is_valid].sort_values("id").id)  # rows line up with the split
    recomputed = classification((ids.label == "fake").astype(int).to_numpy(), probs)
    assert result.metrics["auc"] == pytest.approx(recomputed["auc"], abs=1e-6)
    assert result.metrics["log_loss"] == pytest.approx(recomputed["log_loss"], rel=1e-4)
    test_ids = pd.read_csv(d / "test_ids.csv", dtype=str)
    assert len(test_ids) == len(np.load(d / "test_probs.npy")) == 16
    history = pd.read_csv(d / "history.csv")
    assert len(history) == 1 and {"train_loss", "valid_loss"} <= set(history.columns)
    assert load_train_config(d / "config.yaml").arch == "test_resnet"
    assert json.loads((d / "status.json").read_text())["status"] == "complete"
    assert result.metrics["images_per_s"] > 0 and result.metrics["precision_mode"] == "fp32"


def test_labelled_test_part_is_scored_apart_and_never_trained_on(smoke):
    _, _, result = smoke
    d, m = result.run_dir, result.metrics
    split = pd.read_csv(m["split_file"], dtype={"id": str})
    ids = pd.read_csv(d / "labelled_test_ids.csv", dtype=str)
    probs = np.load(d / "labelled_test_probs.npy")
    assert sorted(ids.id) == sorted(split[split.is_test].id) and len(ids) == m["n_labelled_test"] == 16
    assert m["n_train"] + m["n_valid"] == 48  # the 16 test images are neither trained on nor validated on
    y = (ids.label == "fake").astype(int).to_numpy()
    recomputed = classification(y, probs)
    for key in ("auc", "accuracy", "precision", "recall", "f1"):
        assert m[f"test_{key}"] == pytest.approx(recomputed[key], abs=1e-6)
    (tn, fp), (fn, tp) = m["test_confusion"]
    assert tn + fp == (y == 0).sum() and fn + tp == (y == 1).sum() and tp == ((probs >= 0.5) & (y == 1)).sum()
    assert m["test_auc"] != m["auc"]  # scored on other images than validation


def test_complete_run_is_skipped_and_left_untouched(smoke):
    _, kwargs, result = smoke
    before = {p.name: p.stat().st_mtime_ns for p in result.run_dir.iterdir()}
    again = train(**kwargs)
    assert again.metrics == result.metrics
    assert {p.name: p.stat().st_mtime_ns for p in result.run_dir.iterdir()} == before


def test_exported_learner_predicts_the_same_in_a_fresh_process(smoke):
    _, _, result = smoke
    d = result.run_dir
    script = textwrap.dedent(f"""
        import sys, numpy as np, pandas as pd
        from deepfake_fastai import load_learner
        learn = load_learner({str(d / 'learner.pkl')!r})
        assert 'tests' not in sys.modules
        split = pd.read_csv({result.metrics['split_file']!r}, dtype={{'id': str}})
        paths = [p for p in pd.read_csv({str(d / 'valid_ids.csv')!r}, dtype=str).id]
        cache = {str(Path(result.metrics['split_file']).parent / '32px')!r}
        preds, _ = learn.get_preds(dl=learn.dls.test_dl([cache + '/' + p + '.png' for p in paths]))
        np.save(sys.argv[1], preds[:, list(learn.dls.vocab).index('fake')].numpy())
    """)
    out = d.parent / "fresh.npy"
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, cwd=d.parent,
                   env={**os.environ, "PYTHONPATH": ""})
    np.testing.assert_allclose(np.load(out), np.load(d / "valid_probs.npy"), atol=1e-5)


def test_learner_not_written_by_the_toolkit_is_refused(smoke, tmp_path):
    from deepfake_fastai import load_learner

    _, _, result = smoke
    copy = tmp_path / "learner.pkl"
    copy.write_bytes(result.learner_path.read_bytes())
    with pytest.raises(PermissionError, match=r"not written by deepfake_fastai.*trust=True"):
        load_learner(copy)
    assert sorted(load_learner(copy, trust=True).dls.vocab) == ["fake", "real"]


def test_missing_module_in_a_pickle_is_named(smoke, tmp_path, monkeypatch):
    from fastai.callback.core import Callback

    from deepfake_fastai import load_learner

    _, _, result = smoke
    learn = load_learner(result.learner_path)
    mod = tmp_path / "my_vanished_cbs.py"
    mod.write_text("from fastai.callback.core import Callback\nclass Mine(Callback): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_vanished_cbs

    assert issubclass(my_vanished_cbs.Mine, Callback)
    learn.add_cb(my_vanished_cbs.Mine())
    learn.export(tmp_path / "odd.pkl")
    monkeypatch.delitem(sys.modules, "my_vanished_cbs")
    mod.unlink()
    with pytest.raises(ImportError, match=r"my_vanished_cbs"):
        load_learner(tmp_path / "odd.pkl", trust=True)


def test_same_config_gives_the_same_probabilities(smoke, tmp_path):
    _, kwargs, result = smoke
    rerun = train(**{**kwargs, "runs_dir": str(tmp_path / "runs")})
    np.testing.assert_array_equal(np.load(rerun.run_dir / "valid_probs.npy"),
                                  np.load(result.run_dir / "valid_probs.npy"))


def test_unknown_arch_fails_before_any_data_work(tiny_data, tmp_path):
    with pytest.raises(ArchError, match="resnet5O"):
        train(**tiny_train_kwargs(tmp_path, tiny_data, arch="resnet5O"))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_pretrained_offline_gives_a_clear_error_and_a_failed_status(tiny_data, tmp_path):
    with pytest.raises(WeightsUnavailable, match=r"not available offline.*weights_file.*pretrained: false"):
        train(**tiny_train_kwargs(tmp_path, tiny_data, arch="resnet18", pretrained=True))
    status = json.loads(next((tmp_path / "runs").glob("*/status.json")).read_text())
    assert status["status"] == "failed" and "WeightsUnavailable" in status["error"]


def test_bf16_cpu_autocast_trains_with_finite_outputs(tiny_data, tmp_path):
    from deepfake_fastai.callbacks import bf16_supported

    if not bf16_supported():
        pytest.skip("this CPU has no native bf16")
    result = train(**tiny_train_kwargs(tmp_path, tiny_data, precision="bf16", accum=2))
    probs = np.load(result.run_dir / "valid_probs.npy")
    assert result.metrics["precision_mode"] == "bf16" and np.isfinite(probs).all()
    assert probs.dtype == np.float32 and np.isfinite(pd.read_csv(result.run_dir / "history.csv").values).all()


def test_vit_at_128_px(tiny_data, tmp_path):
    result = train(**tiny_train_kwargs(tmp_path, tiny_data, arch="test_vit", size=128, item_tfms=128))
    assert result.metrics["size"] == 128 and np.isfinite(np.load(result.run_dir / "valid_probs.npy")).all()


def test_held_out_generators_are_scored_on_unseen(tmp_path):
    """A synthetic set with two families held out: unseen/ gets its own metrics, never trained on."""
    from deepfake_fastai.config import DataConfig

    data = DataConfig(source="synthetic", synthetic_n=64, synthetic_px=32, difficulty="easy",
                      synthetic_heldout=["nnconv", "bilconv"], data_dir=str(tmp_path / "data"))
    result = train(**tiny_train_kwargs(tmp_path, tmp_path, data=data))
    m = result.metrics
    assert m["n_unseen"] == 500 and 0 <= m["unseen_auc"] <= 1 and "unseen_log_loss" in m
    ids = pd.read_csv(result.run_dir / "unseen_ids.csv", dtype=str)
    assert len(ids) == len(np.load(result.run_dir / "unseen_probs.npy")) == 500
    assert not set(ids.id) & set(pd.read_csv(result.run_dir / "valid_ids.csv", dtype=str).id)


def test_a_complete_folder_of_another_config_is_never_taken_for_this_run(smoke):
    _, kwargs, result = smoke
    with pytest.raises(ValueError, match=r"holds a complete run with a different config \(differs in \['lr'\]\)"):
        train(**{**kwargs, "lr": 0.5})
    assert json.loads((result.run_dir / "metrics.json").read_text()) == result.metrics


def test_missing_data_path_fails_before_a_run_folder_exists(tmp_path):
    from deepfake_fastai.data import DataError

    with pytest.raises(DataError, match=r"nowhere does not exist"):
        train(**tiny_train_kwargs(tmp_path, tmp_path / "nowhere"))
    assert not (tmp_path / "runs").exists()
