"""Leakage on frame data sets: validation AUC with a random split vs a group (video) split (issue 18).

Data: ``synthetic.write_videos`` (DFDC-like <video>_<frame>_0.png: each video one photo crop with small shifts
and its own colour cast, fakes with a weak generator trace). The same runs are trained twice, once on the random
split the toolkit made before groups existed and once with ``data.group_from_name``; what the random split adds
to the validation AUC is what recognising videos is worth. Prints a markdown table for BENCHMARKS.md.

    python benchmarks/bench_leakage.py [--videos 60] [--frames 8] [--epochs 5]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from deepfake_fastai import train
from deepfake_fastai.config import DataConfig
from deepfake_fastai.splits import read_split, shared_name_keys
from deepfake_fastai.synthetic import write_videos

VIDEO = "^([a-z]+)_"
RUNS = {  # label -> train() keywords
    "resnet18, RGB": dict(arch="resnet18", input="rgb"),
    "resnet18, NPR input": dict(arch="resnet18", input="npr"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=60)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--px", type=int, default=48)
    parser.add_argument("--a-up", type=float, default=1.0, help="trace strength of the fake videos")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_videos(Path(tmp) / "videos", args.videos, args.frames, args.px, a_up=args.a_up)
        rows = []
        for label, kwargs in RUNS.items():
            for split, groups in (("random", None), ("by video", VIDEO)):
                data = DataConfig(source="folder", path=str(root), data_dir=str(Path(tmp) / "data"),
                                  group_from_name=groups)
                start = time.perf_counter()
                m = train(size=args.px, epochs=args.epochs, lr=5e-3, bs=32, runs_dir=str(Path(tmp) / split),
                          data=data, tta_n=0, **kwargs).metrics
                shared = shared_name_keys(read_split(Path(m["split_file"])))[0]
                rows.append((label, split, m["auc"], shared, time.perf_counter() - start))
    print(f"{args.videos} videos x {args.frames} frames, {args.px} px, a_up {args.a_up}, {args.epochs} epochs\n")
    print("| model | split | validation AUC | valid images whose name key is in training | s |")
    print("|---|---|---|---|---|")
    for label, split, auc, shared, secs in rows:
        print(f"| {label} | {split} | {auc:.3f} | {100 * shared:.0f}% | {secs:.0f} |")


if __name__ == "__main__":
    main()
