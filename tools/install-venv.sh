#!/usr/bin/env bash
# Create VENV and install this project with EXTRAS into it, fast.
# Why uv: pip's resolver over this machine's local indexes + PyPI took >12 min before it even began
# unpacking; uv resolves in seconds. uv ignores pip.conf, so the pip indexes and wheel folders are
# handed to it explicitly. Falls back to plain pip if uv cannot be installed.
set -euo pipefail
VENV=${1:-.venv}
EXTRAS=${2:-dev}
# This machine's exact versions; pyproject.toml only has lower bounds. CONSTRAINTS= (empty) lifts them.
CONSTRAINTS=${CONSTRAINTS-tools/constraints.txt}
constraint_args=()
if [ -n "$CONSTRAINTS" ]; then constraint_args=(--constraint "$CONSTRAINTS"); fi
python3 -m venv "$VENV"
PIP="$VENV/bin/pip"
extra_index=$(pip config get global.extra-index-url 2>/dev/null || true)
find_links=$(pip config get global.find-links 2>/dev/null || true)
if "$PIP" install -q uv; then
    export UV_EXTRA_INDEX_URL="$extra_index" UV_FIND_LINKS="$find_links" UV_HTTP_TIMEOUT=180
    # uv's default link mode falls back to copying across file systems; hard links save GBs when
    # the cache is on the same disk.
    "$VENV/bin/uv" pip install --python "$VENV/bin/python" "${constraint_args[@]}" -e ".[$EXTRAS]"
else
    echo "uv unavailable; installing with pip (slow: can take >15 min)" >&2
    "$PIP" install "${constraint_args[@]}" -e ".[$EXTRAS]"
fi
