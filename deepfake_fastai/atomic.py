"""Atomic file writes: a reader never sees a half-written artifact.

Every artifact goes to a temp file in the same folder and is renamed into place, so an interrupted
run leaves at most a stray ``.tmp-*`` file, never a truncated ``metrics.json`` taken as complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_with(path: Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` then rename tmp_path onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    """Write bytes atomically."""
    return write_with(path, lambda p: p.write_bytes(data))


def write_text(path: Path, text: str) -> Path:
    """Write text (UTF-8) atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    """Write JSON atomically, sorted keys, indented for humans."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: Path, frame) -> Path:
    """Write a pandas DataFrame as CSV atomically, without the index."""
    return write_with(path, lambda p: frame.to_csv(p, index=False))
