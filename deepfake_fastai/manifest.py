"""Run-folder manifest: the SHA-256 of every artifact a run wrote, so only our own pickles are ever loaded.

``<run>/manifest.json`` is written just before metrics.json. Unpickling a learner or a checkpoint runs code, so
``load_learner`` (and anything else that unpickles from a run folder) first checks the file against it: absent
from the manifest, or a different hash, is refused unless the caller says it trusts the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from . import atomic

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
MUTABLE = {MANIFEST_FILE, "metrics.json", "status.json", "train.log"}  # rewritten after the run, or still open
# not listed: plots/ is written by later stages (report); checkpoints/ carry their own SHA-256 in
# last.json / best.json, which resume checks (hashing them again here cost a read of each, optimizer state too)
LATER_DIRS = {"plots", "checkpoints"}
UNSAFE_HELP = "Unpickling runs code: pass trust=True (only for a file from a source you trust)"


class UntrustedFile(PermissionError):
    """A pickle that no run folder of ours vouches for."""


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build(run_dir: Path) -> dict[str, Any]:
    """{"files": {relative path: sha256}} of every artifact in ``run_dir`` (not the mutable or later files)."""
    run_dir = Path(run_dir)
    files = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(run_dir)
        if rel.name in MUTABLE or rel.name.startswith(".") or rel.parts[0] in LATER_DIRS:
            continue
        files[rel.as_posix()] = file_sha256(path)
    return {"files": files}


def write(run_dir: Path) -> Path:
    """Write ``<run_dir>/manifest.json`` atomically."""
    return atomic.write_json(Path(run_dir) / MANIFEST_FILE, build(run_dir))


def why_untrusted(path: Path) -> str | None:
    """None if the manifest.json in the file's folder lists it with this hash; else why not. Older run folders
    without a manifest: the learner_sha256 their metrics.json records."""
    path = Path(path).resolve()
    folder = path.parent
    try:
        listed = json.loads((folder / MANIFEST_FILE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        listed = None
    if listed is not None:
        if path.name not in listed:
            return f"{path.name} is not in {folder / MANIFEST_FILE}"
        same = listed[path.name] == file_sha256(path)
        return None if same else f"{path.name} changed since {folder / MANIFEST_FILE} was written"
    try:
        recorded = json.loads((path.parent / "metrics.json").read_text()).get("learner_sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is None:
        return f"no {MANIFEST_FILE} beside it: not a run folder deepfake_fastai wrote"
    return None if recorded == file_sha256(path) else "its SHA-256 differs from the one metrics.json records"


def check(path: Path, trust: bool = False) -> None:
    """Raise UntrustedFile unless the run folder vouches for ``path``; with ``trust``, warn and go on."""
    reason = why_untrusted(path)
    if reason is None:
        return
    if not trust:
        raise UntrustedFile(f"{path} was not written by deepfake_fastai ({reason}). {UNSAFE_HELP}.")
    log.warning("loading %s although %s: unpickling runs arbitrary code from it (trust=True)", path, reason)


def load_pickle(path: Path, trust: bool = False) -> Any:
    """Unpickle ``path`` once ``check`` has passed: the one place the toolkit unpickles a file itself
    (learners go through fastai's load_learner after the same check)."""
    import pickle

    check(path, trust)
    return pickle.loads(Path(path).read_bytes())
