"""Near-duplicate check (issue 18): hashing, the cached second call, and the pair search on 10,000 images.

Usage: .venv/bin/python -m benchmarks.bench_neardup [--n 10000] [--px 128] [--planted 100] [--threshold]
Makes ``n`` distinct smoothed-noise JPEGs (``px`` px, quality 90) in a temp folder: 80% train, 10% valid, 10% test,
where ``planted`` test images are copies of training images (half re-encoded at JPEG quality 70, half shifted
by 1 pixel). Prints a Markdown table for BENCHMARKS.md ("Near-duplicate check").
``--threshold``: the measurement behind neardup.DEFAULT_MAX_DISTANCE instead: distances of JPEG q70 re-encodes and
1-pixel shifts, and of all distinct pairs, on ../shared/data/cifake (32 px, and 500 of them upscaled) and textures.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: benchmarks/ beside the package

from deepfake_fastai import neardup  # noqa: E402


def texture(seed: int, px: int) -> Image.Image:
    """A distinct smooth colour texture: 16x16 noise upsampled (bicubic) plus fine grain."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((px, px), Image.BICUBIC)
    grain = rng.normal(0, 6, (px, px, 3))
    return Image.fromarray(np.clip(np.asarray(coarse, float) + grain, 0, 255).astype(np.uint8))


def shifted(img: Image.Image) -> Image.Image:
    """The image moved 1 pixel right (the first column repeated)."""
    a = np.asarray(img)
    return Image.fromarray(np.concatenate([a[:, :1], a[:, :-1]], axis=1))


def make_data(folder: Path, n: int, px: int, planted: int) -> tuple[pd.DataFrame, set[tuple[str, str]]]:
    """The frame (id, path, side) of n JPEGs, and the (train id, test id) pairs planted as copies."""
    sides = np.array(["train"] * (n * 8 // 10) + ["valid"] * (n // 10) + ["test"] * (n - n * 9 // 10))
    rows, truth = [], set()
    test_first = int(np.flatnonzero(sides == "test")[0])
    for i, side in enumerate(sides):
        img, quality = texture(i, px), 90
        if test_first <= i < test_first + planted:  # a copy of training image k
            k = i - test_first
            img, quality = (texture(k, px), 70) if k % 2 == 0 else (shifted(texture(k, px)), 90)
            truth.add((f"img{k:05d}", f"img{i:05d}"))
        path = folder / f"img{i:05d}.jpg"
        img.save(path, quality=quality)
        rows.append((path.stem, str(path), side))
    return pd.DataFrame(rows, columns=["id", "path", "side"]), truth


CIFAKE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifake"


def distances(images: list[Image.Image], folder: Path) -> dict[str, np.ndarray]:
    """Hash distances of each image to its q70 re-encode and 1-px shift, and of all distinct pairs."""
    def hashed(kind: str, imgs: list[Image.Image], quality: int) -> np.ndarray:
        paths = [str(folder / f"{kind}{k}.jpg") for k in range(len(imgs))]
        for img, path in zip(imgs, paths, strict=True):
            img.save(path, quality=quality)
        with contextlib.redirect_stdout(sys.stderr):  # the progress bar: keep stdout for the table
            return neardup.hashes(paths)

    base = hashed("base", images, 95)
    pairs = neardup.near_pairs(base, base, 64)
    return {"q70": np.bitwise_count(base ^ hashed("q70", images, 70)),
            "shift": np.bitwise_count(base ^ hashed("shift", [shifted(i) for i in images], 95)),
            "distinct": pairs[:, 2]}


def threshold_rows() -> None:
    """Print the distance table behind DEFAULT_MAX_DISTANCE."""
    photos = [Image.open(p).convert("RGB") for p in sorted(CIFAKE.glob("*/*.jpg"))]
    print("| images | q70: max (p99) | 1-px shift: max (p99), within T | distinct pairs: min, <=T, <=T+2, <=T+4 |")
    print("|---|---|---|---|")
    t = neardup.DEFAULT_MAX_DISTANCE
    sets = [("cifake 32 px", photos)] + [(f"cifake 1/6 upscaled {px} px", [p.resize((px, px), Image.BICUBIC)
                                          for p in photos[::6]]) for px in (64, 128, 256)]
    sets += [(f"textures {px} px", [texture(k, px) for k in range(500)]) for px in (64, 128, 256)]
    for name, images in sets:
        with tempfile.TemporaryDirectory() as tmp:
            d = distances(images, Path(tmp))
        q, s, x = d["q70"], d["shift"], d["distinct"]
        print(f"| {name} ({len(images)}) | {q.max()} ({np.percentile(q, 99):.0f}) | {s.max()} "
              f"({np.percentile(s, 99):.0f}), {(s <= t).sum()}/{len(s)} | {x.min()}, {(x <= t).sum()}, "
              f"{(x <= t + 2).sum()}, {(x <= t + 4).sum()} of {len(images) * (len(images) - 1) // 2:,} |")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--px", type=int, default=128)
    parser.add_argument("--planted", type=int, default=100)
    parser.add_argument("--threshold", action="store_true", help="measure the distances behind the threshold")
    args = parser.parse_args()
    if args.threshold:
        return threshold_rows()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):  # progress bars
        frame, truth = make_data(Path(tmp), args.n, args.px, args.planted)
        paths, store = frame.path.tolist(), Path(tmp) / "hashes.csv"
        _, one = timed(lambda: neardup.hashes(paths, workers=1))
        values, cold = timed(lambda: neardup.hashes(paths, workers=2, store=store))
        again, warm = timed(lambda: neardup.hashes(paths, workers=2, store=store))
        assert (again == values).all()
        pairs, search = timed(lambda: neardup.near_pairs(values, values, neardup.DEFAULT_MAX_DISTANCE))
        found, total = timed(lambda: neardup.find_near_duplicates(frame, store=store))
    got = {(a, b) for a, b in zip(found.id_a, found.id_b, strict=True)}
    n = f"{args.n:,}"
    print(f"| step ({n} JPEGs, {args.px} px, 2 cores) | time |\n|---|---|")
    print(f"| hash, workers=1, no store | {one:.2f} s ({one / args.n * 1e6:.0f} us/image) |")
    print(f"| hash, workers=2, writing the store | {cold:.2f} s ({cold / args.n * 1e6:.0f} us/image) |")
    print(f"| hash again, unchanged files (store) | {warm * 1e3:.0f} ms |")
    print(f"| near_pairs, all {args.n * (args.n - 1) // 2:,} pairs (a is b) | {search:.2f} s |")
    print(f"| find_near_duplicates (store warm; cross-side pairs only) | {total:.2f} s |")
    print(f"\nplanted copies found: {len(truth & got)}/{len(truth)}; other cross-side pairs: {len(got - truth)}; "
          f"all pairs within {neardup.DEFAULT_MAX_DISTANCE} bits: {len(pairs)}; "
          f"distances found: {sorted(found.distance.value_counts().to_dict().items())}")


if __name__ == "__main__":
    main()
