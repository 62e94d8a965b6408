"""One run in its own process, both sides: ``run_one`` (the parent, used by every sweep backend) starts the
child, ``main`` on the run's config.yaml: forked from a warm runner (warm.py) or as ``python -m
deepfake_fastai.worker <run>/config.yaml`` in a fresh interpreter, and reads back what it recorded.

The child's exit code is 0 when the run completed; train.run records any failure in the run's status.json
itself, and the parent records one when the child died before it could (a signal, the OOM killer).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from . import runfolder, warm
from .config import TrainConfig, resolve_paths

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- parent side
def oom_retry_config(cfg: TrainConfig, error: str) -> TrainConfig | None:
    """Same effective batch with half the micro-batch, if the error was a CUDA OOM and halving is possible."""
    if "out of memory" not in error.lower() or cfg.micro_bs < 2 or cfg.bs % (cfg.accum * 2):
        return None
    return dataclasses.replace(cfg, accum=cfg.accum * 2)


def run_one(cfg: TrainConfig, python: str, oom_retry: bool = True, quiet: bool = False) -> dict[str, Any]:
    """One run in a child process (retried once on CUDA OOM); returns its sweep-state record."""
    start = time.monotonic()
    record = _attempt(cfg, python, quiet)
    if record["status"] != "complete" and oom_retry:
        retry = oom_retry_config(cfg, record.get("error", ""))
        if retry is not None:
            note = f"CUDA OOM: retried with micro-batch {retry.micro_bs} x accum {retry.accum} (same bs {retry.bs})"
            log.warning("%s: %s", cfg.run_name, note)
            record = {**_attempt(retry, python, quiet), "note": note}
    record["wall_time_s"] = round(time.monotonic() - start, 1)
    if record["status"] != "complete":
        output = f"; its output: {Path(cfg.runs_dir) / cfg.run_name / runfolder.WORKER_LOG}" if quiet else ""
        log.error("%s failed: %s (the sweep goes on%s)", cfg.run_name, record.get("error"), output)
    return record


def _attempt(cfg: TrainConfig, python: str, quiet: bool = False) -> dict[str, Any]:
    run_dir = Path(cfg.runs_dir) / cfg.run_name
    config_file = runfolder.write_config(run_dir, resolve_paths(cfg))
    # quiet: the worker's console goes to a log, appended like train.log (every attempt), not an artifact
    with open(run_dir / runfolder.WORKER_LOG, "ab") if quiet else contextlib.nullcontext() as console:
        returncode = warm.run_worker(python, config_file, console, child=main)
    record = runfolder.read_record(run_dir)
    if returncode and record.get("status") in ("running", "interrupted", "not started", "complete"):
        # killed before it could record anything itself (signal, OOM killer, a crashed interpreter)
        record = {"status": "failed", "error": f"worker exited with code {returncode}"}
        runfolder.write_status(run_dir, record)
    return {"status": record.get("status"), "error": record.get("error", "")}


# -------------------------------------------------------------------------------------------- child side
def main(argv: list[str]) -> int:
    from .config import load_train_config
    from .train import run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # recorded as failed by run()
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")
    try:
        run(load_train_config(Path(argv[0])))
    except Exception as e:  # noqa: BLE001 - recorded in status.json by run(); the exit code tells the runner
        logging.getLogger(__name__).error("run failed: %s: %s", type(e).__name__, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
