"""The split file with groups and folds, and the warning when file names suggest groups: pure, on id lists."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from deepfake_fastai import data, splits
from deepfake_fastai.config import ConfigError, DataConfig

VIDEO = "^([a-z]+)_"


def videos(n_videos: int = 40, frames: int = 6, mixed: int = 0) -> pd.DataFrame:
    """id, label, (no group yet) of frames named like DFDC crops: <video>_<frame>_0.png, half the videos fake;
    the first ``mixed`` videos hold frames of both classes."""
    rows = []
    for v in range(n_videos):
        name = "".join(chr(ord("a") + (v * 7 + k * 3) % 26) for k in range(10)) + chr(ord("a") + v % 26)
        for f in range(frames):
            label = "fake" if (v % 2 if v >= mixed else f % 2) else "real"
            rows.append((f"{label}/{name}_{f}_0.png", label))
    return pd.DataFrame(rows, columns=["id", "label"])


def grouped(frame: pd.DataFrame, **cfg) -> tuple[pd.DataFrame, DataConfig]:
    config = DataConfig(group_from_name=VIDEO, **cfg)
    return splits.with_groups(frame, config, "test data"), config


def sides(split: pd.DataFrame) -> pd.Series:
    """The side of each row: test, valid, or the fold number."""
    side = split.is_test.map({True: "test", False: "train"})
    side[split.is_valid] = "valid"
    if "fold" in split.columns:
        side[~split.is_test] = split.fold[~split.is_test].astype(str)
    return side


@pytest.mark.parametrize("cfg", [dict(valid_pct=0.2), dict(valid_pct=0.15, test_pct=0.15), dict(folds=5),
                                 dict(folds=3, test_pct=0.2)])
def test_with_groups_no_group_straddles_any_cut(cfg):
    frame, config = grouped(videos(), **cfg)
    split = splits.make_split(frame, config)
    per_group = split.assign(side=sides(split)).groupby("group").side.nunique()
    assert per_group.max() == 1, per_group[per_group > 1]
    assert list(split.group) == list(frame.group)  # the split file records each image's group
    for side, rows in split.groupby(sides(split)):  # every side holds both classes (AUC defined everywhere)
        assert set(rows.label) == {"real", "fake"}, side
    if "folds" in cfg:  # each labelled non-test image in exactly one fold
        assert sorted(split.fold[~split.is_test].unique()) == list(range(cfg["folds"]))
        assert (split.fold[split.is_test] == splits.NO_FOLD).all()
    else:
        held = split.is_valid.mean()
        assert abs(held - cfg["valid_pct"]) < 0.06, held  # whole groups of 6: close to the share asked


def test_the_random_split_keeps_its_file_name_and_rows():
    frame = videos()
    plain = splits.make_split(frame, DataConfig())
    from sklearn.model_selection import train_test_split

    _, valid = train_test_split(frame.id, test_size=0.2, stratify=frame.label, random_state=42)
    assert set(plain.id[plain.is_valid]) == set(valid)  # runs made before groups existed still line up
    assert splits.split_name(DataConfig()) == "split_v20_t0_s42.csv"
    names = {splits.split_name(DataConfig(**c)) for c in
             [{}, dict(folds=5), dict(group_from_name=VIDEO), dict(group_from_name="^(.+?)_\\d"),
              dict(folds=5, group_from_name=VIDEO)]}
    assert len(names) == 5  # another group rule or fold count is another split file, never a stale one


def test_mixed_class_groups_are_reported(caplog):
    frame, config = grouped(videos(mixed=3))
    with caplog.at_level(logging.WARNING):
        split = splits.make_split(frame, config)
        assert splits.report_mixed_groups(split) == 3
    assert "3 group(s) hold images of both classes" in caplog.text


def test_too_few_groups_or_unmatched_names_are_refused_with_the_fix():
    frame, config = grouped(videos(n_videos=4), valid_pct=0.2)  # a 1/5 cut of 4 videos
    with pytest.raises(data.DataError, match=r"validation \(data.valid_pct\) needs at least 5 groups to cut, found 4"):
        splits.make_split(frame, config)
    odd = pd.concat([videos(), pd.DataFrame({"id": ["fake/NoVideoId.png"], "label": ["fake"]})])
    with pytest.raises(data.DataError, match=r"1 file name\(s\) under test data do not match data.group_from_name "
                                             r".*NoVideoId"):
        splits.with_groups(odd, DataConfig(group_from_name=VIDEO), "test data")


def test_config_refuses_one_fold_and_a_group_column_without_a_csv():
    with pytest.raises(ConfigError, match="data.folds must be 0 .* or a number of folds >= 2, got 1"):
        DataConfig(folds=1)
    with pytest.raises(ConfigError, match="data.group_col is for data.source: csv"):
        DataConfig(group_col="video")
    with pytest.raises(ConfigError, match="needs one \\(group\\) for the group"):
        DataConfig(group_from_name="^[a-z]+_")
    with pytest.raises(ConfigError, match="data.fold must be in 0..2"):
        DataConfig(folds=3, fold=3)


# ------------------------------------------------------------------------------------------------ the warning
def _warned(frame: pd.DataFrame, caplog, cfg: DataConfig | None = None) -> float:
    split = splits.make_split(frame, cfg or DataConfig())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        message = splits.warn_if_names_suggest_groups(split)
    share = 0.0 if "group" in split.columns else splits.shared_name_keys(split)[0]  # groups set: nothing to say
    warned = "share a file-name prefix with training images" in caplog.text
    assert warned == (share >= splits.SHARED_SHARE) == (message is not None)
    return share


def test_frames_of_one_video_on_both_sides_are_warned(caplog):
    assert _warned(videos(), caplog) > 0.9  # 6 frames a video, random split: nearly every valid frame's video
    assert "e.g. '" in caplog.text and "data.group_from_name" in caplog.text
    frame, config = grouped(videos())
    assert _warned(frame, caplog, config) == 0.0  # groups configured: nothing to warn about


def test_names_that_are_not_groups_are_not_warned(caplog):
    unique = pd.DataFrame({"id": [f"{c}/{i:08x}d{i * 7919 % 9973:x}.jpg" for i in range(200) for c in ["x"]],
                           "label": ["fake", "real"] * 100})  # one image per name key
    assert _warned(unique, caplog) == 0.0
    numbered = pd.DataFrame({"id": [f"{c}/{c}_{i:04d}.png" for c in ("fake", "real") for i in range(100)],
                             "label": ["fake"] * 100 + ["real"] * 100})  # keys "fake", "real": classes, not videos
    assert splits.shared_name_keys(splits.make_split(numbered, DataConfig()))[1] is None
    assert _warned(numbered, caplog) == 0.0


def test_the_warning_threshold_both_sides(caplog):
    """Pairs of images share a key; the rest are unique. The share of validation images with a key in training
    crosses SHARED_SHARE as more images come in pairs."""
    def frame(n_pairs: int) -> pd.DataFrame:
        ids = [f"p{i:03d}x_{k}" for i in range(n_pairs) for k in (0, 1)] + \
              [f"u{i:03d}y" for i in range(400 - 2 * n_pairs)]
        return pd.DataFrame({"id": ids, "label": ["fake", "real"] * 200})
    low, high = _warned(frame(20), caplog), _warned(frame(160), caplog)
    assert low < splits.SHARED_SHARE <= high


def test_run_names_say_folds_and_a_single_fold():
    from deepfake_fastai.config import TrainConfig

    assert TrainConfig().run_name == "resnet18_r64-64_fine_tune_s42"  # unchanged without folds
    assert TrainConfig(data=DataConfig(folds=5)).run_name == "resnet18_r64-64_fine_tune_s42_k5"
    assert TrainConfig(data=DataConfig(folds=5, fold=2)).run_name == "resnet18_r64-64_fine_tune_s42_k5f2"


def test_more_folds_than_groups_of_a_class_are_refused():
    frame, config = grouped(videos(n_videos=24), folds=20)  # 12 videos per class: 8 folds would lack a class
    with pytest.raises(data.DataError, match=r"20 folds need at least 20 groups of each class.*at most 12 folds"):
        splits.make_split(frame, config)


def test_ctrl_c_is_one_line_and_exit_code_130(monkeypatch):
    from deepfake_fastai import cli
    from tests.conftest import run_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_data", interrupted)  # the command itself: what a Ctrl-C interrupts
    rc, _, err = run_cli("data")
    assert rc == 130 and "interrupted: complete runs (and folds) are kept" in err and "Traceback" not in err
