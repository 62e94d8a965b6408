"""NPR input (npr.py): the residual itself, the prefix on any timm model, npr_resnet, grid-keeping data, and
real trainings whose exported learners predict the same in a fresh process."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from deepfake_fastai import runfolder
from deepfake_fastai.callbacks import GridCrop
from deepfake_fastai.config import ConfigError, TrainConfig
from deepfake_fastai.npr import NPR_SCALE, NPRInput, npr_residual, with_npr_input
from deepfake_fastai.train import train
from tests.conftest import tiny_train_kwargs


def test_nearest_upsampled_image_has_zero_residual_and_a_random_one_does_not():
    small = torch.rand(2, 3, 16, 16)
    upsampled = torch.nn.functional.interpolate(small, scale_factor=2, mode="nearest")
    assert torch.equal(npr_residual(upsampled), torch.zeros_like(upsampled))
    noise = torch.rand(2, 3, 32, 32)
    assert npr_residual(noise).abs().mean() > 0.1


def test_residual_matches_the_reference_formula_and_handles_odd_sides():
    x = torch.rand(1, 3, 32, 32)
    down = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
    up = torch.nn.functional.interpolate(down, scale_factor=2, mode="nearest", recompute_scale_factor=True)
    torch.testing.assert_close(npr_residual(x), x - up)  # the reference code's x - interpolate(x, 0.5)
    odd = torch.rand(1, 3, 7, 5)
    r = npr_residual(odd)
    assert r.shape == odd.shape and torch.equal(r[..., 0::2, 0::2], torch.zeros_like(r[..., 0::2, 0::2]))


def test_npr_resnet_is_the_papers_size_and_a_timm_model():
    model = timm.create_model("npr_resnet", num_classes=1)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 1.44  # the paper's ~1.44 M
    body = timm.create_model("npr_resnet", num_classes=0)  # how fastai's vision_learner builds it
    assert body(torch.rand(2, 3, 64, 64)).shape == (2, 512)
    assert body.forward_features(torch.rand(2, 3, 64, 64)).shape == (2, 512, 8, 8)
    with pytest.raises(ValueError, match="from scratch"):
        timm.create_model("npr_resnet", pretrained=True)


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto", "vit_tiny_patch16_224", "tf_efficientnetv2_b0"])
def test_prefix_sits_before_the_first_conv_of_each_family(arch):
    kwargs = {"img_size": 64} if arch.startswith("vit") else {}
    plain = timm.create_model(arch, num_classes=0, **kwargs).eval()
    prefixed = with_npr_input(with_npr_input(copy.deepcopy(plain)))  # same weights; twice is once
    assert sum(isinstance(m, NPRInput) for m in prefixed.modules()) == 1
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(prefixed(x), plain(npr_residual(x) * NPR_SCALE))


@pytest.mark.parametrize("settings, message", [
    ({"input": "npr", "aug": "fastai"}, "aug: fastai"),
    ({"arch": "npr_resnet", "size": 63}, "must be even"),
    ({"input": "npr", "size": 64, "item_resize_px": 32}, "would up-sample"),
])
def test_settings_that_would_resample_an_npr_input_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


def test_grid_crop_never_resamples_and_keeps_even_offsets():
    pixels = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    crop = GridCrop(32)
    for _ in range(20):
        out = np.asarray(crop(img, split_idx=0))
        x, y = crop.tl
        assert x % 2 == 0 and y % 2 == 0 and np.array_equal(out, pixels[y:y + 32, x:x + 32])
    out = np.asarray(crop(img, split_idx=1))  # validation: the same central crop every time
    assert crop.tl == (8, 4) and np.array_equal(out, pixels[4:36, 8:40])
    assert np.asarray(GridCrop(40)(Image.fromarray(pixels[:40, :40]), split_idx=0)) is not None


def _predicts_the_same_in_a_fresh_process(result) -> None:
    d = result.run_dir
    script = textwrap.dedent(f"""
        import sys, numpy as np, pandas as pd
        from deepfake_fastai import load_learner
        learn = load_learner({str(d / 'learner.pkl')!r})
        from deepfake_fastai.npr import NPRInput
        assert any(isinstance(m, NPRInput) for m in learn.model.modules())
        ids = pd.read_csv({str(d / 'valid_ids.csv')!r}, dtype=str).id
        cache = {str(runfolder.cache_dir(d))!r}
        paths = [cache + '/' + i + '.png' for i in ids]
        preds, _ = learn.get_preds(dl=learn.dls.test_dl(paths))
        np.save(sys.argv[1], preds[:, list(learn.dls.vocab).index('fake')].numpy())
    """)
    out = d.parent / "fresh.npy"
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, cwd=d.parent,
                   env={**os.environ, "PYTHONPATH": ""})
    np.testing.assert_allclose(np.load(out), np.load(d / "valid_probs.npy"), atol=1e-5)


@pytest.mark.parametrize("arch, options", [("test_resnet", {"input": "npr"}), ("npr_resnet", {})])
def test_npr_learner_exports_and_predicts_the_same_in_a_fresh_process(tiny_data, tmp_path, arch, options):
    result = train(**tiny_train_kwargs(tmp_path, tiny_data, arch=arch, tta_n=0, **options))
    assert result.metrics["input"] == ("npr" if options else "rgb")
    _predicts_the_same_in_a_fresh_process(result)


def test_npr_with_tta_and_the_bce_recipe_trains(tiny_data, tmp_path):
    result = train(**tiny_train_kwargs(tmp_path, tiny_data, input="npr", recipe="effnetv2_bce", tta_n=2))
    probs = np.load(result.run_dir / "valid_probs.npy")
    assert np.isfinite(probs).all() and len(probs) == result.metrics["n_valid"]
    assert "_npr_" in result.run_dir.name


def test_npr_cache_crops_large_images_instead_of_shrinking_them(tmp_path):
    from deepfake_fastai.data import cache_one

    pixels = np.random.default_rng(1).integers(0, 255, (90, 101, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.png")
    assert cache_one(str(tmp_path / "big.png"), tmp_path / "crop.png", 64, crop=True) is None
    cached = np.asarray(Image.open(tmp_path / "crop.png"))
    assert cached.shape == (64, 64, 3) and np.array_equal(cached, pixels[12:76, 18:82])  # even corner, central
    assert cache_one(str(tmp_path / "big.png"), tmp_path / "shrunk.png", 64) is None
    assert Image.open(tmp_path / "shrunk.png").size == (64, 57)  # the default still shrinks


def test_input_npr_on_npr_resnet_keeps_its_one_built_in_prefix():
    from deepfake_fastai.npr import for_input

    model = for_input(timm.create_model("npr_resnet", num_classes=0), "npr", "npr_resnet")
    assert sum(isinstance(m, NPRInput) for m in model.modules()) == 1  # NPR of NPR would rescale the input
    plain = for_input(timm.create_model("resnet18", num_classes=0), "rgb", "resnet18")
    assert not any(isinstance(m, NPRInput) for m in plain.modules())
