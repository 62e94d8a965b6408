"""EM convolutional traces: speed (vectorised vs the per-pixel reference loop) and AUC of both modes x classifiers.

Usage: .venv/bin/python -m benchmarks.bench_traces [--data-dir data] [--repeats 3] [--skip-auc] [--skip-speed]
Prints a Markdown table for BENCHMARKS.md ("EM traces"). The reference loop is benchmarks/em_reference.py, the
one tests/test_traces.py checks traces.py against.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: benchmarks/ beside the package

from deepfake_fastai import traces  # noqa: E402
from deepfake_fastai.config import CLASSIFIERS, EM_MODES, DataConfig  # noqa: E402
from deepfake_fastai.traces import EMParams  # noqa: E402

CIFAKE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifake"
SIZES = {64: 512, 128: 128, 256: 32}  # px -> images per timing (the same number of pixels, ~1 s)
REFERENCE_IMAGES = {64: 2, 128: 1, 256: 1}  # the per-pixel loop: ~1.5 s per 64 px image, ~25 s at 256 px


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


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed_row(mode: str, px: int, n: int, folder: Path, repeats: int) -> str:
    """Vectorised (from PNG files, all cores) vs the reference loop (in memory, one core) on the same crops.

    Each repeat times both back to back and takes their ratio, so that a slow spell of this shared machine
    hits both sides; the row gives the median ratio and the lowest.
    """
    from benchmarks.em_reference import reference_features

    crops = photo_crops(px, n)
    folder.mkdir()
    paths = write_pngs(crops, folder)
    params = EMParams(mode)
    traces.featurise_paths(paths[:2], params, progress=False)  # compile the kernels outside the timing
    vec, ref, ratios = [], [], []
    for _ in range(repeats):
        vec.append(timed(lambda: traces.featurise_paths(paths, params, progress=False)) / n)
        ref.append(timed(lambda: [reference_features(im / 255.0, mode) for im in crops[:REFERENCE_IMAGES[px]]])
                   / REFERENCE_IMAGES[px])
        ratios.append(ref[-1] / vec[-1])
    return (f"| {mode} | {px} | {1 / statistics.median(vec):.0f} | {statistics.median(ref):.2f} | "
            f"{statistics.median(ratios):.0f}x | {min(ratios):.0f}x |")


def speed_rows(repeats: int, mode: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return [speed_row(mode, px, n, Path(tmp) / f"{mode}{px}", repeats) for px, n in SIZES.items()]


def compile_seconds() -> float:
    """First use of the compiled kernels in a fresh process (numba compiles them once per process)."""
    code = ("import time, numpy as np; from deepfake_fastai import traces; t = time.perf_counter(); "
            "traces.em_features(np.zeros((1, 8, 8, 3)), traces.EMParams('mixture')); print(time.perf_counter() - t)")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def cifake_seconds(mode: str) -> tuple[int, float]:
    paths = sorted(str(p) for p in CIFAKE.glob("*/*.jpg"))
    start = time.perf_counter()
    traces.featurise_paths(paths, EMParams(mode), progress=False)
    return len(paths), time.perf_counter() - start


def auc_rows(name: str, cfg: DataConfig, px: int) -> list[str]:
    """AUC on the data set's fixed validation split for every mode x classifier."""
    from deepfake_fastai import data, metrics

    prepared = data.prepare(cfg, item_resize_px=px)
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
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; backend {traces.pick_backend()}; em_iter 10, kernel 3\n")
    if not args.skip_speed:
        print_speed(args.repeats)
    if args.skip_auc:
        return
    print("\n| data | EM mode | classifier | train / valid | validation AUC |\n|---|---|---|---|---|")
    print("\n".join(auc_rows("embedded (default, 64 px)", DataConfig(data_dir=args.data_dir), 64)), flush=True)
    if CIFAKE.is_dir():
        cfg = DataConfig(source="folder", path=str(CIFAKE), data_dir=args.data_dir)
        print("\n".join(auc_rows("cifake (32 px)", cfg, 32)))


def print_speed(repeats: int) -> None:
    print(f"kernels compiled in a fresh process in {compile_seconds():.1f} s (once per process)\n")
    print("| EM mode | px | features/s (vectorised) | reference loop s/image | speed-up (median) | lowest |")
    print("|---|---|---|---|---|---|")
    for mode in EM_MODES:
        print("\n".join(speed_rows(repeats, mode)), flush=True)
    if CIFAKE.is_dir():
        for mode in EM_MODES:
            n, seconds = cifake_seconds(mode)
            print(f"\ncifake sample, {mode}: {n} JPEGs featurised in {seconds:.1f} s ({n / seconds:.0f} images/s)")


if __name__ == "__main__":
    main()
