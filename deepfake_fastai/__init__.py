"""deepfake-fastai: train, sweep, ensemble and submit AI-image detectors with fastai + timm.

The public API is small and cheap to import; torch/fastai load only when a function needs them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .config import DataConfig, TrainConfig
from .runfolder import RunResult
from .train import train

__all__ = ["DataConfig", "TrainConfig", "RunResult", "train", "load_learner", "load_run", "load_sweep"]
try:
    __version__ = version("deepfake-fastai")  # one source: pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"


def load_learner(path, cpu: bool = True, trust: bool = False):
    """Load a learner.pkl written by train() (see deepfake_fastai.learner.load_learner)."""
    from .learner import load_learner as _load

    return _load(path, cpu=cpu, trust=trust)


def load_run(path):
    """A complete run folder read back: config, metrics, history, predictions (see deepfake_fastai.inspection)."""
    from .inspection import load_run as _load

    return _load(path)


def load_sweep(path):
    """A sweep folder read back: leaderboard, complete runs, failed ones (see deepfake_fastai.inspection)."""
    from .inspection import load_sweep as _load

    return _load(path)
