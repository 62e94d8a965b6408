"""EM convolutional traces: the vectorised features against a per-pixel reference, kernel recovery, the mixture
mode's outlier handling, and an em_traces run that writes the run folder contract and ensembles with a CNN."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmarks.em_reference import reference_features
from deepfake_fastai import em_kernels, traces
from deepfake_fastai.config import ConfigError, TrainConfig
from deepfake_fastai.ensemble import build, load_runs
from deepfake_fastai.metrics import classification
from deepfake_fastai.models import check_arch
from deepfake_fastai.sweep import read_record
from deepfake_fastai.traces import EMParams, em_features, em_features_torch
from deepfake_fastai.train import is_complete, train
from tests.conftest import CIFAKE, tiny_train_kwargs

MODES = ("gaussian", "mixture")
KERNEL = np.array([[0.10, 0.30, 0.05], [0.25, 0.0, 0.15], [0.00, 0.20, -0.05]])  # planted; centre unused


def check_parity(images: np.ndarray, mode: str, n_iter: int = 10, kernel: int = 3) -> None:
    params = EMParams(mode, n_iter, kernel)
    ref = np.stack([reference_features(im, mode, n_iter, kernel) for im in images])
    np.testing.assert_allclose(em_features(images, params), ref, atol=1e-4)  # compiled kernels up to 3x3
    np.testing.assert_allclose(em_features(images, params, compiled=False), ref, atol=1e-4)  # numpy passes
    np.testing.assert_allclose(em_features_torch(images, params, device="cpu"), ref, atol=1e-4)


# ------------------------------------------------------------------------------------------------ features
@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (1, 1), (2, 2)])
def test_parity_on_images_one_or_two_pixels_high_or_wide(shape):
    """Degenerate shapes: a one-image batch of them makes Fortran-ordered planes, which the kernels must take."""
    check_parity(np.random.default_rng(8).random((1, *shape, 3)), "mixture", n_iter=3)


def test_outlier_weights_stay_normal_floats_and_match_the_reference():
    """Far outliers get exp(-600), not a subnormal weight (subnormal products slow the moments 4x), and the
    features stay the reference's."""
    image = np.full((1, 16, 16, 3), 2 / 255)
    image[0, ::5, ::3] = 1.0  # a few bright outliers on a dark plane: huge r^2 / s2 for them
    check_parity(image, "gaussian", n_iter=3)
    check_parity(image, "mixture", n_iter=3)
    passes = traces.window_passes(np.moveaxis(image[0], 2, 0), 3)
    weights = np.exp(passes.exponents(np.ones((3, 9)), np.full(3, -1e9), np.zeros(3)))
    assert weights.min() == np.exp(-em_kernels.MAX_EXPONENT) > np.finfo(np.float64).tiny


def test_24_features_per_image_named_by_channel_and_offset():
    images = np.random.default_rng(0).random((3, 10, 13, 3))
    assert em_features(images, EMParams()).shape == (3, 24)
    names = traces.feature_names(3)
    assert len(names) == 24 and names[0] == "R(-1,-1)" and "G(+0,+1)" in names and names[-1] == "B(+1,+1)"
    assert em_features(images, EMParams(kernel=5)).shape == (3, 72)


@pytest.mark.parametrize("mode", MODES)
def test_parity_on_random_images(mode):
    check_parity(np.random.default_rng(1).random((2, 12, 14, 3)), mode)


def test_parity_with_a_5x5_kernel():
    check_parity(np.random.default_rng(2).random((1, 12, 12, 3)), "mixture", n_iter=3, kernel=5)


def crops(paths: list[Path], px: int = 14) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64)[:px, :px] / 255 for p in paths])


@pytest.mark.parametrize("mode", MODES)
def test_parity_on_generated_images(tiny_data, mode):
    paths = sorted((tiny_data / "train" / "fake").iterdir())[:1] + sorted((tiny_data / "train" / "real").iterdir())[:1]
    check_parity(crops(paths), mode)


@pytest.mark.skipif(not CIFAKE.is_dir(), reason=f"the cifake sample is not at {CIFAKE} (project workspace only)")
@pytest.mark.parametrize("mode", MODES)
def test_parity_on_cifake_jpegs(mode):
    paths = sorted((CIFAKE / "fake").glob("*.jpg"))[:1] + sorted((CIFAKE / "real").glob("*.jpg"))[:1]
    check_parity(crops(paths), mode)


def planted(n: int = 48, noise: float = 1e-4, seed: int = 3) -> np.ndarray:
    """Random pixels, except every (odd, odd) one: KERNEL applied to its neighbours (an up-sampler's trace)."""
    rng = np.random.default_rng(seed)
    img = rng.random((n, n))
    padded = np.pad(img, 1, mode="reflect")
    for i in range(1, n - 1, 2):
        for j in range(1, n - 1, 2):  # their neighbours are all random pixels, so the order does not matter
            img[i, j] = (padded[i:i + 3, j:j + 3] * KERNEL).sum() + noise * rng.standard_normal()
    return img


def test_mixture_recovers_a_planted_kernel_and_down_weights_the_other_pixels():
    """Only a quarter of the pixels follow the kernel: the uniform outlier model must take the rest."""
    truth = np.delete(KERNEL.ravel(), 4)
    image = np.repeat(planted()[:, :, None], 3, axis=2)
    mixture = em_features(image[None], EMParams("mixture", 30))[0].reshape(3, 8)
    gaussian = em_features(image[None], EMParams("gaussian", 30))[0].reshape(3, 8)
    least_squares = em_features(image[None], EMParams("gaussian", 1))[0]  # one pass: close to OLS
    np.testing.assert_allclose(mixture, np.tile(truth, (3, 1)), atol=2e-3)
    assert np.abs(gaussian - truth).max() > 0.01  # the modes really differ
    assert np.abs(least_squares[:8] - truth).max() > 10 * np.abs(mixture[0] - truth).max()


def test_mixture_mode_differs_from_gaussian_on_plain_images():
    images = np.random.default_rng(4).random((2, 12, 12, 3))
    assert np.abs(em_features(images, EMParams("mixture")) - em_features(images, EMParams("gaussian"))).max() > 1e-3


def test_flat_image_gives_finite_features():
    """A constant channel has zero residuals and a singular system: the floor on sigma^2 and pinv keep it finite."""
    assert np.isfinite(em_features(np.full((1, 8, 8, 3), 0.5), EMParams("mixture"))).all()


# ---------------------------------------------------------------------------------------- compiled kernels
def test_compiled_passes_equal_the_numpy_passes():
    """Each fused kernel against the design-matrix version: residual exponents (clipped, also -inf), both
    weightings of the moments, on a plane whose sides differ (rows and columns not swapped)."""
    planes = np.random.default_rng(5).random((3, 7, 11))
    fast, slow = traces.window_passes(planes, 3, compiled=True), traces.window_passes(planes, 3, compiled=False)
    coef = np.random.default_rng(6).normal(size=(3, 9))
    scale, shift = np.array([-2.0, 3.0, 1e6]), np.array([0.0, -np.inf, 1.0])
    t_fast, t_slow = fast.exponents(coef, scale, shift), slow.exponents(coef, scale, shift)
    np.testing.assert_allclose(t_fast, t_slow, rtol=1e-12)
    assert (t_fast[1] == -em_kernels.MAX_EXPONENT).all() and t_fast[2].max() == em_kernels.MAX_EXPONENT
    e = np.exp(np.minimum(t_fast, 5.0))
    for logistic in (False, True):
        (m_fast, w_fast), (m_slow, w_slow) = fast.moments(e, logistic), slow.moments(e, logistic)
        np.testing.assert_allclose(m_fast, m_slow, rtol=1e-12)
        np.testing.assert_allclose(w_fast, w_slow, rtol=1e-12)
    assert not np.allclose(fast.moments(e, True)[0], fast.moments(e, False)[0])


def test_mixture_posterior_in_odds_form_equals_the_density_form():
    """1 / (1 + exp(r^2 / (2 s2) + log odds)) is p N(r; 0, s2) / (p N + (1 - p) U); p = 0 and 1 stay finite."""
    r2 = np.array([0.0, 1e-4, 1e-2, 0.5])
    for prior, var in [(0.5, 1e-3), (0.9, 1e-2), (0.01, 0.2)]:
        density = prior * np.exp(-r2 / (2 * var)) / np.sqrt(2 * np.pi * var)
        direct = density / (density + (1 - prior) * traces.OUTLIER_DENSITY)
        t = r2 / (2 * var) + traces._log_outlier_odds(np.array([prior]), np.array([var]))
        np.testing.assert_allclose(1 / (1 + np.exp(np.minimum(t, em_kernels.MAX_EXPONENT))), direct, rtol=1e-12)
    edges = traces._log_outlier_odds(np.array([0.0, 1.0]), np.array([1e-3, 1e-3]))
    assert edges[0] == np.inf and edges[1] == -np.inf  # weight 0 (through the cap) and weight 1


def test_uint8_images_give_the_features_of_their_float_values():
    images = np.random.default_rng(7).integers(0, 256, (2, 9, 10, 3), dtype=np.uint8)
    np.testing.assert_array_equal(em_features(images, EMParams("mixture")),
                                  em_features(images / 255.0, EMParams("mixture")))


def test_kernels_compile_once_for_all_threads():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        kernels = list(pool.map(lambda _: em_kernels.compiled("moments_logistic", 3), range(4)))
    assert all(k is kernels[0] for k in kernels)
    with pytest.raises(ValueError, match="up to 3x3"):
        em_kernels.compiled("moments", 5)  # larger windows take the numpy passes (parity test above)
    assert em_kernels.source(3).count("+= v") == 2 * 45  # every pair of the 9 window values, in both variants


# -------------------------------------------------------------------------------------- config and names
@pytest.mark.parametrize("field,value,message", [
    ("classifier", "xgb", "classifier must be one of svc, rf, logreg, hgb; got 'xgb'"),
    ("em_mode", "student", "em_mode must be one of gaussian, mixture"),
    ("kernel", 4, "odd kernel"),
    ("em_iter", 0, "em_iter >= 1"),
])
def test_invalid_em_fields_are_rejected(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(arch="em_traces", **{field: value})


def test_unknown_classifier_name_lists_the_choices():
    with pytest.raises(ConfigError, match="svc, rf, logreg, hgb"):
        traces.make_classifier("xgboost")
    assert [s for s, _ in traces.make_classifier("rf").steps] == ["scale", "clf"]


def test_em_traces_is_an_arch_and_its_run_name_says_mode_and_classifier():
    check_arch("em_traces")
    cfg = TrainConfig(arch="em_traces", size=64, em_mode="mixture", classifier="rf")
    assert cfg.run_name == "em_traces_r64_mixture_rf_k3_i10_s42"


# --------------------------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """An em_traces run and a 1-epoch test_resnet run on the same tiny data set, with a labelled test part."""
    tmp = tmp_path_factory.mktemp("traces")
    kwargs = tiny_train_kwargs(tmp, tiny_data)
    data = dataclasses.replace(kwargs["data"], test_pct=0.25)
    em = train(**tiny_train_kwargs(tmp, tiny_data, arch="em_traces", classifier="rf", data=data))
    cnn = train(**tiny_train_kwargs(tmp, tiny_data, data=data))
    return tmp, em, cnn


def test_em_traces_run_writes_the_run_folder_contract(runs):
    _, em, _ = runs
    d = em.run_dir
    assert d.name == "em_traces_r32_gaussian_rf_k3_i10_s42" and is_complete(d)
    for name in ("config.yaml", "status.json", "valid_ids.csv", "test_ids.csv", "history.csv", "train.log",
                 "model.pkl", "plots/em_kernels.png", "plots/feature_importance.png"):
        assert (d / name).is_file(), name
    ids, probs = pd.read_csv(d / "valid_ids.csv", dtype=str), np.load(d / "valid_probs.npy")
    assert len(ids) == len(probs) == em.metrics["n_valid"] and len(np.load(d / "test_probs.npy")) == 16
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["model_sha256"] == traces.file_sha256(d / "model.pkl") and metrics["n_features"] == 24
    assert json.loads((d / "status.json").read_text())["status"] == "complete"
    assert len(pd.read_csv(d / "history.csv")) == 1
    record = read_record(d)
    assert record["arch"] == "em_traces" and 0 <= record["auc"] <= 1


def test_saved_model_reproduces_the_validation_probabilities(runs):
    _, em, _ = runs
    model = traces.load_model(em.run_dir)
    ids = pd.read_csv(em.run_dir / "valid_ids.csv", dtype=str)
    cache = Path(em.metrics["split_file"]).parent / "32px"
    x = traces.featurise_paths([cache / f"{i}.png" for i in ids.id], EMParams())
    np.testing.assert_allclose(traces.positive_probs(model, x), np.load(em.run_dir / "valid_probs.npy"), atol=1e-6)


def test_a_changed_model_file_is_not_unpickled(runs, tmp_path):
    _, em, _ = runs
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("metrics.json", "manifest.json", "model.pkl"):
        (copy / name).write_bytes((em.run_dir / name).read_bytes())
    assert "model.pkl" in json.loads((copy / "manifest.json").read_text())["files"]
    traces.load_model(copy)  # the manifest vouches for it
    (copy / "model.pkl").write_bytes((copy / "model.pkl").read_bytes() + b"\0")
    with pytest.raises(PermissionError, match=r"model.pkl changed since .*manifest.json.*trust=True"):
        traces.load_model(copy)


def test_em_traces_and_cnn_runs_ensemble(runs):
    _, em, cnn = runs
    loaded = load_runs([cnn.run_dir, em.run_dir])
    assert [r.name for r in loaded] == [cnn.run_dir.name, em.run_dir.name]
    result = build(loaded, method="mean")
    assert len(result.valid_probs) == em.metrics["n_valid"] and len(result.test_probs) == 16
    assert result.labelled_test["n"] == em.metrics["n_labelled_test"] == cnn.metrics["n_labelled_test"] == 16


def test_em_traces_run_scores_the_labelled_test_part(runs):
    _, em, _ = runs
    ids = pd.read_csv(em.run_dir / "labelled_test_ids.csv", dtype=str)
    probs = np.load(em.run_dir / "labelled_test_probs.npy")
    y = (ids.label == "fake").astype(int).to_numpy()
    assert em.metrics["test_auc"] == pytest.approx(classification(y, probs)["auc"], abs=1e-6)
    assert sum(map(sum, em.metrics["test_confusion"])) == len(ids) == 16
    assert em.metrics["n_train"] + em.metrics["n_valid"] == 48


def test_robustness_of_an_em_traces_run(runs):
    from deepfake_fastai import robustness

    _, em, _ = runs
    table = robustness.evaluate(em.run_dir, names=("blur2",))
    assert table["clean"] == pytest.approx(em.metrics["auc"], abs=1e-4)  # no TTA: clean = the recorded AUC
    assert set(table) == {"clean", "blur2"} and 0 <= table["blur2"] <= 1


def cache_files(tmp: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (tmp / "data").rglob("_traces_*.npz")}


def test_feature_cache_is_reused_and_keyed_by_the_em_parameters(runs, tiny_data):
    tmp, _, _ = runs
    before = cache_files(tmp)
    assert list(before) == ["_traces_gaussian_k3_i10.npz"]
    start = time.perf_counter()
    svc = train(**tiny_train_kwargs(tmp, tiny_data, arch="em_traces", classifier="svc"))
    assert cache_files(tmp) == before  # same features, other classifier: read, not recomputed
    assert svc.metrics["features_time_s"] < time.perf_counter() - start
    train(**tiny_train_kwargs(tmp, tiny_data, arch="em_traces", classifier="svc", em_iter=2))
    after = cache_files(tmp)
    assert after["_traces_gaussian_k3_i10.npz"] == before["_traces_gaussian_k3_i10.npz"]
    assert set(after) == {"_traces_gaussian_k3_i10.npz", "_traces_gaussian_k3_i2.npz"}


def test_cache_recomputes_an_image_that_changed(tmp_path):
    rng = np.random.default_rng(5)
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray((rng.random((10, 10, 3)) * 255).astype(np.uint8)).save(paths[-1])
    first = traces.cached_features(paths, tmp_path, EMParams())
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8) + 9).save(paths[1])
    second = traces.cached_features(paths, tmp_path, EMParams())
    np.testing.assert_array_equal(second[[0, 2]], first[[0, 2]])
    np.testing.assert_allclose(second[1], traces.featurise_paths(paths[1:2], EMParams())[0])


def test_figures_render():
    feats = np.random.default_rng(6).normal(size=(20, 24))
    y = np.arange(20) % 2
    fig = traces.kernels_figure(feats, y, 3, ("real", "fake"))
    assert len(fig.axes) >= 9 and np.isnan(traces.mean_kernels(feats)[:, 1, 1]).all()
    png = traces.png_bytes(traces.importance_figure(np.arange(24.0), traces.feature_names(), "importance"))
    assert png[:4] == b"\x89PNG"



def test_report_shows_the_kernel_plots_of_an_em_traces_run(runs):
    from deepfake_fastai import report
    from deepfake_fastai.inspection import load_run

    _, em, _ = runs
    html = report.inspection_html(load_run(em.run_dir))
    assert 'alt="em_kernels em_traces_r32' in html and 'alt="feature_importance em_traces_r32' in html
    assert 'alt="top losses' in html and "not shown" not in html  # no complaint about a missing learner
