"""DataLoader settings for the machine a run trains on: device, worker processes, pinned memory.

``num_workers: auto`` (the default) is 0 on a CPU-only machine: there the in-process loader is fastest, because
worker processes would take cores from the training itself (2 shared cores here). On CUDA the GPU trains
resnet50 at thousands of images/s while one in-process loader decodes a few hundred (BENCHMARKS.md), so auto
gives one worker per core up to ``MAX_AUTO_WORKERS``, kept alive between epochs, with pinned memory so the
host-to-GPU copy is asynchronous. fastai moves each batch to the device before its batch transforms
(flip, normalise, fastai augmentations), so those run on the GPU.

``persistent_workers`` is handed on, but fastai 2.8 builds a new torch iterator for every pass
(``fastai/data/load.py``: ``_loaders[...](self.fake_l)``), so its workers still start anew each epoch and
validation pass (a fork each: cheap next to an epoch on a GPU).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

log = logging.getLogger(__name__)

AUTO = "auto"
MAX_AUTO_WORKERS = 8  # beyond ~8 decoding processes per GPU the gain is small and each holds a copy of the items


def cuda_available() -> bool:
    """The one place that decides whether this process trains on CUDA."""
    return torch.cuda.is_available()


def resolve_num_workers(requested: int | str, cuda: bool, cpus: int) -> int:
    """An explicit count wins; auto is 0 on CPU and one per core (capped) on CUDA."""
    if requested != AUTO:
        return int(requested)
    return min(MAX_AUTO_WORKERS, cpus) if cuda else 0


def loader_kwargs(num_workers: int | str) -> dict[str, Any]:
    """Keyword arguments for fastai's ``DataBlock.dataloaders``: device, workers, persistence, pinning."""
    cuda = cuda_available()
    workers = resolve_num_workers(num_workers, cuda, os.cpu_count() or 1)
    log.info("DataLoader: %d worker process(es) (num_workers %s, %s)", workers, num_workers, "CUDA" if cuda else "CPU")
    return {"device": torch.device("cuda" if cuda else "cpu"), "num_workers": workers,
            "persistent_workers": workers > 0, "pin_memory": cuda}
