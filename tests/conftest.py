"""Shared fixtures: tiny real data sets made by the tests themselves, and an offline environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
CIFAKE = SHARED / "data" / "cifake"

# Tests never touch the network: make huggingface_hub fail in milliseconds instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A tiny embedded-style data set: 64 labelled 32 px images (train/real, train/fake) and 16 in test/."""
    from deepfake_fastai.synthetic import generate, spec_for

    root = tmp_path_factory.mktemp("tiny") / "syn"
    return generate(spec_for("easy", image_px=32, n_labelled=64, n_test=16, seed=3), root, workers=1)


def tiny_train_kwargs(tmp: Path, data_root: Path, **overrides) -> dict:
    """Keyword arguments for a fast real training on ``data_root``: tiny timm model, 1 epoch, CPU."""
    from deepfake_fastai.config import DataConfig

    kwargs = dict(
        arch="test_resnet", size=32, epochs=1, bs=16, lr=1e-2, tta_n=1, precision="fp32",
        data=DataConfig(source="folder", path=str(data_root), data_dir=str(tmp / "data")),
        runs_dir=str(tmp / "runs"),
    )
    kwargs.update(overrides)
    return kwargs


def run_worker_here(python: str, config: Path, console=None, child=None) -> int:
    """warm.run_worker, run in this process (same code path, exit code; its output stays on this process's
    streams): for tests that fault or patch a run from inside the test process."""
    import signal

    from deepfake_fastai import worker

    old = signal.getsignal(signal.SIGTERM)
    try:
        return worker.main([str(config)])
    finally:
        signal.signal(signal.SIGTERM, old)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """deepfake-fastai in this process: exit code, stdout, stderr."""
    import contextlib
    import io
    import signal

    from deepfake_fastai import cli

    out, err = io.StringIO(), io.StringIO()
    old = signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(list(argv))
    finally:
        signal.signal(signal.SIGTERM, old)
    return rc, out.getvalue(), err.getvalue()
