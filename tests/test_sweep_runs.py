"""The sweep runner for real: subprocess runs, a failing run, SIGKILL mid-sweep and resume.

One scenario covers the three behaviours so CI pays the worker start-up (a fresh torch import each) only a
few times: runs A (ok), B (fails: its weights file does not exist), C (ok).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml


def _sweep_file(tmp: Path, data_root: Path) -> Path:
    sweep = {
        "name": "mini",
        "runs_dir": str(tmp / "runs"),
        "data": {"source": "folder", "path": str(data_root), "data_dir": str(tmp / "data")},
        "defaults": {"epochs": 1, "size": 32, "bs": 16, "lr": 0.01, "tta_n": 1, "precision": "fp32"},
        "runs": [
            {"arch": "test_resnet", "name": "A"},
            {"arch": "test_resnet", "name": "B", "pretrained": True, "weights_file": str(tmp / "missing.pth")},
            {"arch": "test_convnext", "name": "C"},
        ],
    }
    path = tmp / "mini.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def _hashes(run_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.iterdir())}


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "status.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def _wait_for(predicate, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"sweep ended early with code {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the sweep")
        time.sleep(0.5)


def _worker_pids(config: Path, sweep_file: Path) -> list[int]:
    """A fresh worker's pid, or (warm path, warm.py) the pids of the runner's forked children, which share its
    command line."""
    pattern = f"deepfake_fastai\\.(worker {config}|cli sweep {sweep_file})"
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_killed_sweep_resumes_and_a_failing_run_does_not_stop_the_others(tiny_data, tmp_path):
    sweep_file = _sweep_file(tmp_path, tiny_data)
    runs = tmp_path / "runs" / "mini"
    cmd = [sys.executable, "-m", "deepfake_fastai.cli", "sweep", str(sweep_file)]
    runner = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: _status(runs / "C") == "running", 900, runner)
    assert set(_worker_pids(runs / "C" / "config.yaml", sweep_file)) - {runner.pid}, "no process runs C"
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert _status(runs / "A") == "complete" and _status(runs / "B") == "failed"
    a_before = _hashes(runs / "A")
    deadline = time.monotonic() + 30
    while _worker_pids(runs / "C" / "config.yaml", sweep_file) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _worker_pids(runs / "C" / "config.yaml", sweep_file), "the worker outlived the killed runner"

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _hashes(runs / "A") == a_before  # finished run not redone
    assert _status(runs / "C") == "complete"  # interrupted run redone
    board = pd.read_csv(runs / "leaderboard.csv")
    assert list(board.run[:2]) != ["B"] and board.run.iloc[-1] == "B"
    failed = board.set_index("run").loc["B"]
    assert failed.status == "failed" and "missing.pth does not exist" in failed.error
    assert "1 run(s) did not complete: B" in done.stdout
    assert (board.auc[:2].between(0, 1)).all() and board["rank"].tolist() == [1, 2, 3]


def test_runner_refuses_a_second_runner_on_the_same_sweep(tmp_path):
    import fcntl

    from deepfake_fastai.sweep import _exclusive

    lock = tmp_path / ".lock"
    with _exclusive(lock):
        with pytest.raises(RuntimeError, match="another sweep runner is using"):
            with _exclusive(lock):
                pass
    with open(lock) as f:  # released afterwards
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert os.path.exists(lock)


def test_quiet_sweep_sends_each_runs_console_output_to_its_worker_log(tiny_data, tmp_path):
    """`sweep -q`: the console gets warnings and the leaderboard; bars and INFO lines land in <run>/worker.log."""
    sweep = {"name": "hush", "runs_dir": str(tmp_path / "runs"), "metric": "auc",
             "data": {"source": "folder", "path": str(tiny_data), "data_dir": str(tmp_path / "data")},
             "defaults": {"size": 32}, "runs": [{"arch": "em_traces", "classifier": "logreg", "name": "T"}]}
    path = tmp_path / "hush.yaml"
    path.write_text(yaml.safe_dump(sweep))
    done = subprocess.run([sys.executable, "-m", "deepfake_fastai.cli", "sweep", "-q", str(path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    console = done.stdout + done.stderr
    assert "leaderboard (auc)" in done.stdout and "T " in done.stdout
    assert "INFO" not in console and "|---" not in console, console[-2000:]
    worker_log = (tmp_path / "runs" / "hush" / "T" / "worker.log").read_text()
    assert "INFO deepfake_fastai.runfolder: run T: AUC" in worker_log  # runfolder.finish logs every run's end
