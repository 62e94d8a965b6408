import pytest

from deepfake_fastai import models


def test_unknown_arch_suggests_close_names():
    with pytest.raises(models.ArchError, match=r"'resnet5O' is not a timm model.*resnet50"):
        models.check_arch("resnet5O")
    models.check_arch("convnext_small_in22k")  # legacy names from the seed notebook still pass


@pytest.mark.parametrize("arch, mean0", [
    ("resnet50", 0.485), ("vit_small_patch16_224", 0.5), ("tf_efficientnetv2_s", 0.5),
    ("convnext_small_in22k", 0.485),  # legacy alias: resolved through a built model
])
def test_normalisation_follows_the_pretrained_config(arch, mean0):
    assert models.norm_stats(arch).mean[0] == pytest.approx(mean0)


def test_vit_gets_img_size_and_a_local_weights_file_must_exist(tmp_path):
    assert models.timm_kwargs("vit_small_patch16_224", 128, None) == {"img_size": 128}
    assert models.timm_kwargs("resnet50", 128, None) == {}
    with pytest.raises(models.WeightsUnavailable, match=r"w.safetensors does not exist"):
        models.timm_kwargs("resnet50", 128, str(tmp_path / "w.safetensors"))
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"")
    assert models.timm_kwargs("resnet50", 64, str(f))["pretrained_cfg_overlay"] == {"file": str(f)}


def test_unreachable_hub_switches_to_offline_mode(monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "HF_HOST", ("127.0.0.1", 9))
    models.prepare_pretrained("resnet18", None)
    assert hf.HF_HUB_OFFLINE is True
