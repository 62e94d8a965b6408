"""Mends from a newcomer's bad-input and fault probe (issue 19): each case of docs/RELIABILITY.md it found open.

The sweep here is the real `deepfake-fastai sweep` command with its worker called in this process (as in
tests/test_reliability_faults.py: CI does not pay a torch import per run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from deepfake_fastai import warm, worker
from tests.conftest import run_cli as _cli
from tests.conftest import run_worker_here as _worker_here


def _sweep_file(tmp: Path, root: Path, **extra) -> Path:
    path = tmp / "mends.yaml"
    path.write_text(yaml.safe_dump({
        "name": "mends", "runs_dir": str(tmp / "runs"),
        "data": {"source": "folder", "path": str(root), "data_dir": str(tmp / "data")},
        "defaults": {"arch": "test_resnet", "epochs": 1, "size": 32, "bs": 16, "lr": 0.01, "tta_n": 1,
                     "precision": "fp32"},
        "runs": [{"name": "A"}], **extra}))
    return path


# ------------------------------------------------------------------ 1. an undecodable test image


@pytest.fixture(scope="module")
def broken_test_sweep(tiny_data, tmp_path_factory):
    """A sweep over a folder whose test/ holds one undecodable image (also listed in its sample submission)."""
    tmp = tmp_path_factory.mktemp("broken_test")
    root = tmp / "folder"
    shutil.copytree(tiny_data, root)
    (root / "test" / "test_broken.jpg").write_text("not an image")
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    sample.loc[len(sample)] = ["test_broken", "0.5"]
    sample.to_csv(root / "sample_submission.csv", index=False)
    sweep_file = _sweep_file(tmp, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(warm, "run_worker", _worker_here)
        rc, out, err = _cli("sweep", "--cold", str(sweep_file))
    assert rc == 0, err
    return SimpleNamespace(tmp=tmp, root=root, runs=tmp / "runs" / "mends", sweep_out=out)


@pytest.mark.parametrize("with_sample", [True, False], ids=["sample_submission", "test_folder_only"])
def test_an_undecodable_test_image_is_still_in_the_submission_with_the_fallback(broken_test_sweep, with_sample):
    s = broken_test_sweep
    if not with_sample:
        (s.root / "sample_submission.csv").unlink(missing_ok=True)
    assert "test/test_broken.jpg" in s.sweep_out or "test_broken" in s.sweep_out  # the sweep listed it as skipped
    out_dir = s.tmp / f"subs_{with_sample}"
    rc, out, err = _cli("ensemble", str(s.runs), "--out-dir", str(out_dir))
    assert rc == 0, err
    listing = sorted(p.stem for p in (s.root / "test").iterdir())  # the folder listing, not what decoded
    csv = next(p for p in out_dir.glob("*.csv") if not p.name.endswith(".probs.csv"))
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert sorted(frame.iloc[:, 0]) == listing
    assert float(frame.set_index(frame.columns[0]).loc["test_broken"].iloc[0]) == 0.5
    assert "WARNING: 1 test image(s) could not be decoded" in out and "test_broken" in out
    record = json.loads(csv.with_suffix(".json").read_text())
    assert record["fallback"]["ids"] == ["test_broken"] and record["fallback"]["prob"] == 0.5
    assert record["n_rows"] == len(listing)
    rc, _, err = _cli("submit", str(csv), "-m", "check", "--dry-run")  # revalidated against the same ids
    assert rc == 0, err


# ------------------------------------------------------------------ 2. an unwritable runs folder


@pytest.fixture(params=["under_a_file", "read_only_mount"])
def unwritable(request, tmp_path):
    """A runs folder that cannot be created, even by root (chmod does not stop root): the fix to name."""
    if request.param == "under_a_file":
        (tmp_path / "a_file").write_text("")
        yield tmp_path / "a_file" / "runs", "part of that path is a file"
        return
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount / "runs", "the file system is read-only"
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _one_clear_line(rc: int, err: str, path: Path, fix: str) -> None:
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"error: cannot write {path}") and fix in err, err


def test_an_unwritable_runs_folder_stops_train_and_sweep_in_one_clear_line(unwritable, tiny_data, tmp_path):
    runs, fix = unwritable
    rc, _, err = _cli("train", "--path", str(tiny_data), "--arch", "test_resnet", "--size", "32", "--epochs", "1",
                      "--runs-dir", str(runs), "--name", "r")
    _one_clear_line(rc, err, runs / "r", fix)
    sweep_file = _sweep_file(tmp_path, tiny_data)
    sweep_file.write_text(sweep_file.read_text().replace(str(tmp_path / "runs"), str(runs)))
    rc, _, err = _cli("sweep", str(sweep_file))
    _one_clear_line(rc, err, runs / "mends", fix)


# ------------------------------------------------------------------ 3. YAML 1.1 floats


def test_yaml_1_1_exponent_floats_are_taken_as_numbers_and_words_still_refused(tmp_path):
    from deepfake_fastai.config import ConfigError
    from deepfake_fastai.sweep import expand, load_sweep

    path = tmp_path / "lr.yaml"
    path.write_text("name: s\ndefaults: {lr: 1e-4, degrade_p: .5}\n"
                    "runs: [{name: a, lr: 1e-4}, {name: b, lr: 3E-3}, {name: c, lr: 2.5e+1}, {name: x, epochs: '2'}]\n")
    assert isinstance(yaml.safe_load(path.read_text())["defaults"]["lr"], str)  # why the mend is needed
    configs = expand(load_sweep(path))
    assert [c.lr for c in configs] == [1e-4, 3e-3, 25.0, 1e-4] and configs[-1].epochs == 2
    assert all(isinstance(c.lr, float) for c in configs)
    for bad in ("lr: fast", "lr: 1e-4x", "epochs: 1e3", "lr: nan"):
        path.write_text(f"name: s\nruns: [{{{bad}}}]\n")
        with pytest.raises(ConfigError, match=f"run 0: {bad.split(':')[0]} must be"):
            load_sweep(path)


# ------------------------------------------------------------------ 4, 5. class and CSV errors in the source's words


def _files(root: Path, counts: dict[str, int]) -> Path:
    """Class folders of empty .png files: listing never decodes, so the class checks need no real images."""
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / label / f"{label}_{i}.png").write_bytes(b"")
    return root


def _list(tmp: Path, **data) -> pd.DataFrame:
    from deepfake_fastai.config import DataConfig
    from deepfake_fastai.data import list_labelled

    cfg = DataConfig(data_dir=str(tmp / "data"), **data)
    return list_labelled(cfg, Path(cfg.path))


def test_three_classes_name_the_stray_one_not_the_negative_class(tmp_path):
    from deepfake_fastai.data import DataError

    root = _files(tmp_path / "f", {"real": 10, "fake": 10, "screenshots": 20})  # the stray class is the largest
    with pytest.raises(DataError) as e:
        _list(tmp_path, source="folder", path=str(root))
    text = str(e.value)
    assert "the extra class(es) are ['screenshots']" in text and "'real' the likely negative" in text, text
    assert "['screenshots/']" in text and "--positive-class" in text
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"filename": [f"f/{c}/{c}_{i}.png" for c in ("real", "fake", "screenshots") for i in range(3)],
                  "label": [c for c in ("real", "fake", "screenshots") for _ in range(3)]}).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"\['screenshots'\].*delete or relabel their rows in .*labels.csv"):
        _list(tmp_path, source="csv", path=str(csv))


@pytest.mark.parametrize(("text", "expected"), [
    ("", r"labels.csv: the file is empty; it needs a header row \(filename,label\)"),
    ("filename,label\n", r"labels.csv: no rows below the header; add one row per image"),
    ("filename,label\na.png,real\nb.png,real \nc.png,fake\nd.png, fake\n",
     r"labels.csv: 2 label\(s\) with leading or trailing whitespace \(CSV lines \[3, 5\], e.g. 'real '\)"),
], ids=["empty", "header_only", "trailing_spaces"])
def test_csv_sources_get_csv_wording_naming_the_file(tmp_path, text, expected):
    from deepfake_fastai.data import DataError

    csv = tmp_path / "labels.csv"
    csv.write_text(text)
    with pytest.raises(DataError, match=expected) as e:
        _list(tmp_path, source="csv", path=str(csv))
    assert "sub-folder" not in str(e.value)


# ------------------------------------------------------------------ 6. a run whose process is gone


def test_the_leaderboard_shows_a_run_whose_process_is_gone_as_interrupted(tmp_path):
    folder = tmp_path / "runs" / "s"
    for name in ("gone", "alive"):
        (folder / name).mkdir(parents=True)
    (folder / "sweep.yaml").write_text("name: s\nruns: [{name: gone}, {name: alive}]\n")
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process now
    (folder / "gone" / "status.json").write_text(json.dumps({"status": "running", "pid": dead.pid}))
    (folder / "alive" / "status.json").write_text(json.dumps({"status": "running", "pid": os.getpid()}))
    rc, out, err = _cli("leaderboard", str(folder))
    assert rc == 0, err
    rows = {line.split()[1]: line.split()[2] for line in out.splitlines()[1:]}
    assert rows == {"gone": "interrupted", "alive": "running"}, out


# ------------------------------------------------------------------ 8. train -q


def test_train_quiet_prints_no_progress_bars(tiny_data, tmp_path, monkeypatch):
    import re

    import fastprogress.fastprogress as fastprogress

    monkeypatch.chdir(tmp_path)  # data/ (the cache) goes here
    monkeypatch.setattr(fastprogress, "NO_BAR", False)  # as a fresh process starts; cli.main sets it for -q
    rc, out, err = _cli("train", "--path", str(tiny_data), "--arch", "test_resnet", "--size", "32", "--epochs", "1",
                        "--bs", "16", "--tta-n", "1", "--precision", "fp32", "--runs-dir", str(tmp_path / "runs"), "-q")
    assert rc == 0, err
    assert not re.search(r"\|[█X-]+\|", out + err), out  # a bar redraw: |████----|
    assert "AUC" in out  # the result is still printed


# ------------------------------------------------------------------ 7. the submissions listing


def test_the_submissions_listing_shows_each_file_name_on_disk(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "renamed_best.csv").write_text("id,label\na,0.5\n")
    (subs / "renamed_best.json").write_text(json.dumps({"csv": "20260101-000000_greedy.csv", "metric": "auc"}))
    rc, out, err = _cli("submissions", "--out-dir", str(subs), "--offline")
    assert rc == 0, err
    assert "renamed_best.csv" in out and "20260101-000000_greedy.csv" not in out, out


def test_an_empty_third_folder_beside_the_classes_is_warned(tmp_path, caplog):
    root = _files(tmp_path / "f", {"real": 3, "fake": 3})
    (root / "extra").mkdir()
    with caplog.at_level("WARNING", logger="deepfake_fastai.data"):
        _list(tmp_path, source="folder", path=str(root))
    assert "['extra/']" in caplog.text and "hold no images: ignored" in caplog.text, caplog.text


def test_a_relative_data_path_is_stored_resolved_in_the_run_config(tiny_data, tmp_path, monkeypatch):
    from deepfake_fastai.config import DataConfig, TrainConfig, load_train_config

    monkeypatch.chdir(tiny_data.parent)
    cfg = TrainConfig(name="r", runs_dir=str(tmp_path / "runs"), data=DataConfig(source="folder", path=tiny_data.name))
    (tmp_path / "runs" / "r").mkdir(parents=True)
    monkeypatch.setattr(warm, "run_worker", lambda *a, **kw: 0)  # the config file is the point, not training
    worker._attempt(cfg, "python")
    monkeypatch.chdir(tmp_path)  # another working folder: the stored path must still find the data
    stored = load_train_config(tmp_path / "runs" / "r" / "config.yaml")
    assert Path(stored.data.path).is_absolute() and Path(stored.data.path).samefile(tiny_data)
