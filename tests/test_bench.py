"""The benchmark harness runs end to end in --quick mode on a tiny setting. No timed assertions."""

from __future__ import annotations

import argparse
import dataclasses
import math
import re

import pytest

from benchmarks import bench

TINY = dataclasses.replace(
    bench.QUICK, tiny_arch="test_resnet", bs=8, repeats=1, timed_batches=2, train_models=(("resnet18", 32),),
    pipeline_model=("resnet18", 32), pipeline_source_px=48, cache_images=24, cache_px=32, sweep_images=24,
    import_repeats=0, tta_images=8, tta_n=1, scale_counts=(24, 48), scale_px=(64,), quickstart_train_images=48)


@pytest.mark.parametrize(("existing", "expected"), [
    ("", f"{bench.START}\nnew\n{bench.END}\n"),
    ("# Title\n", f"# Title\n\n{bench.START}\nnew\n{bench.END}\n"),
    (f"a\n{bench.START}\nold\n{bench.END}\nb\n", f"a\n{bench.START}\nnew\n{bench.END}\nb\n"),
])
def test_splice_replaces_only_the_generated_block(existing, expected):
    assert bench.splice(existing, f"{bench.START}\nnew\n{bench.END}") == expected


def test_steady_rate_excludes_warmup():
    assert bench.steady_rate([10.0, 11.0, 12.0, 13.0], bs=4, warmup=2) == pytest.approx(4.0)  # 2 batches in 2 s
    with pytest.raises(ValueError):
        bench.steady_rate([1.0], bs=4, warmup=1)


def test_quick_harness_writes_a_well_formed_block(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    hand = "# Benchmarks\n\n## Sweeps (hand-written)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    out.write_text(f"{hand}\n{bench.START}\nstale numbers\n{bench.END}\n\n## After the block\n\nkept\n")
    bench.main(["--quick", "--out", str(out)], settings=TINY)
    text = out.read_text()
    assert text.startswith(hand) and text.endswith("\n## After the block\n\nkept\n")
    assert text.count(bench.START) == text.count(bench.END) == 1 and "stale numbers" not in text
    block = text[text.index(bench.START):text.index(bench.END)]
    for heading in ("### 1.", "### 2.", "### 3.", "### 4.", "### 5.", "### 6.", "### 7."):
        assert heading in block
    assert "not measured (no GPU lent)" in block or "### 7. GPU (" in block
    ratios = [float(v) for v in re.findall(r"\| ([0-9.]+)(?: \([0-9.]+-[0-9.]+\))? (?:met|\*\*not met\*\*)", block)]
    assert len(ratios) == 2 * len(TINY.train_models) + 2  # table 1: two per model; table 2: cached, jpeg
    assert all(math.isfinite(r) and r > 0 for r in ratios)
    assert re.search(r"TTA / plain \| [0-9.]+", block)
    assert re.search(r"overhead / quickstart training time \| [0-9.]+", block)


def test_loops_only_writes_section_1_alone(tmp_path):
    out = tmp_path / "loops.md"
    bench.main(["--loops-only", "--repeats", "1", "--models", "resnet18@32", "--out", str(out)], settings=TINY)
    block = out.read_text()
    assert "### 1." in block and "### 2." not in block and "### Notes" not in block
    assert "ARGS='--loops-only --repeats 1 --models resnet18@32'" in block
    assert len(re.findall(r"(?:met|\*\*not met\*\*) \|", block)) == 2  # one row: vs plain, vs stock


def test_models_option_parses_arch_at_px():
    assert bench._models("resnet18@64,resnet50@128") == (("resnet18", 64), ("resnet50", 128))
    with pytest.raises(argparse.ArgumentTypeError, match="ARCH@PX"):
        bench._models("resnet18")


def test_profile_phases_split_a_batch_at_its_stamps():
    from benchmarks import profile_loop

    def batch(t0):
        evs = [f"{e}:{w}" for e in profile_loop.EVENTS for w in ("first", "last")]
        return [(e, t0 + i) for i, e in enumerate(evs)]  # 1 s between consecutive stamps

    rows = profile_loop.batches_by_phase(batch(0) + batch(100), warmup=1, phases=profile_loop.PHASES)
    assert len(rows) == 1  # the warm-up batch is left out
    assert rows[0]["data: DataLoader fetch, to device, split"] == 85  # end of batch 1 (t=15) to t=100
    assert rows[0]["forward"] == rows[0]["backward"] == rows[0]["optimizer step"] == 1
    assert sum(rows[0].values()) == 100
