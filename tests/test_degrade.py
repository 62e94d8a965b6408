"""Degradations do what they claim, the training augmentation only touches training images, and the
robustness evaluation runs on a real tiny run."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from PIL import Image

from deepfake_fastai import degrade


def _photo(px: int = 64) -> Image.Image:
    from deepfake_fastai.synthetic import load_photos

    return Image.fromarray(load_photos()[0][:px * 4:4, :px * 4:4].astype(np.uint8))


def _high_freq_energy(img: Image.Image) -> float:
    a = np.asarray(img.convert("L"), dtype=np.float64)
    lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    return float((lap ** 2).mean())


@pytest.mark.parametrize("quality", [90, 50])
def test_jpeg_quality_is_read_back_from_the_quantisation_tables(quality):
    out = degrade.jpeg(_photo(), quality)
    reference = io.BytesIO()
    _photo().save(reference, format="JPEG", quality=quality)
    assert out.format == "JPEG" and out.quantization == Image.open(reference).quantization
    other = io.BytesIO()
    _photo().save(other, format="JPEG", quality=quality - 20)
    assert out.quantization != Image.open(other).quantization


@pytest.mark.parametrize("name", ["blur1", "blur2", "rescale0.5"])  # JPEG adds block edges: checked above
def test_degradations_remove_high_frequency_energy_and_keep_the_size(name):
    img = _photo()
    out = degrade.apply(img, name)
    assert out.size == img.size and _high_freq_energy(out) < 0.8 * _high_freq_energy(img)
    assert _high_freq_energy(degrade.apply(img, "blur2")) < _high_freq_energy(degrade.apply(img, "blur1"))


def test_training_augmentation_touches_training_images_only():
    from fastai.vision.core import PILImage

    from deepfake_fastai.callbacks import RandomDegrade

    img = PILImage(_photo())
    t = RandomDegrade(p=1.0)
    assert np.array_equal(np.asarray(t(img, split_idx=1)), np.asarray(img))
    assert not np.array_equal(np.asarray(t(img, split_idx=0)), np.asarray(img))
    assert np.array_equal(np.asarray(RandomDegrade(p=0.0)(img, split_idx=0)), np.asarray(img))
    rng = random.Random(0)
    assert degrade.random_degrade(img, 0.0, rng) is img


def test_robustness_of_a_real_run_is_recorded(tiny_data, tmp_path):
    from deepfake_fastai import load_learner, robustness
    from deepfake_fastai.train import train
    from tests.conftest import tiny_train_kwargs

    result = train(**tiny_train_kwargs(tmp_path, tiny_data, degrade_p=0.5))
    table = robustness.evaluate(result.run_dir, names=("jpeg50", "blur2"))
    assert set(table) == {"clean", "jpeg50", "blur2"} and all(0 <= v <= 1 for v in table.values())
    robustness.record(result.run_dir, table)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["robustness"] == table and metrics["status"] == "complete"
    load_learner(result.learner_path)  # still trusted: the learner and its recorded hash are untouched
