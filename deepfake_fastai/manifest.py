"""Trusting a run folder's pickles: only files its manifest.json lists with their hash are ever unpickled.

``runfolder.finish`` writes ``<run>/manifest.json`` just before metrics.json. Unpickling a learner or a model
runs code, so ``load_learner`` (and anything else that unpickles from a run folder) first checks the file
against it: absent from the manifest, or a different hash, is refused unless the caller says it trusts the file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from . import runfolder
from .atomic import file_sha256

__all__ = ["UntrustedFile", "check", "file_sha256", "load_pickle", "why_untrusted"]

log = logging.getLogger(__name__)

UNSAFE_HELP = "Unpickling runs code: pass trust=True (only for a file from a source you trust)"


class UntrustedFile(PermissionError):
    """A pickle that no run folder of ours vouches for."""


def why_untrusted(path: Path) -> str | None:
    """None if the manifest.json in the file's folder lists it with this hash; else why not. Older run folders
    without a manifest: the learner_sha256 their metrics.json records."""
    path = Path(path).resolve()
    folder = path.parent
    manifest = folder / runfolder.MANIFEST
    try:
        listed = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        listed = None
    if listed is not None:
        if path.name not in listed:
            return f"{path.name} is not in {manifest}"
        same = listed[path.name] == file_sha256(path)
        return None if same else f"{path.name} changed since {manifest} was written"
    try:
        recorded = runfolder.read_metrics(folder).get("learner_sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is None:
        return f"no {runfolder.MANIFEST} beside it: not a run folder deepfake_fastai wrote"
    return None if recorded == file_sha256(path) else f"its SHA-256 differs from the one {runfolder.METRICS} records"


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
