"""EM convolutional traces: speed (vectorised vs the per-pixel reference loop) and AUC of both modes x classifiers.

Usage: PYTHONPATH=. .venv/bin/python tools/bench_traces.py [--data-dir data] [--repeats 3] [--skip-auc]
Prints a Markdown table for BENCHMARKS.md ("EM traces"). The reference loop is the one in tests/test_traces.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.test_traces holds the reference loop

from deepfake_fastai import traces  # noqa: E402
from deepfake_fastai.config import CLASSIFIERS, EM_MODES, DataConfig  # noqa: E402
from deepfake_fastai.traces import EMParams  # noqa: E402

CIFAKE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifake"
SIZES = {64: 256, 128: 64, 256: 16}  # px -> images per timing (about the same number of pixels)
REFERENCE_IMAGES = 2  # the per-pixel loop takes seconds per 64 px image


def photo_crops(px: int, n: int, seed: int = 0) -> list[np.ndarray]:
    """Random crops of a photo that ships with scikit-image (offline), as uint8 (px, px, 3)."""
    from skimage import data as skdata

    photo = skdata.astronaut()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y, x = rng.integers(0, photo.shape[0] - px, 2)
        out.append(photo[y:y + px, x:x + px])
    return out


def write_pngs(images: list[np.ndarray], folder: Path) -> list[str]:
    paths = []
    for i, im in enumerate(images):
        paths.append(str(folder / f"{i}.png"))
        Image.fromarray(im).save(paths[-1])
    return paths


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference_s_per_image(px: int, mode: str) -> float:
    """The per-pixel loop on a few 64 px images, extrapolated per image (it is linear in pixels)."""
    from tests.test_traces import reference_features

    images = [im / 255.0 for im in photo_crops(64, REFERENCE_IMAGES, seed=1)]
    start = time.perf_counter()
    for im in images:
        reference_features(im, mode)
    return (time.perf_counter() - start) / len(images) * (px / 64) ** 2


def speed_rows(repeats: int, mode: str) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for px, n in SIZES.items():
            folder = Path(tmp) / str(px)
            folder.mkdir()
            paths = write_pngs(photo_crops(px, n), folder)
            seconds = median_seconds(lambda p=paths: traces.featurise_paths(p, EMParams(mode), progress=False), repeats)
            ref = reference_s_per_image(px, mode)
            rows.append(f"| {mode} | {px} | {n / seconds:.0f} | {ref:.2f} | {ref / (seconds / n):.0f}x |")
    return rows


def cifake_seconds(mode: str) -> tuple[int, float]:
    paths = sorted(str(p) for p in CIFAKE.glob("*/*.jpg"))
    start = time.perf_counter()
    traces.featurise_paths(paths, EMParams(mode), progress=False)
    return len(paths), time.perf_counter() - start


def auc_rows(name: str, cfg: DataConfig, px: int) -> list[str]:
    """AUC on the data set's fixed validation split for every mode x classifier."""
    from deepfake_fastai import data, metrics

    prepared = data.prepare(cfg, max_px=px)
    items = prepared.items
    y = (items.label == prepared.positive_class).to_numpy().astype(int)
    valid = items.is_valid.to_numpy()
    rows = []
    for mode in EM_MODES:
        feats = traces.cached_features(list(items.path), prepared.split_file.parent / f"{px}px", EMParams(mode))
        for clf in ("svc", "rf") + tuple(c for c in CLASSIFIERS if c not in ("svc", "rf")):
            model = traces.make_classifier(clf).fit(feats[~valid], y[~valid])
            auc = metrics.classification(y[valid], traces.positive_probs(model, feats[valid]))["auc"]
            rows.append(f"| {name} | {mode} | {clf} | {int((~valid).sum())} / {int(valid.sum())} | {auc:.3f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data", help="where the embedded data and caches go")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-auc", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; backend {traces.pick_backend()}; em_iter 10, kernel 3\n")
    print("| EM mode | px | features/s (vectorised) | reference loop s/image | speed-up |")
    print("|---|---|---|---|---|")
    for mode in EM_MODES:
        print("\n".join(speed_rows(args.repeats, mode)), flush=True)
    if CIFAKE.is_dir():
        for mode in EM_MODES:
            n, seconds = cifake_seconds(mode)
            print(f"\ncifake sample, {mode}: {n} JPEGs featurised in {seconds:.1f} s ({n / seconds:.0f} images/s)")
    if args.skip_auc:
        return
    print("\n| data | EM mode | classifier | train / valid | validation AUC |\n|---|---|---|---|---|")
    print("\n".join(auc_rows("embedded (default, 64 px)", DataConfig(data_dir=args.data_dir), 64)), flush=True)
    if CIFAKE.is_dir():
        cfg = DataConfig(source="folder", path=str(CIFAKE), data_dir=args.data_dir)
        print("\n".join(auc_rows("cifake (32 px)", cfg, 32)))


if __name__ == "__main__":
    main()
