#!/usr/bin/env bash
# One-command GPU check (see benchmarks/gpu_check.py): fails in a second without a GPU, ~5-8 min on one H200.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi missing or finds none); run it on a GPU machine" >&2
    exit 2
fi
PY=${PY:-.venv/bin/python}
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
