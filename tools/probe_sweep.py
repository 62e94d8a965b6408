"""Measure a sweep's runs in ONE process (no per-run interpreter start): for choosing recipes, not for users.

    python tools/probe_sweep.py sweeps/x.yaml [--runs-dir /tmp/probe] [--only SUBSTRING ...]

Prints one line per run: name, valid AUC, fit seconds, wall seconds. Same train() as the sweep's workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from deepfake_fastai.sweep import expand, load_sweep
from deepfake_fastai.train import run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--runs-dir", default="/tmp/probe")
    parser.add_argument("--only", nargs="*", default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sweep = load_sweep(args.sweep)
    for cfg in expand(sweep):
        if args.only and not any(s in cfg.run_name for s in args.only):
            continue
        cfg = dataclasses.replace(cfg, runs_dir=args.runs_dir)
        start = time.perf_counter()
        try:
            m = run(cfg).metrics
            print(f"{cfg.run_name:50s} auc {m['auc']:.3f} fit {m['fit_time_s']:6.1f}s "
                  f"wall {time.perf_counter() - start:6.1f}s", flush=True)
        except Exception as e:  # noqa: BLE001 - a probe reports and goes on
            print(f"{cfg.run_name:50s} FAILED {type(e).__name__}: {e}", flush=True)


if __name__ == "__main__":
    main()
