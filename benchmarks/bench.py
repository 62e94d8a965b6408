"""Speed benchmarks: every figure a ratio measured in one run against its reference, medians of repeats.

``make bench`` (``python -m benchmarks.bench``) measures everything below and rewrites only the generated
block of BENCHMARKS.md (between ``<!-- bench:start -->`` and ``<!-- bench:end -->``, appended if absent);
``--quick`` (``make bench ARGS=--quick``) runs a small version into ``runs/bench-quick.md`` instead, so a
development run never replaces the real numbers. ``--out`` writes elsewhere. ``--loops-only`` measures
section 1 alone (the train() / plain loop ratios, ~4 min) into ``runs/bench-loops.md``, same block format.

What is timed in the training measurements: steady-state training batches only. A clock stamps the end of
every training batch (after the optimizer step and every callback's ``after_batch``); the window starts at
the end of the last warm-up batch, so the figure covers, per batch, fetching the batch from the DataLoader,
forward, loss, backward, optimizer step and all callbacks, and excludes learner creation, the warm-up batches
and validation. The plain loop is stamped the same way. Toolkit and reference repeats alternate (A B A B ...)
so drift on a shared machine hits both; a ratio is taken per repeat pair, then the median.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_fastai import atomic

log = logging.getLogger(__name__)

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
QUICK_OUT = Path("runs/bench-quick.md")
LOOPS_OUT = Path("runs/bench-loops.md")


@dataclass(frozen=True)
class BenchSettings:
    """Sizes of every measurement (the full run fits in ~15 min on the 2-core CPU box)."""

    bs: int = 32  # images per batch everywhere (the reference points used 32)
    repeats: int = 3  # interleaved repeats per variant; figures are their median with min-max
    warmup_batches: int = 2  # training batches excluded from every timing
    timed_batches: int = 4  # training batches timed per repeat
    train_models: tuple[tuple[str, int], ...] = (
        ("resnet18", 64), ("resnet50", 128), ("convnext_tiny", 128), ("tf_efficientnetv2_s", 128))
    pipeline_model: tuple[str, int] = ("resnet50", 128)  # measurement 2 (end-to-end data pipeline)
    pipeline_source_px: int = 256  # side of the generated JPEGs (larger than the training size, as in practice)
    cache_images: int = 5000  # measurement 3: JPEGs to pre-resize
    cache_px: int = 128  # pre-resize target side
    sweep_arch: str = "resnet18"  # measurement 4: one tiny sweep run in a subprocess
    sweep_images: int = 320  # labelled images of that run (one epoch)
    sweep_repeats: int = 2
    import_repeats: int = 2  # fresh interpreters timed for the imports alone (0: skip)
    quickstart_train_images: int = 4800  # 1,600 training images x 3 epochs (sweeps/quickstart.yaml)
    tta_images: int = 320  # measurement 5: validation images predicted
    tta_n: int = 4
    scale_arch: str = "resnet18"  # measurement 6: one-epoch runs
    scale_counts: tuple[int, ...] = (1000, 4000, 16000)
    scale_px: tuple[int, ...] = (64, 128, 256)
    gpu_epoch_images: int = 20000  # measurement 7 (CUDA only): a one-epoch pass of a competition-sized set
    tiny_arch: str | None = None  # tests: replace every arch by this one (e.g. timm's test_resnet)

    def arch(self, name: str) -> str:
        """The arch to build (the tiny one in tests)."""
        return self.tiny_arch or name


QUICK = BenchSettings(
    repeats=2, warmup_batches=1, timed_batches=3, train_models=(("resnet18", 64), ("resnet18", 128)),
    pipeline_model=("resnet18", 128), cache_images=300, sweep_images=96, sweep_repeats=1, import_repeats=1,
    tta_images=96,
    scale_counts=(128, 256, 512), scale_px=(64, 128), gpu_epoch_images=1000)


# ---------------------------------------------------------------- statistics and timing (pure)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median with min and max (the spread) of repeated measurements."""
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def ratios(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Per-repeat ratios a[i] / b[i] of interleaved measurements, summarised."""
    return summary([x / y for x, y in zip(a, b, strict=True)])


def steady_rate(stamps: Sequence[float], bs: int, warmup: int) -> float:
    """Images/s between the end of batch ``warmup`` - 1 and the end of the last batch."""
    if warmup < 1 or len(stamps) <= warmup:
        raise ValueError(f"need more than {warmup} batch stamps (and warmup >= 1), got {len(stamps)}")
    return bs * (len(stamps) - warmup) / (stamps[-1] - stamps[warmup - 1])


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _interleaved(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run the variants A B C A B C ... ``repeats`` times; their values by name."""
    out: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        for name, measure in variants.items():
            out[name].append(measure())
            log.info("  repeat %d %s: %.2f", r + 1, name, out[name][-1])
    return out


def _timed(fn: Callable[[], Any]) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


# ---------------------------------------------------------------- data helpers


def jpeg_folder(root: Path, n: int, px: int, seed: int = 0) -> Path:
    """``n`` px x px JPEG crops of the packaged photos in root/{real,fake}/ (labels alternate; speed only)."""
    from PIL import Image

    from deepfake_fastai.synthetic import load_photos

    photos, rng = load_photos(), np.random.default_rng(seed)
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo = photos[i % len(photos)]
        top, left = (int(rng.integers(0, max(1, d - px))) for d in photo.shape[:2])
        crop = photo[top:top + px, left:left + px, :3]
        img = Image.fromarray(np.ascontiguousarray(crop)).resize((px, px))
        img.save(root / ("real", "fake")[i % 2] / f"img_{i:06d}.jpg", quality=90)
    return root


def synthetic_prepared(tmp: Path, n: int, max_px: int):
    """The embedded data set with ``n`` labelled images (64 px), cached at ``max_px``."""
    from deepfake_fastai.config import DataConfig
    from deepfake_fastai.data import prepare

    return prepare(DataConfig(source="synthetic", synthetic_n=n, data_dir=str(tmp / "data")), item_resize_px=max_px)


def memory_tensors(paths: Sequence[str], labels: Sequence[int], px: int, arch: str):
    """Images decoded once, resized to px, normalised with the arch's stats: (x float NCHW, y long)."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from deepfake_fastai.models import norm_stats

    stats = norm_stats(arch)
    arr = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]).astype(np.float32) / 255.0
    x = F.interpolate(torch.from_numpy(arr).permute(0, 3, 1, 2), size=(px, px), mode="bilinear")
    x = (x - torch.tensor(stats.mean).view(1, 3, 1, 1)) / torch.tensor(stats.std).view(1, 3, 1, 1)
    return x.contiguous(), torch.as_tensor(np.asarray(labels), dtype=torch.long)


def memory_dls(x, y, bs: int):
    """fastai DataLoaders over in-memory tensors: shuffled drop-last training batches, one validation batch."""
    import torch
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader

    items = list(zip(x, y, strict=True))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return DataLoaders(DataLoader(items, bs=bs, shuffle=True, drop_last=True), DataLoader(items[:bs], bs=bs),
                       device=device)


def _items_tensors(prepared, n: int, px: int, arch: str):
    items = prepared.items[~prepared.items.is_valid].iloc[:n]
    labels = (items.label == prepared.positive_class).astype(int)
    return memory_tensors(items.path.tolist(), labels.tolist(), px, arch)


# ---------------------------------------------------------------- the loops being compared


class BatchClock:
    """fastai callback (made lazily, fastai is heavy to import) stamping the end of every training batch."""

    @staticmethod
    def make():
        from fastai.callback.core import Callback

        class _Clock(Callback):
            order = 1000  # after every other callback's after_batch

            def before_fit(self) -> None:
                self.stamps = []

            def after_batch(self) -> None:
                if self.training:
                    _sync()
                    self.stamps.append(time.perf_counter())

        return _Clock()


def fastai_rate(learn, fit: Callable[[], Any], bs: int, warmup: int) -> float:
    """Steady-state training images/s of one ``fit()`` of a fastai learner (progress output swallowed)."""
    clock = BatchClock.make()
    learn.add_cb(clock)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            fit()
    finally:
        learn.remove_cb(clock)
    return steady_rate(clock.stamps, bs, warmup)


def plain_rate(model, x, y, precision: str, bs: int, warmup: int, lr: float = 1e-3,
               channels_last: bool = False) -> float:
    """A hand-written loop: the torch optimizer of ``learner.ADAMW`` (fused AdamW), autocast."""
    import torch
    import torch.nn.functional as F

    from deepfake_fastai import learner

    device = next(model.parameters()).device
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = learner.ADAMW.keywords["opt"](model.parameters(), lr=lr)  # the torch optimizer inside ADAMW
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    model.train()
    stamps = []
    for i in range(0, len(x) - bs + 1, bs):
        xb, yb = x[i:i + bs].to(device), y[i:i + bs].to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(xb)
        scaler.scale(F.cross_entropy(out.float(), yb)).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        _sync()
        stamps.append(time.perf_counter())
    return steady_rate(stamps, bs, warmup)


def toolkit_learner(arch: str, px: int, prepared, bs: int, **options: Any):
    """The toolkit's own learner (learner.build: real DataLoaders, callbacks, precision). Returns (learn, cfg)."""
    from deepfake_fastai import learner
    from deepfake_fastai.config import DataConfig, TrainConfig

    cfg = TrainConfig(arch=arch, size=px, bs=bs, epochs=1, lr=1e-3, tta_n=0, **options,
                      data=DataConfig(source="folder", path="."))
    learn, precision = learner.build(cfg, prepared)
    return learn, cfg, precision


def stock_fastai_learner(arch: str, px: int, dls):
    """fastai as it comes: vision_learner on timm, fp32, no toolkit callbacks."""
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import RocAucBinary, accuracy
    from fastai.vision.learner import vision_learner

    from deepfake_fastai.models import timm_kwargs

    return vision_learner(dls, arch, n_out=2, pretrained=False, normalize=False, loss_func=CrossEntropyLossFlat(),
                          metrics=[accuracy, RocAucBinary()], **timm_kwargs(arch, px, None))


# ---------------------------------------------------------------- 1. training-loop overhead


def measure_train_loop(s: BenchSettings, tmp: Path, arch: str, px: int) -> dict[str, Any]:
    """train()'s learner vs a plain loop (same model, precision, in-memory data) vs stock fastai fp32."""
    from deepfake_fastai import learner

    arch = s.arch(arch)
    n = s.bs * (s.warmup_batches + s.timed_batches)
    prepared = synthetic_prepared(tmp, max(n * 2, 400), 64)
    x, y = _items_tensors(prepared, n, px, arch)
    learn, cfg, precision = toolkit_learner(arch, px, prepared, s.bs)
    learn.dls = memory_dls(x, y, s.bs)
    stock = stock_fastai_learner(arch, px, memory_dls(x, y, s.bs))
    cl = hasattr(learn, "channels_last")
    log.info("1. %s @%d px: toolkit %s%s vs plain loop vs stock fastai fp32", arch, px, precision,
             " channels_last" if cl else "")
    runs = _interleaved({
        "toolkit": lambda: fastai_rate(learn, lambda: learner.fit(learn, cfg), s.bs, s.warmup_batches),
        "plain": lambda: plain_rate(learn.model, x, y, precision, s.bs, s.warmup_batches, channels_last=cl),
        "stock": lambda: fastai_rate(stock, lambda: stock.fit_one_cycle(1, 1e-3), s.bs, s.warmup_batches),
    }, s.repeats)
    return {"arch": arch, "px": px, "precision": precision + (" + channels_last" if cl else ""),
            **{k: summary(v) for k, v in runs.items()},
            "vs_plain": ratios(runs["toolkit"], runs["plain"]), "vs_stock": ratios(runs["toolkit"], runs["stock"])}


# ---------------------------------------------------------------- 2. data pipeline


def measure_pipeline(s: BenchSettings, tmp: Path) -> dict[str, Any]:
    """End-to-end images/s from a JPEG folder (cached / uncached) vs the same learner on in-memory tensors."""
    from deepfake_fastai import learner
    from deepfake_fastai.config import DataConfig
    from deepfake_fastai.data import prepare

    arch, px = s.arch(s.pipeline_model[0]), s.pipeline_model[1]
    n_train = s.bs * (s.warmup_batches + s.timed_batches)
    root = jpeg_folder(tmp / "jpeg_pipeline", int(n_train / 0.8) + s.bs, s.pipeline_source_px)
    prepared = prepare(DataConfig(source="folder", path=str(root), data_dir=str(tmp / "data")), item_resize_px=px)
    learn, cfg, precision = toolkit_learner(arch, px, prepared, s.bs)
    sources = [str(root / i) for i in prepared.items.id]  # the JPEGs themselves, decoded and resized per item
    uncached = dataclasses.replace(prepared, items=prepared.items.assign(path=sources))
    dls = {"cached": learn.dls, "jpeg": learner.dataloaders(cfg, uncached),
           "memory": memory_dls(*_items_tensors(prepared, n_train, px, arch), s.bs)}
    log.info("2. pipeline %s @%d px (%s, num_workers=%s)", arch, px, precision, cfg.num_workers)

    def fit_on(name: str) -> Callable[[], float]:
        def go() -> float:
            learn.dls = dls[name]
            return fastai_rate(learn, lambda: learner.fit(learn, cfg), s.bs, s.warmup_batches)
        return go

    runs = _interleaved({name: fit_on(name) for name in dls}, s.repeats)
    loader = _interleaved({f"{k}_loader": (lambda d=dls[k]: loader_rate(d.train, s.bs)) for k in ("cached", "jpeg")},
                          s.repeats)
    return {"arch": arch, "px": px, "precision": precision, "num_workers": cfg.num_workers,
            "source_px": s.pipeline_source_px, **{k: summary(v) for k, v in (runs | loader).items()},
            "cached_vs_memory": ratios(runs["cached"], runs["memory"]),
            "jpeg_vs_memory": ratios(runs["jpeg"], runs["memory"])}


def loader_rate(dl, bs: int) -> float:
    """Images/s of iterating a DataLoader alone (decode, item and batch transforms), first batch excluded."""
    stamps = []
    for _ in dl:
        stamps.append(time.perf_counter())
    return steady_rate(stamps, bs, 1)


# ---------------------------------------------------------------- 3. pre-resize cache


def measure_cache(s: BenchSettings, tmp: Path) -> dict[str, Any]:
    """data.build_cache vs fastai's resize_images on the same JPEGs, each with 1 and 2 workers."""
    from fastai.vision.utils import resize_images

    from deepfake_fastai.config import DataConfig
    from deepfake_fastai.data import build_cache, list_labelled

    src = jpeg_folder(tmp / "jpeg_cache", s.cache_images, s.pipeline_source_px, seed=1)
    frame = list_labelled(DataConfig(source="folder", path=str(src)), src)
    count = [0]

    def fresh() -> Path:
        count[0] += 1
        return tmp / f"cache_{count[0]}"

    def rate(fn: Callable[[Path], Any]) -> Callable[[], float]:
        def go() -> float:
            dest = fresh()
            seconds = _timed(lambda: fn(dest))
            shutil.rmtree(dest, ignore_errors=True)
            return len(frame) / seconds
        return go

    log.info("3. pre-resize cache: %d JPEGs (%d px) -> %d px", len(frame), s.pipeline_source_px, s.cache_px)
    runs = _interleaved({
        "toolkit_2": rate(lambda d: build_cache(frame, d, s.cache_px, workers=2)),
        "fastai_2": rate(lambda d: resize_images(src, max_workers=2, max_size=s.cache_px, recurse=True, dest=d)),
        "toolkit_1": rate(lambda d: build_cache(frame, d, s.cache_px, workers=1)),
        "fastai_1": rate(lambda d: resize_images(src, max_workers=0, max_size=s.cache_px, recurse=True, dest=d)),
    }, s.repeats)
    return {"images": len(frame), "source_px": s.pipeline_source_px, "px": s.cache_px,
            **{k: summary(v) for k, v in runs.items()},
            "toolkit_vs_fastai": ratios(runs["toolkit_2"], runs["fastai_2"]),
            "toolkit_parallel": ratios(runs["toolkit_2"], runs["toolkit_1"]),
            "fastai_parallel": ratios(runs["fastai_2"], runs["fastai_1"])}


# ---------------------------------------------------------------- 4. sweep runner overhead


def measure_sweep_overhead(s: BenchSettings, tmp: Path, quickstart_ips: float | None) -> dict[str, Any]:
    """A real sweep subprocess run (worker.run_one) split into imports, fit and the rest; DataLoaders in-process."""
    from deepfake_fastai import learner, runfolder
    from deepfake_fastai.config import DataConfig, TrainConfig
    from deepfake_fastai.worker import run_one

    data = DataConfig(source="synthetic", synthetic_n=s.sweep_images, data_dir=str(tmp / "data"))
    prepared = synthetic_prepared(tmp, s.sweep_images, 64)  # generated and cached here: not the runner's cost
    imports = [_timed(_import_in_subprocess) for _ in range(s.import_repeats)]
    walls, fits = [], []
    for r in range(s.sweep_repeats):
        cfg = TrainConfig(arch=s.arch(s.sweep_arch), size=64, bs=s.bs, epochs=1, tta_n=0, data=data,
                          runs_dir=str(tmp / "sweep_runs"), name=f"overhead{r}")
        record = run_one(cfg, sys.executable, oom_retry=False)
        if record["status"] != "complete":
            raise RuntimeError(f"benchmark sweep run failed: {record.get('error')}")
        walls.append(record["wall_time_s"])
        fits.append(runfolder.read_metrics(Path(cfg.runs_dir) / cfg.name)["fit_time_s"])
    dls_s = [_timed(lambda: learner.dataloaders(cfg, prepared)) for _ in range(s.repeats)]
    overhead = [w - f for w, f in zip(walls, fits, strict=True)]
    quickstart_fit = s.quickstart_train_images / quickstart_ips if quickstart_ips else None
    log.info("4. sweep run overhead %.1f s", statistics.median(overhead))
    return {"images": s.sweep_images, "wall": summary(walls), "fit": summary(fits),
            "imports": summary(imports) if imports else None, "overhead": summary(overhead),
            "dataloaders": summary(dls_s), "quickstart_fit_s": quickstart_fit,
            "overhead_vs_quickstart": (summary([o / quickstart_fit for o in overhead]) if quickstart_fit else None)}


def _import_in_subprocess() -> None:
    """Interpreter start + the imports of a sweep worker, in a fresh process (as each sweep run pays)."""
    subprocess.run([sys.executable, "-c", "import deepfake_fastai.worker, deepfake_fastai.train, "
                    "deepfake_fastai.learner"], check=True, capture_output=True)


# ---------------------------------------------------------------- 5. TTA


def measure_tta(s: BenchSettings, tmp: Path) -> dict[str, Any]:
    """learner.positive_probs with TTA (n augmented passes + the plain one) vs plain get_preds, same images."""
    from deepfake_fastai import learner

    prepared = synthetic_prepared(tmp, int(s.tta_images / 0.2) + 1, 64)
    arch = s.arch("resnet18")
    learn, cfg, precision = toolkit_learner(arch, 64, prepared, s.bs)
    tta_cfg = dataclasses.replace(cfg, tta_n=s.tta_n)
    dl = learn.dls.valid
    log.info("5. TTA n=%d vs get_preds on %d images", s.tta_n, len(dl.dataset))

    def seconds(c) -> Callable[[], float]:
        return lambda: _timed(lambda: learner.positive_probs(learn, dl, prepared.positive_class, c))

    with contextlib.redirect_stdout(io.StringIO()):
        runs = _interleaved({"plain": seconds(cfg), "tta": seconds(tta_cfg)}, s.repeats)
    return {"arch": arch, "px": 64, "precision": precision, "images": len(dl.dataset), "n": s.tta_n,
            **{k: summary(v) for k, v in runs.items()}, "tta_vs_plain": ratios(runs["tta"], runs["plain"])}


# ---------------------------------------------------------------- 6. scaling


def measure_scaling(s: BenchSettings, tmp: Path) -> list[dict[str, Any]]:
    """One-epoch train() runs (no TTA) over image counts at 64 px, then over sizes at the smallest count."""
    points = [(n, 64) for n in s.scale_counts] + [(s.scale_counts[0], px) for px in s.scale_px if px != 64]
    rows = []
    for n, px in points:
        rows.append(_scale_point(s, tmp, n, px))
        log.info("6. scaling %d images @%d px: run %.1f s", n, px, rows[-1]["run_s"])
    base = rows[0]
    for row in rows:  # fit seconds per (training image x pixel), relative to the first point: 1.0 = linear
        row["relative_cost"] = (row["fit_s"] / (row["n_train"] * row["px"] ** 2)) / (
            base["fit_s"] / (base["n_train"] * base["px"] ** 2))
    return rows


def _scale_point(s: BenchSettings, tmp: Path, n: int, px: int) -> dict[str, Any]:
    from deepfake_fastai.config import DataConfig
    from deepfake_fastai.train import train

    data = DataConfig(source="synthetic", synthetic_n=n, data_dir=str(tmp / "data"))
    prep_s = _timed(lambda: synthetic_prepared(tmp, n, px))  # generation (first use of n) + cache at px
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        result = train(arch=s.arch(s.scale_arch), size=px, epochs=1, bs=s.bs, tta_n=0, data=data,
                       runs_dir=str(tmp / "scale_runs"), name=f"scale_{n}_{px}")
        run_s = time.perf_counter() - start
    m = result.metrics
    return {"n": n, "px": px, "n_train": m["n_train"], "n_predicted": m["n_valid"] + m["n_test"],
            "precision": m["precision_mode"], "prep_s": prep_s, "run_s": run_s, "fit_s": m["fit_time_s"]}


# ---------------------------------------------------------------- 7. GPU (CUDA only)


def measure_gpu(s: BenchSettings, tmp: Path) -> dict[str, Any] | None:
    """resnet50 @224 fp16 channels_last: train() vs a plain AMP loop, end to end, and a one-epoch pass."""
    import torch

    if not torch.cuda.is_available():
        return None
    gs = dataclasses.replace(s, pipeline_model=("resnet50", 224), pipeline_source_px=256)
    loop = measure_train_loop(gs, tmp, "resnet50", 224)
    pipeline = measure_pipeline(gs, tmp)
    epoch = _scale_point(dataclasses.replace(s, scale_arch="resnet50"), tmp, s.gpu_epoch_images, 224)
    return {"device": torch.cuda.get_device_name(0), "loop": loop, "pipeline": pipeline, "epoch": epoch}


# ---------------------------------------------------------------- all together


def run_loops(s: BenchSettings, tmp: Path) -> dict[str, Any]:
    """Section 1 alone (train() / plain loop / stock fastai); render() leaves out the sections not measured."""
    from deepfake_fastai import learner

    threads = learner.set_threads()
    start = time.perf_counter()
    _warm_up(s)
    loops = [measure_train_loop(s, tmp, arch, px) for arch, px in s.train_models]
    return {"machine": machine(threads), "loops": loops, "settings": dataclasses.asdict(s),
            "wall_s": time.perf_counter() - start}


def run_all(s: BenchSettings, tmp: Path) -> dict[str, Any]:
    """Every measurement, in order; the numbers only (render() makes the Markdown)."""
    from deepfake_fastai import learner

    threads = learner.set_threads()
    start = time.perf_counter()
    _warm_up(s)
    loops = [measure_train_loop(s, tmp, arch, px) for arch, px in s.train_models]
    quickstart_ips = next((r["toolkit"]["median"] for r in loops if r["px"] == 64), loops[0]["toolkit"]["median"])
    results = {
        "machine": machine(threads), "loops": loops, "pipeline": measure_pipeline(s, tmp),
        "cache": measure_cache(s, tmp), "sweep": measure_sweep_overhead(s, tmp, quickstart_ips),
        "tta": measure_tta(s, tmp), "scaling": measure_scaling(s, tmp), "gpu": measure_gpu(s, tmp),
        "settings": dataclasses.asdict(s),
    }
    results["wall_s"] = time.perf_counter() - start
    return results


def _warm_up(s: BenchSettings) -> None:
    """A few untimed batches first: the first training in a process ran up to 8x slower here (lazy init)."""
    import timm
    import torch

    model = timm.create_model(s.arch("resnet18"), pretrained=False, num_classes=2)
    x, y = torch.randn(3 * s.bs, 3, 64, 64), torch.randint(0, 2, (3 * s.bs,))
    plain_rate(model, x, y, "fp32", s.bs, 1)


def machine(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    import fastai
    import timm
    import torch

    from deepfake_fastai.callbacks import bf16_supported

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "memory_gib": round(mem, 1),
            "bf16": bf16_supported(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "fastai": fastai.__version__,
            "timm": timm.__version__, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


# ---------------------------------------------------------------- Markdown (pure)


def fmt(stat: dict[str, float] | None, digits: int = 1) -> str:
    """'median (min-max)' of a summary; one value when all repeats agree or there was one."""
    if stat is None:
        return "-"
    med, lo, hi = (f"{stat[k]:.{digits}f}" for k in ("median", "min", "max"))
    return med if lo == hi else f"{med} ({lo}-{hi})"


def _verdict(stat: dict[str, float], target: float) -> str:
    return f"{fmt(stat, 2)} {'met' if stat['median'] >= target else '**not met**'}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def render(results: dict[str, Any], command: str, notes: str = "") -> str:
    """The generated block, markers included."""
    m, st = results["machine"], results["settings"]
    lines = [START, "## Speed (generated by `make bench`: do not edit by hand, rerun it)", "",
             f"Command: `{command}` · {m['date']} · wall time {results['wall_s'] / 60:.1f} min.  ",
             f"Machine: {m['cpu']}, {m['cores']} cores ({m['threads']} torch threads), {m['memory_gib']} GiB, "
             f"native bf16: {'yes' if m['bf16'] else 'no'}, GPU: {m['gpu'] or 'none'}; Python {m['python']}, "
             f"torch {m['torch']}, fastai {m['fastai']}, timm {m['timm']}.  ",
             f"Every figure: median of {st['repeats']} interleaved repeats (min-max); a ratio is taken per repeat "
             f"pair, then the median. Batch {st['bs']}. Training figures are steady-state batches only: "
             f"{st['warmup_batches']} warm-up batch(es) excluded, {st['timed_batches']} timed per repeat (see "
             f"benchmarks/bench.py for what a batch includes).", ""]
    parts = {"loops": _render_loops, "pipeline": _render_pipeline, "cache": _render_cache, "sweep": _render_sweep,
             "tta": _render_tta, "scaling": _render_scaling, "gpu": _render_gpu}
    for key, part in parts.items():
        if key in results:  # --loops-only measures section 1 alone
            lines += part(results) + [""]
    if notes:
        lines += ["### Notes", "", notes.strip(), ""]
    return "\n".join(lines + [END])


def _render_loops(r: dict[str, Any]) -> list[str]:
    rows = [(f"{x['arch']} @{x['px']}", x["precision"], fmt(x["toolkit"]), fmt(x["plain"]),
             _verdict(x["vs_plain"], 0.95), fmt(x["stock"]), _verdict(x["vs_stock"], 1.5)) for x in r["loops"]]
    return ["### 1. Training-loop overhead: train()'s learner vs a plain PyTorch loop (CPU, in-memory data)", "",
            "train(): learner.build + learner.fit (fit_one_cycle, the real callbacks) with its DataLoaders swapped "
            "for in-memory tensors. Plain loop: the same nn.Module, the same tensors and precision, torch fused AdamW. "
            "Stock fastai: vision_learner + fit_one_cycle, fp32, no toolkit callbacks. Images/s.", "",
            *_table(["model", "train() precision", "train()", "plain loop", "train() / plain (target >= 0.95)",
                     "stock fastai fp32", "train() / stock fp32 (target >= 1.5)"], rows)]


def _render_pipeline(r: dict[str, Any]) -> list[str]:
    p = r["pipeline"]
    rows = [("in-memory tensors (reference)", "-", fmt(p["memory"]), "1"),
            (f"JPEG folder via the pre-resize cache ({p['px']} px PNG)", fmt(p["cached_loader"]), fmt(p["cached"]),
             _verdict(p["cached_vs_memory"], 0.9)),
            (f"JPEG folder, no cache ({p['source_px']} px JPEGs decoded and resized every epoch)",
             fmt(p["jpeg_loader"]), fmt(p["jpeg"]), _verdict(p["jpeg_vs_memory"], 0.9))]
    return [f"### 2. Data pipeline: end to end, {p['arch']} @{p['px']} px ({p['precision']}), "
            f"num_workers={p['num_workers']} (the toolkit's default)", "",
            "The toolkit's DataLoaders (item Resize, flips and Normalize as batch transforms) feeding "
            "learner.fit, vs the same learner on in-memory tensors. Images/s.", "",
            *_table(["data", "DataLoader alone", "end to end", "/ in-memory (target >= 0.9)"], rows)]


def _render_cache(r: dict[str, Any]) -> list[str]:
    c = r["cache"]
    rows = [("toolkit data.build_cache (RGB PNG, Lanczos, threads)", fmt(c["toolkit_1"], 0), fmt(c["toolkit_2"], 0),
             fmt(c["toolkit_parallel"], 2)),
            ("fastai resize_images (keeps JPEG, bilinear, processes)", fmt(c["fastai_1"], 0), fmt(c["fastai_2"], 0),
             fmt(c["fastai_parallel"], 2))]
    return [f"### 3. Pre-resize cache: {c['images']:,} JPEGs ({c['source_px']} px) to {c['px']} px", "",
            *_table(["images/s", "1 worker", "2 workers", "speed-up from 2 workers"], rows), "",
            f"Toolkit / fastai at 2 workers: {fmt(c['toolkit_vs_fastai'], 2)}."]


def _render_sweep(r: dict[str, Any]) -> list[str]:
    w = r["sweep"]
    quick = w["quickstart_fit_s"]
    rows = [("fresh interpreter + the worker's imports", fmt(w["imports"])),
            (f"whole sweep run (sweep.run_one: subprocess, {w['images']} images, 1 epoch, no TTA)", fmt(w["wall"])),
            ("of which fit", fmt(w["fit"])),
            ("per-run overhead = run - fit (imports, data listing, DataLoaders, build, predict, export)",
             fmt(w["overhead"])),
            ("DataLoaders creation alone (in-process)", fmt(w["dataloaders"], 2)),
            ("training time of a quickstart run (4,800 images at table 1's resnet18 @64 train() rate)",
             f"{quick:.0f}" if quick else "-"),
            ("overhead / quickstart training time", fmt(w["overhead_vs_quickstart"], 2))]
    return ["### 4. Sweep runner: per-run overhead (seconds)", "", *_table(["", "seconds"], rows)]


def _render_tta(r: dict[str, Any]) -> list[str]:
    t = r["tta"]
    rows = [("get_preds (plain)", fmt(t["plain"], 2)), (f"TTA n={t['n']}", fmt(t["tta"], 2)),
            ("TTA / plain", f"{fmt(t['tta_vs_plain'], 2)} (n + 1 = {t['n'] + 1} passes)")]
    return [f"### 5. TTA cost: {t['images']} validation images, {t['arch']} @{t['px']} px ({t['precision']})", "",
            *_table(["", "seconds"], rows)]


def _render_scaling(r: dict[str, Any]) -> list[str]:
    rows = [(f"{x['n']:,}", x["px"], x["precision"], f"{x['n_train']:,}", f"{x['n_predicted']:,}",
             f"{x['prep_s']:.1f}", f"{x['run_s']:.1f}", f"{x['fit_s']:.1f}", f"{x['relative_cost']:.2f}")
            for x in r["scaling"]]
    return ["### 6. Scaling: one-epoch train() runs (embedded data, no TTA; one measurement per point)", "",
            "prepare: generating the data set (first use) and caching it. run: train() with the data ready "
            "(listing, DataLoaders, build, fit, predicting validation + 500 test images, export). Last column: fit "
            "seconds per training image x pixel, relative to the first row (1.00 = linear in pixels x images). "
            "Images are generated at 64 px; larger sizes are resized per item.", "",
            *_table(["images", "px", "precision", "trained", "predicted", "prepare s", "run s", "fit s",
                     "fit cost / (image x pixel), relative"], rows)]


def _render_gpu(r: dict[str, Any]) -> list[str]:
    g = r["gpu"]
    header = ["GPU row", "result"]
    if g is None:
        rows = [(name, "not measured (no GPU lent)") for name in (
            "resnet50 @224 fp16 channels_last: train() / plain AMP loop",
            "end to end from a JPEG folder / in-memory tensors",
            "one-epoch pass (competition-sized, resnet50 @224)")]
    else:
        lo, p, e = g["loop"], g["pipeline"], g["epoch"]
        rows = [(f"{lo['arch']} @{lo['px']} {lo['precision']}: train() / plain AMP loop",
                 f"{fmt(lo['vs_plain'], 2)} ({fmt(lo['toolkit'])} vs {fmt(lo['plain'])} img/s)"),
                ("end to end, cached / in-memory", f"{fmt(p['cached_vs_memory'], 2)} ({fmt(p['cached'])} img/s)"),
                (f"one epoch, {e['n']:,} images @{e['px']}", f"fit {e['fit_s']:.0f} s, run {e['run_s']:.0f} s")]
    return [f"### 7. GPU{' (' + g['device'] + ')' if g else ''}", "", *_table(header, rows)]


def splice(existing: str, block: str) -> str:
    """``existing`` with its generated block replaced by ``block`` (appended when it has none)."""
    start, end = existing.find(START), existing.find(END)
    if 0 <= start < end:
        return existing[:start] + block + existing[end + len(END):]
    return (existing.rstrip("\n") + "\n\n" if existing.strip() else "") + block + "\n"


def write_block(path: Path, block: str) -> Path:
    """Rewrite only the generated block of ``path``, atomically; everything else in the file is kept."""
    path = Path(path)
    existing = path.read_text() if path.exists() else ""
    return atomic.write_text(path, splice(existing, block))


# ---------------------------------------------------------------- command line


def _models(text: str) -> tuple[tuple[str, int], ...]:
    """'resnet18@64,resnet50@128' -> (("resnet18", 64), ("resnet50", 128))."""
    try:
        return tuple((arch, int(px)) for arch, px in (m.split("@") for m in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--models wants ARCH@PX[,ARCH@PX...], e.g. resnet18@64: {text!r}") from None


def main(argv: Sequence[str] | None = None, settings: BenchSettings | None = None) -> Path:
    """``python -m benchmarks.bench [--quick] [--out FILE]``; returns the file written."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"small sizes (~3 min); writes {QUICK_OUT} by default")
    parser.add_argument("--out", type=Path, help="file whose generated block to rewrite (default BENCHMARKS.md)")
    parser.add_argument("--render", type=Path, metavar="JSON", help="re-render saved results (no measuring)")
    parser.add_argument("--loops-only", action="store_true",
                        help=f"section 1 alone (train() / plain loop, ~4 min); writes {LOOPS_OUT} by default")
    parser.add_argument("--repeats", type=int, help="interleaved repeats per variant (default: the settings')")
    parser.add_argument("--models", type=_models, metavar="ARCH@PX,...",
                        help="section 1's models, e.g. resnet18@64,resnet50@128 (default: the settings')")
    args = parser.parse_args(argv)
    s = settings or (QUICK if args.quick else BenchSettings())
    if args.repeats:
        s = dataclasses.replace(s, repeats=args.repeats)
    if args.models:
        s = dataclasses.replace(s, train_models=args.models)
    partial = args.quick or args.loops_only  # never replaces the full block of BENCHMARKS.md by default
    out = args.out or (QUICK_OUT if args.quick else LOOPS_OUT if args.loops_only else Path("BENCHMARKS.md"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    flags = [f for f, on in (("--quick", args.quick), ("--loops-only", args.loops_only),
                             (f"--repeats {args.repeats}", args.repeats),
                             (f"--models {','.join(f'{a}@{px}' for a, px in s.train_models)}", args.models)) if on]
    command = "make bench" + (f" ARGS='{' '.join(flags)}'" if len(flags) > 1 else f" ARGS={flags[0]}" if flags else "")
    if args.render:
        results = json.loads(args.render.read_text())
    else:
        measure = run_loops if args.loops_only else run_all
        with tempfile.TemporaryDirectory(prefix="dff-bench-") as tmp, contextlib.redirect_stdout(io.StringIO()):
            results = measure(s, Path(tmp))  # stdout: fastai's progress bars; the log says what is measured
        atomic.write_json(out.with_name(f".{out.stem}.bench.json"), results)  # for --render (git-ignored)
    block = render(results, command, NOTES if not partial else "")
    write_block(out, block)
    log.info("wrote %s (%.1f min)", out, results["wall_s"] / 60)
    return out


NOTES = """
Toolkit changes these numbers led to (before -> after, measured on this box, 2026-11-29):
- **Optimizer** (learner.ADAMW): fastai's own Adam steps parameter by parameter in Python with temporaries;
  `opt.step()` alone on resnet18 took 31.8 ms vs 10.2 ms for torch's fused AdamW (same update, wd 0.01, eps
  1e-5; zero_grad 2.7 vs 0.8 ms). With fastai's Adam, train() ran resnet18 @64 at 0.42-0.75 of the plain loop
  (two earlier runs of this harness); with fused AdamW through fastai's OptimWrapper (schedulers unchanged),
  0.91-0.95. A py-spy profile of train()'s fit after the change (resnet18 @64, 851 samples): backward 508,
  forward (conv, batch norm, pool) ~250, fused Adam 29, validation 30 (untimed), DataLoader 3, OptimWrapper
  bookkeeping 2, fastai callbacks ~0.
- **channels_last** with bf16 / fp16 (fastai's ChannelsLast callback in learner.build): oneDNN's bf16
  convolutions want NHWC. Plain loop, resnet50 @128: bf16 20.3 -> 31.8 img/s (fp32 10.6 -> 18.2, but fp32 is
  left NCHW: resnet18 @64 fp32 was 9 % slower NHWC). This is most of the 2.4x over stock fastai fp32.
- **Pre-resize cache** (data.cache_one): PNG compress_level 6 -> 1 (still lossless): 2 workers 207-249 ->
  281-348 images/s (0.4x -> 0.6x of fastai's resize_images).

Targets not met, and why:
- train() / plain at 0.95 for resnet18 @64 (0.91) and resnet50 @128 (0.88): the profile above leaves ~1 % to
  the loop, and the spreads (up to 0.97 and 0.99) overlap the target: on this shared box a resnet50 repeat
  moved between 22 and 39 img/s. Rerun on a quiet 2-core EPYC (2026-12-06, `--loops-only --repeats 5`): 1.05 and
  0.98 / 1.01 and 1.02 in two runs; a per-phase profile (benchmarks/profile_loop.py) puts fastai's own per-batch
  cost at 1.5 % / 0.4 %: the rest is forward/backward noise (BENCHMARKS.md, issue 17 section).
- train() / stock fp32 at 1.5x: resnet18 @64 (1.08) trains fp32 on purpose (`precision: auto`,
  learner.BF16_MIN_PX): at 64 px bf16 was no faster here (plain loop: bf16 86.9, bf16 + channels_last 100.6,
  fp32 93.5 img/s: the casts cost what the smaller matmuls save), so only the optimizer's gain remains; 1.5x at
  64 px would take a larger batch or a GPU. convnext_tiny (1.43): in a plain loop bf16 itself gives only 1.41x
  (11.4 -> 16.1 img/s) and channels_last nothing (11.4 vs 11.1): depthwise 7x7 convs and LayerNorm (kept fp32
  by autocast) dominate, and train() already equals the plain loop (1.00).
- Uncached JPEGs (0.80 of in-memory) are not the default path: decoding 256 px JPEGs and resizing them per
  item every epoch is what the pre-resize cache removes (1.14 with it: loading is not the bottleneck).
- Cache vs fastai (0.6x): Lanczos + lossless PNG against bilinear + JPEG re-encoding; lossy re-encoding would
  alter the generator traces the models learn, so the cache keeps PNG.
- Per-run sweep overhead (~27 s, 0.7x of a quickstart run's training): ~23 s of it is a fresh interpreter
  importing torch, fastai and timm (~5 s of that torch._dynamo via torchvision.ops). Each run has its own
  process so a crash or kill cannot take the sweep with it; reusing one warm process per sweep would remove it.
- Scaling: linear in images (1.07-1.11 per image x pixel at 1k-16k), sub-linear in pixels (0.47 at 128 px, 0.27
  at 256 px): above 112 px the run switches to bf16 + channels_last, and 64 px batches underuse the cores.
- On a GPU box: the GPU trains resnet50 @128 at thousands of images/s while this loader makes ~260 per core
  (DataLoader-alone column), so there it needs `num_workers` = the cores (0 is right for 2 cores shared with
  torch), the pre-resize cache, and batch transforms on the GPU (fastai runs them on the DataLoaders' device).
"""

if __name__ == "__main__":
    main()
