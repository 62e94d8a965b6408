"""Plots, run/sweep inspection and the HTML report, on run folders the tests write from numpy arrays.

These modules read artifacts only, so folders made here stand in for trained runs; nothing trains.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score

from deepfake_fastai import atomic, metrics, plots
from deepfake_fastai.config import TrainConfig, dump_yaml
from deepfake_fastai.inspection import RunError, load_run, load_sweep
from deepfake_fastai.report import anchor, write_report
from deepfake_fastai.runfolder import write_predictions
from deepfake_fastai.sweep import SweepConfig

EVIL_RUN = 'ev<b>il<i>&"x$y$'  # HTML, a quote, an ampersand, and mathtext dollars (no "/": it is a folder)
EVIL_FAILED = "<script>alert(1)"
EVIL_ERROR = 'RuntimeError: </pre><script>alert("pwned")</script>'
N_VALID, N_TEST = 120, 10


# ------------------------------------------------------------------------------------------------ helpers
def noisy_probs(y: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A "model": probabilities that follow the labels, blurred by ``noise``."""
    return 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + noise * rng.normal(size=len(y)))))


def make_run(sweep_dir: Path, name: str, y: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> Path:
    """A complete run folder as train() writes it (no learner.pkl: nothing here loads it)."""
    run_dir = sweep_dir / name
    cfg = TrainConfig(arch="resnet18", size=64, epochs=3, name=name, runs_dir=str(sweep_dir))
    atomic.write_text(run_dir / "config.yaml", dump_yaml(cfg))
    valid = pd.DataFrame({"id": [f"{i:06d}" for i in range(len(y))], "label": np.where(y == 1, "fake", "real")})
    test = pd.DataFrame({"id": [f"test_{i}" for i in range(N_TEST)]})
    write_predictions(run_dir, valid, p, test, rng.random(N_TEST))
    history = pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [0.7, 0.5, 0.4], "valid_loss": [0.65, 0.55, 0.5],
                            "accuracy": [0.6, 0.7, 0.75], "roc_auc_score": [0.65, 0.78, 0.82]})
    atomic.write_csv(run_dir / "history.csv", history)
    p32 = np.load(run_dir / "valid_probs.npy")  # score what was stored, as train() does
    atomic.write_json(run_dir / "metrics.json", {
        **metrics.classification(y, p32), "status": "complete", "run": name, "arch": "resnet18", "size": 64,
        "epochs": 3, "positive_class": "fake", "negative_class": "real", "precision_mode": "fp32",
        "fit_time_s": 12.5, "images_per_s": 321.0, "tta": {"n": 2, "beta": 0.25}})
    atomic.write_json(run_dir / "status.json", {"status": "complete"})
    return run_dir


def make_failed_run(sweep_dir: Path, name: str, error: str) -> Path:
    run_dir = sweep_dir / name
    atomic.write_text(run_dir / "config.yaml", dump_yaml(TrainConfig(name=name, runs_dir=str(sweep_dir))))
    atomic.write_json(run_dir / "status.json", {"status": "failed", "error": error, "traceback": "..."})
    return run_dir


def make_sweep(root: Path, names: list[str], failed: dict[str, str], seed: int = 0) -> tuple[Path, np.ndarray]:
    """runs/<sweep>/ with a sweep.yaml naming every run explicitly, complete runs of rising noise, failed ones."""
    sweep_dir = root / "demo"
    sweep = SweepConfig(name="demo", runs_dir=str(root), defaults={"arch": "resnet18", "size": 64, "epochs": 3},
                        runs=[{"name": n} for n in [*names, *failed]])
    atomic.write_text(sweep_dir / "sweep.yaml", yaml.safe_dump(dataclasses.asdict(sweep), sort_keys=False))
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(N_VALID) % 2)
    for i, name in enumerate(names):
        make_run(sweep_dir, name, y, noisy_probs(y, 0.8 + i, rng), rng)
    for name, error in failed.items():
        make_failed_run(sweep_dir, name, error)
    return sweep_dir, y


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


# ----------------------------------------------------------------------------------------------- plots
def test_roc_legend_auc_equals_sklearn():
    rng = np.random.default_rng(1)
    y = rng.permutation(np.arange(200) % 2)
    series = [(f"run{i}", y, noisy_probs(y, noise, rng)) for i, noise in enumerate((0.5, 1.5, 3.0))]
    series.append(("ties", y, np.round(noisy_probs(y, 1.0, rng), 1)))  # many tied scores
    ens = ("ensemble: mean", y, np.mean([s[2] for s in series], axis=0))
    fig = plots.roc_figure(series, ens)
    legend = {m.group(1): float(m.group(2)) for t in fig.axes[0].get_legend().get_texts()
              if (m := re.fullmatch(r"(.+)  AUC (\d\.\d{4})", t.get_text()))}
    expected = {name: round(roc_auc_score(yy, p), 4) for name, yy, p in [*series, ens]}
    assert legend == expected
    assert list(legend.values()) == sorted(legend.values(), reverse=True)  # best first


def test_roc_single_class_is_labelled_not_drawn():
    fig = plots.roc_figure([("one class", np.ones(5), np.linspace(0, 1, 5))])
    assert "one class  AUC n/a (one class)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_confusion_counts_equal_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    p = np.r_[rng.random(297), 0.5, 0.5, 0.4999]  # p == 0.5 counts as positive, as in metrics.classification
    y[-3:] = (0, 1, 1)
    expected = confusion_matrix(y, (p >= 0.5).astype(int), labels=[0, 1])
    assert np.array_equal(plots.confusion_counts(y, p), expected)
    fig = plots.confusion_figure(y, p, classes=("REAL", "FAKE"))
    counts = [int(t.split("\n")[0]) for t in texts(fig)]
    assert counts == expected.ravel().tolist()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["predicted REAL", "predicted FAKE"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["true REAL", "true FAKE"]


# y and p chosen off the bin edges. 10 bins: [0.1,0.2) holds 0.12, 0.18 (conf 0.15, 1 of 2 positive);
# [0.8,0.9) holds 0.82, 0.86 (conf 0.84, 1 of 2); [0.9,1] holds 0.95 (conf 0.95, 1 of 1).
# ECE = 0.35*2/5 + 0.34*2/5 + 0.05*1/5 = 0.286. 2 bins: 0.35*2/5 + |2/3 - 2.63/3|*3/5 = 0.14 + 0.126 = 0.266.
# Brier = (0.12^2 + 0.82^2 + 0.18^2 + 0.86^2 + 0.05^2) / 5 = 1.4613 / 5 = 0.29226.
CAL_Y, CAL_P = np.array([0, 1, 1, 0, 1]), np.array([0.12, 0.18, 0.82, 0.86, 0.95])


@pytest.mark.parametrize(("n_bins", "ece"), [(10, 0.286), (2, 0.266)])
def test_calibration_hand_worked(n_bins: int, ece: float):
    cal = plots.calibration(CAL_Y, CAL_P, n_bins)
    assert cal.ece == pytest.approx(ece)
    assert cal.brier == pytest.approx(0.29226) == brier_score_loss(CAL_Y, CAL_P)
    assert cal.counts.sum() == 5 and (cal.counts > 0).sum() == (3 if n_bins == 10 else 2)
    title = plots.calibration_figure(CAL_Y, CAL_P, n_bins).axes[0].get_title()
    assert f"Brier 0.2923, ECE {ece:.4f} ({n_bins} bins)" in title


def test_calibration_edges_go_to_the_upper_bin_and_1_to_the_last():
    cal = plots.calibration([1, 1, 0], [0.5, 1.0, 0.0], n_bins=2)
    assert cal.counts.tolist() == [1, 2]  # bins [0, 0.5) and [0.5, 1]
    assert cal.ece == pytest.approx(abs(1.0 - 0.75) * 2 / 3)  # upper bin: both positive, mean probability 0.75


def test_learning_curves_two_panels_and_empty_history():
    history = pd.DataFrame({"epoch": [0, 1], "train_loss": [0.7, 0.4], "valid_loss": [0.6, 0.5],
                            "accuracy": [0.6, 0.8], "roc_auc_score": [0.7, 0.9]})
    fig = plots.learning_curves_figure(history)
    labels = [[line.get_label() for line in ax.get_lines()] for ax in fig.axes]
    assert labels == [["train loss", "valid loss"], ["accuracy", "ROC AUC"]]
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "epoch"]
    assert "no per-epoch history" in texts(plots.learning_curves_figure(pd.DataFrame()))[0]


@pytest.mark.parametrize("dpi", [100, 40])
def test_png_sizes(dpi: int):
    rng = np.random.default_rng(3)
    y = np.arange(40) % 2
    p = rng.random(40)
    figures = [plots.roc_figure([("a", y, p)]), plots.confusion_figure(y, p), plots.calibration_figure(y, p),
               plots.learning_curves_figure(pd.DataFrame({"epoch": [0], "train_loss": [0.5], "accuracy": [0.6]}))]
    for fig in figures:
        assert png_size(plots.png_bytes(fig, dpi)) == (round(7.8 * dpi), round(5.85 * dpi))


# ------------------------------------------------------------------------------------------ inspection
def test_load_run_reads_the_artifacts(tmp_path: Path):
    sweep_dir, y = make_sweep(tmp_path, ["good"], {})
    run = load_run(sweep_dir / "good")
    assert run.name == "good" and run.config.name == "good" and run.metrics["status"] == "complete"
    assert run.valid.columns.tolist() == ["id", "label", "prob", "y"] and run.valid["id"][0] == "000000"
    assert np.array_equal(run.valid["y"], y) and run.valid["prob"].dtype == np.float64
    assert run.test.columns.tolist() == ["id", "prob"] and len(run.test) == N_TEST
    assert run.history["roc_auc_score"].tolist() == [0.65, 0.78, 0.82]
    assert run.metrics["auc"] == pytest.approx(roc_auc_score(y, run.valid["prob"]))


@pytest.mark.parametrize("kind", ["failed", "missing", "no metrics"])
def test_load_run_on_an_incomplete_folder_names_it(tmp_path: Path, kind: str):
    folder = tmp_path / "r1"
    if kind == "failed":
        make_failed_run(tmp_path, "r1", "ValueError: bad size")
    elif kind == "no metrics":
        folder.mkdir()
    with pytest.raises(RunError, match=re.escape(str(folder))) as err:
        load_run(folder)
    assert {"failed": "ValueError: bad size", "missing": "no such folder",
            "no metrics": "not started"}[kind] in str(err.value)


def test_load_run_with_a_missing_artifact_names_it(tmp_path: Path):
    sweep_dir, _ = make_sweep(tmp_path, ["good"], {})
    (sweep_dir / "good" / "valid_probs.npy").unlink()
    with pytest.raises(RunError, match="valid_probs.npy"):
        load_run(sweep_dir / "good")


def test_load_sweep_lists_failed_runs_with_their_error(tmp_path: Path):
    sweep_dir, _ = make_sweep(tmp_path, ["a", "b"], {"c": "RuntimeError: CUDA out of memory"})
    sweep = load_sweep(sweep_dir)
    assert sweep.name == "demo" and sweep.metric == "auc"
    assert [r.name for r in sweep.runs] == ["a", "b"]  # leaderboard order: a is the less noisy run
    assert sweep.others == (("c", "failed", "RuntimeError: CUDA out of memory"),)
    assert sweep.others[0].error.startswith("RuntimeError")
    assert sweep.leaderboard["run"].tolist() == ["a", "b", "c"] and sweep.run("b").name == "b"
    with pytest.raises(KeyError, match="no complete run named 'c'"):
        sweep.run("c")


def test_load_sweep_needs_a_sweep_folder(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        load_sweep(tmp_path)


# ---------------------------------------------------------------------------------------------- report
@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    """One report over two good runs, one with an evil name, and an evil failure, with two ensembles."""
    from deepfake_fastai import ensemble as E

    root = tmp_path_factory.mktemp("report") / "runs"
    sweep_dir, _ = make_sweep(root, ["good_a", "good_b", EVIL_RUN], {EVIL_FAILED: EVIL_ERROR})
    subs = root.parent / "submissions"
    runs = E.load_runs([sweep_dir / n for n in ("good_a", "good_b", EVIL_RUN)])
    for stamp, method in (("20250101-000000", "greedy"), ("20250102-000000", "mean")):
        record = {**E.to_record(E.build(runs, method=method, iterations=5)), "csv": f"{stamp}_ens-{method}.csv",
                  "created": f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T00:00:00+00:00"}
        atomic.write_json(subs / f"{stamp}_ens-{method}.json", record)
    other = {**record, "csv": "20990101-000000_other.csv", "created": "2099-01-01T00:00:00+00:00",
             "candidates": [{"run": "x", "run_dir": str(root / "elsewhere" / "x"), "weight": 1.0}]}
    atomic.write_json(subs / "20990101-000000_other.json", other)  # newer, but not from this sweep
    (subs / "broken.json").write_text("{not json")
    path = write_report(sweep_dir, subs)
    return path, path.read_text()


def test_report_is_one_file_with_every_run_and_image(report):
    path, text = report
    assert path.name == "report.html" and path.parent.name == "demo"
    assert not list(path.parent.glob(".tmp-*"))  # written atomically
    for name in ("good_a", "good_b", EVIL_RUN, EVIL_FAILED):
        assert f'href="#{anchor(name)}"' in text and f'id="{anchor(name)}"' in text
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 1 + 3 * 3  # the ROC chart, then 3 per complete run
    assert all(png_size(base64.b64decode(b)) == (780, 585) for b in images)
    assert len(re.findall(r"<img ", text)) == len(images)
    assert "good_a" in text and "Learning curves" not in text  # figure titles live inside the PNGs


def test_report_has_no_external_reference(report):
    _, text = report
    assert "http://" not in text and "https://" not in text
    assert not re.search(r'(src|href)="(?!data:image/png;base64,|#)', text)  # only data URIs and anchors


def test_report_escapes_names_and_errors(report):
    _, text = report
    assert "<script" not in text and "<b>il" not in text
    assert "ev&lt;b&gt;il&lt;i&gt;&amp;&quot;x$y$" in text
    assert "&lt;script&gt;alert(1)" in text
    assert "RuntimeError: &lt;/pre&gt;&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in text


def test_report_shows_the_newest_ensemble_of_this_sweep(report):
    _, text = report
    section = text[text.index('<section id="ensemble">'):]
    section = section[:section.index("</section>")]
    assert "20250102-000000_ens-mean.csv" in section and "method mean" in section
    assert "greedy" not in section and "_other.csv" not in section and 'class="note"' not in section
    assert section.count("<td>good_") == 2 and "0.3333" in section  # three members, equal weights


def test_report_leaderboard_links_and_failed_section(report):
    _, text = report
    table = text[text.index("<h2>Leaderboard</h2>"):text.index("<h2>ROC curves</h2>")]
    assert table.count("<tr") == 1 + 4 and table.count('class="bad"') == 1
    failed = text[text.index('<section id="incomplete">'):]
    assert "Runs that did not complete (1)" in failed and "failed" in failed


def test_report_without_runs_or_submissions(tmp_path: Path):
    sweep_dir, _ = make_sweep(tmp_path, [], {"only": "ValueError: nope"})
    text = write_report(sweep_dir, tmp_path / "no_submissions").read_text()
    assert "No complete runs yet" in text and "ValueError: nope" in text and "<img" not in text


def test_importing_the_report_loads_no_torch_fastai_or_pyplot():
    code = ("import sys, deepfake_fastai.report, deepfake_fastai.inspection, deepfake_fastai.plots; "
            "print(sorted(m for m in ('torch', 'fastai', 'timm', 'matplotlib.pyplot') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_plot_is_also_a_png_file_beside_its_run(report):
    path, text = report
    sweep_dir = path.parent
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    embedded = sorted(base64.b64decode(b) for b in found)
    files = sorted(sweep_dir.glob("**/plots/*.png"))
    assert sorted(f.read_bytes() for f in files) == embedded
    assert (sweep_dir / "plots" / "roc_curves.png").is_file()
    assert {f.name for f in (sweep_dir / "good_a" / "plots").iterdir()} == {
        "learning_curves.png", "confusion_matrix.png", "calibration.png"}
