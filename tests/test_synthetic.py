"""Tests of the embedded synthetic data set: determinism, layout, no shortcut, a real and tunable trace."""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from deepfake_fastai import synthetic as syn

# Small but real: 32 px, a few dozen images, held-out families, so one generation serves many tests.
TINY = syn.SyntheticSpec(
    image_px=32,
    n_labelled=40,
    n_test=10,
    families=("tconv4", "tconv3", "pixshuf"),
    heldout_families=("nnconv", "bilconv"),
    n_unseen=20,
    kernel_sets=2,
    seed=3,
)
# ~400 labelled images at 64 px: enough for cross-validated AUCs with a standard error of about 0.03.
N_AUC = 400


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root`, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV as dicts."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _labelled(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (n, H, W, 3) float, JPEG file sizes and labels (1 = fake) of train/."""
    files = sorted((root / "train").glob("*/*.jpg"), key=lambda p: p.name)
    images = np.stack([np.asarray(Image.open(p), dtype=np.float64) for p in files])
    sizes = np.array([p.stat().st_size for p in files], dtype=np.float64)
    return images, sizes, np.array([p.parent.name == "fake" for p in files], dtype=int)


def _cv_auc(features: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of 5-fold cross-validated predictions of a standardised logistic regression."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    probs = cross_val_predict(model, features, labels, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, probs))


def _shortcut_features(images: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per-channel mean and std plus file size: what a lazy classifier would latch onto."""
    return np.column_stack([images.mean(axis=(1, 2)), images.std(axis=(1, 2)), sizes])


def _spectrum_features(images: np.ndarray) -> np.ndarray:
    """Radial profile of the grey log-power spectrum, plus the Nyquist row/column a 2x up-sampler marks."""
    grey = images.mean(axis=-1)
    grey -= grey.mean(axis=(1, 2), keepdims=True)
    power = np.log(np.abs(np.fft.fft2(grey)) ** 2 + 1e-3)
    n = grey.shape[1]
    freq = np.fft.fftfreq(n) * n
    radius = np.minimum(np.hypot(freq[:, None], freq[None, :]).astype(int), n // 2).ravel()
    counts = np.bincount(radius)
    radial = np.stack([np.bincount(radius, p.ravel()) / counts for p in power])
    half = n // 2
    nyquist = np.column_stack([power[:, half].mean(1), power[:, :, half].mean(1), power[:, half, half]])
    return np.column_stack([radial, nyquist])


@pytest.fixture(scope="module")
def tiny_w1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return syn.generate(TINY, tmp_path_factory.mktemp("w1") / "set", workers=1)


@pytest.fixture(scope="module")
def tiny_w2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return syn.generate(TINY, tmp_path_factory.mktemp("w2") / "set", workers=2)


@pytest.fixture(scope="module")
def by_difficulty(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Same seed, so easy/default/hard share their crops and differ only in the trace."""
    data_dir = tmp_path_factory.mktemp("difficulty")
    return {
        name: syn.ensure_synthetic(syn.spec_for(name, n_labelled=N_AUC, n_test=50), data_dir, workers=2)
        for name in syn.DIFFICULTY
    }


# ---------------------------------------------------------------------------------------- determinism
def test_same_spec_gives_identical_files_for_any_worker_count(tiny_w1: Path, tiny_w2: Path) -> None:
    files_w1, files_w2 = _files(tiny_w1), _files(tiny_w2)
    assert len(files_w1) == 40 + 10 + 20 + 3
    assert files_w1 == files_w2


def test_other_seed_gives_other_images(tiny_w1: Path, tmp_path: Path) -> None:
    other = syn.generate(dataclasses.replace(TINY, seed=4, n_unseen=2), tmp_path / "set", workers=1)
    ours = {b for name, b in _files(tiny_w1).items() if name.endswith(".jpg")}
    theirs = {b for name, b in _files(other).items() if name.endswith(".jpg")}
    assert not ours & theirs


def test_key_is_stable_and_depends_on_every_field() -> None:
    spec = syn.SyntheticSpec()
    assert re.fullmatch(r"syn64-[0-9a-f]{10}", spec.key())
    assert spec.key() == syn.SyntheticSpec(families=list(syn.FAMILIES)).key()
    changed = {"seed": 1, "a_up": 2.5, "kernel_sets": 3, "n_test": 100, "families": ("tconv4",)}
    keys = {dataclasses.replace(spec, **{k: v}).key() for k, v in changed.items()}
    assert len(keys | {spec.key()}) == len(changed) + 1


# -------------------------------------------------------------------------------------------- layout
def test_layout_counts_and_names(by_difficulty: dict[str, Path]) -> None:
    root = by_difficulty["default"]
    real, fake = sorted((root / "train/real").glob("*.jpg")), sorted((root / "train/fake").glob("*.jpg"))
    assert len(real) == len(fake) == N_AUC // 2
    tests = sorted((root / "test").glob("*.jpg"))
    assert len(tests) == 50 and not (root / "unseen").exists()
    assert all(re.fullmatch(r"img_\d{6}\.jpg", p.name) for p in real + fake)  # no class in the name
    assert all(re.fullmatch(r"test_\d{6}\.jpg", p.name) for p in tests)
    assert len({p.name for p in real + fake}) == N_AUC
    stems = [p.stem for p in tests]
    submission = _read_csv(root / "sample_submission.csv")
    assert [r["id"] for r in submission] == stems and {r["label"] for r in submission} == {"0.5"}
    answers = _read_csv(root / "test_labels.csv")
    assert [r["id"] for r in answers] == stems
    assert sorted(r["label"] for r in answers) == ["fake"] * 25 + ["real"] * 25


def test_every_image_is_an_rgb_jpeg_of_the_spec_size(by_difficulty: dict[str, Path]) -> None:
    for path in sorted(by_difficulty["default"].rglob("*.jpg")):
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (64, 64)), path


def test_spec_json_records_spec_and_counts(tiny_w1: Path) -> None:
    assert syn.read_spec(tiny_w1) == TINY
    assert sorted(p.name for p in tiny_w1.iterdir()) == [
        "sample_submission.csv", "spec.json", "test", "test_labels.csv", "train", "unseen",
    ]  # fmt: skip
    assert not list(tiny_w1.parent.glob(".*tmp*"))  # the temporary build folder is gone


# ------------------------------------------------------------------------------- shortcut and trace
def test_no_shortcut_in_colour_statistics_or_file_size(by_difficulty: dict[str, Path]) -> None:
    images, sizes, labels = _labelled(by_difficulty["default"])
    auc = _cv_auc(_shortcut_features(images, sizes), labels)
    assert 0.40 <= auc <= 0.60, f"mean/std/file-size AUC {auc:.3f}: the classes differ in a trivial way"


def test_trace_is_learnable_and_difficulty_matters(by_difficulty: dict[str, Path]) -> None:
    aucs = {}
    for name, root in by_difficulty.items():
        images, _, labels = _labelled(root)
        aucs[name] = _cv_auc(_spectrum_features(images), labels)
    # Measured (seed 0): 400 images easy 0.93, default 0.82, hard 0.70; 2500 images 0.93, 0.81, 0.66.
    assert aucs["default"] > 0.65, aucs
    assert aucs["easy"] > aucs["default"] > aucs["hard"] > 0.55, aucs


@pytest.mark.parametrize("family", syn.FAMILIES)
def test_trace_strength_per_family(family: str) -> None:
    rng = np.random.default_rng(11)
    squares = []
    for i in range(40):
        low = syn.avg_pool2(syn.sample_crop(rng, 64))
        up, gen = syn.upsample_pair(low, family, syn.kernel_set(0, family, i % 4))
        squares.append(np.mean((gen - up) ** 2))
    rms = float(np.sqrt(np.mean(squares)))
    assert 2.5 <= rms <= 4.5, f"{family}: {rms:.2f} grey levels rms of G - U at strength 1"


def test_clean_kernels_reproduce_bilinear_upsampling() -> None:
    low = np.random.default_rng(0).uniform(0, 255, (8, 8, 3))
    for family in ("tconv4", "nnconv", "bilconv", "pixshuf"):  # tconv3's grid is half a pixel off, by design
        up, gen = syn.upsample_pair(low, family, np.stack([syn.BASE_KERNELS[family]] * 3))
        np.testing.assert_allclose(gen, up, atol=1e-9, err_msg=family)


# ---------------------------------------------------------------------------------- held-out families
def test_unseen_holds_only_heldout_families(tiny_w1: Path) -> None:
    unseen = syn.plan_split(TINY, "unseen")
    assert {j.family for j in unseen if j.label == "fake"} == set(TINY.heldout_families)
    seen = syn.plan_split(TINY, "train") + syn.plan_split(TINY, "test")
    assert {j.family for j in seen if j.label == "fake"} == set(TINY.families)
    assert all(j.family is None for j in seen + unseen if j.label == "real")
    on_disk = sorted(str(p.relative_to(tiny_w1)) for p in (tiny_w1 / "unseen").rglob("*.jpg"))
    assert on_disk == sorted(j.relpath for j in unseen)
    fake = next(j for j in unseen if j.label == "fake")
    assert syn.fake_family(TINY, "unseen", fake.index) == fake.family
    assert (tiny_w1 / fake.relpath).read_bytes() == syn.render(TINY, fake)  # files follow the plan


def test_plan_balances_classes_and_cycles_families() -> None:
    jobs = syn.plan_split(syn.SyntheticSpec(n_labelled=100), "train")
    fakes = [j for j in jobs if j.label == "fake"]
    assert len(fakes) == 50
    assert [fakes.count(j) for j in fakes] == [1] * 50
    assert {f: sum(j.family == f for j in fakes) for f in syn.FAMILIES} == dict.fromkeys(syn.FAMILIES, 10)
    assert {j.kernel_set for j in fakes} == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"families": ("gan",)}, "families.*tconv4"),
        ({"families": ()}, "families"),
        ({"families": ("tconv4", "tconv4")}, "families.*duplicates"),
        ({"heldout_families": ("nnconv",)}, "heldout_families.*disjoint"),
        ({"families": ("tconv4",), "heldout_families": ("vae",)}, "heldout_families.*tconv4"),
        ({"image_px": 8}, "image_px"),
        ({"image_px": 33}, "image_px.*even"),
        ({"image_px": 64.0}, "image_px.*int"),
        ({"n_labelled": 3}, "n_labelled"),
        ({"n_test": 0}, "n_test"),
        ({"kernel_sets": 0}, "kernel_sets"),
        ({"families": ("tconv4",), "heldout_families": ("nnconv",), "n_unseen": 0}, "n_unseen"),
        ({"a_up": -1.0}, "a_up"),
        ({"a_blur": 1.5}, "a_blur"),
    ],
)
def test_spec_validation(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        syn.SyntheticSpec(**fields)


def test_spec_for() -> None:
    assert syn.spec_for("hard", seed=2) == syn.SyntheticSpec(a_up=1.0, a_blur=0.3, seed=2)
    assert syn.spec_for() == syn.SyntheticSpec()
    with pytest.raises(ValueError, match="easy"):
        syn.spec_for("medium")
    with pytest.raises(ValueError, match="bogus"):
        syn.spec_for(bogus=1)


# ------------------------------------------------------------------------------------ ensure_synthetic
def test_ensure_reuses_complete_and_regenerates_incomplete(tmp_path: Path) -> None:
    spec = syn.SyntheticSpec(image_px=16, n_labelled=4, n_test=2)
    root = tmp_path / "synthetic" / spec.key()
    root.mkdir(parents=True)
    (root / "train").mkdir()
    (root / "train" / "half_written.jpg").write_bytes(b"")  # an interrupted run: no spec.json
    assert syn.ensure_synthetic(spec, tmp_path, workers=1) == root
    assert syn.is_complete(root) and not (root / "train" / "half_written.jpg").exists()
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert syn.ensure_synthetic(spec, tmp_path, workers=1) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps
    with pytest.raises(FileExistsError):
        syn.generate(spec, root)
