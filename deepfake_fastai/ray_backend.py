"""Run a sweep's runs on Ray: a local Ray on one machine, or an existing cluster (``ray start --head``).

Each run is a Ray task that calls the same ``worker.run_one`` as the local backend, which runs the training in
its own subprocess, so run folders, status files, OOM retry and the leaderboard are identical. Ray is an
optional extra (``pip install 'deepfake-fastai[ray]'``) imported only here.

Resources: one GPU per run when the cluster has GPUs; on a CPU-only cluster a run takes every CPU of a node,
because two trainings sharing cores are both 10-30x slower (measured on a 2-core box).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .worker import run_one

log = logging.getLogger(__name__)


def absolute(cfg: TrainConfig) -> TrainConfig:
    """Paths every node can resolve: run folders and data must live on storage all nodes see."""
    data = cfg.data
    data = dataclasses.replace(data, data_dir=str(Path(data.data_dir).resolve()),
                               path=str(Path(data.path).resolve()) if data.path else None)
    return dataclasses.replace(cfg, runs_dir=str(Path(cfg.runs_dir).resolve()), data=data)


def task_resources(cluster: dict[str, float]) -> dict[str, float]:
    """Ray resources of one run: a GPU if there are any, else all CPUs of the smallest node."""
    if cluster.get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": max(1.0, cluster.get("node_cpus", cluster.get("CPU", 1)))}


def run_on_ray(configs: list[TrainConfig], python: str, oom_retry: bool,
               address: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Submit every run as a Ray task; yield (run name, record) as they finish."""
    import ray

    if not configs:
        return
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 num_cpus=None if address else os.cpu_count())
    resources = task_resources(_cluster_shape(ray))
    log.info("ray: %d runs, %s per run, cluster %s", len(configs), resources, ray.cluster_resources())
    remote = ray.remote(max_retries=0, **resources)(run_one)
    pending = {remote.remote(absolute(cfg), python, oom_retry): cfg.run_name for cfg in configs}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        name = pending.pop(done[0])
        try:
            record = ray.get(done[0])
        except Exception as e:  # noqa: BLE001 - a lost node or a crashed task is this run's failure only
            record = {"status": "failed", "error": f"ray task failed: {type(e).__name__}: {e}"}
        log.info("ray: %s %s", name, record.get("status"))
        yield name, record


def _cluster_shape(ray) -> dict[str, float]:
    """Total GPUs and the CPU count of the smallest alive node."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = [n["Resources"].get("CPU", 0) for n in nodes] or [1]
    return {"GPU": ray.cluster_resources().get("GPU", 0), "node_cpus": min(cpus)}
