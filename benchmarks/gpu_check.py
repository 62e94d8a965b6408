"""One-command GPU check (``make bench-gpu``, ~5-8 min on one H200): the CUDA path end to end, with numbers.

Steps, in this order (the first needs a runner that has not initialised CUDA, so it comes first):
1. forced CUDA OOM: a two-run sweep through the warm (forked) workers whose first attempt of run "oom" hits a
   real CUDA out-of-memory (an allocation larger than the GPU); the runner retries it with half the micro-batch
   in a fresh child, and run "ok" completes after it.
2. train() vs a plain AMP channels_last loop, resnet50 @224, in-memory tensors (bench.measure_train_loop).
3. end to end from a JPEG folder through the pre-resize cache, num_workers auto (bench.measure_pipeline), and a
   batch checked to arrive on the GPU after fastai's batch transforms.
4. fp16 end to end with the public API: train() (precision auto -> fp16), TTA, export, load_learner, predict.
Writes the results as a dated Markdown section into BENCHMARKS.md (between gpu-check markers) and JSON beside
it. Exits 2 at once, with the reason, on a machine without CUDA.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# is_available() through NVML: asking the CUDA runtime would initialise CUDA in this process, and the warm
# workers of step 1 are forked from it (a CUDA context does not survive fork)
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import torch  # noqa: E402

log = logging.getLogger("gpu_check")
START, END = "<!-- gpu-check:start -->", "<!-- gpu-check:end -->"
ARCH, PX = "resnet50", 224


def bench_module():
    """The benchmark functions: benchmarks/bench.py once moved there (issue 15), else deepfake_fastai.bench."""
    try:
        from benchmarks import bench  # type: ignore[import-not-found]
    except ImportError:
        from deepfake_fastai import bench
    return bench


def check_cuda() -> None:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda}); run it on a GPU machine", file=sys.stderr)
        sys.exit(2)


def _oom_once(real_fit):
    """learner.fit that, on a run's first attempt (accum 1), allocates more than the GPU holds: a real OOM."""
    def fit(learn, cfg):
        if cfg.name == "oom" and cfg.accum == 1:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.empty(2 * total, dtype=torch.uint8, device="cuda")
        return real_fit(learn, cfg)
    return fit


def step_oom_retry(tmp: Path, root: Path) -> dict[str, Any]:
    from deepfake_fastai import learner, warm
    from deepfake_fastai.config import DataConfig
    from deepfake_fastai.sweep import SweepConfig, run_sweep

    assert not torch.cuda.is_initialized(), "CUDA initialised before the warm workers fork"
    sweep = SweepConfig(name="oom", runs_dir=str(tmp / "runs"),
                        data=DataConfig(source="folder", path=str(root), data_dir=str(tmp / "data")),
                        defaults={"arch": ARCH, "size": PX, "epochs": 1, "bs": 64, "tta_n": 1},
                        runs=[{"name": "oom"}, {"name": "ok"}])
    real_fit, learner.fit = learner.fit, _oom_once(learner.fit)
    try:
        rows = {r["run"]: r for r in run_sweep(sweep)}
    finally:
        learner.fit = real_fit
    ok = (rows["oom"]["status"] == "complete" and "CUDA OOM: retried" in str(rows["oom"].get("note"))
          and rows["ok"]["status"] == "complete")
    return {"passed": ok, "warm": warm.cold_reason(True, sys.executable) is None,
            **{f"{n}_{k}": rows[n].get(k) for n in rows for k in ("status", "note", "error", "wall_time_s")}}


def step_batch_on_gpu(tmp: Path, root: Path) -> dict[str, Any]:
    from deepfake_fastai import learner
    from deepfake_fastai.config import DataConfig, TrainConfig
    from deepfake_fastai.data import prepare

    cfg = TrainConfig(arch=ARCH, size=PX, bs=64, data=DataConfig(source="folder", path=str(root),
                                                                 data_dir=str(tmp / "data")))
    dls = learner.dataloaders(cfg, prepare(cfg.data, item_resize_px=cfg.item_resize_px))
    x, y = dls.train.one_batch()
    return {"passed": x.is_cuda and dls.train.fake_l.num_workers > 0 and dls.train.pin_memory,
            "device": str(x.device), "num_workers": dls.train.fake_l.num_workers, "pin_memory": dls.train.pin_memory}


def step_fp16_end_to_end(tmp: Path, root: Path) -> dict[str, Any]:
    import deepfake_fastai as dff
    from deepfake_fastai.config import DataConfig
    from deepfake_fastai.learner import load_learner

    start = time.perf_counter()
    result = dff.train(ARCH, size=PX, epochs=1, bs=64, tta_n=2, runs_dir=str(tmp / "runs"),
                       data=DataConfig(source="folder", path=str(root), data_dir=str(tmp / "data")))
    metrics = json.loads((Path(result.run_dir) / "metrics.json").read_text())
    learn = load_learner(Path(result.run_dir) / "learner.pkl", cpu=False)
    test = sorted((root / "real").glob("*.jpg"))[:8]
    probs = learn.get_preds(dl=learn.dls.test_dl(test))[0]
    return {"passed": metrics.get("precision_mode") == "fp16" and metrics.get("status") == "complete"
            and len(probs) == len(test), "precision_mode": metrics.get("precision_mode"), "auc": metrics.get("auc"),
            "fit_time_s": metrics.get("fit_time_s"), "wall_s": round(time.perf_counter() - start, 1)}


def run_steps(tmp: Path, images: int, quick: bool) -> dict[str, Any]:
    """Every step in order; a step that raises is recorded as failed with its error and the next one runs."""
    bench = bench_module()
    settings = dataclasses.replace(bench.QUICK if quick else bench.BenchSettings(), bs=64, repeats=3,
                                   warmup_batches=3, timed_batches=10, pipeline_model=(ARCH, PX),
                                   pipeline_source_px=256)
    root = bench.jpeg_folder(tmp / "jpeg", images, 256)
    steps = {
        "oom_retry": lambda: step_oom_retry(tmp / "oom", root),
        "loop": lambda: bench.measure_train_loop(settings, tmp / "loop", ARCH, PX),
        "pipeline": lambda: bench.measure_pipeline(settings, tmp / "pipeline"),
        "batch_on_gpu": lambda: step_batch_on_gpu(tmp / "gpu_batch", root),
        "fp16_end_to_end": lambda: step_fp16_end_to_end(tmp / "e2e", root),
    }
    results: dict[str, Any] = {}
    for name, step in steps.items():
        start = time.perf_counter()
        log.info("gpu_check: %s", name)
        try:
            results[name] = step()
        except Exception as e:  # noqa: BLE001 - one failed step is reported; the others still measure
            log.exception("gpu_check: %s failed", name)
            results[name] = {"passed": False, "error": f"{type(e).__name__}: {e}"}
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
    return results


def render(results: dict[str, Any], command: str) -> str:
    bench = bench_module()
    loop, pipe = results["loop"], results["pipeline"]
    rows = [("forced CUDA OOM retried (warm workers)", _ok(results["oom_retry"])),
            (f"{ARCH} @{PX} train() / plain AMP channels_last loop, in-memory",
             f"{bench.fmt(loop['vs_plain'], 2)} ({bench.fmt(loop['toolkit'])} vs {bench.fmt(loop['plain'])} img/s)"
             if "vs_plain" in loop else _ok(loop)),
            ("end to end from the JPEG cache / in-memory, num_workers auto",
             f"{bench.fmt(pipe['cached_vs_memory'], 2)} ({bench.fmt(pipe['cached'])} img/s, "
             f"{results['batch_on_gpu'].get('num_workers')} workers)" if "cached" in pipe else _ok(pipe)),
            ("batch on the GPU after the batch transforms", _ok(results["batch_on_gpu"])),
            ("fp16 end to end (train, TTA, export, load, predict)", _ok(results["fp16_end_to_end"]))]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [START, f"### GPU check ({torch.cuda.get_device_name(0)}, {date})", "",
             f"`{command}`; torch {torch.__version__}, CUDA {torch.version.cuda}; ratios are medians (min-max) "
             "of interleaved repeats.", "", "| check | result |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join([*lines, END])


def _ok(step: dict[str, Any]) -> str:
    detail = ", ".join(f"{k} {v}" for k, v in step.items() if k not in ("passed", "error"))
    return ("passed" if step.get("passed") else f"FAILED {step.get('error', '')}") + f" ({detail})"


def main(argv: list[str] | None = None) -> int:
    from deepfake_fastai import atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="Markdown file to update")
    parser.add_argument("--images", type=int, default=2560, help="JPEGs generated for the end-to-end steps")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, ~2 min)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_cuda()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        results = run_steps(Path(tmp), args.images, args.quick)
    block = render(results, "make bench-gpu" + (" ARGS=--quick" if args.quick else ""))
    atomic.write_text(args.out.with_suffix(".gpu.json"), json.dumps(results, indent=1, default=str))
    existing = args.out.read_text() if args.out.exists() else ""
    start, end = existing.find(START), existing.find(END)
    text = existing[:start] + block + existing[end + len(END):] if 0 <= start < end else existing + "\n" + block + "\n"
    atomic.write_text(args.out, text)
    print(block)
    return 0 if all(r.get("passed", True) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
