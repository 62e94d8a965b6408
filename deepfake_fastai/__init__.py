"""deepfake-fastai: train, sweep, ensemble and submit AI-image detectors with fastai + timm.

The public API is small and cheap to import; torch/fastai load only when a function needs them.
"""

from __future__ import annotations

from .config import DataConfig, TrainConfig
from .train import RunResult, train

__all__ = ["DataConfig", "TrainConfig", "RunResult", "train", "load_learner"]
__version__ = "0.1.0"


def load_learner(path, cpu: bool = True, trust: bool = False):
    """Load a learner.pkl written by train() (see deepfake_fastai.learner.load_learner)."""
    from .learner import load_learner as _load

    return _load(path, cpu=cpu, trust=trust)
