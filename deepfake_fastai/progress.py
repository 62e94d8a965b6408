"""The one progress bar: fastprogress (it comes with fastai) over an iterable, only where the wait is long."""

from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

MIN_ITEMS = 200  # fewer images than this take seconds: a bar would only clutter the log


def progress(items: Iterable, total: int, label: str | None = None, n_items: int | None = None,
             min_items: int = MIN_ITEMS) -> Iterable:
    """``items`` under a progress bar of ``total`` steps (with ``label`` logged first), when the ``n_items``
    images they stand for (default: ``total``) are at least ``min_items`` and fastprogress is installed."""
    if (total if n_items is None else n_items) < min_items:
        return items
    try:
        from fastprogress.fastprogress import progress_bar
    except ImportError:  # the synthetic data generator also runs without fastai
        return items
    if label:
        log.info(label)
    return progress_bar(items, total=total)
