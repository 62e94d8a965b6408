"""Data layer: sources -> labelled listing -> pre-resize cache -> one fixed split -> fastai DataLoaders.

Every run of a data set shares the same cache and the same split file, so validation predictions of
different runs line up row by row (the ensembler depends on this).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from . import atomic
from .config import DataConfig
from .netcheck import reachable

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
NOT_CLASSES = {"test", "tests", "unseen", "__macosx"}  # folders that are never a class
KAGGLE_HOST = ("www.kaggle.com", 443)


class DataError(ValueError):
    """The data cannot be used as configured; the message says which file and how to fix it."""


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
    if frame.empty:
        raise DataError(f"no images found under {root}; expected one sub-folder per class")
    classes = sorted(frame.label.unique())
    if cfg.positive_class not in classes:
        raise DataError(
            f"positive class '{cfg.positive_class}' not among the classes {classes} found in {root}; "
            f"set data.positive_class to one of them"
        )
    if len(classes) != 2:
        raise DataError(f"expected 2 classes under {root}, found {classes}")
    return frame.sort_values("id", ignore_index=True)


def _labelled_dir(root: Path) -> Path:
    """Kaggle layouts put classes under train/; plain folders hold them directly."""
    return root / "train" if (root / "train").is_dir() else root


def _list_folder(folder: Path) -> pd.DataFrame:
    rows = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if class_dir.name.lower() in NOT_CLASSES or class_dir.name.startswith("."):
            continue
        for f in sorted(class_dir.rglob("*")):
            if f.suffix.lower() in IMAGE_EXTS and f.is_file():
                rows.append((f.relative_to(folder).as_posix(), str(f), class_dir.name))
    return pd.DataFrame(rows, columns=["id", "source", "label"])


def _list_by_name(folder: Path, pattern: str) -> pd.DataFrame:
    """Every image below ``folder`` (but test/, unseen/), labelled by the regex's first group in its stem."""
    rule = re.compile(pattern)
    rows, unmatched = [], []
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if f.suffix.lower() not in IMAGE_EXTS or not f.is_file() or rel.parts[0].lower() in NOT_CLASSES:
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
    table = pd.read_csv(csv_path, dtype=str)
    missing = {cfg.fn_col, cfg.label_col} - set(table.columns)
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {sorted(missing)}; set data.fn_col / data.label_col")
    base = Path(cfg.images_dir).expanduser().resolve() if cfg.images_dir else csv_path.parent
    return pd.DataFrame({
        "id": table[cfg.fn_col].values,
        "source": [str(base / f) for f in table[cfg.fn_col]],
        "label": table[cfg.label_col].values,
    })


def _beside(root: Path, name: str) -> Path:
    """root/name for a folder source; for a CSV source, name next to the CSV file."""
    return root / name if root.is_dir() else root.parent / name


def list_test(root: Path) -> pd.DataFrame:
    """id (file stem, as Kaggle submissions use), source of every image in root/test/."""
    folder = _beside(root, "test")
    if not folder.is_dir():
        return pd.DataFrame(columns=["id", "source"])
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_EXTS and f.is_file())
    frame = pd.DataFrame({"id": [f.stem for f in files], "source": [str(f) for f in files]})
    dup = frame.id[frame.id.duplicated()]
    if len(dup):
        raise DataError(f"{folder}: test file names must be unique ids; duplicates: {list(dup[:5])}")
    return frame


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


def cache_one(source: str, dest: Path, max_px: int) -> str | None:
    """Decode, convert to RGB, shrink to max side ``max_px``, save lossless PNG. Returns an error or None."""
    try:
        if dest.exists() and dest.stat().st_mtime >= Path(source).stat().st_mtime:
            return None
        with Image.open(source) as img:
            img = to_rgb(img)
            if max(img.size) > max_px:  # never upsample here: that is the model's Resize's job
                img.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
            # compress_level 1: still lossless; zlib's default level 6 made the cache ~2x slower than fastai's
            # resize_images for a few % smaller files (BENCHMARKS.md, "Speed", table 3).
            atomic.write_with(dest, lambda p: img.save(p, format="PNG", compress_level=1))
    except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this image"
        return f"{type(e).__name__}: {e}"
    return None


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
                    "detectors use; consider a larger size / item_resize, or crops", factor, max_px)
    return factor


def build_cache(frame: pd.DataFrame, cache_dir: Path, max_px: int, workers: int = 2) -> pd.DataFrame:
    """Cache every image of ``frame`` (id, source); returns frame + path column, and error column."""
    dests = [cache_dir / cache_name(i) for i in frame.id]
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL releases the GIL while decoding
        errors = list(_progress(pool.map(cache_one, frame.source, dests, [max_px] * len(dests)),
                                len(dests), f"caching {len(dests)} images at {max_px}px"))
    return frame.assign(path=[str(d) for d in dests], error=errors)


def cache_name(image_id: str) -> str:
    """Mirror the id's relative path; ids that could escape the cache folder are hashed instead."""
    parts = Path(image_id).parts
    if Path(image_id).is_absolute() or ".." in parts:
        return hashlib.sha1(image_id.encode()).hexdigest() + ".png"
    return f"{image_id}.png"


def _progress(it, total: int, label: str):
    if total < 200:
        return it
    from fastprogress.fastprogress import progress_bar

    log.info(label)
    return progress_bar(it, total=total)


# ---------------------------------------------------------------- split


def split_name(valid_pct: float, test_pct: float, seed: int) -> str:
    """File name of a split: its parameters are in the name, so another split never reuses a stale file."""
    return f"split_v{valid_pct * 100:g}_t{test_pct * 100:g}_s{seed}.csv"


def fixed_split(frame: pd.DataFrame, split_file: Path, valid_pct: float, seed: int,
                test_pct: float = 0.0) -> pd.DataFrame:
    """Read the data set's split file, or make it once and write it: id, label, is_valid, is_test.

    Stratified and seeded: the labelled test part (``test_pct``) is split off first, then validation from
    the rest, with its share rescaled so the fractions are of the whole set (70/15/15 = 0.15, 0.15).
    """
    if split_file.exists():
        split = pd.read_csv(split_file, dtype={"id": str, "label": str, "is_valid": bool, "is_test": bool})
        _check_split_matches(split, frame, split_file)
        return split
    from sklearn.model_selection import train_test_split

    rest, test_ids = frame, pd.Series([], dtype=str)
    if test_pct:
        rest, test = train_test_split(frame, test_size=test_pct, stratify=frame.label, random_state=seed)
        test_ids = test.id
    _, valid_ids = train_test_split(rest.id, test_size=valid_pct / (1.0 - test_pct), stratify=rest.label,
                                    random_state=seed)
    split = frame[["id", "label"]].assign(is_valid=frame.id.isin(set(valid_ids)),
                                          is_test=frame.id.isin(set(test_ids)))
    atomic.write_csv(split_file, split)
    return split


def _check_split_matches(split: pd.DataFrame, frame: pd.DataFrame, split_file: Path) -> None:
    new, gone = set(frame.id) - set(split.id), set(split.id) - set(frame.id)
    if new or gone:
        raise DataError(
            f"the data changed since {split_file} was written ({len(new)} new, {len(gone)} missing images). "
            f"Delete that file to make a new split; runs made with the old split cannot be ensembled "
            f"with new ones."
        )


# ---------------------------------------------------------------- all together


def prepare(cfg: DataConfig, max_px: int, workers: int = 2) -> Prepared:
    """Source -> listing -> fixed split -> cache at ``max_px``; bad images are reported and skipped."""
    root, key = resolve_root(cfg)
    labelled = list_labelled(cfg, root)
    store = Path(cfg.data_dir) / "cache" / key
    split_file = store / split_name(cfg.valid_pct, cfg.test_pct, cfg.split_seed)
    split = fixed_split(labelled, split_file, cfg.valid_pct, cfg.split_seed, cfg.test_pct)
    warn_if_shrinking(labelled.source, max_px)
    cached = build_cache(labelled, store / f"{max_px}px", max_px, workers)
    test = build_cache(list_test(root), store / f"{max_px}px" / "_test", max_px, workers)
    unseen = build_cache(list_unseen(root), store / f"{max_px}px" / "_unseen", max_px, workers)
    bad = pd.concat([f[f.error.notna()] for f in (cached, test, unseen)])[["id", "source", "error"]]
    _report_bad(bad, store / "bad_images.csv")
    if cached.error.notna().all():
        first = cached.iloc[0]
        raise DataError(f"none of the {len(cached)} labelled images could be read, e.g. {first.source}: "
                        f"{first.error}. Check data.path (and data.images_dir for a CSV source).")
    items = cached[cached.error.isna()].merge(split[["id", "is_valid", "is_test"]], on="id")
    negative = next(c for c in sorted(labelled.label.unique()) if c != cfg.positive_class)
    return Prepared(key, items[~items.is_test][["id", "path", "label", "is_valid"]].reset_index(drop=True),
                    test[test.error.isna()][["id", "path"]].reset_index(drop=True),
                    unseen[unseen.error.isna()][["id", "path", "label"]].reset_index(drop=True),
                    cfg.positive_class, negative, split_file, bad.reset_index(drop=True),
                    items[items.is_test][["id", "path", "label"]].reset_index(drop=True))


def _report_bad(bad: pd.DataFrame, report: Path) -> None:
    if bad.empty:
        report.unlink(missing_ok=True)
        return
    atomic.write_csv(report, bad)
    log.warning("skipped %d image(s) that could not be decoded, e.g. %s; list: %s",
                len(bad), bad.source.iloc[0], report)
