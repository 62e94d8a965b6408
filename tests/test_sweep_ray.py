"""The Ray backend: a local Ray with 2 CPUs runs two tiny runs into the same folders as the local backend."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from deepfake_fastai.config import DataConfig
from deepfake_fastai.ray_backend import absolute, task_resources
from deepfake_fastai.sweep import SweepConfig, run_sweep


def test_one_gpu_per_run_or_a_whole_cpu_node():
    assert task_resources({"GPU": 8, "node_cpus": 64}) == {"num_gpus": 1, "num_cpus": 1}
    assert task_resources({"GPU": 0, "node_cpus": 2}) == {"num_cpus": 2}


def test_paths_are_made_absolute_for_other_nodes(tmp_path, monkeypatch):
    from deepfake_fastai.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    cfg = absolute(TrainConfig(runs_dir="runs", data=DataConfig(source="folder", path="imgs")))
    assert cfg.runs_dir == str(tmp_path / "runs") and cfg.data.path == str(tmp_path / "imgs")
    assert cfg.data.data_dir == str(tmp_path / "data")


def test_ray_backend_runs_and_resumes_like_local(tiny_data, tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    sweep = SweepConfig(
        name="rayed", runs_dir=str(tmp_path / "runs"),
        data=DataConfig(source="folder", path=str(tiny_data), data_dir=str(tmp_path / "data")),
        defaults={"epochs": 1, "size": 32, "bs": 16, "lr": 0.01, "tta_n": 1, "precision": "fp32"},
        runs=[{"arch": "test_resnet", "name": "r1"}, {"arch": "test_convnext", "name": "r2"}],
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = run_sweep(sweep, backend="ray")
        assert [r["status"] for r in rows] == ["complete", "complete"]
        folder = Path(tmp_path / "runs" / "rayed")
        stamps = {p: p.stat().st_mtime_ns for p in folder.glob("r*/metrics.json")}
        assert len(stamps) == 2
        board = pd.read_csv(folder / "leaderboard.csv")
        assert set(board.run) == {"r1", "r2"} and board.auc.between(0, 1).all()
        state = json.loads((folder / "sweep_state.json").read_text())
        assert set(state) == {"r1", "r2"} and all(s["wall_time_s"] > 0 for s in state.values())
        run_sweep(sweep, backend="ray")  # resume: both complete, nothing is redone
        assert {p: p.stat().st_mtime_ns for p in folder.glob("r*/metrics.json")} == stamps
    finally:
        ray.shutdown()
