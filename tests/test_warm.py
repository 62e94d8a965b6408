"""Warm workers: each run is a child forked from the runner, so a crash of its interpreter is that run's failure.

Runs X (the interpreter segfaults), Y (ok) and Z (``os._exit`` mid-run) of one real sweep on a tiny data set.
The crashes are injected here, in the runner: a forked child inherits them (a fresh interpreter would not).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from deepfake_fastai import learner, warm
from deepfake_fastai.config import DataConfig
from deepfake_fastai.sweep import SweepConfig, run_sweep
from deepfake_fastai.train import is_complete


def _crashing_fit(real_fit, pids: Path):
    def fit(learn, cfg):
        with open(pids, "a") as f:
            f.write(f"{cfg.name} {os.getpid()}\n")
        if cfg.name == "X":
            os.kill(os.getpid(), signal.SIGSEGV)  # the interpreter dies: no except, no finally, no status
        if cfg.name == "Z":
            os._exit(3)
        return real_fit(learn, cfg)
    return fit


def test_a_run_that_crashes_its_interpreter_fails_alone_and_the_next_run_completes(tiny_data, tmp_path, monkeypatch):
    if warm.cold_reason(True, sys.executable):
        pytest.skip(f"no warm workers here: {warm.cold_reason(True, sys.executable)}")
    pids = tmp_path / "pids.txt"
    monkeypatch.setattr(learner, "fit", _crashing_fit(learner.fit, pids))
    sweep = SweepConfig(
        name="crash", runs_dir=str(tmp_path / "runs"),
        data=DataConfig(source="folder", path=str(tiny_data), data_dir=str(tmp_path / "data")),
        defaults={"arch": "test_resnet", "epochs": 1, "size": 32, "bs": 16, "lr": 0.01, "tta_n": 1,
                  "precision": "fp32"},
        runs=[{"name": "X"}, {"name": "Y"}, {"name": "Z"}])
    rows = {r["run"]: r for r in run_sweep(sweep)}
    assert rows["X"]["status"] == "failed" and rows["X"]["error"] == f"worker exited with code {-signal.SIGSEGV}"
    assert rows["Z"]["status"] == "failed" and rows["Z"]["error"] == "worker exited with code 3"
    assert rows["Y"]["status"] == "complete" and is_complete(tmp_path / "runs" / "crash" / "Y")
    started = dict(line.split() for line in pids.read_text().splitlines())
    assert sorted(started) == ["X", "Y", "Z"] and len(set(started.values())) == 3  # one process per run ...
    assert str(os.getpid()) not in started.values()  # ... none of them the runner


def test_cold_reasons_are_said_in_words(tmp_path):
    assert "--cold" in warm.cold_reason(False, sys.executable)
    assert "another interpreter" in warm.cold_reason(True, str(tmp_path / "python"))
    if sys.platform.startswith("linux"):
        assert warm.cold_reason(True, sys.executable) is None  # this test process never initialises CUDA
