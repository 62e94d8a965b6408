import numpy as np
import pytest

from deepfake_fastai.metrics import classification


def test_hand_worked_example():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    m = classification(y, p)
    # ranking: of 6 (neg, pos) pairs, only (0.6, 0.4) is mis-ordered
    assert m["auc"] == pytest.approx(5 / 6)
    assert m["accuracy"] == pytest.approx(3 / 5) and m["error_rate"] == pytest.approx(2 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["real_accuracy"] == pytest.approx(1 / 2) and m["fake_accuracy"] == pytest.approx(2 / 3)
    expected_ll = -np.mean(np.log([0.9, 0.4, 0.4, 0.8, 0.9]))
    assert m["log_loss"] == pytest.approx(expected_ll)


def test_confident_mistakes_stay_finite():
    m = classification(np.array([0, 1]), np.array([1.0, 0.0]))
    assert np.isfinite(m["log_loss"]) and m["auc"] == 0.0
