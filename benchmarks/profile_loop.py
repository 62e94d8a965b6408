"""Where a training batch's time goes: train()'s learner vs the plain loop of bench.py, phase by phase.

``python -m benchmarks.profile_loop resnet50@128 [--repeats 3]`` builds the same set-up as section 1 of
``benchmarks.bench`` (learner.build + in-memory DataLoaders, and the plain loop on the same module, tensors
and precision), then runs both interleaved with a perf_counter stamp at every phase boundary. In the learner
two callbacks stamp every event, one first (order -1000) and one last (order 10000), so the time of fastai's
own code (DataLoader fetch, forward, loss, backward, step, zero_grad) is told apart from the callbacks'.
Prints a Markdown table: median ms per steady-state batch per phase (warm-up batches excluded).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks import bench

EVENTS = ("before_batch", "after_pred", "after_loss", "before_backward", "after_backward", "before_step",
          "after_step", "after_batch")
# (stamp before, stamp after) -> phase. "first"/"last": the stamping callback that runs first / last on an event.
PHASES = {
    ("after_batch:last", "before_batch:first"): "data: DataLoader fetch, to device, split",
    ("before_batch:first", "before_batch:last"): "callbacks before_batch (schedulers, autocast on)",
    ("before_batch:last", "after_pred:first"): "forward",
    ("after_pred:first", "after_pred:last"): "callbacks after_pred (autocast off, pred.float())",
    ("after_pred:last", "after_loss:first"): "loss (+ clone)",
    ("after_loss:first", "after_loss:last"): "callbacks after_loss (non-finite check)",
    ("after_loss:last", "before_backward:first"): "other (fastai loop)",
    ("before_backward:first", "before_backward:last"): "other callbacks",
    ("before_backward:last", "after_backward:first"): "backward",
    ("after_backward:first", "after_backward:last"): "other callbacks",
    ("after_backward:last", "before_step:first"): "other (fastai loop)",
    ("before_step:first", "before_step:last"): "other callbacks",
    ("before_step:last", "after_step:first"): "optimizer step",
    ("after_step:first", "after_step:last"): "other callbacks",
    ("after_step:last", "after_batch:first"): "zero_grad",
    ("after_batch:first", "after_batch:last"): "callbacks after_batch (Recorder, progress)",
}


def stamper(which: str, order: int, log: list):
    """A fastai callback appending (event:which, perf_counter) on every per-batch training event."""
    from fastai.callback.core import Callback

    def stamp(event: str):
        def method(self) -> None:
            if self.training:
                log.append((f"{event}:{which}", time.perf_counter()))
        return method

    methods = {ev: stamp(ev) for ev in EVENTS}
    return type(f"Stamp_{which}", (Callback,), {"order": order, **methods})()


def batches_by_phase(log: list, warmup: int, phases: dict) -> list[dict[str, float]]:
    """Per steady-state batch: seconds per phase, from consecutive stamps (a batch ends at after_batch:last)."""
    out, cur, n = [], defaultdict(float), 0
    for (a, ta), (b, tb) in zip(log, log[1:], strict=False):
        cur[phases[(a, b)]] += tb - ta
        if b == "after_batch:last":
            n += 1
            if n > warmup:
                out.append(dict(cur))
            cur = defaultdict(float)
    return out


def toolkit_profile(learn, cfg, warmup: int) -> list[dict[str, float]]:
    from deepfake_fastai import learner

    log: list = []
    cbs = [stamper("first", -1000, log), stamper("last", 10000, log)]
    learn.add_cbs(cbs)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            learner.fit(learn, cfg)
    finally:
        learn.remove_cbs(cbs)
    return batches_by_phase(log, warmup, PHASES)  # batch 1 lacks its fetch (no after_batch before it): warm-up


def plain_profile(model, x, y, precision: str, bs: int, warmup: int, channels_last: bool,
                  lr: float = 1e-3) -> list[dict[str, float]]:
    """bench.plain_rate's loop with a stamp between phases."""
    import torch
    import torch.nn.functional as F

    from deepfake_fastai import learner

    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = learner.ADAMW.keywords["opt"](model.parameters(), lr=lr)
    dtype = {"bf16": torch.bfloat16}.get(precision)
    model.train()
    rows = []
    for i in range(0, len(x) - bs + 1, bs):
        t = [time.perf_counter()]
        xb, yb = x[i:i + bs], y[i:i + bs]
        t.append(time.perf_counter())
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(xb)
        t.append(time.perf_counter())
        loss = F.cross_entropy(out.float(), yb)
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        opt.zero_grad()
        t.append(time.perf_counter())
        names = ("data: DataLoader fetch, to device, split", "forward", "loss (+ clone)", "backward",
                 "optimizer step", "zero_grad")
        rows.append({n: b - a for n, a, b in zip(names, t, t[1:], strict=False)})
    return rows[warmup:]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_loop", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=bench._models, help="ARCH@PX, e.g. resnet50@128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=8, help="training batches per fit (2 warm-up)")
    parser.add_argument("--plain-first", action="store_true", help="run the plain loop first in each repeat")
    args = parser.parse_args(argv)
    (arch, px), = args.model
    s = bench.BenchSettings(timed_batches=args.batches - 2)
    from deepfake_fastai import learner

    learner.set_threads()
    with tempfile.TemporaryDirectory(prefix="dff-profile-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        bench._warm_up(s)
        n = s.bs * (s.warmup_batches + s.timed_batches)
        prepared = bench.synthetic_prepared(Path(tmp), max(n * 2, 400), 64)
        x, y = bench._items_tensors(prepared, n, px, arch)
        learn, cfg, precision = bench.toolkit_learner(arch, px, prepared, s.bs)
        learn.dls = bench.memory_dls(x, y, s.bs)
        cl = hasattr(learn, "channels_last")
        rows = {"train()": [], "plain": []}
        runs = {"train()": lambda: toolkit_profile(learn, cfg, s.warmup_batches),
                "plain": lambda: plain_profile(learn.model, x, y, precision, s.bs, s.warmup_batches, cl)}
        order = ["plain", "train()"] if args.plain_first else ["train()", "plain"]
        for _ in range(args.repeats):  # interleaved, as bench.py does: drift hits both
            for name in order:
                rows[name] += runs[name]()
    print(f"{arch} @{px} ({precision}{' + channels_last' if cl else ''}), {args.repeats} interleaved repeats x "
          f"{s.timed_batches} steady batches of {s.bs}, {' first, '.join(order)} second; median ms per batch")
    phases = list(dict.fromkeys([*PHASES.values(), "zero_grad"]))
    print("| phase | train() | plain | train() - plain |\n|---|---|---|---|")
    for ph in [*phases, "total"]:
        med = {k: statistics.median([(sum(r.values()) if ph == "total" else r.get(ph, 0.0)) * 1e3 for r in v])
               for k, v in rows.items()}
        if med["train()"] or med["plain"]:
            print(f"| {ph} | {med['train()']:.1f} | {med['plain']:.1f} | {med['train()'] - med['plain']:+.1f} |")


if __name__ == "__main__":
    main()
