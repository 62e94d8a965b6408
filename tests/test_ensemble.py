"""Ensembling: the averaging, ranking and selection math on small arrays, and run folders made by the test."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake_fastai import ensemble as E
from deepfake_fastai import metrics


# ------------------------------------------------------------------------------------------------ helpers
def noisy_probs(y: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A "model": probabilities that follow the labels, blurred by ``noise`` (bigger = worse)."""
    logits = 1.5 * (2 * y - 1) + noise * rng.normal(size=len(y))
    return 1 / (1 + np.exp(-logits))


def make_run(folder: Path, y: np.ndarray, valid_probs: np.ndarray, test_probs: np.ndarray,
             valid_ids: list[str] | None = None, test_ids: list[str] | None = None,
             status: str = "complete", positive: str = "fake") -> Path:
    """A run folder as train() writes it (only the files the ensembler reads)."""
    folder.mkdir(parents=True)
    valid_ids = valid_ids or [f"img_{i:04d}" for i in range(len(y))]
    test_ids = test_ids or [f"test_{i:04d}" for i in range(len(test_probs))]
    labels = np.where(np.asarray(y) == 1, positive, "real")
    pd.DataFrame({"id": valid_ids, "label": labels}).to_csv(folder / "valid_ids.csv", index=False)
    pd.DataFrame({"id": test_ids}).to_csv(folder / "test_ids.csv", index=False)
    np.save(folder / "valid_probs.npy", np.asarray(valid_probs, dtype=np.float32))
    np.save(folder / "test_probs.npy", np.asarray(test_probs, dtype=np.float32))
    info = {"status": status, "run": folder.name, "positive_class": positive, "negative_class": "real",
            **metrics.classification(y, valid_probs)}
    (folder / "metrics.json").write_text(json.dumps(info))
    return folder


def make_sweep(root: Path, noises=(0.8, 1.5, 2.5, 4.0), n_valid: int = 200, n_test: int = 50,
               seed: int = 0) -> tuple[Path, np.ndarray]:
    """A sweep folder of runs of increasing noise on one split; returns it and the validation labels."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n_valid) % 2)
    y_test = rng.permutation(np.arange(n_test) % 2)
    for i, noise in enumerate(noises):
        make_run(root / f"run_{i}", y, noisy_probs(y, noise, rng), noisy_probs(y_test, noise, rng))
    return root, y


# ------------------------------------------------------------------------------------------ scoring math
def test_rank_average_gives_ties_their_average_rank():
    x = np.array([[0.3, 0.1, 0.3, 0.9, 0.1, 0.1, 0.5]])  # three 0.1s share ranks 1-3, two 0.3s ranks 4-5
    assert np.allclose(E.rank_average(x) * 7 + 0.5, [4.5, 2, 4.5, 7, 2, 2, 6])


@pytest.mark.parametrize("seed", range(3))
def test_auc_log_loss_accuracy_match_sklearn(seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 80)
    p = np.round(rng.random(80), 1)  # rounding makes ties, which AUC must count as half
    reference = metrics.classification(y, p)
    for metric in E.METRICS:
        assert E.score(metric, y, p) == pytest.approx(reference[metric], abs=1e-9)


def test_auc_is_nan_with_one_class():
    assert np.isnan(E.auc(np.ones(4), np.linspace(0, 1, 4)))


# ---------------------------------------------------------------------------------------- combining math
def test_weighted_mean_normalises_weights():
    probs = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert np.allclose(E.weighted_mean(probs, [3, 1]), [0.3, 0.7])
    assert np.allclose(E.weighted_mean(probs, [1, 1]), probs.mean(axis=0))


def test_rank_average_by_hand():
    probs = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])  # ranks [1, 3, 2] and [3, 2, 1] of 3 rows
    assert np.allclose(E.rank_average(probs), [(1 / 6 + 5 / 6) / 2, (5 / 6 + 1 / 2) / 2, (1 / 2 + 1 / 6) / 2])


def test_rank_average_ignores_calibration():
    p = np.random.default_rng(0).random(50)
    assert np.allclose(E.rank_average(np.stack([p, p**3])), E.rank_average(np.stack([p, p])))
    assert not np.allclose(E.weighted_mean(np.stack([p, p**3]), [1, 1]), p)


def test_skill_weights_follow_skill_and_drop_chance():
    y = np.array([1, 1, 0, 0])
    perfect, half, chance = [0.9, 0.8, 0.1, 0.2], [0.9, 0.1, 0.2, 0.8], [0.5, 0.5, 0.5, 0.5]
    w = E.skill_weights("auc", y, np.array([perfect, half, chance]))
    assert np.allclose(w, [1.0, 0.0, 0.0])  # AUC 1 has skill 0.5; AUC 0.5 none
    w = E.skill_weights("log_loss", y, np.array([perfect, [0.6, 0.6, 0.4, 0.4]]))
    assert w[0] > w[1] > 0 and w.sum() == pytest.approx(1)


def test_fit_weights_for_each_method():
    y = np.array([1, 0, 1, 0])
    probs = np.array([[0.9, 0.1, 0.8, 0.3], [0.6, 0.5, 0.4, 0.5], [0.7, 0.2, 0.6, 0.1]])
    for method in ("mean", "rank"):
        assert np.allclose(E.fit_weights(method, "auc", y, probs)[0], 1 / 3)
    given, _ = E.fit_weights("greedy", "auc", y, probs, weights=[2, 0, 2])  # given weights win
    assert np.allclose(given, [0.5, 0, 0.5])
    with pytest.raises(E.EnsembleError, match="3 non-negative"):
        E.fit_weights("weighted", "auc", y, probs, weights=[1, 1])
    with pytest.raises(E.EnsembleError, match="choose from"):
        E.fit_weights("median", "auc", y, probs)


# ------------------------------------------------------------------------------------------ greedy math
def test_greedy_selects_with_replacement_by_hand():
    # B alone scores best (log loss 0.281); adding A, then B again, improves to 0.268: weights 1/3 A, 2/3 B.
    y = np.array([1, 1, 0, 0])
    a, b = np.array([0.95, 0.95, 0.45, 0.45]), np.array([0.6, 0.6, 0.05, 0.05])
    weights, trace = E.greedy_selection("log_loss", y, np.stack([a, b]), iterations=6)
    assert np.allclose(weights, [1 / 3, 2 / 3])
    assert trace[0] == pytest.approx(E.score("log_loss", y, b))  # first pick = best single run
    assert E.score("log_loss", y, weights @ np.stack([a, b])) == pytest.approx(min(trace))


def test_greedy_keeps_a_lone_best_run():
    y = np.array([1, 1, 0, 0])
    probs = np.array([[0.9, 0.8, 0.1, 0.2], [0.4, 0.6, 0.5, 0.5]])
    weights, _ = E.greedy_selection("auc", y, probs, iterations=5)
    assert np.allclose(weights, [1, 0])


@pytest.mark.parametrize("metric", list(E.METRICS))
@pytest.mark.parametrize("seed", range(6))
def test_greedy_is_never_below_the_best_single_run(metric: str, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(60) % 2)
    probs = np.stack([noisy_probs(y, noise, rng) for noise in rng.uniform(1, 5, 5)])
    weights, _ = E.greedy_selection(metric, y, probs, iterations=20)
    singles = [E.score(metric, y, p) for p in probs]
    best = max(singles) if E.METRICS[metric] else min(singles)
    ensemble = E.score(metric, y, weights @ probs)
    assert (ensemble >= best - 1e-12) if E.METRICS[metric] else (ensemble <= best + 1e-12)
    held = E.honest_scores("greedy", metric, y, probs, iterations=20, seed=seed)
    for fold in held["folds"]:  # on the half it selected on, too
        sel, single = fold["selection_ensemble"], fold["selection_best_single"]
        assert (sel >= single - 1e-12) if E.METRICS[metric] else (sel <= single + 1e-12)


def test_halves_are_stratified_disjoint_and_cover_all_rows():
    y = np.array([0] * 7 + [1] * 5)
    a, b = E.halves(y, seed=1)
    assert sorted(np.r_[a, b]) == list(range(12)) and not set(a) & set(b)
    assert abs(y[a].sum() - y[b].sum()) <= 1 and abs(len(a) - len(b)) <= 1


def test_honest_scores_select_on_one_half_and_score_on_the_other():
    y = np.array([1, 0] * 10)
    probs = np.stack([np.where(y == 1, 0.7, 0.3), np.full(20, 0.5)])
    held = E.honest_scores("mean", "accuracy", y, probs)
    a, b = E.halves(y, 0)
    assert held["folds"][0]["ensemble"] == E.score("accuracy", y[b], probs[:, b].mean(axis=0))
    assert held["best_single"] == 1.0 and set(held) >= {"ensemble", "plain_mean", "folds", "metric"}


# ------------------------------------------------------------------------------------- run folders in, out
def test_build_from_a_sweep_folder(tmp_path: Path):
    sweep, y = make_sweep(tmp_path / "runs" / "sweep1")
    runs = E.load_runs(E.resolve_run_dirs([sweep]))
    result = E.build(runs, method="greedy", metric="auc")
    s = result.scores
    assert [r.name for r in runs] == ["run_0", "run_1", "run_2", "run_3"]
    assert s["ensemble"]["auc"] >= s["best_single"]["auc"] and s["best_single"]["run"] == "run_0"
    assert sum(result.weights) == pytest.approx(1) and result.members
    assert result.test_probs.shape == (50,) and list(result.test_ids[:2]) == ["test_0000", "test_0001"]
    record = json.loads(json.dumps(E.to_record(result)))  # JSON-able
    assert record["source_sweep"] == str(sweep.resolve()) and record["method"] == "greedy"
    assert {m["run"] for m in record["members"]} == set(result.members)
    text = "\n".join(E.summary_lines(result))
    assert "best single (run_0)" in text and "plain mean" in text and "held-out half" in text


@pytest.mark.parametrize("method", E.METHODS)
def test_every_method_gives_probabilities_in_0_1(tmp_path: Path, method: str):
    sweep, _ = make_sweep(tmp_path / "s", n_valid=40, n_test=10)
    result = E.build(E.load_runs(E.resolve_run_dirs([sweep])), method=method, metric="log_loss", iterations=5)
    assert ((result.test_probs > 0) & (result.test_probs < 1)).all()
    assert result.valid_probs.shape == (40,) and np.isfinite(result.holdout["ensemble"])


def test_mean_is_the_plain_mean(tmp_path: Path):
    sweep, _ = make_sweep(tmp_path / "s", n_valid=40, n_test=10)
    runs = E.load_runs(E.resolve_run_dirs([sweep]))
    result = E.build(runs, method="mean")
    assert np.allclose(result.test_probs, np.mean([r.test_probs for r in runs], axis=0))
    assert result.scores["ensemble"] == result.scores["plain_mean"]


def test_resolve_names_globs_and_skips_incomplete_runs(tmp_path: Path, caplog):
    sweep, y = make_sweep(tmp_path / "runs" / "sw", noises=(1, 2))
    make_run(sweep / "run_9", y, np.full(len(y), 0.5), np.full(50, 0.5), status="running")
    with caplog.at_level(logging.WARNING):
        assert [p.name for p in E.resolve_run_dirs([sweep])] == ["run_0", "run_1"]
    assert "run_9" in caplog.text
    assert [p.name for p in E.resolve_run_dirs(["sw"], runs_dir=tmp_path / "runs")] == ["run_0", "run_1"]
    assert [p.name for p in E.resolve_run_dirs([str(sweep / "run_[01]")])] == ["run_0", "run_1"]
    assert [p.name for p in E.resolve_run_dirs(["sw/run_1", "sw/run_1"], tmp_path / "runs")] == ["run_1"]
    with pytest.raises(E.EnsembleError, match="no run folder"):
        E.resolve_run_dirs(["nope"], runs_dir=tmp_path / "runs")
    with pytest.raises(E.EnsembleError, match="not a complete run"):
        E.load_runs([sweep / "run_9"])


def test_refuses_runs_of_different_validation_splits(tmp_path: Path):
    y = np.array([1, 0, 1, 0])
    a = make_run(tmp_path / "a", y, [0.9, 0.1, 0.8, 0.2], [0.5])
    b = make_run(tmp_path / "b", y, [0.9, 0.1, 0.8, 0.2], [0.5], valid_ids=["img_0000", "x1", "x2", "img_0003"])
    with pytest.raises(E.EnsembleError) as e:
        E.load_runs([a, b])
    message = str(e.value)
    assert "validation" in message and "'a'" not in message and "b and a" in message
    assert "2 of a's are missing" in message and "x1" in message and "one sweep folder" in message


def test_refuses_runs_with_different_test_ids(tmp_path: Path):
    y = np.array([1, 0])
    a = make_run(tmp_path / "a", y, [0.9, 0.1], [0.5, 0.5])
    b = make_run(tmp_path / "b", y, [0.9, 0.1], [0.5, 0.5], test_ids=["test_0000", "other"])
    with pytest.raises(E.EnsembleError, match="same test ids"):
        E.load_runs([a, b])


def test_refuses_other_positive_class_and_disagreeing_labels(tmp_path: Path):
    y = np.array([1, 0])
    a = make_run(tmp_path / "a", y, [0.9, 0.1], [0.5])
    b = make_run(tmp_path / "b", y, [0.9, 0.1], [0.5], positive="ai")
    c = make_run(tmp_path / "c", 1 - y, [0.9, 0.1], [0.5])
    with pytest.raises(E.EnsembleError, match="predicts 'ai'"):
        E.load_runs([a, b])
    with pytest.raises(E.EnsembleError, match="disagree on validation labels"):
        E.load_runs([a, c])


def test_same_ids_in_another_order_are_realigned(tmp_path: Path):
    y = np.array([1, 0, 0])
    a = make_run(tmp_path / "a", y, [0.9, 0.2, 0.1], [0.1, 0.7], valid_ids=["p", "q", "r"], test_ids=["s", "t"])
    b = make_run(tmp_path / "b", y[[2, 0, 1]], [0.3, 0.8, 0.4], [0.6, 0.2], valid_ids=["r", "p", "q"],
                 test_ids=["t", "s"])
    runs = E.load_runs([a, b])
    assert np.allclose(runs[1].valid_probs, [0.8, 0.4, 0.3]) and np.allclose(runs[1].test_probs, [0.2, 0.6])


def test_refuses_inconsistent_probability_files(tmp_path: Path):
    y = np.array([1, 0, 1])
    a = make_run(tmp_path / "a", y, [0.9, 0.1, 0.7], [0.5])
    np.save(a / "valid_probs.npy", np.array([0.9, 0.1], dtype=np.float32))
    with pytest.raises(E.EnsembleError, match="2 probabilities for 3 ids"):
        E.load_runs([a])
    np.save(a / "valid_probs.npy", np.array([0.9, np.nan, 0.2], dtype=np.float32))
    with pytest.raises(E.EnsembleError, match="finite"):
        E.load_runs([a])


def test_runs_with_one_name_in_two_sweeps_get_distinct_names(tmp_path: Path):
    y = np.array([1, 0])
    a = make_run(tmp_path / "sw1" / "r", y, [0.9, 0.1], [0.5])
    b = make_run(tmp_path / "sw2" / "r", y, [0.8, 0.3], [0.4])
    assert [r.name for r in E.load_runs([a, b])] == ["sw1/r", "sw2/r"]


def test_bad_metric_is_refused(tmp_path: Path):
    sweep, _ = make_sweep(tmp_path / "s", noises=(1,), n_valid=10, n_test=2)
    with pytest.raises(E.EnsembleError, match="metric 'f2'"):
        E.build(E.load_runs(E.resolve_run_dirs([sweep])), metric="f2")


def test_labelled_test_part_is_scored_with_weights_chosen_on_validation(tmp_path):
    root, y = make_sweep(tmp_path / "sweep")
    rng = np.random.default_rng(5)
    y_lt = rng.permutation(np.arange(60) % 2)
    ids = [f"lt_{i:03d}" for i in range(60)]
    lt_probs = {}
    for i, noise in enumerate((0.8, 1.5, 2.5, 4.0)):
        run = root / f"run_{i}"
        order = rng.permutation(60)  # each run stores its rows in another order: aligned by id
        lt_probs[i] = noisy_probs(y_lt, noise, rng)
        pd.DataFrame({"id": np.array(ids)[order], "label": np.where(y_lt[order] == 1, "fake", "real")}).to_csv(
            run / "labelled_test_ids.csv", index=False)
        np.save(run / "labelled_test_probs.npy", lt_probs[i][order].astype(np.float32))
    runs = E.load_runs(E.resolve_run_dirs([root]))
    result = E.build(runs, method="mean")
    expected = metrics.classification(y_lt, np.mean([lt_probs[i] for i in range(4)], axis=0))
    assert result.labelled_test["n"] == 60
    assert result.labelled_test["ensemble"]["auc"] == pytest.approx(expected["auc"], abs=1e-6)
    best = result.labelled_test["best_single"]
    assert best["run"] == "run_0" and best["auc"] == pytest.approx(
        metrics.classification(y_lt, lt_probs[0])["auc"], abs=1e-6)
    assert E.to_record(result)["labelled_test"]["ensemble"]["auc"] == result.labelled_test["ensemble"]["auc"]
    assert any("labelled test" in line for line in E.summary_lines(result))
