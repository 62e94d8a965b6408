"""The one fixed split of a data set: labelled test part, then validation or K folds; group-aware; written once.

Every run of a data set reads the same split file, so validation (or out-of-fold) predictions of different runs
line up row by row. With groups (``data.group_from_name`` / ``data.group_col``: the video, the identity, the
source photo) every group lies on one side of every cut: frames of one video in training and in validation let
a model recognise the clip instead of the fake (DFDC and DeepfakeBench split by video for this reason).

Split file columns: id, label, is_valid, is_test, then group (with groups) and fold (with folds: 0..K-1, -1 for
the labelled test part; ``is_valid`` is then False everywhere: a fold run validates on ``fold == data.fold``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import atomic
from .config import DataConfig

log = logging.getLogger(__name__)

NO_FOLD = -1  # fold of the labelled test part: never trained or validated on


class DataError(ValueError):
    """The data cannot be used as configured; the message says which file and how to fix it (data.py raises it
    too: it is defined here, the lower of the two modules)."""


# ------------------------------------------------------------------------------------------------ groups
def name_groups(ids: Sequence[str], pattern: str) -> list[str | None]:
    """The group of each id: the first regex group searched in the file's stem (None where it does not match)."""
    rule = re.compile(pattern)
    return [m.group(1) if (m := rule.search(Path(i).stem)) else None for i in ids]


def with_groups(frame: pd.DataFrame, cfg: DataConfig, where: str) -> pd.DataFrame:
    """``frame`` (id, ...) with a ``group`` column from ``data.group_from_name``; unmatched names are refused."""
    groups = name_groups(list(frame.id), cfg.group_from_name)
    unmatched = [i for i, g in zip(frame.id, groups, strict=True) if not g]
    if unmatched:
        raise DataError(f"{len(unmatched)} file name(s) under {where} do not match data.group_from_name "
                         f"'{cfg.group_from_name}' (its first group must find a non-empty group in each file "
                         f"stem), e.g. {unmatched[:3]}; fix the pattern or rename those files")
    return frame.assign(group=groups)


def mixed_groups(frame: pd.DataFrame) -> pd.Series:
    """Groups holding images of both classes (label count per group > 1), largest first."""
    per = frame.groupby("group").label.nunique()
    mixed = per[per > 1].index
    return frame[frame.group.isin(mixed)].group.value_counts()


def report_mixed_groups(frame: pd.DataFrame) -> int:
    mixed = mixed_groups(frame)
    if len(mixed):
        log.warning("%d group(s) hold images of both classes (e.g. %s): each stays on one side of the split, so "
                    "neither side has only one class of it; check the group rule if groups should be one class "
                    "(a video is real or fake)", len(mixed), list(mixed.index[:3]))
    return len(mixed)


# ------------------------------------------------------------------------------------------------ the file
def split_name(cfg: DataConfig) -> str:
    """File name of a split: its parameters are in the name, so another split never reuses a stale file.

    Without groups and folds the name is what it always was (split_v20_t0_s42.csv), so old runs still match."""
    base = f"split_k{cfg.folds}" if cfg.folds else f"split_v{cfg.valid_pct * 100:g}"
    rule = f"name:{cfg.group_from_name}" if cfg.group_from_name else f"col:{cfg.group_col}"
    grouped = f"_g{hashlib.sha1(rule.encode()).hexdigest()[:8]}" if cfg.grouped else ""
    return f"{base}_t{cfg.test_pct * 100:g}_s{cfg.split_seed}{grouped}.csv"


def read_split(split_file: Path) -> pd.DataFrame:
    """A split file: ids, labels and groups as text (ids like 000123 or NA stay strings), flags as bool."""
    split = pd.read_csv(split_file, dtype=str, keep_default_na=False)
    for flag in ("is_valid", "is_test"):
        split[flag] = split[flag].map({"True": True, "False": False})
    if "fold" in split.columns:
        split["fold"] = split.fold.astype(int)
    return split


def fixed_split(frame: pd.DataFrame, split_file: Path, cfg: DataConfig) -> pd.DataFrame:
    """Read the data set's split file, or make it once and write it (columns: see the module docstring).

    Stratified and seeded: the labelled test part (``test_pct``) first, then validation (``valid_pct``, rescaled
    so the fractions are of the whole set: 70/15/15 = 0.15, 0.15) or ``folds`` folds of the rest.
    """
    if split_file.exists():
        split = read_split(split_file)
        _check_split_matches(split, frame, split_file)
        return split
    split = make_split(frame, cfg)
    atomic.write_csv(split_file, split)
    return split


def make_split(frame: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """The split of ``frame`` (id, label[, group]) as ``cfg`` asks; pure (no files)."""
    columns = ["id", "label", *(["group"] if "group" in frame.columns else [])]
    split = frame[columns].reset_index(drop=True).assign(is_valid=False, is_test=False)
    if cfg.test_pct:
        split["is_test"] = _hold_out(split, cfg.test_pct, cfg.split_seed, "labelled test part (data.test_pct)")
    rest = ~split.is_test
    if cfg.folds:
        _check_groups_per_class(split[rest], cfg.folds)
        split["fold"] = NO_FOLD
        split.loc[rest, "fold"] = _folds(split[rest], cfg.folds, cfg.split_seed)
    else:
        share = cfg.valid_pct / (1.0 - cfg.test_pct)
        split.loc[rest, "is_valid"] = _hold_out(split[rest], share, cfg.split_seed, "validation (data.valid_pct)")
    return split[[*columns, "is_valid", "is_test", *(["fold"] if cfg.folds else [])]]


def _hold_out(split: pd.DataFrame, share: float, seed: int, what: str) -> np.ndarray:
    """A stratified, seeded boolean mask of ``share`` of the rows (whole groups when the frame has groups)."""
    if "group" not in split.columns:
        from sklearn.model_selection import train_test_split

        _, held = train_test_split(split.id, test_size=share, stratify=split.label, random_state=seed)
        mask = split.id.isin(set(held)).to_numpy()
    else:  # StratifiedGroupKFold has no "share": the first of round(1 / share) folds is the closest cut
        n = max(2, round(1.0 / share))
        mask = _folds(split, n, seed, what) == 0
    return _every_class_on_both_sides(split, mask, seed)


def _folds(split: pd.DataFrame, k: int, seed: int, what: str = "data.folds") -> np.ndarray:
    """Fold number (0..k-1) of each row: stratified by label, whole groups when the frame has groups."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    smallest = int(split.label.value_counts().min())
    if "group" in split.columns:
        n_groups = split.group.nunique()
        if n_groups < k:
            raise DataError(f"{what} needs at least {k} groups to cut, found {n_groups}; use fewer folds / a "
                             f"larger share, or check the group rule (one group per video, not per class)")
        cuts = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(split.id, split.label, split.group)
    else:
        if smallest < k:
            raise DataError(f"{what}: {k} folds need at least {k} images of each class, the rarer has "
                             f"{smallest}; use fewer folds or add images")
        cuts = StratifiedKFold(k, shuffle=True, random_state=seed).split(split.id, split.label)
    fold = np.full(len(split), NO_FOLD)
    for i, (_, held) in enumerate(cuts):
        fold[held] = i
    return fold


def _check_groups_per_class(split: pd.DataFrame, k: int) -> None:
    """Each of k validation folds needs a group of each class, or its AUC is undefined (a NaN in the run's scores)."""
    if "group" not in split.columns:
        return
    per_class = split.groupby("label").group.nunique()
    if per_class.min() < k:
        raise DataError(f"data.folds: {k} folds need at least {k} groups of each class for every fold to hold both "
                        f"classes; groups per class: {per_class.to_dict()}. Use at most {int(per_class.min())} folds")


def _every_class_on_both_sides(split: pd.DataFrame, mask: np.ndarray, seed: int) -> np.ndarray:
    """Move one seeded unit (an image, or a whole group) of a class missing from one side over: stratified
    rounding of a rare class can leave validation without it, and then AUC is undefined."""
    mask = mask.copy()
    rng = np.random.default_rng(seed)
    unit = split.group.to_numpy() if "group" in split.columns else np.arange(len(split))
    labels = split.label.to_numpy()
    for label in sorted(set(labels)):
        for side in (True, False):
            mine = labels == label
            if (mine & (mask == side)).any() or (mine & (mask != side)).sum() < 2:
                continue
            candidates = sorted(set(unit[mine & (mask != side)]), key=str)
            if len(candidates) < 2 and "group" in split.columns:
                continue  # one group holds the whole class: moving it would only empty the other side
            mask[unit == candidates[rng.integers(len(candidates))]] = side
    return mask


def _check_split_matches(split: pd.DataFrame, frame: pd.DataFrame, split_file: Path) -> None:
    new, gone = set(frame.id) - set(split.id), set(split.id) - set(frame.id)
    if new or gone:
        raise DataError(
            f"the data changed since {split_file} was written ({len(new)} new, {len(gone)} missing images). "
            f"Delete that file to make a new split; runs made with the old split cannot be ensembled "
            f"with new ones."
        )


def validation_of(split: pd.DataFrame, fold: int | None = None) -> pd.Series:
    """Which rows a run validates on: ``is_valid``, or with folds the rows of fold ``fold`` (data.fold; fold 0
    when none is given, e.g. `deepfake-fastai data`)."""
    if "fold" not in split.columns:
        return split.is_valid
    return split.fold == (fold or 0)


# ------------------------------------------------------------------------------------------------ leak warning
NAME_KEY = re.compile(r"([ _.\-]*(\(\d+\)|\d+))+$")  # trailing frame/face/copy numbers: _17_0, -3, " (2)", .001
MIN_KEYS = 10  # fewer distinct keys: names say nothing about groups (e.g. fake_0001, real_0001: 2 keys)
MAX_KEY_SHARE = 0.10  # a key holding more of the images is a class or a source, not a video
SHARED_SHARE = 0.25  # warn when at least this share of validation images has a key also in training


def name_key(image_id: str) -> str:
    """The part of a file stem that would name its video: the stem without trailing number fields
    (aaaaqqicldbtmjpgcdsuljwmsuznhfwyp_17_0 -> aaaaqqicldbtmjpgcdsuljwmsuznhfwyp)."""
    return NAME_KEY.sub("", Path(image_id).stem)


def shared_name_keys(split: pd.DataFrame) -> tuple[float, str | None]:
    """Share of validation images whose name key also names a training image, and an example key; (0, None)
    when the names do not look like groups (under MIN_KEYS keys, or one key over MAX_KEY_SHARE of the images)."""
    keys = split.id.map(name_key)
    counts = keys[keys != ""].value_counts()
    if len(counts) < MIN_KEYS or counts.iloc[0] > MAX_KEY_SHARE * len(split):
        return 0.0, None
    valid = validation_of(split)
    train = ~valid & ~split.is_test
    shared = keys[valid].isin(set(keys[train])) & (keys[valid] != "")
    return float(shared.mean()) if valid.any() else 0.0, (keys[valid][shared].iloc[0] if shared.any() else None)


def names_suggest_groups(split: pd.DataFrame) -> str | None:
    """The warning when many validation images share a name key with training images (frames of one video on
    both sides of a split made without groups), or None."""
    if "group" in split.columns:
        return None
    share, example = shared_name_keys(split)
    if share < SHARED_SHARE:
        return None
    return (f"{100 * share:.0f}% of validation images share a file-name prefix with training images (e.g. "
            f"'{example}_*'): if these are frames of one video or crops of one photo, validation scores are inflated "
            f"(the model can recognise the clip). Split by group: data.group_from_name: '^([^_]+)_' (--group-from-"
            f"name; README: Leakage), or data.group_col for a CSV")


def warn_if_names_suggest_groups(split: pd.DataFrame) -> str | None:
    message = names_suggest_groups(split)
    if message:
        log.warning("%s", message)
    return message
