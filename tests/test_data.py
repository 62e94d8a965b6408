"""Data layer on real files the tests write: sources, bad images, conversions, the fixed split."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake_fastai import data
from deepfake_fastai.config import DataConfig
from tests.conftest import CIFAKE


def _img(path: Path, seed: int, mode: str = "RGB", px: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (px, px, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def _folder(root: Path, classes=("real", "fake"), n: int = 10) -> Path:
    for c, name in enumerate(classes):
        for i in range(n):
            _img(root / name / f"{i:03d} ({c}).png", seed=100 * c + i)
    for i in range(3):
        _img(root / "test" / f"t{i}.png", seed=999 + i)
    return root


def _cfg(tmp: Path, **kw) -> DataConfig:
    return DataConfig(source=kw.pop("source", "folder"), data_dir=str(tmp / "store"), **kw)


def test_folder_source_lists_classes_and_never_takes_test_for_a_class(tmp_path):
    root = _folder(tmp_path / "d", classes=("Human", "AI"))
    prepared = data.prepare(_cfg(tmp_path, path=str(root), positive_class="AI"), item_resize_px=32)
    assert (prepared.positive_class, prepared.negative_class) == ("AI", "Human")
    assert sorted(prepared.items.label.unique()) == ["AI", "Human"]
    assert sorted(prepared.test.id) == ["t0", "t1", "t2"]
    assert prepared.items.id.iloc[0] == "AI/000 (1).png"  # spaces and parentheses survive
    assert all(Image.open(p).size == (32, 32) for p in prepared.items.path)


def test_kaggle_layout_with_train_folder(tmp_path):
    root = tmp_path / "comp"
    _folder(root / "train", classes=("0", "1"), n=5)
    (root / "train" / "test").rename(root / "test")
    prepared = data.prepare(_cfg(tmp_path, path=str(root), positive_class="1"), item_resize_px=40)
    assert len(prepared.items) == 10 and len(prepared.test) == 3


def test_positive_class_must_exist(tmp_path):
    root = _folder(tmp_path / "d")
    with pytest.raises(data.DataError, match=r"positive class 'FAKE' not among the classes \['fake', 'real'\]"):
        data.prepare(_cfg(tmp_path, path=str(root), positive_class="FAKE"), item_resize_px=32)


def test_csv_source(tmp_path):
    images = tmp_path / "imgs"
    rows = [(_img(images / f"{i}.jpg", i).name, "fake" if i % 2 else "real") for i in range(12)]
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["file", "y"]).to_csv(csv, index=False)
    cfg = _cfg(tmp_path, source="csv", path=str(csv), fn_col="file", label_col="y")
    with pytest.raises(data.DataError, match=r"none of the 12 labelled images could be read.*0.jpg.*images_dir"):
        data.prepare(cfg, item_resize_px=32)  # names are relative to imgs/, not to the CSV's folder
    cfg = _cfg(tmp_path, source="csv", path=str(csv), fn_col="file", label_col="y", images_dir=str(images))
    prepared = data.prepare(cfg, item_resize_px=32)
    assert len(prepared.items) == 12 and (prepared.items.label == "fake").sum() == 6
    bad = _cfg(tmp_path, source="csv", path=str(csv))
    with pytest.raises(data.DataError, match=r"labels.csv: missing column\(s\) \['filename', 'label'\]"):
        data.prepare(bad, item_resize_px=32)


def test_bad_images_are_reported_and_skipped(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "fake" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = (root / "real" / "000 (0).png").read_bytes()
    (root / "real" / "truncated.png").write_bytes(good[: len(good) // 2])
    prepared = data.prepare(_cfg(tmp_path, path=str(root)), item_resize_px=32)
    assert set(prepared.bad_images.id) == {"fake/broken.png", "real/truncated.png"}
    assert not set(prepared.bad_images.id) & set(prepared.items.id)
    report = pd.read_csv(Path(tmp_path / "store" / "cache" / prepared.key / "bad_images.csv"))
    assert set(report.id) == {"fake/broken.png", "real/truncated.png"}


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_every_mode_becomes_8_bit_rgb(tmp_path, mode):
    src = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    if mode == "I;16":
        Image.fromarray((np.arange(1600).reshape(40, 40) * 40).astype(np.uint16)).save(src)
    else:
        _img(src, 1, mode=mode)
    dest = tmp_path / "out.png"
    assert data.cache_one(str(src), dest, max_px=64) is None
    out = Image.open(dest)
    assert out.mode == "RGB" and out.size == (40, 40)
    if mode == "I;16":  # 16-bit range scaled down, not clipped to white
        arr = np.asarray(out)[..., 0]
        assert arr.min() == 0 and 200 < arr.max() <= 255 and len(np.unique(arr)) > 100


def test_split_is_fixed_stratified_and_shared(tmp_path):
    root = _folder(tmp_path / "d", n=20)
    cfg = _cfg(tmp_path, path=str(root), valid_pct=0.25)
    first = data.prepare(cfg, item_resize_px=32)
    split_bytes = first.split_file.read_bytes()
    second = data.prepare(cfg, item_resize_px=24)  # another resolution, same split
    assert second.split_file.read_bytes() == split_bytes
    v1, v2 = first.items[first.items.is_valid], second.items[second.items.is_valid]
    assert list(v1.id) == list(v2.id)
    assert v1.label.value_counts().to_dict() == {"fake": 5, "real": 5}


def test_70_15_15_split_is_stratified_disjoint_and_stable(tmp_path):
    root = _folder(tmp_path / "d", n=40)
    cfg = _cfg(tmp_path, path=str(root), valid_pct=0.15, test_pct=0.15)
    first = data.prepare(cfg, item_resize_px=32)
    assert first.split_file.name == "split_v15_t15_s42.csv"
    split = pd.read_csv(first.split_file, dtype={"id": str})
    assert not (split.is_valid & split.is_test).any()
    for part in (split[split.is_test], split[split.is_valid]):  # 15% of each class, 6 of 40
        assert part.label.value_counts().to_dict() == {"fake": 6, "real": 6}
    assert sorted(first.labelled_test.id) == sorted(split[split.is_test].id)
    assert set(first.items.id).isdisjoint(first.labelled_test.id) and len(first.items) == 80 - 12
    first.split_file.unlink()  # made again from scratch: the same seed gives the same split
    again = data.prepare(cfg, item_resize_px=32)
    assert pd.read_csv(again.split_file, dtype={"id": str}).equals(split)
    other = data.prepare(dataclasses.replace(cfg, split_seed=7), item_resize_px=32)  # another seed: another file
    assert other.split_file.name == "split_v15_t15_s7.csv"
    assert set(other.labelled_test.id) != set(first.labelled_test.id)


def test_no_test_part_keeps_the_plain_stratified_split(tmp_path):
    from sklearn.model_selection import train_test_split

    root = _folder(tmp_path / "d", n=20)
    prepared = data.prepare(_cfg(tmp_path, path=str(root)), item_resize_px=32)
    labelled = data.list_labelled(_cfg(tmp_path, path=str(root)), root)
    _, valid = train_test_split(labelled.id, test_size=0.2, stratify=labelled.label, random_state=42)
    assert set(prepared.items[prepared.items.is_valid].id) == set(valid) and prepared.labelled_test.empty


def test_test_pct_must_leave_training_images():
    with pytest.raises(ValueError, match="test_pct"):
        DataConfig(valid_pct=0.5, test_pct=0.5)


def test_changed_data_is_refused_with_the_fix(tmp_path):
    root = _folder(tmp_path / "d")
    cfg = _cfg(tmp_path, path=str(root))
    data.prepare(cfg, item_resize_px=32)
    _img(root / "fake" / "new.png", 7)
    with pytest.raises(data.DataError, match=r"data changed since .*split_v20_t0_s42\.csv.*1 new.*Delete that file"):
        data.prepare(cfg, item_resize_px=32)


def test_cache_is_reused(tmp_path):
    root = _folder(tmp_path / "d", n=3)
    cfg = _cfg(tmp_path, path=str(root))
    p = data.prepare(cfg, item_resize_px=32)
    mtimes = [Path(x).stat().st_mtime_ns for x in p.items.path]
    again = data.prepare(cfg, item_resize_px=32)
    assert [Path(x).stat().st_mtime_ns for x in again.items.path] == mtimes


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(data.DataError, match=r"nope does not exist; fix data.path"):
        data.prepare(_cfg(tmp_path, path=str(tmp_path / "nope")), item_resize_px=32)


def test_kaggle_competition_without_credentials_fails_fast(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nokaggle"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kaggle/access_token either
    start = time.monotonic()
    with pytest.raises(data.DataError, match=r"needs Kaggle credentials.*kaggle.json.*KAGGLE_USERNAME"):
        data.prepare(_cfg(tmp_path, source="kaggle_competition", competition="some-comp"), item_resize_px=32)
    assert time.monotonic() - start < 60  # generous: the point is "no 47 s retry loop per call"


@pytest.mark.parametrize("source, field", [("kaggle_competition", "competition"), ("kaggle_dataset", "dataset")])
def test_kaggle_sources_offline_fail_fast_with_the_fix(tmp_path, monkeypatch, source, field):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0123")
    monkeypatch.setattr(data, "KAGGLE_HOST", ("127.0.0.1", 9))  # the network boundary: nothing listens
    with pytest.raises(data.DataError, match=r"cannot reach 127.0.0.1.*data.source: folder"):
        data.prepare(_cfg(tmp_path, source=source, **{field: "x/y" if field == "dataset" else "y"}), item_resize_px=32)


def test_competition_already_downloaded_is_used_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "KAGGLE_HOST", ("127.0.0.1", 9))
    _folder(tmp_path / "store" / "my-comp", n=4)
    prepared = data.prepare(_cfg(tmp_path, source="kaggle_competition", competition="my-comp"), item_resize_px=32)
    assert len(prepared.items) == 8 and len(prepared.test) == 3


@pytest.mark.skipif(not CIFAKE.is_dir(), reason="needs ../shared/data/cifake (only in the project workspace)")
def test_cifake_folder_lists_3000_images_with_fake_positive(tmp_path):
    cfg = DataConfig(source="folder", path=str(CIFAKE), data_dir=str(tmp_path))
    root, _ = data.resolve_root(cfg)
    frame = data.list_labelled(cfg, root)
    assert len(frame) == 3000 and frame.label.value_counts().to_dict() == {"fake": 1500, "real": 1500}
    assert any(" (" in i for i in frame.id)


def test_labels_from_a_file_name_rule(tmp_path):
    root = tmp_path / "flat"
    for i in range(8):  # the reference report's data: the last character of the stem is the class
        _img(root / "imgs" / f"pic{i:02d}_{i % 2}.png", seed=i)
    _img(root / "test" / "t0.png", seed=50)
    cfg = _cfg(tmp_path, path=str(root), label_from_name=r"_(\d)$", positive_class="1")
    prepared = data.prepare(cfg, item_resize_px=32)
    labels = dict(zip(prepared.items.id, prepared.items.label, strict=True))
    assert labels["imgs/pic03_1.png"] == "1" and labels["imgs/pic04_0.png"] == "0" and len(labels) == 8
    assert list(prepared.test.id) == ["t0"]  # test/ is never labelled
    _img(root / "imgs" / "oddname.png", seed=9)
    with pytest.raises(data.DataError, match=r"1 file name\(s\) .* do not match .*oddname.png"):
        data.prepare(_cfg(tmp_path / "b", path=str(root), label_from_name=r"_(\d)$", positive_class="1"), 32)


@pytest.mark.parametrize("pattern, match", [("[", "not a valid regex"), ("_\\d$", "needs one \\(group\\)")])
def test_a_bad_label_rule_is_a_config_error(pattern, match):
    from deepfake_fastai.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        DataConfig(source="folder", path="x", label_from_name=pattern)
