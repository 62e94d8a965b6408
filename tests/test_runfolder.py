"""The run-folder contract: what runfolder.py writes, every reader reads back the same way.

Image ids such as "NA" and "null" are ids, not missing values, in every stage that reads a run folder
(pandas' default reading turns them into NaN); the folders here are written through runfolder itself.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from deepfake_fastai import atomic, config, ensemble, metrics, robustness, runfolder
from deepfake_fastai.config import ConfigError, TrainConfig, from_dict, load_train_config
from deepfake_fastai.data import cache_name
from deepfake_fastai.inspection import load_sweep
from deepfake_fastai.report import write_report
from deepfake_fastai.sweep import SweepConfig

ODD_IDS = ["NA", "null", "NaN", "None", "n/a", "#N/A", "nan", "000123"]  # NaN (or 123) to pandas' defaults
TEST_IDS = ["NA", "null", "N/A"]


def make_run(sweep_dir, name: str, seed: int, cache_dir) -> runfolder.RunResult:
    """A complete run folder written through the contract (no learner: nothing here loads one)."""
    rng = np.random.default_rng(seed)
    ids = ODD_IDS
    y = np.arange(len(ids)) % 2
    p = np.clip(0.3 * y + 0.7 * rng.random(len(ids)), 0, 1)
    run_dir = sweep_dir / name
    runfolder.start(run_dir, TrainConfig(name=name, runs_dir=str(sweep_dir), item_resize_px=32))
    valid = pd.DataFrame({"id": ids, "label": np.where(y == 1, "fake", "real")})
    runfolder.write_predictions(run_dir, valid, p, pd.DataFrame({"id": TEST_IDS}), rng.random(len(TEST_IDS)))
    runfolder.write_history(run_dir, pd.DataFrame({"epoch": [0], "train_loss": [0.7], "valid_loss": [0.6]}))
    return runfolder.finish(run_dir, {
        **metrics.classification(y, p.astype(np.float32)), "run": name, "arch": "resnet18", "size": 64,
        "item_resize_px": 32, "epochs": 1, "positive_class": "fake", "negative_class": "real",
        "cache_dir": str(cache_dir)})


@pytest.fixture
def odd_sweep(tmp_path):
    """runs/odd/: two complete runs whose ids pandas would read as missing, their cached images, a sweep.yaml."""
    cache = tmp_path / "cache" / "32px"
    for i in ODD_IDS:
        (cache / cache_name(i)).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (128, 64, 32)).save(cache / cache_name(i), format="PNG")
    sweep = SweepConfig(name="odd", runs_dir=str(tmp_path / "runs"), runs=[{"name": "a"}, {"name": "b"}])
    sweep_dir = tmp_path / "runs" / "odd"
    atomic.write_text(sweep_dir / "sweep.yaml", yaml.safe_dump(dataclasses.asdict(sweep), sort_keys=False))
    for seed, name in enumerate(("a", "b")):
        make_run(sweep_dir, name, seed, cache)
    return sweep_dir


def test_na_and_null_ids_survive_the_ensembler(odd_sweep):
    runs = ensemble.load_runs(ensemble.resolve_run_dirs([odd_sweep]))
    assert [list(r.valid_ids) for r in runs] == [ODD_IDS] * 2
    assert list(runs[0].test_ids) == TEST_IDS
    result = ensemble.build(runs, "mean")
    assert list(result.test_ids) == TEST_IDS and len(result.valid_ids) == len(ODD_IDS)


def test_na_and_null_ids_survive_the_report(odd_sweep, tmp_path):
    sweep = load_sweep(odd_sweep)  # the report's reader
    assert sorted(r.name for r in sweep.runs) == ["a", "b"]
    assert all(list(r.valid["id"]) == ODD_IDS and list(r.test["id"]) == TEST_IDS for r in sweep.runs)
    page = write_report(odd_sweep, tmp_path / "no-submissions", interpret=False)
    assert page.is_file() and "<table" in page.read_text()


def test_na_and_null_ids_survive_robustness(odd_sweep):
    paths, y = robustness.validation_images(odd_sweep / "a")
    cache = runfolder.cache_dir(odd_sweep / "a")
    assert paths == [cache / cache_name(i) for i in ODD_IDS] and all(p.is_file() for p in paths)
    assert list(y) == list(np.arange(len(ODD_IDS)) % 2)


def test_finish_writes_the_contract(tmp_path):
    result = make_run(tmp_path, "r", 0, tmp_path / "cache")
    run_dir = result.run_dir
    assert runfolder.is_complete(run_dir) and result.metrics["status"] == "complete"
    assert runfolder.read_record(run_dir)["status"] == "complete"
    assert runfolder.read_config(run_dir).item_resize_px == 32  # the folder describes itself
    assert runfolder.cache_dir(run_dir) == tmp_path / "cache"
    listed = set(yaml.safe_load((run_dir / runfolder.MANIFEST).read_text())["files"])
    assert listed == {runfolder.CONFIG, runfolder.HISTORY, *(f(p) for p in ("valid", "test")
                                                             for f in (runfolder.ids_file, runfolder.probs_file))}


def test_an_older_run_folder_reads_under_todays_names(tmp_path):
    result = make_run(tmp_path, "old", 0, tmp_path / "cache")
    found = runfolder.read_metrics(result.run_dir)
    old = {k: v for k, v in found.items() if k not in ("item_resize_px", "cache_dir")} | {"item_resize": 48}
    atomic.write_json(result.run_dir / runfolder.METRICS, old)
    again = runfolder.read_metrics(result.run_dir)
    assert again["item_resize_px"] == 48 and "item_resize" not in again
    split = tmp_path / "data" / "cache" / "key" / "split_v20_t0_s42.csv"
    runfolder.add_metrics(result.run_dir, {"split_file": str(split)})
    assert runfolder.cache_dir(result.run_dir) == split.parent / "48px"


# ------------------------------------------------------------------------------ one name: item_resize_px
def test_item_resize_px_defaults_to_size_and_is_recorded():
    assert TrainConfig(size=96).item_resize_px == 96
    assert TrainConfig(size=96, item_resize_px=128).item_resize_px == 128
    assert TrainConfig(size=96).run_name == "resnet18_r96-96_fine_tune_s42"


def test_the_old_yaml_key_works_with_one_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(config, "_warned", set())  # as in a fresh process
    path = tmp_path / "old.yaml"
    path.write_text("arch: resnet18\nsize: 64\nitem_resize: 80\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_train_config(path)
        load_train_config(path)  # the same file again: no second line
    assert cfg.item_resize_px == 80
    lines = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert lines == [f"{path}: 'item_resize' is deprecated, use 'item_resize_px'"]
    with pytest.raises(ConfigError, match="both 'item_resize' and its new name 'item_resize_px'"):
        from_dict(TrainConfig, {"item_resize": 80, "item_resize_px": 80}, "x.yaml")


@pytest.mark.parametrize(("argv", "old"), [(["train", "--item-resize", "80"], "--item-resize"),
                                           (["data", "--size", "80"], "--size")])
def test_old_flags_set_item_resize_px_with_one_warning(argv, old, capsys):
    from deepfake_fastai.cli import build_parser

    assert build_parser().parse_args(argv).item_resize_px == 80
    assert capsys.readouterr().err == f"warning: {old} is deprecated, use --item-resize-px\n"
    assert build_parser().parse_args([argv[0], "--item-resize-px", "80"]).item_resize_px == 80
