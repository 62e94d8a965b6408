"""K-fold runs for real: tiny timm models trained per fold on generated data, out-of-fold predictions, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake_fastai import inspection, metrics, robustness, runfolder, splits, train
from deepfake_fastai.synthetic import write_videos
from tests.conftest import tiny_train_kwargs


@pytest.fixture(scope="module")
def five_fold(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("folds")
    kwargs = tiny_train_kwargs(tmp, tiny_data)
    kwargs["data"] = kwargs["data"].__class__(**{**kwargs["data"].__dict__, "folds": 5})
    return train(**kwargs), tmp


def test_out_of_fold_predictions_cover_every_labelled_image_once(five_fold):
    result, _ = five_fold
    run_dir, m = result.run_dir, result.metrics
    assert run_dir.name.endswith("_k5") and m["folds"] == 5 and len(m["fold_auc"]) == 5
    split = splits.read_split(Path(m["split_file"]))
    oof = runfolder.read_ids(run_dir, "valid")
    labelled = split[~split.is_test]
    assert list(oof.id) == list(labelled.id)  # every labelled image exactly once, in split-file order
    assert list(oof.fold.astype(int)) == list(labelled.fold)  # each predicted by the model that left it out
    for k in range(5):  # ... and that model's own validation rows are exactly fold k
        fold_ids = runfolder.read_ids(run_dir / f"fold_{k}", "valid").id
        assert set(fold_ids) == set(labelled.id[labelled.fold == k])
    probs = runfolder.read_probs(run_dir, "valid", len(oof))
    by_fold = pd.concat([runfolder.read_part(run_dir / f"fold_{k}", "valid") for k in range(5)]).set_index("id")
    assert np.allclose(probs, by_fold.loc[oof.id, "prob"].to_numpy(), atol=1e-6)


def test_test_predictions_are_the_mean_of_the_five_fold_models(five_fold):
    result, _ = five_fold
    test = runfolder.read_part(result.run_dir, "test")
    folds = [runfolder.read_part(result.run_dir / f"fold_{k}", "test") for k in range(5)]
    assert len(test) == 16 and all(list(f.id) == list(test.id) for f in folds)
    assert np.allclose(test.prob, np.mean([f.prob for f in folds], axis=0), atol=1e-6)
    assert not np.allclose(folds[0].prob, folds[1].prob)  # five different models, not one copied


def test_listings_show_the_fold_run_once_and_its_learner_loads(five_fold):
    result, tmp = five_fold
    assert runfolder.find_runs(tmp / "runs") == [result.run_dir]  # fold_<k>/ are not runs of their own
    run = inspection.load_run(result.run_dir)
    assert len(run.valid) == 64 and run.learner() is not None  # fold 0's learner
    table = robustness.evaluate(result.run_dir, names=("jpeg70",))
    assert set(table) == {"clean", "jpeg70"} and 0.0 <= table["clean"] <= 1.0
    # pooled: each fold's own model on its own fold's images (not fold 0's model on every out-of-fold image)
    labels, probs = [], []
    for k in range(5):
        paths, y = robustness.validation_images(result.run_dir / f"fold_{k}")
        labels.append(y)
        probs.append(robustness.predictor(result.run_dir / f"fold_{k}")(paths))
    pooled = metrics.auc(np.concatenate(labels), np.concatenate(probs))
    assert table["clean"] == pytest.approx(pooled, abs=1e-4) and sum(map(len, labels)) == 64


def test_sigkill_in_fold_3_redoes_only_fold_3(tiny_data, tmp_path):
    """Kill the training process as soon as fold 3 has started; the rerun keeps folds 0-2 and trains 3 and 4."""
    args = [sys.executable, "-m", "deepfake_fastai.cli", "train", "-q", "--arch", "test_resnet", "--size", "32",
            "--epochs", "1", "--bs", "16", "--folds", "5", "--source", "folder", "--path", str(tiny_data),
            "--runs-dir", str(tmp_path / "runs"), "--precision", "fp32", "--tta-n", "1"]
    child = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 300
    while not list(runs.glob("*/fold_3/status.json")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    run_dir = next(runs.glob("*_k5"))
    assert not runfolder.is_complete(run_dir) and not runfolder.is_complete(run_dir / "fold_3")
    before = {k: (run_dir / f"fold_{k}" / runfolder.METRICS).stat().st_mtime_ns for k in range(3)}

    rerun = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert {k: (run_dir / f"fold_{k}" / runfolder.METRICS).stat().st_mtime_ns for k in range(3)} == before
    assert all(runfolder.is_complete(run_dir / f"fold_{k}") for k in range(5)) and runfolder.is_complete(run_dir)
    redone = (run_dir / "fold_3" / runfolder.METRICS).stat().st_mtime_ns
    assert redone > max(before.values())  # fold 3 trained again after the kill, folds 0-2 untouched (above)


def test_a_grouped_fold_run_scores_groups_and_keeps_videos_in_one_fold(tmp_path):
    root = write_videos(tmp_path / "videos", n_videos=12, frames=4, image_px=32)
    kwargs = tiny_train_kwargs(tmp_path, root)
    kwargs["data"] = kwargs["data"].__class__(**{**kwargs["data"].__dict__, "folds": 3,
                                                  "group_from_name": "^([a-z]+)_"})
    result = train(**kwargs)
    oof = runfolder.read_ids(result.run_dir, "valid")
    assert oof.groupby("group").fold.nunique().max() == 1 and oof.group.nunique() == 12
    m = json.loads((result.run_dir / runfolder.METRICS).read_text())
    assert m["n_groups"] == 12 and 0.0 <= m["group_auc"] <= 1.0 and "group_log_loss" in m


def test_a_sweep_on_frames_split_at_random_warns_about_shared_prefixes(tmp_path):
    """The issue's acceptance: frames of one video on both sides of a random split are named under the
    leaderboard; the same sweep with data.group_from_name is silent about it."""
    root = write_videos(tmp_path / "videos", n_videos=12, frames=4, image_px=32)
    base = (f"metric: auc\ndata: {{source: folder, path: {root}, data_dir: {tmp_path / 'data'}{{groups}}}}\n"
            f"defaults: {{epochs: 1, bs: 16, size: 32, precision: fp32, tta_n: 0}}\nruns:\n  - {{arch: test_resnet}}\n")
    outputs = {}
    for name, groups in (("random", ""), ("grouped", ", group_from_name: '^([a-z]+)_', folds: 2")):
        sweep = tmp_path / f"{name}.yaml"
        sweep.write_text(f"name: {name}\nruns_dir: {tmp_path / 'runs'}\n" + base.replace("{groups}", groups))
        done = subprocess.run([sys.executable, "-m", "deepfake_fastai.cli", "sweep", "-q", str(sweep)],
                              cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs[name] = done.stdout
    assert "data checks:" in outputs["random"] and "share a file-name prefix with training images" in outputs["random"]
    assert "share a file-name prefix" not in outputs["grouped"]
    board = pd.read_csv(tmp_path / "runs" / "grouped" / "leaderboard.csv")  # the fold run: one row, its spread
    assert list(board.run) == ["test_resnet_r32-32_fine_tune_s42_k2"] and board.folds[0] == 2
    assert np.isfinite(board.auc_fold_std[0]) and np.isfinite(board.group_auc[0])
    from deepfake_fastai.report import write_report

    page = write_report(tmp_path / "runs" / "grouped", submissions_dir=tmp_path / "none", interpret=False)
    html = page.read_text()
    assert "test_resnet_r32-32_fine_tune_s42_k2" in html and "auc_fold_std" in html
    assert "1 of 1 runs complete" in html  # the fold sub-runs are not runs of the sweep


def test_folds_finished_before_an_oom_retry_are_kept(tiny_data, tmp_path):
    """The sweep's CUDA OOM retry doubles accum (same effective batch) and reruns the run: the folds that had
    finished are kept, not refused as another config nor trained again."""
    kwargs = tiny_train_kwargs(tmp_path, tiny_data)
    kwargs["data"] = kwargs["data"].__class__(**{**kwargs["data"].__dict__, "folds": 2})
    first = train(**kwargs)
    fold_0 = first.run_dir / "fold_0" / runfolder.METRICS
    before = fold_0.stat().st_mtime_ns
    (first.run_dir / runfolder.METRICS).unlink()  # as if fold 1 had failed with an OOM
    again = train(**{**kwargs, "accum": 2})
    assert again.run_dir == first.run_dir and runfolder.is_complete(again.run_dir)
    assert fold_0.stat().st_mtime_ns == before


def test_a_one_split_grouped_run_scores_groups_too(tmp_path):
    root = write_videos(tmp_path / "videos", n_videos=12, frames=4, image_px=32)
    kwargs = tiny_train_kwargs(tmp_path, root)
    kwargs["data"] = kwargs["data"].__class__(**{**kwargs["data"].__dict__, "group_from_name": "^([a-z]+)_",
                                                  "valid_pct": 0.34})
    m = train(**kwargs).metrics
    assert m["n_groups"] == 4 and 0.0 <= m["group_auc"] <= 1.0 and "folds" not in m
