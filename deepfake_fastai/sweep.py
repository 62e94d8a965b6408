"""Sweeps: a YAML grid of architectures x resolutions, each run in its own subprocess, resumable.

A sweep file (``sweeps/*.yaml``)::

    name: quickstart          # run folders go to runs/<name>/<run>/
    metric: auc               # leaderboard order: auc | accuracy | log_loss
    data: {source: synthetic} # DataConfig, shared by every run (one split, so runs can be ensembled)
    defaults: {epochs: 3}     # TrainConfig fields for every run
    grid: {arch: [resnet18, convnext_atto], size: [64, 96]}   # cartesian product (optional)
    runs: [{arch: resnet50, item_resize_px: 128, size: 256}]     # explicit runs (optional)

Expanding and ranking are pure; running lives in ``run_sweep`` (subprocesses, like timm's bulk_runner, so a
crash, a CUDA OOM or a leak stays in its run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import atomic, runfolder, warm
from .config import ConfigError, DataConfig, TrainConfig, from_dict, load_yaml
from .runfolder import is_complete, read_record
from .worker import oom_retry_config, run_one

__all__ = ["SweepConfig", "expand", "load_sweep", "oom_retry_config", "preflight", "read_record", "run_one",
           "run_sweep", "write_leaderboard"]

log = logging.getLogger(__name__)

METRICS = {"auc": True, "accuracy": True, "log_loss": False}  # name -> higher is better


@dataclass(frozen=True)
class SweepConfig:
    """A sweep file, validated."""

    name: str  # folder under runs_dir
    metric: str = "auc"  # leaderboard metric
    data: DataConfig = field(default_factory=DataConfig)
    defaults: dict = field(default_factory=dict)  # TrainConfig fields shared by all runs
    grid: dict = field(default_factory=dict)  # field -> list of values, cartesian product
    runs: list = field(default_factory=list)  # explicit runs: dicts of TrainConfig fields
    runs_dir: str = "runs"
    oom_retry: bool = True  # on CUDA OOM retry once with half the micro-batch and twice the accumulation

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {', '.join(METRICS)}; got '{self.metric}'")
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a plain folder name, got '{self.name}'")
        if not isinstance(self.grid, dict) or any(not isinstance(v, list) or not v for v in self.grid.values()):
            raise ConfigError("grid must map TrainConfig fields to non-empty lists")


def load_sweep(path: Path) -> SweepConfig:
    """Load and validate a sweep file; every run is expanded and checked before anything trains."""
    sweep = from_dict(SweepConfig, load_yaml(path), str(path))
    expand(sweep, where=str(path))
    return sweep


def expand(sweep: SweepConfig, where: str = "sweep") -> list[TrainConfig]:
    """Every run of the sweep as a TrainConfig (grid product first, then explicit runs); names are unique."""
    for part in ("defaults", "grid"):  # typos here are reported as such, not as "run 0"
        for key in ("data", "runs_dir"):
            if key in getattr(sweep, part):
                raise ConfigError(f"{where}: {part}: '{key}' is set once per sweep (top level), not per run")
        from_dict(TrainConfig, {k: (v[0] if part == "grid" else v) for k, v in getattr(sweep, part).items()},
                  f"{where}: {part}")
    points = [dict(zip(sweep.grid, values, strict=True)) for values in itertools.product(*sweep.grid.values())]
    if not sweep.grid:
        points = []
    configs = []
    for i, point in enumerate(points + list(sweep.runs)):
        raw = {**sweep.defaults, **point}
        for key in ("data", "runs_dir"):
            if key in raw:
                raise ConfigError(f"{where}: run {i}: '{key}' is set once per sweep, not per run")
        raw["runs_dir"] = str(Path(sweep.runs_dir) / sweep.name)
        cfg = from_dict(TrainConfig, raw, f"{where}: run {i}")
        configs.append(dataclasses.replace(cfg, data=sweep.data))
    names = [c.run_name for c in configs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: several runs share the name(s) {dupes}; vary seed or set name")
    if not configs:
        raise ConfigError(f"{where}: no runs (give grid and/or runs)")
    return configs


def preflight(sweep: SweepConfig, limit: int | None = None) -> list[TrainConfig]:
    """The runs to do, after the checks that cost seconds: every arch name and the data path."""
    from .data import check_source
    from .models import check_arch, check_size

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    configs = expand(sweep)[:limit]
    for arch in sorted({c.arch for c in configs}):
        check_arch(arch)  # every name, before the first run spends minutes
    for arch, size in sorted({(c.arch, c.size) for c in configs}):
        check_size(arch, size)  # shapes only, on the meta device: an impossible size fails here, not in run 7
    check_source(sweep.data)
    return configs


def sweep_dir(sweep: SweepConfig) -> Path:
    return Path(sweep.runs_dir) / sweep.name


def leaderboard_rows(results: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Run records sorted by ``metric`` (best first, failed runs last), each with its rank."""
    higher = METRICS[metric]

    def key(r: dict[str, Any]) -> tuple:
        value = r.get(metric)
        ok = r.get("status") == "complete" and value is not None and value == value
        return (not ok, -value if ok and higher else (value if ok else 0.0))

    return [{**r, "rank": rank} for rank, r in enumerate(sorted(results, key=key), 1)]


LEADERBOARD_COLUMNS = ["rank", "run", "status", "arch", "recipe", "input", "item_resize_px", "size", "epochs",
                       "auc", "accuracy", "log_loss", "folds", "auc_fold_std", "group_auc", "test_auc",
                       "test_accuracy", "fit_time_s", "wall_time_s", "images_per_s", "precision_mode", "note", "error"]


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    """A fixed-width leaderboard for the terminal."""
    extra = [c for c in ("folds", "auc_fold_std", "group_auc") if any(r.get(c) is not None for r in rows)]
    cols = ["rank", "run", "status", metric, *extra, "accuracy", "wall_time_s", "images_per_s", "note"]
    cols = list(dict.fromkeys(cols))
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.0f}"
    return "" if v is None else str(v)


# ---------------------------------------------------------------- running (side effects)


BACKENDS = ("local", "ray")


def run_sweep(sweep: SweepConfig, limit: int | None = None, python: str | None = None, backend: str = "local",
              address: str | None = None, quiet: bool = False, cold: bool = False) -> list[dict[str, Any]]:
    """Run every incomplete run in its own subprocess; one failure never stops the others.

    backend "local" runs them one after another here; "ray" hands them to a Ray cluster (see ray_backend.py),
    with the same run folders, leaderboard and resume semantics. ``quiet`` (local): each worker's console
    output (progress bars, epoch tables) goes to ``<run>/worker.log`` instead of this console. ``cold`` (local):
    each run in a fresh interpreter instead of forked from this warm one (warm.py).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got '{backend}'")
    configs = preflight(sweep, limit)
    out = sweep_dir(sweep)
    atomic.make_dir(out)
    with _exclusive(out / ".lock"):
        for partial in out.glob(".tmp-*"):  # what a killed runner was writing (leaderboard, state): never complete
            partial.unlink(missing_ok=True)
        atomic.write_text(out / "sweep.yaml", yaml.safe_dump(dataclasses.asdict(sweep), sort_keys=False))
        state = _load_state(out)
        pending = [c for c in configs if not is_complete(out / c.run_name)]
        log.info("%d of %d runs to do (%d complete, skipped)", len(pending), len(configs), len(configs) - len(pending))
        if backend == "ray":
            from .ray_backend import run_on_ray

            for name, record in run_on_ray(pending, python or sys.executable, sweep.oom_retry, address):
                state[name] = record
                atomic.write_json(out / "sweep_state.json", state)
        else:
            with warm.workers(enabled=not cold, python=python):
                _run_local(configs, python or sys.executable, sweep.oom_retry, state, out, quiet)
        return write_leaderboard(sweep, configs, state)


def _run_local(configs: list[TrainConfig], python: str, oom_retry: bool, state: dict, out: Path,
               quiet: bool = False) -> None:
    for i, cfg in enumerate(configs, 1):
        _announce(i, len(configs), cfg, state)
        if is_complete(out / cfg.run_name):
            continue
        state[cfg.run_name] = run_one(cfg, python, oom_retry, quiet)
        atomic.write_json(out / "sweep_state.json", state)


def _announce(i: int, n: int, cfg: TrainConfig, state: dict) -> None:
    times = [s["wall_time_s"] for s in state.values() if s.get("status") == "complete"]
    eta = f", ETA {(n - i + 1) * sum(times) / len(times) / 60:.0f} min" if times else ""
    done = is_complete(Path(cfg.runs_dir) / cfg.run_name)
    log.info("run %d/%d: %s%s%s", i, n, cfg.run_name, " (complete, skipped)" if done else "", "" if done else eta)


@contextlib.contextmanager
def _exclusive(lock_file: Path):
    """One runner per sweep folder; the OS releases the lock if the runner is killed."""
    handle = open(lock_file, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(f"another sweep runner is using {lock_file.parent}; wait for it or stop it") from None
    try:
        yield
    finally:
        handle.close()


def _load_state(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "sweep_state.json").read_text())
    except (OSError, ValueError):
        return {}


def write_leaderboard(sweep: SweepConfig, configs: list[TrainConfig], state: dict) -> list[dict[str, Any]]:
    """runs/<sweep>/leaderboard.csv from the run folders, best first; checks every run shares the split."""
    import pandas as pd

    out = sweep_dir(sweep)
    records = [{**read_record(out / c.run_name), **_state_fields(state.get(c.run_name, {}))} for c in configs]
    for r in records:
        r.setdefault("arch", next(c.arch for c in configs if c.run_name == r["run"]))
    _check_same_split(out, records)
    rows = leaderboard_rows(records, sweep.metric)
    frame = pd.DataFrame(rows).reindex(columns=LEADERBOARD_COLUMNS)
    atomic.write_csv(out / "leaderboard.csv", frame)
    return rows


def _state_fields(s: dict[str, Any]) -> dict[str, Any]:
    return {k: s[k] for k in ("wall_time_s", "note") if k in s}


def _check_same_split(out: Path, records: list[dict[str, Any]]) -> None:
    """Every complete run must have the same validation ids (the ensembler relies on it)."""
    complete = [r for r in records if r.get("status") == "complete"]
    if not complete:
        return
    reference = out / complete[0]["run"]
    for r in complete[1:]:
        if not runfolder.same_split(reference, out / r["run"]):
            r["note"] = f"validation ids differ from {complete[0]['run']}: cannot be ensembled with it"
            log.warning("%s: %s", r["run"], r["note"])


def skipped_lines(rows: list[dict[str, Any]], show: int = 20) -> list[str]:
    """The files the complete runs' data preparation skipped, each with its reason (from bad_images.csv)."""
    import pandas as pd

    lines = []
    for split_file in sorted({r["split_file"] for r in rows if r.get("status") == "complete" and r.get("bad_images")}):
        report = Path(split_file).parent / "bad_images.csv"
        if not report.is_file():
            continue
        bad = pd.read_csv(report, dtype=str)
        lines.append(f"{len(bad)} file(s) skipped, not trained on (list: {report}):")
        lines += [f"  {row.id}: {row.error}" for row in bad.head(show).itertuples()]
        lines += [f"  ... and {len(bad) - show} more"] if len(bad) > show else []
    return lines


def load_leaderboard(folder: Path) -> list[dict[str, Any]]:
    """The leaderboard of a sweep folder, recomputed from its run folders."""
    folder = Path(folder)
    if not (folder / "sweep.yaml").is_file():
        raise FileNotFoundError(f"{folder} is not a sweep folder (no sweep.yaml); run a sweep first")
    sweep = from_dict(SweepConfig, load_yaml(folder / "sweep.yaml"), str(folder / "sweep.yaml"))
    sweep = dataclasses.replace(sweep, runs_dir=str(folder.parent), name=folder.name)
    return write_leaderboard(sweep, expand(sweep), _load_state(folder))
