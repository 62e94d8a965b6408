"""The benchmark harness runs end to end in --quick mode on a tiny setting. No timed assertions."""

from __future__ import annotations

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
