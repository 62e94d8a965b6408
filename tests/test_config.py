from pathlib import Path

import pytest

from deepfake_fastai.config import ConfigError, DataConfig, TrainConfig, dump_yaml, from_dict, load_train_config


def test_unknown_key_is_rejected_with_file_and_allowed_keys(tmp_path: Path):
    f = tmp_path / "run.yaml"
    f.write_text("arch: resnet18\nepochz: 3\n")
    with pytest.raises(ConfigError, match=r"run\.yaml.*unknown key\(s\) \['epochz'\].*epochs"):
        load_train_config(f)


@pytest.mark.parametrize("raw, match", [
    ({"epochs": "three"}, r"epochs must be int"),
    ({"lr": "fast"}, r"lr must be float"),
    ({"pretrained": 1}, r"pretrained must be bool"),
    ({"size": True}, r"size must be int"),
    ({"data": {"source": "ftp"}}, r"source must be one of"),
    ({"data": {"source": "folder"}}, r"needs data.path"),
    ({"data": {"valid_pct": 1.5}}, r"valid_pct must be between 0 and 1"),
    ({"bs": 10, "accum": 4}, r"divisible by accum"),
    ({"precision": "fp8"}, r"precision must be one of"),
])
def test_bad_values_name_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(TrainConfig, raw, "x.yaml")


def test_int_is_accepted_for_float_and_yaml_round_trips(tmp_path: Path):
    cfg = from_dict(TrainConfig, {"lr": 1, "data": {"source": "folder", "path": "/x"}})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    f = tmp_path / "config.yaml"
    f.write_text(dump_yaml(cfg))
    assert load_train_config(f) == cfg


def test_micro_batch_and_run_name():
    cfg = TrainConfig(arch="vit_small_patch16_224", size=224, item_resize_px=128, bs=64, accum=4, seed=1)
    assert cfg.micro_bs == 16
    assert cfg.run_name == "vit_small_patch16_224_r128-224_fine_tune_s1"
    named = TrainConfig(arch="convnext_small.fb_in22k", size=64).run_name
    assert named == "convnext_small-fb_in22k_r64-64_fine_tune_s42"


def test_not_a_mapping(tmp_path: Path):
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a YAML mapping"):
        load_train_config(f)
    assert DataConfig().positive_class == "fake"
