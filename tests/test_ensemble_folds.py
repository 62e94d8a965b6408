"""Ensembling K-fold (out-of-fold) runs and grouped runs: the fold-honest score, fold layouts refused, group
scores, per-group submissions, temperature scaling and clipping. Run folders are written with runfolder's own
writers; no training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake_fastai import ensemble as E
from deepfake_fastai import metrics, runfolder
from deepfake_fastai.config import DataConfig, TrainConfig
from tests.conftest import run_cli

GROUP_RULE = r"^(.+?)_\d+$"  # vid007_3 -> vid007


# ------------------------------------------------------------------------------------------------ helpers
def write_run(folder: Path, ids, y, probs, test_ids, test_probs, folds=None, groups=None,
              group_from_name: str | None = None) -> Path:
    """A complete run folder written through runfolder (valid part with fold/group columns when given)."""
    folder.mkdir(parents=True)
    runfolder.write_config(folder, TrainConfig(data=DataConfig(group_from_name=group_from_name)))
    valid = pd.DataFrame({"id": ids, "label": np.where(np.asarray(y) == 1, "fake", "real")})
    if groups is not None:
        valid["group"] = groups
    if folds is not None:
        valid["fold"] = folds
    runfolder.write_part(folder, "valid", valid, np.asarray(probs))
    runfolder.write_part(folder, "test", pd.DataFrame({"id": test_ids}), np.asarray(test_probs))
    info = {"run": folder.name, "positive_class": "fake", "negative_class": "real",
            **metrics.classification(y, probs), **({"folds": len(set(folds))} if folds is not None else {})}
    runfolder.finish(folder, info)
    return folder


def noisy(y: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    return 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + noise * rng.normal(size=len(y)))))


def oof_layout(n: int = 120, k: int = 3, seed: int = 0):
    """Ids, balanced labels and a fold per row (each fold balanced too)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    folds = (np.arange(n) // 2) % k
    ids = [f"img_{i:04d}" for i in range(n)]
    return ids, y, folds, rng


# ---------------------------------------------------------------------------------- the fold-honest score
def test_fold_runs_are_scored_on_the_folds_they_were_not_selected_on(tmp_path: Path):
    ids, y, folds, rng = oof_layout()
    # "lucky" is perfect on fold 0 only (0.5 elsewhere); "steady" is decent everywhere
    lucky = np.where(folds == 0, np.where(y == 1, 0.9, 0.1), 0.5)
    steady = noisy(y, 1.5, rng)
    test_ids = [f"t_{i}" for i in range(6)]
    a = write_run(tmp_path / "sw" / "lucky", ids, y, lucky, test_ids, np.full(6, 0.5), folds=folds)
    b = write_run(tmp_path / "sw" / "steady", ids, y, steady, test_ids, np.full(6, 0.6), folds=folds)
    result = E.build(E.load_runs([a, b]), method="greedy", metric="auc", iterations=10)
    h = result.holdout
    assert h["scheme"] == "folds" and h["n_folds"] == 3 and [f["fold"] for f in h["folds"]] == [0, 1, 2]
    fold0 = h["folds"][0]
    on0 = folds == 0
    # fold 0 is predicted with what folds 1 and 2 chose: steady alone (lucky is 0.5 there): lucky's perfect
    # fold 0 is visible as luck, not credited to the ensemble
    assert fold0["ensemble"] == pytest.approx(E.auc(y[on0], steady[on0]))
    assert fold0["best_single"] == pytest.approx(E.auc(y[on0], steady[on0])) and fold0["ensemble"] < 1
    assert fold0["selection_ensemble"] == pytest.approx(E.auc(y[~on0], steady[~on0]))
    assert set(h["fold_std"]) == {"ensemble", "best_single", "plain_mean"}
    record = json.loads(json.dumps(E.to_record(result)))
    assert record["holdout"]["scheme"] == "folds" and record["folds"] == 3
    text = "\n".join(E.summary_lines(result))
    assert "other folds" in text and "for each of 3 folds" in text and "held-out half" not in text


def test_fold_score_pools_the_out_of_fold_predictions(tmp_path: Path):
    ids, y, folds, rng = oof_layout(90)
    probs = [noisy(y, noise, rng) for noise in (1.0, 2.0)]
    runs = [write_run(tmp_path / f"r{i}", ids, y, p, ["t"], [0.5], folds=folds) for i, p in enumerate(probs)]
    h = E.build(E.load_runs(runs), method="mean").holdout  # no selection: pooled = the plain mean on all rows
    assert h["ensemble"] == pytest.approx(E.auc(y, np.mean(probs, axis=0)))
    assert h["fold_mean"]["ensemble"] == pytest.approx(
        np.mean([E.auc(y[folds == j], np.mean(probs, axis=0)[folds == j]) for j in range(3)]))


def test_single_split_runs_keep_the_halves(tmp_path: Path):
    ids, y, _, rng = oof_layout(60)
    runs = [write_run(tmp_path / f"r{i}", ids, y, noisy(y, 1, rng), ["t"], [0.5]) for i in range(2)]
    result = E.build(E.load_runs(runs), method="greedy", iterations=5)
    assert result.holdout["scheme"] == "halves" and result.valid_folds is None
    assert "held-out half" in "\n".join(E.summary_lines(result))


def test_one_fold_models_folder_counts_as_a_single_split(tmp_path: Path):
    ids, y, _, rng = oof_layout(40)
    run = write_run(tmp_path / "fold_0", ids, y, noisy(y, 1, rng), ["t"], [0.5], folds=np.zeros(40, int))
    assert E.load_runs([run])[0].valid_folds is None


# --------------------------------------------------------------------------------- fold layouts refused
def test_runs_of_different_fold_layouts_are_refused(tmp_path: Path):
    ids, y, folds, rng = oof_layout()
    a = write_run(tmp_path / "a", ids, y, noisy(y, 1, rng), ["t"], [0.5], folds=folds)
    b = write_run(tmp_path / "b", ids, y, noisy(y, 1, rng), ["t"], [0.5], folds=(folds + 1) % 3)
    with pytest.raises(E.EnsembleError, match="different fold layouts") as e:
        E.load_runs([a, b])
    assert "b and a" in str(e.value) and "img_0000 (fold 0 vs 1)" in str(e.value) and "split file" in str(e.value)
    rc, _, err = run_cli("ensemble", str(a), str(b), "--out-dir", str(tmp_path / "subs"))
    assert rc == 2 and "different fold layouts" in err


def test_fold_runs_mixed_with_single_split_runs_are_refused(tmp_path: Path):
    ids, y, folds, rng = oof_layout()
    a = write_run(tmp_path / "folded", ids, y, noisy(y, 1, rng), ["t"], [0.5], folds=folds)
    b = write_run(tmp_path / "single", ids, y, noisy(y, 1, rng), ["t"], [0.5])
    for order in ([a, b], [b, a]):
        with pytest.raises(E.EnsembleError, match="folded is a 3-fold run .* single a single-split run"):
            E.load_runs(order)


# ------------------------------------------------------------------------------------------ group scores
def test_group_scores_beside_image_scores_for_the_ensemble_and_each_run(tmp_path: Path):
    ids, y, folds, rng = oof_layout(120)
    groups = [f"vid{i // 4:03d}" for i in range(120)]
    y = np.repeat(np.arange(30) % 2, 4)  # a video's frames share its label
    probs = [noisy(y, noise, rng) for noise in (1.0, 3.0)]
    runs = [write_run(tmp_path / f"r{i}", ids, y, p, ["t"], [0.5], groups=groups) for i, p in enumerate(probs)]
    result = E.build(E.load_runs(runs), method="mean")
    expected = metrics.group_scores(y, np.mean(probs, axis=0), groups)
    ens = result.scores["ensemble"]
    assert ens["group_auc"] == pytest.approx(expected["group_auc"]) and ens["n_groups"] == 30
    assert ens["group_log_loss"] == pytest.approx(expected["group_log_loss"]) and "auc" in ens
    record = json.loads(json.dumps(E.to_record(result)))
    assert record["validation"]["run_groups"]["r1"]["group_auc"] == pytest.approx(
        metrics.group_scores(y, probs[1], groups)["group_auc"])
    assert record["n_valid_groups"] == 30
    assert any("group AUC" in line for line in E.summary_lines(result))


# ------------------------------------------------------------------------------------ per-group submission
def per_group_sweep(tmp_path: Path, rule: str | None = GROUP_RULE):
    """Two runs whose test images are frames vid<k>_<j>; a sample submission listing the videos (.mp4)."""
    rng = np.random.default_rng(1)
    ids, y = [f"v{i:03d}_{j}" for i in range(10) for j in range(3)], np.repeat(np.arange(10) % 2, 3)
    test_ids = [f"test{k}_{j}" for k in range(4) for j in range(3)]
    tests = [rng.random(len(test_ids)) for _ in range(2)]
    for i, tp in enumerate(tests):
        write_run(tmp_path / "sw" / f"r{i}", ids, y, noisy(y, 1, rng), test_ids, tp,
                  groups=[i.rsplit("_", 1)[0] for i in ids], group_from_name=rule)
    sample = tmp_path / "sample_submission.csv"
    pd.DataFrame({"filename": [f"test{k}.mp4" for k in (3, 0, 2, 1)], "label": 0.5}).to_csv(sample, index=False)
    return tmp_path / "sw", sample, test_ids, np.mean(tests, axis=0)


def test_per_group_rows_are_group_means_and_match_the_sample_by_stem(tmp_path: Path):
    sweep, sample, test_ids, mean = per_group_sweep(tmp_path)
    out = tmp_path / "subs"
    rc, stdout, err = run_cli("ensemble", str(sweep), "--per-group", "--method", "mean",
                              "--sample-submission", str(sample), "--out-dir", str(out))
    assert rc == 0, err
    assert "12 test images -> 4 groups" in stdout
    csv = next(p for p in out.glob("*.csv") if not p.name.endswith(".probs.csv"))
    frame = pd.read_csv(csv)
    assert list(frame.filename) == ["test3.mp4", "test0.mp4", "test2.mp4", "test1.mp4"]  # the sample's order
    by_video = pd.Series(mean).groupby([i.rsplit("_", 1)[0] for i in test_ids]).mean()
    for name, value in zip(frame.filename, frame.label, strict=True):
        assert value == pytest.approx(by_video[name.removesuffix(".mp4")], abs=1e-6)
    record = json.loads(csv.with_suffix(".json").read_text())
    assert record["per_group"]["n_groups"] == 4 and record["per_group"]["group_from_name"] == GROUP_RULE
    rc, _, err = run_cli("submit", str(csv), "-m", "check", "--dry-run")  # revalidated against the same sample
    assert rc == 0, err


def test_per_group_without_a_group_rule_says_to_set_it(tmp_path: Path):
    sweep, sample, _, _ = per_group_sweep(tmp_path, rule=None)
    rc, _, err = run_cli("ensemble", str(sweep), "--per-group", "--sample-submission", str(sample),
                         "--out-dir", str(tmp_path / "subs"))
    assert rc == 2 and "set data.group_from_name" in err


def test_per_group_needs_a_sample_submission(tmp_path: Path):
    sweep, _, _, _ = per_group_sweep(tmp_path)
    rc, _, err = run_cli("ensemble", str(sweep), "--per-group", "--out-dir", str(tmp_path / "subs"))
    assert rc == 2 and "--sample-submission" in err


def test_group_probs_refuses_unmatched_test_names():
    groups, probs = E.group_probs(["a_1", "a_2", "b_1"], np.array([0.2, 0.4, 0.9]), GROUP_RULE)
    assert list(groups) == ["a", "b"] and np.allclose(probs, [0.3, 0.9])
    # an undecodable frame (fallback 0.5) counts only where its video has no other frame
    groups, probs = E.group_probs(["a_1", "a_2", "b_1"], np.array([0.2, 0.5, 0.5]), GROUP_RULE, ("a_2", "b_1"))
    assert list(groups) == ["a", "b"] and np.allclose(probs, [0.2, 0.5])
    with pytest.raises(E.EnsembleError, match="do not match"):
        E.group_probs(["a_1", "nonumber"], np.array([0.2, 0.4]), GROUP_RULE)


# -------------------------------------------------------------------------------- temperature and clipping
def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 40_000)
    y = (rng.random(len(z)) < 1 / (1 + np.exp(-z))).astype(int)  # labels drawn from the true probabilities
    overconfident = 1 / (1 + np.exp(-2.5 * z))
    found = metrics.fit_temperature(y, overconfident)
    assert found == pytest.approx(2.5, rel=0.05)
    assert metrics.log_loss(y, metrics.apply_temperature(overconfident, found)) < metrics.log_loss(y, overconfident)
    inside = np.abs(z) < 5  # further out the over-confident float saturates at 1 - EPS
    assert np.allclose(metrics.apply_temperature(overconfident, 2.5)[inside], 1 / (1 + np.exp(-z[inside])))
    assert metrics.fit_temperature(y, np.full(len(y), 0.5)) == 1.0


def test_calibrate_fits_the_fold_temperature_on_the_selection_folds_only(tmp_path: Path):
    ids, _, folds, rng = oof_layout(600)
    z = rng.normal(0, 1.5, 600)  # true logits; labels drawn from them; the runs 3x over-confident
    y = (rng.random(600) < 1 / (1 + np.exp(-z))).astype(int)
    probs = [1 / (1 + np.exp(-3 * (z + 0.3 * rng.normal(size=600)))) for _ in range(2)]
    runs = E.load_runs([write_run(tmp_path / f"r{i}", ids, y, p, ["t0", "t1"], [0.2, 0.9], folds=folds)
                        for i, p in enumerate(probs)])
    result = E.build(runs, method="mean", metric="log_loss", calibrate=True)
    mean = np.mean([r.valid_probs for r in runs], axis=0)  # as stored (float32)
    for fold in result.holdout["folds"]:
        select = folds != fold["fold"]
        assert fold["temperature"] == pytest.approx(metrics.fit_temperature(y[select], mean[select]))
    t = result.calibration["temperature"]
    assert t == pytest.approx(metrics.fit_temperature(y, mean)) and t > 1  # over-confident runs: softened
    assert np.allclose(result.test_probs, metrics.apply_temperature(np.array([0.2, 0.9]), t))
    assert result.calibration["submitted_log_loss"] < result.calibration["log_loss"]
    assert result.holdout["ensemble"] < result.holdout["plain_mean"]  # calibrated mean beats the raw mean


def test_clip_bounds_the_submitted_probabilities(tmp_path: Path):
    ids, y, _, rng = oof_layout(40)
    test_ids = [f"t{i}" for i in range(8)]
    extreme = np.array([1e-5, 0.3, 0.99999, 0.5, 0.0, 1.0, 0.02, 0.97])
    runs = [write_run(tmp_path / "sw" / f"r{i}", ids, y, noisy(y, 1, rng), test_ids, extreme) for i in range(2)]
    out = tmp_path / "subs"
    rc, stdout, err = run_cli("ensemble", str(tmp_path / "sw"), "--method", "mean", "--clip", "0.05",
                              "--out-dir", str(out))
    assert rc == 0, err
    csv = next(p for p in out.glob("*.csv") if not p.name.endswith(".probs.csv"))
    values = pd.read_csv(csv).iloc[:, 1].to_numpy()
    assert values.min() == pytest.approx(0.05) and values.max() == pytest.approx(0.95)
    assert ((values >= 0.05 - 1e-9) & (values <= 0.95 + 1e-9)).all() and len(runs) == 2
    assert json.loads(csv.with_suffix(".json").read_text())["calibration"]["clip"] == 0.05
    assert "clipped to [0.05, 0.95]" in stdout
    rc, _, err = run_cli("ensemble", str(tmp_path / "sw"), "--clip", "0.7", "--out-dir", str(out))
    assert rc == 2 and "clip 0.7" in err


def test_a_video_with_no_test_frame_gets_the_prior_and_is_named(tmp_path: Path):
    """DFDC: some test videos have no detected face, so no frame; the submission still needs their row."""
    sweep, sample, _, _ = per_group_sweep(tmp_path)
    pd.DataFrame({"filename": ["test3.mp4", "noface.mp4", "test0.mp4", "test2.mp4", "test1.mp4"],
                  "label": 0.5}).to_csv(sample, index=False)
    out = tmp_path / "subs"
    rc, stdout, err = run_cli("ensemble", str(sweep), "--per-group", "--method", "mean", "--clip", "0.01",
                              "--sample-submission", str(sample), "--out-dir", str(out))
    assert rc == 0, err
    assert "WARNING: 1 group(s) of the sample submission have no test image (e.g. ['noface.mp4'])" in stdout
    csv = next(p for p in out.glob("*.csv") if not p.name.endswith(".probs.csv"))
    frame = pd.read_csv(csv).set_index("filename")
    assert len(frame) == 5 and frame.label["noface.mp4"] == 0.5
    assert json.loads(csv.with_suffix(".json").read_text())["per_group"]["no_frames"]["ids"] == ["noface.mp4"]


def test_a_per_video_sample_without_per_group_says_to_add_it(tmp_path: Path):
    sweep, sample, _, _ = per_group_sweep(tmp_path)
    rc, _, err = run_cli("ensemble", str(sweep), "--sample-submission", str(sample), "--out-dir", str(tmp_path / "s"))
    assert rc == 2 and "add --per-group" in err
