"""Data layer: sources -> labelled listing -> pre-resize cache -> one fixed split -> fastai DataLoaders.

Every run of a data set shares the same cache and the same split file, so validation predictions of
different runs line up row by row (the ensembler depends on this).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from . import atomic
from .config import DataConfig
from .manifest import file_sha256
from .netcheck import reachable
from .progress import progress
from .splits import (
    DataError,
    fixed_split,
    name_groups,
    names_suggest_groups,
    read_split,
    report_mixed_groups,
    split_name,
    validation_of,
    warn_if_names_suggest_groups,
    with_groups,
)

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
NOT_CLASSES = {"test", "tests", "unseen", "__macosx"}  # folders that are never a class
KAGGLE_HOST = ("www.kaggle.com", 443)
MIN_SIDE_PX = 8  # smaller images carry no generator traces worth learning (a 1x1 image is a mistake, not data)
IMBALANCE_WARN = 0.1  # warn when the rarer class is under this share of the labelled images
NEGATIVE_NAMES = {"real", "genuine", "authentic", "original", "pristine", "human", "natural", "0"}  # of 3+
# classes, one of these is taken as the negative class the user meant (else the largest); the rest are strays


@dataclass(frozen=True)
class Prepared:
    """A data set ready for training: cached image paths, the fixed split and the test images."""

    key: str  # stable id of the source (cache and split are keyed by it)
    items: pd.DataFrame  # id, path (cached), label, is_valid: what training and validation see
    test: pd.DataFrame  # id, path (cached); empty when the source has no test folder
    unseen: pd.DataFrame  # id, path, label: optional labelled unseen/ folder (e.g. held-out generators)
    positive_class: str
    negative_class: str
    split_file: Path
    bad_images: pd.DataFrame  # id, source, error: skipped, never fatal
    labelled_test: pd.DataFrame  # id, path, label: the split's test part (data.test_pct), scored after training
    cache_dir: Path  # the cached images at item_resize_px (test/ and unseen/ in _test, _unseen below it); runs
    # record it, and every later stage takes it from there: the one place this path is computed is prepare()


# ---------------------------------------------------------------- sources


def resolve_root(cfg: DataConfig) -> tuple[Path, str]:
    """Folder (or CSV) holding the labelled data, and a stable key for it."""
    data_dir = Path(cfg.data_dir)
    if cfg.source == "synthetic":
        from .synthetic import FAMILIES, ensure_synthetic, spec_for

        held = tuple(cfg.synthetic_heldout)
        spec = spec_for(cfg.difficulty, n_labelled=cfg.synthetic_n, image_px=cfg.synthetic_px,
                        families=tuple(f for f in FAMILIES if f not in held), heldout_families=held)
        root = ensure_synthetic(spec, data_dir)
        return root, spec.key()
    if cfg.source in ("folder", "csv"):
        root = Path(cfg.path).expanduser().resolve()
        if not root.exists():
            raise DataError(f"data.path {root} does not exist; fix data.path in your config")
    elif cfg.source == "kaggle_competition":
        root = download_competition(cfg.competition, data_dir)
    else:
        root = download_dataset(cfg.dataset)
    if cfg.subdir:
        root = root / cfg.subdir
    return root, _key_for(root)


def check_source(cfg: DataConfig) -> None:
    """Checks that cost milliseconds, before any run starts: a local path must exist."""
    if cfg.source in ("folder", "csv") and not Path(cfg.path).expanduser().exists():
        raise DataError(f"data.path {Path(cfg.path).expanduser().resolve()} does not exist; fix data.path "
                        f"(or --path)")


def _key_for(root: Path) -> str:
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in root.stem)[:40]
    return f"{safe}-{digest}"


def _require_kaggle(what: str, need_credentials: bool) -> None:
    """Fail in seconds, with the fix, when credentials or the network are missing."""
    from .submissions_io import credential_source  # the one place that knows where the kaggle client looks

    if need_credentials and credential_source() is None:
        raise DataError(
            f"{what} needs Kaggle credentials and none were found. Fix: put kaggle.json in ~/.kaggle/ "
            f"(chmod 600) or set KAGGLE_USERNAME and KAGGLE_KEY; or download the data yourself and use "
            f"data.source: folder with data.path."
        )
    if not reachable(*KAGGLE_HOST):
        raise DataError(
            f"{what}: cannot reach {KAGGLE_HOST[0]} (offline?). Fix: download the data where you have "
            f"network, then use data.source: folder with data.path pointing at it."
        )


def download_competition(slug: str, data_dir: Path) -> Path:
    """The competition's files: ../input/<slug> on Kaggle, else downloaded once with fastkaggle."""
    on_kaggle = Path("../input") / slug
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") and on_kaggle.exists():
        return on_kaggle.resolve()
    local = Path(data_dir) / slug
    if local.is_dir() and any(local.iterdir()):
        return local.resolve()
    _require_kaggle(f"competition '{slug}'", need_credentials=True)
    from fastkaggle import setup_comp  # imports kaggle, which authenticates at import time

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(data_dir):  # setup_comp downloads into ./<slug>
        setup_comp(slug, install="")
    return local.resolve()


def download_dataset(handle: str) -> Path:
    """A Kaggle dataset via kagglehub (public datasets need no credentials)."""
    _require_kaggle(f"dataset '{handle}'", need_credentials=False)
    import kagglehub

    return Path(kagglehub.dataset_download(handle))


# ---------------------------------------------------------------- listing


def list_labelled(cfg: DataConfig, root: Path) -> pd.DataFrame:
    """id, source, label of every labelled image (id = path relative to the labelled root)."""
    if cfg.source == "csv":
        frame = _list_csv(cfg, root)
    elif cfg.label_from_name:
        frame = _list_by_name(_labelled_dir(root), cfg.label_from_name)
    else:
        frame = _list_folder(_labelled_dir(root))
    kind = "csv" if cfg.source == "csv" else "name" if cfg.label_from_name else "folder"
    if frame.empty and kind == "csv":
        raise DataError(f"{root}: no rows below the header; add one row per image ({cfg.fn_col},{cfg.label_col})")
    if frame.empty:
        raise DataError(f"no images found under {root}; expected one sub-folder per class")
    one_class = frame.label.nunique() == 1  # only then is it worth naming the empty class folders
    empty = _empty_class_dirs(_labelled_dir(root)) if one_class and kind == "folder" else []
    check_classes(frame, cfg.positive_class, str(root), empty, kind)
    if kind == "folder":  # a third, empty folder beside the two classes is ignored: say so (a misplaced class?)
        unused = [f"{d.name}/" for d in _class_dirs(_labelled_dir(root))[0] if d.name not in set(frame.label)]
        if unused:
            log.warning("folder(s) %s under %s hold no images: ignored; remove them, or move that class's images "
                        "there (a detector uses two classes)", unused, _labelled_dir(root))
    warn_if_imbalanced(frame)
    if cfg.group_from_name:
        frame = with_groups(frame, cfg, str(root))
    return frame.sort_values("id", ignore_index=True)


def check_classes(frame: pd.DataFrame, positive: str, where: str, empty_dirs: list[str] = (),
                  kind: str = "folder") -> None:
    """Exactly two classes, the positive one among them, each with enough images to train and validate.

    ``kind`` (folder | csv | name: data.label_from_name) picks the wording of the fix.
    """
    counts = frame.label.value_counts()
    classes = sorted(counts.index)
    empty = f"; empty class folder(s): {list(empty_dirs)}: put that class's images there" if empty_dirs else ""
    if len(classes) == 1:
        two = {"csv": "rows of two labels", "name": "file names of two classes"}.get(kind, "real/ and fake/ folders")
        raise DataError(f"only one class {classes} under {where}{empty}. A detector needs images of two classes "
                        f"(e.g. {two})")
    if positive not in classes:
        raise DataError(f"positive class '{positive}' not among the classes {classes} found in {where}; "
                        f"set data.positive_class to one of them")
    if len(classes) != 2:
        raise DataError(_stray_classes(frame, counts, positive, where, kind))
    few = {c: int(n) for c, n in counts.items() if n < 2}
    if few:
        raise DataError(f"{where}: class(es) {few} have fewer than 2 images; each class needs at least one image to "
                        f"train on and one to validate on: add images")


def _stray_classes(frame: pd.DataFrame, counts: pd.Series, positive: str, where: str, kind: str) -> str:
    """The error for 3+ classes: which ones look stray (not the positive, not the likely negative) and the fixes."""
    others = [c for c in counts.index if c != positive]  # largest first
    negative = next((c for c in others if str(c).strip().lower() in NEGATIVE_NAMES), others[0])
    stray = [c for c in others if c != negative]
    first = list(frame.id[frame.label.isin(stray)][:3])
    fix = {"csv": f"delete or relabel their rows in {where}",
           "name": "rename or move those files"}.get(kind, f"move the folder(s) {[f'{c}/' for c in stray]} out")
    return (f"expected 2 classes under {where}, found {len(counts)}: {counts.to_dict()}. With '{positive}' the "
            f"positive class and '{negative}' the likely negative one, the extra class(es) are {stray} (first: "
            f"{first}): {fix}. If the two classes are others, set data.positive_class (--positive-class) to one "
            f"of them and remove the rest")


def warn_if_imbalanced(frame: pd.DataFrame) -> float:
    """Warn when one class is rare (accuracy then says little); returns the rarer class's share."""
    counts = frame.label.value_counts()
    share = float(counts.min() / counts.sum())
    if share < IMBALANCE_WARN:
        log.warning("classes are imbalanced %s (%.0f:1): the split keeps both classes in validation, but accuracy "
                    "is misleading; judge runs by AUC / log loss, or add images of the rarer class",
                    counts.to_dict(), counts.max() / counts.min())
    return share


def _empty_class_dirs(folder: Path) -> list[str]:
    dirs, _ = _class_dirs(folder)
    return [f"{d.name}/" for d in dirs if not _walk(d)[0]]


def _labelled_dir(root: Path) -> Path:
    """Kaggle layouts put classes under train/; plain folders hold them directly."""
    return root / "train" if (root / "train").is_dir() else root


def _list_folder(folder: Path) -> pd.DataFrame:
    rows = []
    for class_dir in _class_dirs(folder)[0]:
        for f in _walk(class_dir)[0]:
            rows.append((f.relative_to(folder).as_posix(), str(f), class_dir.name))
    return pd.DataFrame(rows, columns=["id", "source", "label"])


def _class_dirs(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Sub-folders that are classes (links to folders elsewhere are followed here, once), and those skipped."""
    dirs, skipped = [], []
    for p in sorted(folder.iterdir()):
        reason = _skip_reason(p)
        if reason:
            skipped.append((p, reason))
        elif p.is_dir() and p.name.lower() not in NOT_CLASSES:
            dirs.append(p)
    return dirs, skipped


def _walk(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files below ``folder`` (sorted), and the entries skipped with the reason.

    os.walk never follows links to folders, so a link back up the tree cannot make the listing loop.
    """
    files, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = here / name
            reason = _skip_reason(path) or (_LINKED_DIR if name in dirnames and path.is_symlink() else None)
            if reason:
                skipped.append((path, reason))
            elif name in filenames and path.suffix.lower() in IMAGE_EXTS and path.is_file():
                files.append(path)
        dirnames[:] = sorted(d for d in dirnames if not _skip_reason(here / d))
    return sorted(files), skipped


_LINKED_DIR = "link to a folder inside a class folder: not followed (links can loop); copy or move the images in"


def _skip_reason(path: Path) -> str | None:
    """Why a listed entry is not data: hidden (.DS_Store, macOS ._ files, .ipynb_checkpoints) or a bad link."""
    if path.name.startswith("."):
        return "hidden file or folder: ignored (names starting with '.' are never data)"
    if not path.is_symlink():
        return None
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's "Symlink loop"
        return "symbolic link that loops or points nowhere: ignored; remove it"
    if target.is_dir() and path.parent.resolve().is_relative_to(target):
        return "symbolic link back up the tree (a loop): not followed; remove it"
    return None


def skipped_entries(cfg: DataConfig, root: Path) -> pd.DataFrame:
    """id, source, error of what the listing passed over: hidden files, link loops (for bad_images.csv)."""
    if cfg.source == "csv":
        return pd.DataFrame(columns=["id", "source", "error"])
    labelled = _labelled_dir(root)
    folders, skipped = ([labelled], []) if cfg.label_from_name else _class_dirs(labelled)
    for d in [*folders, _beside(root, "test"), _beside(root, "unseen")]:
        if d.is_dir():
            skipped += _walk(d)[1]
    rows = sorted({  # a set: test/ may be walked twice (inside the labelled folder too)
        (p.relative_to(labelled if p.is_relative_to(labelled) else root).as_posix(), str(p), why)
        for p, why in skipped})
    return pd.DataFrame(rows, columns=["id", "source", "error"])


def _list_by_name(folder: Path, pattern: str) -> pd.DataFrame:
    """Every image below ``folder`` (but test/, unseen/), labelled by the regex's first group in its stem."""
    rule = re.compile(pattern)
    rows, unmatched = [], []
    for f in _walk(folder)[0]:
        rel = f.relative_to(folder)
        if rel.parts[0].lower() in NOT_CLASSES:
            continue
        match = rule.search(f.stem)
        if match is None:
            unmatched.append(rel.as_posix())
            continue
        rows.append((rel.as_posix(), str(f), match.group(1)))
    if unmatched:
        raise DataError(f"{len(unmatched)} file name(s) under {folder} do not match data.label_from_name "
                        f"'{pattern}', e.g. {unmatched[:3]}; fix the pattern or move those files")
    return pd.DataFrame(rows, columns=["id", "source", "label"])


def _list_csv(cfg: DataConfig, csv_path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(csv_path, dtype=str)
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv_path}: the file is empty; it needs a header row ({cfg.fn_col},{cfg.label_col}) and "
                        f"one row per image") from None
    missing = {cfg.fn_col, cfg.label_col, *([cfg.group_col] if cfg.group_col else [])} - set(table.columns)
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {sorted(missing)}; set data.fn_col / data.label_col"
                        f"{' / data.group_col' if cfg.group_col else ''}")
    base = Path(cfg.images_dir).expanduser().resolve() if cfg.images_dir else csv_path.parent
    check_csv_rows(table, cfg.fn_col, cfg.label_col, base, csv_path)
    frame = pd.DataFrame({
        "id": table[cfg.fn_col].values,
        "source": [str(base / f) for f in table[cfg.fn_col]],
        "label": table[cfg.label_col].values,
    })
    if cfg.group_col:
        blank = table[cfg.group_col].isna() | (table[cfg.group_col].str.strip() == "")
        if blank.any():
            raise DataError(f"{csv_path}: {int(blank.sum())} row(s) with an empty {cfg.group_col} (CSV lines "
                            f"{list(table.index[blank][:5] + 2)}); give every image its group (e.g. its video)")
        frame["group"] = table[cfg.group_col].values
    return frame


def check_csv_rows(table: pd.DataFrame, fn_col: str, label_col: str, base: Path, csv_path: Path) -> None:
    """Refuse empty cells, repeated file names and names that point outside ``base`` (``../``, absolute)."""
    line = table.index.to_series() + 2  # CSV line numbers: 1-based, after the header
    blank = table[fn_col].isna() | table[label_col].isna()
    if blank.any():
        raise DataError(f"{csv_path}: {int(blank.sum())} row(s) with an empty {fn_col} or {label_col} (CSV lines "
                        f"{list(line[blank][:5])}); fill them in or delete those rows")
    spaced = table[label_col] != table[label_col].str.strip()  # "real " would be a class of its own
    if spaced.any():
        raise DataError(f"{csv_path}: {int(spaced.sum())} label(s) with leading or trailing whitespace (CSV lines "
                        f"{list(line[spaced][:5])}, e.g. {table[label_col][spaced].iloc[0]!r}); remove the "
                        f"whitespace, or each spelling counts as a class of its own")
    dup = table[fn_col][table[fn_col].duplicated()]
    if len(dup):
        raise DataError(f"{csv_path}: {len(dup)} file name(s) listed twice (first: {list(dup[:3])}); keep one row each")
    inside = str(base.resolve()) + os.sep
    escapes = [n for n in table[fn_col] if not os.path.normpath(base.resolve() / n).startswith(inside)]
    if escapes:
        raise DataError(f"{csv_path}: {len(escapes)} file name(s) point outside {base} (first: {escapes[:3]}); "
                        f"names must be relative to data.images_dir (or the CSV's folder), without '..'")


def _beside(root: Path, name: str) -> Path:
    """root/name for a folder source; for a CSV source, name next to the CSV file."""
    return root / name if root.is_dir() else root.parent / name


def list_test(root: Path) -> pd.DataFrame:
    """id (file stem, as Kaggle submissions use), source of every image in root/test/."""
    folder = _beside(root, "test")
    if not folder.is_dir():
        return pd.DataFrame(columns=["id", "source"])
    files = _walk(folder)[0]
    frame = pd.DataFrame({"id": [f.stem for f in files], "source": [str(f) for f in files]})
    dup = frame.id[frame.id.duplicated()]
    if len(dup):
        raise DataError(f"{folder}: test file names must be unique ids; duplicates: {list(dup[:5])}")
    return frame


def check_test_set(root: Path, labelled: pd.DataFrame, test: pd.DataFrame, report: Path,
                   group_rule: str | None = None) -> pd.DataFrame:
    """The test folder (``list_test``) against the labelled images and the sample submission; returns the leaks."""
    if _beside(root, "test").is_dir() and test.empty:
        log.warning("%s holds no images: runs will have no test predictions, so nothing to submit; put the "
                    "competition's test images there", _beside(root, "test"))
    if not test.empty:
        check_sample_submission(_beside(root, SAMPLE_NAME), test, group_rule)
    leaks = find_leaks(labelled, test)
    if leaks.empty:
        report.unlink(missing_ok=True)
        return leaks
    atomic.write_csv(report, leaks)
    log.warning("%d test image(s) are byte-identical to labelled images (e.g. test %s = %s): a model that memorised "
                "them scores too well there; remove them from the labelled folders. List: %s",
                len(leaks), leaks.test_id.iloc[0], leaks.labelled_id.iloc[0], report)
    return leaks


SAMPLE_NAME = "sample_submission.csv"  # a competition's submission template (data and submit read it)
LEAKS = "leaks.csv"  # test images byte-identical to labelled ones (in the data set's cache folder)
NEAR_DUPLICATES = "near_duplicates.csv"  # near-identical images on different sides of the split
HASH_STORE = "phash.csv"  # perceptual hashes of the source images, reused while a file is unchanged


def check_near_duplicates(labelled: pd.DataFrame, split: pd.DataFrame, test: pd.DataFrame, unseen: pd.DataFrame,
                          store: Path) -> pd.DataFrame:
    """Near-identical images (re-encoded, resized or slightly shifted copies) on different sides of the split:
    train / valid (or each fold) / labelled test / test / unseen. Written to near_duplicates.csv and warned."""
    from . import neardup

    sides = _sides(split)
    frame = pd.concat([labelled.assign(side=labelled.id.map(sides)), test.assign(side="test"),
                       unseen.assign(side="unseen")], ignore_index=True)
    pairs = neardup.find_near_duplicates(frame[["id", "source", "side"]].rename(columns={"source": "path"}),
                                         store=store / HASH_STORE)
    report = store / NEAR_DUPLICATES
    if pairs.empty:
        report.unlink(missing_ok=True)
        return pairs
    seen = report.is_file() and read_table(report).equals(pairs.astype(str))
    atomic.write_csv(report, pairs)
    first = pairs.iloc[0]
    # warned when found or changed; each later run (every fold, every run of a sweep) logs it at INFO, and the
    # sweep's summary lists it under the leaderboard
    (log.info if seen else log.warning)(
        "%d near-duplicate pair(s) across the split (%s; perceptual hash within %d bits: re-encoded, resized or "
        "shifted copies), e.g. %s %s ~ %s %s. A model that saw one scores too well on the other: remove one of "
        "each pair (a test image that copies a training image: drop the training copy), or, between labelled "
        "images, give the pair one group (data.group_from_name / group_col). List: %s", len(pairs),
        _pair_counts(pairs), neardup.DEFAULT_MAX_DISTANCE, first.side_a, first.id_a, first.side_b, first.id_b,
        report)
    return pairs


def _sides(split: pd.DataFrame) -> pd.Series:
    """id -> side of the split: train, valid (or fold <k>), labelled test."""
    side = pd.Series(np.where(split.is_valid, "valid", "train"), index=split.id)
    if "fold" in split.columns:
        side[:] = [f"fold_{k}" for k in split.fold]
    side[split.is_test.to_numpy()] = "labelled test"
    return side


def _pair_counts(pairs: pd.DataFrame) -> str:
    counts = pairs.groupby(["side_a", "side_b"], sort=False).size()
    return ", ".join(f"{a}-{b}: {n}" for (a, b), n in counts.items())


def leak_notes(split_file: Path) -> list[str]:
    """What the data checks found for the data set of ``split_file``, one line each (the sweep's summary)."""
    store, notes = Path(split_file).parent, []
    if (store / LEAKS).is_file():
        notes.append(f"{len(read_table(store / LEAKS))} test image(s) byte-identical to labelled ones: {store / LEAKS}")
    if (store / NEAR_DUPLICATES).is_file():
        pairs = read_table(store / NEAR_DUPLICATES)
        notes.append(f"{len(pairs)} near-duplicate pair(s) across the split ({_pair_counts(pairs)}): "
                     f"{store / NEAR_DUPLICATES}")
    names = names_suggest_groups(read_split(split_file)) if Path(split_file).is_file() else None
    return notes + ([names] if names else [])


def read_table(path: Path) -> pd.DataFrame:
    """A CSV with every column as text, empty cells kept as "" (ids like 000123 must stay strings)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def match_ids(ids: Sequence[str], expected: Sequence[str]) -> list[str | None]:
    """The expected id of each predicted id: itself, else the expected id with the same file stem, else None.

    Here so the sample-submission check at data time and submit's validator match ids the same way."""
    wanted = set(expected)
    by_stem: dict[str, str | None] = {}
    for e in expected:
        stem = Path(e).stem
        by_stem[stem] = None if stem in by_stem else e  # an ambiguous stem matches nothing
    return [i if i in wanted else by_stem.get(Path(i).stem) for i in ids]


def check_sample_submission(sample_csv: Path, test: pd.DataFrame, group_rule: str | None = None) -> None:
    """Refuse a sample_submission.csv whose ids are not the test files (matched by file stem, as submit does), nor
    (with ``group_rule``, data.group_from_name) the test files' groups: a per-video competition's sample lists
    videos, and may list videos with no frames (DFDC: no face found), which `ensemble --per-group` predicts 0.5."""
    if not sample_csv.is_file():
        return
    try:
        ids = list(read_table(sample_csv).iloc[:, 0])
    except (ValueError, IndexError) as e:
        raise DataError(f"{sample_csv}: not a readable CSV ({e}); replace it with the competition's file") from None
    matched = match_ids(list(test.id), ids)
    stems = {Path(i).stem for i in ids}
    missing = sorted(stems - {Path(m).stem for m in matched if m is not None})
    extra = sorted(t for t, m in zip(test.id, matched, strict=True) if m is None)
    if not (missing or extra) or _sample_lists_groups(stems, test, group_rule, sample_csv):
        return
    hint = ("; its ids look like videos (the test files' names start with them): set data.group_from_name "
            "(--group-from-name) so each test frame has its video, then ensemble --per-group") \
        if not group_rule and sample_lists_videos(ids, list(test.id)) else ""
    raise DataError(
        f"{sample_csv} does not match the test folder: {len(missing)} of its {len(stems)} ids have no test image "
        f"(first: {missing[:3]}), {len(extra)} test images are not in it (first: {extra[:3]}). A submission "
        f"could never be valid: use the sample submission and test/ folder of the same competition{hint}")


def _sample_lists_groups(stems: set[str], test: pd.DataFrame, group_rule: str | None, sample_csv: Path) -> bool:
    """Whether the sample's ids are the groups of the test files (every test group among them)."""
    if not group_rule:
        return False
    groups = {g for g in name_groups(list(test.id), group_rule) if g}
    if not groups or not groups <= stems:
        return False
    if stems - groups:
        log.warning("%s lists %d video(s) with no test frame (e.g. %s): `ensemble --per-group` predicts them %s",
                    sample_csv, len(stems - groups), sorted(stems - groups)[:3], "0.5 (the prior)")
    return True


def sample_lists_videos(sample_ids: Sequence[str], test_ids: Sequence[str]) -> bool:
    """Whether a sample submission lists groups rather than the test images: no test image is one of its ids, but
    most test file names start with one (frames named after their video: `abc.mp4` -> `abc_0_0.png`)."""
    if any(match_ids(list(test_ids), list(sample_ids))):
        return False
    ordered = sorted({Path(i).stem for i in sample_ids})

    def starts_with_a_stem(name: str) -> bool:  # a prefix of ``name`` sorts at or just before it
        at = bisect.bisect_right(ordered, name) - 1
        return at >= 0 and name.startswith(ordered[at])

    hits = [starts_with_a_stem(str(t)) for t in test_ids]
    return bool(hits) and sum(hits) > len(hits) / 2


def find_leaks(labelled: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """test_id, labelled_id of test images whose bytes equal a labelled image's (only same-size files are read)."""
    sizes = {src: os.path.getsize(src) for src in [*labelled.source, *test.source] if os.path.isfile(src)}
    test_sizes = {sizes.get(s) for s in test.source} - {None}
    by_hash: dict[tuple[int, str], str] = {}
    for image_id, src in zip(labelled.id, labelled.source, strict=True):
        if sizes.get(src) in test_sizes:
            by_hash.setdefault((sizes[src], file_sha256(src)), image_id)
    hashed_sizes = {size for size, _ in by_hash}
    rows = [(tid, by_hash[key]) for tid, src in zip(test.id, test.source, strict=True)
            if sizes.get(src) in hashed_sizes and (key := (sizes[src], file_sha256(src))) in by_hash]
    return pd.DataFrame(rows, columns=["test_id", "labelled_id"])


def list_unseen(root: Path) -> pd.DataFrame:
    """Labelled images in root/unseen/<class>/: evaluated after training, never trained on."""
    folder = _beside(root, "unseen")
    if not folder.is_dir():
        return pd.DataFrame(columns=["id", "source", "label"])
    return _list_folder(folder)


# ---------------------------------------------------------------- cache


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image (grey, RGBA, palette, CMYK, 16-bit) as 8-bit RGB."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I") and arr.max() > 255 else max(arr.max(), 1.0)
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "P", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def cache_one(source: str, dest: Path, max_px: int, crop: bool = False) -> str | None:
    """Decode, convert to RGB, shrink to max side ``max_px`` (``crop``: cut to it instead, at even offsets, so
    NPR networks see the generator's own pixel grid), save lossless PNG. Returns an error or None."""
    try:
        if dest.exists() and dest.stat().st_mtime >= Path(source).stat().st_mtime:
            return None
        with Image.open(source) as img:  # reads the header only; above 2x the bomb limit it raises already
            check_image_size(*img.size)
            img = to_rgb(img)
            if max(img.size) > max_px and crop:
                img = img.crop(_central_even_box(*img.size, max_px))
            elif max(img.size) > max_px:  # never upsample here: that is the model's Resize's job
                img.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
            # compress_level 1: still lossless; zlib's default level 6 made the cache ~2x slower than fastai's
            # resize_images for a few % smaller files (BENCHMARKS.md, "Speed", table 3).
            atomic.write_with(dest, lambda p: img.save(p, format="PNG", compress_level=1))
    except atomic.WriteError:  # a full or read-only disk is not the image's fault: stop, naming the path
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this image"
        return f"{type(e).__name__}: {e}"
    return None


def _central_even_box(width: int, height: int, side: int) -> tuple[int, int, int, int]:
    """The central crop box of at most ``side`` px a side, its corner at even coordinates (keeps 2x2 cells)."""
    left, top = 2 * (max(width - side, 0) // 4), 2 * (max(height - side, 0) // 4)
    return left, top, left + min(side, width), top + min(side, height)


def check_image_size(width: int, height: int) -> None:
    """Refuse (before decoding) images too small to carry a signal, and any above Pillow's bomb limit.

    Why: Pillow only warns between 1x and 2x ``Image.MAX_IMAGE_PIXELS`` and then decodes, a huge allocation.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise ValueError(f"{width}x{height} px is above Pillow's decompression-bomb limit ({limit} px): not decoded. "
                         f"If the image is genuine, raise PIL.Image.MAX_IMAGE_PIXELS")
    if min(width, height) < MIN_SIDE_PX:
        raise ValueError(f"{width}x{height} px is too small (under {MIN_SIDE_PX} px a side) to train on")


def warn_if_shrinking(sources: pd.Series, max_px: int, sample: int = 25) -> float:
    """Warn when the cache will shrink images a lot: downscaling erases the high-frequency generator traces
    detectors rely on. Returns the median shrink factor of a sample (headers only: cheap)."""
    factors = []
    for src in sources.iloc[:: max(1, len(sources) // sample)][:sample]:
        try:
            with Image.open(src) as img:
                factors.append(max(img.size) / max_px)
        except Exception:  # noqa: BLE001 - unreadable files are reported by the cache itself
            continue
    factor = float(np.median(factors)) if factors else 1.0
    if factor >= 2.0:
        log.warning("images are ~%.1fx larger than the %d px cache: downscaling erases the high-frequency traces "
                    "detectors use; consider a larger item_resize_px, or crops", factor, max_px)
    return factor


def build_cache(frame: pd.DataFrame, cache_dir: Path, max_px: int, workers: int = 2,
                crop: bool = False) -> pd.DataFrame:
    """Cache every image of ``frame`` (id, source); returns frame + path column, and error column."""
    dests = [cache_dir / cache_name(i) for i in frame.id]
    n = len(dests)
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL releases the GIL while decoding
        errors = list(progress(pool.map(cache_one, frame.source, dests, [max_px] * n, [crop] * n),
                               len(dests), f"caching {len(dests)} images at {max_px}px{' (crops)' if crop else ''}"))
    return frame.assign(path=[str(d) for d in dests], error=errors)


def cache_name(image_id: str) -> str:
    """Mirror the id's relative path; ids that could escape the cache folder are hashed instead."""
    parts = Path(image_id).parts
    if Path(image_id).is_absolute() or ".." in parts:
        return hashlib.sha1(image_id.encode()).hexdigest() + ".png"
    return f"{image_id}.png"


# ---------------------------------------------------------------- all together


def prepare(cfg: DataConfig, item_resize_px: int, workers: int = 2, crop: bool = False) -> Prepared:
    """Source -> listing -> fixed split -> cache at max side ``item_resize_px`` (``crop``: cut to it, never
    resampled, for NPR networks: ``<px>px-crop/``); bad images are reported and skipped."""
    root, key = resolve_root(cfg)
    labelled = list_labelled(cfg, root)
    store = Path(cfg.data_dir) / "cache" / key
    split_file = store / split_name(cfg)
    split = _split(labelled, split_file, cfg)
    listed_test = list_test(root)
    check_test_set(root, labelled, listed_test, store / LEAKS, cfg.group_from_name)
    listed_unseen = list_unseen(root)
    check_near_duplicates(labelled, split, listed_test, listed_unseen, store)
    if not crop:
        warn_if_shrinking(labelled.source, item_resize_px)
    cache_dir = store / f"{item_resize_px}px{'-crop' if crop else ''}"
    cached = build_cache(labelled, cache_dir, item_resize_px, workers, crop)
    test = build_cache(listed_test, cache_dir / "_test", item_resize_px, workers, crop)
    unseen = build_cache(listed_unseen, cache_dir / "_unseen", item_resize_px, workers, crop)
    bad = pd.concat([f[f.error.notna()] for f in (cached, test, unseen)])[["id", "source", "error"]]
    bad = pd.concat([bad, skipped_entries(cfg, root)], ignore_index=True)
    _report_bad(bad, store / "bad_images.csv")
    if cached.error.notna().all():
        first = cached.iloc[0]
        raise DataError(f"none of the {len(cached)} labelled images could be read, e.g. {first.source}: "
                        f"{first.error}. Check data.path (and data.images_dir for a CSV source).")
    grouped = ["group"] if "group" in split.columns else []
    split = split.assign(is_valid=validation_of(split, cfg.fold))
    items = cached[cached.error.isna()].drop(columns=grouped).merge(
        split[["id", "is_valid", "is_test", *grouped]], on="id")
    negative = next(c for c in sorted(labelled.label.unique()) if c != cfg.positive_class)
    return Prepared(key, items[~items.is_test][["id", "path", "label", "is_valid", *grouped]].reset_index(drop=True),
                    test[test.error.isna()][["id", "path"]].reset_index(drop=True),
                    unseen[unseen.error.isna()][["id", "path", "label"]].reset_index(drop=True),
                    cfg.positive_class, negative, split_file, bad.reset_index(drop=True),
                    items[items.is_test][["id", "path", "label", *grouped]].reset_index(drop=True), cache_dir)


def _split(labelled: pd.DataFrame, split_file: Path, cfg: DataConfig) -> pd.DataFrame:
    """The fixed split, with what it tells about groups said once per run: images of both classes in one group,
    or (no groups configured) file names that look like frames of one video on both sides."""
    split = fixed_split(labelled, split_file, cfg)
    if "group" in split.columns:
        report_mixed_groups(split)
    warn_if_names_suggest_groups(split)
    return split


def _report_bad(bad: pd.DataFrame, report: Path) -> None:
    if bad.empty:
        report.unlink(missing_ok=True)
        return
    atomic.write_csv(report, bad)
    log.warning("skipped %d file(s) (undecodable, too small or too large images, hidden files, link loops), "
                "e.g. %s: %s; list: %s", len(bad), bad.source.iloc[0], bad.error.iloc[0], report)
