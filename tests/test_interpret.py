"""Top losses, Grad-CAM, t-SNE and the report's inspection section, on real tiny trainings (timm test_* models).

One 64 px run per architecture (3 epochs, so the maps explain a model that learned something), shared by the
module; the pure cores are checked on hand-made arrays.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deepfake_fastai import atomic, interpret
from deepfake_fastai.inspection import Run, load_run
from deepfake_fastai.report import write_report
from deepfake_fastai.sweep import SweepConfig
from deepfake_fastai.train import train
from tests.conftest import tiny_train_kwargs

ARCHS = ("test_resnet", "test_convnext", "test_efficientnet", "test_vit")
PX = 64  # the resnet's last map is 2x2 here: coarse, but a map
PNG_URI = r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"'


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory) -> dict[str, Run]:
    """One complete run per arch, each folder named after its arch."""
    tmp = tmp_path_factory.mktemp("interpret")
    out = {}
    for arch in ARCHS:
        # tta_n=0: the saved probabilities are plain predictions, so Grad-CAM's forward pass must reproduce them
        kwargs = tiny_train_kwargs(tmp, tiny_data, arch=arch, size=PX, item_tfms=PX, epochs=3, tta_n=0, name=arch)
        out[arch] = load_run(train(**kwargs).run_dir)
    return out


@pytest.fixture(scope="module")
def learners(runs) -> dict:
    """Each run's exported learner, loaded once."""
    return {arch: run.learner() for arch, run in runs.items()}


# ------------------------------------------------------------------------------------------- pure cores
def test_grad_cam_map_weights_channels_by_their_mean_gradient():
    acts = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]])
    grads = np.stack([np.full((2, 2), 0.5), np.full((2, 2), -1.0)])  # channel 0 helps the class, 1 hurts it
    np.testing.assert_allclose(interpret.grad_cam_map(acts, grads), [[0.5, 0.0], [0.0, 0.0]])  # ReLU drops -2
    heat = interpret.heatmap(acts, grads, (6, 6))
    assert heat.shape == (6, 6) and heat.min() == 0 and heat.max() == 1 and heat[0, 0] == 1
    assert not interpret.to_unit(np.full((3, 3), 0.7)).any()  # constant: nothing to show


def test_overlay_blends_the_colour_map_over_the_image():
    from matplotlib import colormaps

    image, heat = np.full((4, 5, 3), 0.2), np.zeros((4, 5))
    heat[0, 0] = 1.0
    out = interpret.overlay(image, heat, alpha=0.5)
    assert out.shape == (4, 5, 3) and out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out[0, 0], 0.1 + 0.5 * np.array(colormaps["jet"](1.0)[:3]))
    np.testing.assert_allclose(out[3, 4], 0.1 + 0.5 * np.array(colormaps["jet"](0.0)[:3]))


def test_tokens_to_grid_drops_prefix_tokens_and_fills_rows():
    tokens = np.arange(2 * 7 * 3).reshape(2, 7, 3)  # 2 images, 1 class token + 2x3 patches, 3 channels
    grid = interpret.tokens_to_grid(tokens, n_prefix=1, grid=(2, 3))
    assert grid.shape == (2, 3, 2, 3)
    for r in range(2):
        for c in range(3):
            np.testing.assert_array_equal(grid[1, :, r, c], tokens[1, 1 + 3 * r + c])
    with pytest.raises(NotImplementedError, match="do not fill a 3x3 patch grid"):
        interpret.tokens_to_grid(tokens, n_prefix=1, grid=(3, 3))


def test_cam_layer_reads_channels_last_bodies_and_refuses_pooled_ones():
    from types import SimpleNamespace

    acts = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # (n, h, w, c)
    _, grid = interpret.cam_layer([SimpleNamespace(model=SimpleNamespace(output_fmt="NHWC"))])
    np.testing.assert_array_equal(grid(acts, (96, 128)), acts.transpose(0, 3, 1, 2))
    _, grid = interpret.cam_layer([SimpleNamespace(model=SimpleNamespace())])
    with pytest.raises(NotImplementedError, match=r"needs a spatial feature map.*\(2, 5\)"):
        grid(np.zeros((2, 5)), (64, 64))


def test_embed_2d_gives_one_point_per_row_even_for_tiny_sets():
    rng = np.random.default_rng(0)
    assert interpret.embed_2d(rng.normal(size=(8, 5))).shape == (8, 2)
    assert interpret.embed_2d(rng.normal(size=(2, 5))).shape == (2, 2)


def test_cam_slots_start_a_row_per_class():
    slots = interpret.cam_slots(["real", "real", "real", "fake", "fake"], ncols=2)
    assert slots == [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1)]


# ------------------------------------------------------------------------------------------- top losses
def test_top_losses_rank_by_minus_log_p_of_the_saved_probabilities(runs):
    run = runs["test_resnet"]
    ids = pd.read_csv(run.path / "valid_ids.csv", dtype=str)
    p = np.load(run.path / "valid_probs.npy").astype(np.float64)
    loss = -np.log(np.where(ids.label == "fake", p, 1 - p))
    rows = interpret.top_losses(interpret.valid_images(run), ("real", "fake"), k=None)
    assert rows["id"].tolist() == ids.id[np.argsort(-loss, kind="stable")].tolist()
    assert rows["rank"].tolist() == list(range(1, len(ids) + 1))
    np.testing.assert_allclose(rows["loss"], np.sort(loss)[::-1], rtol=1e-6)
    assert rows["loss"].mean() == pytest.approx(run.metrics["log_loss"], rel=1e-5)  # what the leaderboard scored
    assert ((rows["predicted"] == "fake") == (rows["prob"] >= 0.5)).all()
    assert (rows["p_predicted"] >= 0.5).all()


def test_top_losses_figure_shows_each_cached_image_with_its_classes(runs):
    run = runs["test_resnet"]
    rows = interpret.top_losses(interpret.valid_images(run), ("real", "fake"), k=5)
    fig = interpret.top_losses_figure(rows, "Top losses")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5
    np.testing.assert_allclose(shown[0].images[0].get_array(), interpret.load_image(rows.path[0]))
    first = rows.iloc[0]
    assert shown[0].get_title() == (f"#1 actual: {first.label}\npredicted: {first.predicted} "
                                    f"({first.p_predicted:.2f})\nloss {first.loss:.2f}")


# --------------------------------------------------------------------------------------------- Grad-CAM
@pytest.mark.parametrize("arch", ARCHS)
def test_grad_cam_heatmaps_cover_the_image(runs, learners, arch):
    run, learn = runs[arch], learners[arch]
    frame = interpret.valid_images(run)
    cam = interpret.grad_cam(learn, frame["path"].tolist(), bs=5)  # several batches
    n = len(frame)
    assert cam.images.shape == (n, PX, PX, 3) and cam.heat.shape == cam.images.shape[:3]
    assert cam.heat.min() >= 0 and cam.heat.max() <= 1 and 0 <= cam.images.min() and cam.images.max() <= 1
    flat = cam.heat.max(axis=(1, 2)) == cam.heat.min(axis=(1, 2))
    assert np.allclose(cam.heat[flat], 0)  # a flat map means "no positive evidence" (ReLU), never a guess
    # Two classes: log p(real) and log p(fake) have opposite gradients, so a class with no positive evidence
    # anywhere (common in a barely trained model) leaves a full map for the other: never both flat.
    by_class = np.stack([interpret.grad_cam(learn, frame["path"].tolist(), target=c, bs=5).heat for c in cam.vocab])
    spans = by_class.max(axis=(2, 3)) - by_class.min(axis=(2, 3))  # (classes, images)
    assert (spans.max(axis=0) > 0.99).all()
    np.testing.assert_allclose(cam.heat, by_class[cam.target, np.arange(n)], atol=1e-6)  # default: predicted class
    # the same inputs as training's own prediction: the maps explain exactly what was scored
    fake = cam.vocab.index("fake")
    np.testing.assert_allclose(cam.probs[:, fake], run.valid["prob"], atol=1e-4)
    np.testing.assert_array_equal(cam.target, cam.probs.argmax(1))


def test_grad_cam_equals_a_direct_computation_on_the_body_output(runs, learners):
    import torch

    learn = learners["test_resnet"]
    paths = interpret.valid_images(runs["test_resnet"])["path"].tolist()[:4]
    cam = interpret.grad_cam(learn, paths, target="fake")
    (xb,) = learn.dls.test_dl(paths).one_batch()
    body, head = learn.model.eval()[0], learn.model[1]
    feats = body(xb.as_subclass(torch.Tensor))
    score = head(feats).log_softmax(1)[:, cam.vocab.index("fake")].sum()
    grads = torch.autograd.grad(score, feats)[0]
    expected = [interpret.heatmap(a, g, (PX, PX))
                for a, g in zip(feats.detach().numpy(), grads.numpy(), strict=True)]
    np.testing.assert_allclose(cam.heat, np.stack(expected), atol=1e-5)
    assert (cam.target == cam.vocab.index("fake")).all()


def test_grad_cam_figure_pairs_images_with_overlays(runs, learners):
    run = runs["test_convnext"]
    rows = pd.concat(interpret.pick_per_class(interpret.valid_images(run), 3))
    cam = interpret.grad_cam(learners["test_convnext"], rows["path"].tolist())
    fig = interpret.grad_cam_figure(cam, rows["label"].tolist(), "Grad-CAM", ncols=3)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert len(titles) == 2 * len(rows) == 12
    assert titles[0].startswith("actual: real") and titles[-1].startswith("Grad-CAM for ")


# ------------------------------------------------------------------------------------------------ t-SNE
def test_tsne_has_one_point_per_validation_image_and_both_classes(runs, learners):
    run, learn = runs["test_efficientnet"], learners["test_efficientnet"]
    frame = interpret.valid_images(run)
    points = interpret.tsne_points(learn, frame)
    assert points["id"].tolist() == frame["id"].tolist() and np.isfinite(points[["x1", "x2"]]).all().all()
    features = interpret.embeddings(learn, frame["path"].tolist()[:3])
    assert features.shape == (3, 512)  # the input of fastai's head's last Linear(512, 2)
    fig = interpret.tsne_figure(points, ("real", "fake"))
    legend = " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert "real" in legend and "fake" in legend
    assert len(interpret.tsne_points(learn, frame, max_images=5)) == 5


# ----------------------------------------------------------------------------------------------- report
def _pngs(text: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(PNG_URI, text)]


def _sweep(runs: dict[str, Run], tmp: Path, names: list[str]) -> Path:
    """A sweep folder holding copies of the named runs (a test may damage them) and its sweep.yaml."""
    sweep_dir = tmp / "runs" / "demo"
    for name in names:
        shutil.copytree(runs[name].path, sweep_dir / name)
    sweep = SweepConfig(name="demo", runs_dir=str(tmp / "runs"), runs=[{"name": n, "arch": n} for n in names])
    atomic.write_text(sweep_dir / "sweep.yaml", yaml.safe_dump(dataclasses.asdict(sweep), sort_keys=False))
    return sweep_dir


def _section(text: str, run: str) -> str:
    section = text[text.index(f'id="run-{run}"'):]
    return section[:section.index("</section>")]


def test_report_embeds_the_inspection_unless_asked_not_to(runs, tmp_path):
    sweep_dir = _sweep(runs, tmp_path, ["test_vit"])
    text = write_report(sweep_dir, tmp_path / "no_submissions").read_text()
    pngs = _pngs(text)
    assert len(pngs) == 1 + 3 + 3  # ROC, then the run's 3 plots and its 3 inspection figures
    assert text.count("<h3>Inspection</h3>") == 1 and "not shown" not in text
    assert all(struct.unpack(">II", png[16:24])[0] >= 780 for png in pngs)  # none shrunk to unreadable
    assert all(f'alt="{what} test_vit"' in text for what in ("top losses", "Grad-CAM", "t-SNE"))
    plain = write_report(sweep_dir, tmp_path / "no_submissions", interpret=False).read_text()
    assert len(_pngs(plain)) == 1 + 3 and "Inspection" not in plain


def test_report_survives_a_corrupted_learner_and_a_lost_image_cache(runs, tmp_path):
    sweep_dir = _sweep(runs, tmp_path, ["test_resnet", "test_convnext", "test_vit"])
    pkl = sweep_dir / "test_vit" / "learner.pkl"
    pkl.write_bytes(pkl.read_bytes()[:2000])  # truncated: torch cannot read it
    metrics = json.loads((sweep_dir / "test_vit" / "metrics.json").read_text())
    metrics["learner_sha256"] = hashlib.sha256(pkl.read_bytes()).hexdigest()  # trusted, so loading is tried
    atomic.write_json(sweep_dir / "test_vit" / "metrics.json", metrics)
    metrics = json.loads((sweep_dir / "test_convnext" / "metrics.json").read_text())
    atomic.write_json(sweep_dir / "test_convnext" / "metrics.json", {**metrics, "cache_dir": "/gone/64px"})
    text = write_report(sweep_dir, tmp_path / "no_submissions").read_text()
    assert len(_pngs(text)) == 1 + 3 * 3 + 3 + 1  # resnet in full; vit's top losses need no model
    assert re.search(r'class="note">not shown: learner: \w+', _section(text, "test_vit"))
    assert "not shown: validation images: FileNotFoundError: /gone/64px" in _section(text, "test_convnext")
    assert _section(text, "test_resnet").count("<img ") == 6
