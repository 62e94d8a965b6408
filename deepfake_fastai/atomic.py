"""Atomic file writes: a reader never sees a half-written artifact.

Every artifact goes to a temp file in the same folder and is renamed into place, so an interrupted
run leaves at most a stray ``.tmp-*`` file, never a truncated ``metrics.json`` taken as complete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIXES = {  # errno -> what the user can do; other OSErrors pass through unchanged
    errno.ENOSPC: "the disk is full: free space, or write elsewhere (--runs-dir, --out-dir, data.data_dir)",
    errno.EDQUOT: "the disk quota is used up: free space, or write elsewhere (--runs-dir, --out-dir)",
    errno.EROFS: "the file system is read-only: write elsewhere (--runs-dir, --out-dir, data.data_dir)",
    errno.EACCES: "no permission to write there: fix the folder's permissions, or write elsewhere",
    errno.EPERM: "no permission to write there: fix the folder's permissions, or write elsewhere",
    errno.ENOTDIR: "part of that path is a file, not a folder: write elsewhere (--runs-dir, --out-dir, data.data_dir)",
    errno.EEXIST: "a file of that name is in the way of a folder: move it, or write elsewhere (--runs-dir, --out-dir)",
}


class WriteError(OSError):
    """An artifact could not be written for a reason the user must fix; the message names the file and the fix."""


def explained(e: OSError, path: Path) -> OSError:
    """``e`` as a WriteError naming ``path`` and the fix, when its errno is one the user can fix."""
    fix = FIXES.get(e.errno)
    if fix is None or isinstance(e, WriteError):
        return e
    error = WriteError(f"cannot write {path}: {fix} ({os.strerror(e.errno)})")
    error.errno = e.errno
    return error


def make_dir(path: Path) -> Path:
    """``mkdir -p path``; a failure the user must fix (read-only, a file in the way) names the folder and the fix."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise explained(e, Path(path)) from e
    return Path(path)


def write_with(path: Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` then rename tmp_path onto ``path``; on any failure the temp file is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    except OSError as e:
        raise explained(e, path) from e
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise explained(e, path) from e
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


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
