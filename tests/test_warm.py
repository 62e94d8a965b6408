"""Warm workers: each run is a child forked from the runner; a crash of its interpreter is that run's failure.

A fresh runner process (this test process has trained in-process, and a process that has run torch's OpenMP
threads cannot fork usable children, warm.py) runs one real sweep on a tiny data set: X's interpreter
segfaults, Y is fine, Z calls os._exit mid-run, D hits a CUDA out-of-memory on its first attempt. The faults
are injected in the runner; forked children inherit them (fresh interpreters would not), so every run that
fails as injected proves the warm path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deepfake_fastai import warm

REPO = Path(__file__).resolve().parents[1]
RUNNER = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    from deepfake_fastai import learner
    from deepfake_fastai.config import DataConfig
    from deepfake_fastai.sweep import SweepConfig, run_sweep

    data_root, tmp = sys.argv[1], sys.argv[2]
    real_fit = learner.fit

    def fit(learn, cfg):
        with open(os.path.join(tmp, "pids.txt"), "a") as f:
            f.write(f"{cfg.name} {os.getpid()}\\n")
        if cfg.name == "X":
            os.kill(os.getpid(), signal.SIGSEGV)  # the interpreter dies: no except, no finally, no status
        if cfg.name == "Z":
            os._exit(3)
        if cfg.name == "D" and cfg.accum == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected on CPU)")
        return real_fit(learn, cfg)

    learner.fit = fit
    sweep = SweepConfig(
        name="crash", runs_dir=os.path.join(tmp, "runs"),
        data=DataConfig(source="folder", path=data_root, data_dir=os.path.join(tmp, "data")),
        defaults={"arch": "test_resnet", "epochs": 1, "size": 32, "bs": 16, "lr": 0.01, "tta_n": 1,
                  "precision": "fp32"},
        runs=[{"name": n} for n in "XYZD"])
    rows = run_sweep(sweep)
    print(json.dumps({"pid": os.getpid(), "rows": {r["run"]: r for r in rows}}, default=str))
""")


@pytest.fixture(scope="module")
def crashed(tiny_data, tmp_path_factory):
    if warm.cold_reason(True, sys.executable):
        pytest.skip(f"no warm workers here: {warm.cold_reason(True, sys.executable)}")
    tmp = tmp_path_factory.mktemp("warm")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", RUNNER, str(tiny_data), str(tmp)], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    started = [line.split() for line in (tmp / "pids.txt").read_text().splitlines()]
    return out["rows"], out["pid"], started, done.stderr


def test_a_run_that_crashes_its_interpreter_fails_alone_and_the_next_run_completes(crashed):
    rows, _, _, _ = crashed
    assert rows["X"]["status"] == "failed" and rows["X"]["error"] == f"worker exited with code {-signal.SIGSEGV}"
    assert rows["Z"]["status"] == "failed" and rows["Z"]["error"] == "worker exited with code 3"
    assert rows["Y"]["status"] == "complete"


def test_each_run_is_its_own_forked_process(crashed):
    _, runner_pid, started, log = crashed
    assert [name for name, _ in started] == ["X", "Y", "Z", "D", "D"]  # D twice: the OOM retry
    assert len({pid for _, pid in started}) == 5 and str(runner_pid) not in {pid for _, pid in started}
    assert "fresh interpreter" not in log


def test_a_cuda_oom_is_retried_in_a_new_warm_child(crashed):
    rows, _, _, _ = crashed
    assert rows["D"]["status"] == "complete"
    assert rows["D"]["note"] == "CUDA OOM: retried with micro-batch 8 x accum 2 (same bs 16)"


def test_cold_reasons_are_said_in_words(tmp_path):
    assert "--cold" in warm.cold_reason(False, sys.executable)
    assert "another interpreter" in warm.cold_reason(True, str(tmp_path / "python"))
