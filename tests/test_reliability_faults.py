"""Injected faults: the sweep goes on or stops cleanly, a restart finishes the work, finished runs stay byte-identical.

One scenario, run once for the module, over a folder that mixes good images with every bad kind
(docs/RELIABILITY.md): the real `deepfake-fastai sweep` command, with each worker called in this process instead of
a child (the faults are injected here; this test process has trained in-process, so it could not fork warm workers:
tests/test_sweep_runs.py and tests/test_warm.py cover real child processes, warm and crashed).
Runs: A ok; B loss becomes NaN; C raises; D a CUDA out-of-memory on its first attempt; E a full disk while
writing valid_probs.npy. Then a SIGKILL in the middle of two artifact writes (a small child without torch), and
a restart without the faults. A fake Kaggle key is planted in the environment throughout.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from fastai.callback.core import Callback
from PIL import Image

from deepfake_fastai import atomic, learner, runfolder, warm
from deepfake_fastai import sweep as sweep_mod
from deepfake_fastai.runfolder import is_complete
from tests.conftest import run_cli as _cli
from tests.conftest import run_worker_here as _worker_here

sys.path.insert(0, str(Path(__file__).parent))
from kaggle_standin import Server, port_free  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the bomb case itself

REPO = Path(__file__).resolve().parents[1]
SECRET = "KGL-s3cr3t-planted-by-the-test"
RUNS = "ABCDE"
BOMB_LIMIT = 1500  # Image.MAX_IMAGE_PIXELS during the scenario: 32 px images pass, a 45 px one is a "bomb"
GOOD_EXTRA = {  # converted, then trained on: id below train/ -> how it is made
    "fake/16 bit.png": lambda p: Image.fromarray((np.arange(1024).reshape(32, 32) * 60).astype(np.uint16)).save(p),
    "fake/grey.png": lambda p: _img(p, 1, "L"),
    "fake/rgba.png": lambda p: _img(p, 2, "RGBA"),
    "real/palette.png": lambda p: _img(p, 3, "P"),
    "real/cmyk.jpg": lambda p: _img(p, 4, "CMYK", format="JPEG"),
    "real/exif rotated.jpg": lambda p: _img(p, 5, px=(32, 24), format="JPEG", exif=_rotated()),
    "real/café (写真) ü.png": lambda p: _img(p, 6),
}
BAD = {  # id -> reason fragment in bad_images.csv
    "fake/empty.png": "cannot identify image file",
    "fake/truncated.jpg": "truncated",
    "fake/text.jpg": "cannot identify image file",
    "fake/one pixel.png": "1x1 px is too small",
    "fake/bomb.png": "decompression bomb",
    "real/bomb warn.png": "above Pillow's decompression-bomb limit",
    "real/.DS_Store": "hidden",
    "real/._photo.jpg": "hidden",
    "real/loop": "loop",
}


def _img(path: Path, seed: int, mode: str = "RGB", px=32, **save) -> Path:
    w, h = (px, px) if isinstance(px, int) else px
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path, **save)
    return path


def _rotated() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif


def _mixed_folder(tiny_data: Path, root: Path) -> Path:
    shutil.copytree(tiny_data, root)
    train_dir = root / "train"
    for rel, make in GOOD_EXTRA.items():
        make(train_dir / rel)
    full = _img(train_dir / "fake" / "whole.jpg", 7, format="JPEG", quality=95).read_bytes()
    (train_dir / "fake" / "whole.jpg").unlink()
    (train_dir / "fake" / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (train_dir / "fake" / "empty.png").write_bytes(b"")
    (train_dir / "fake" / "text.jpg").write_text("not an image")
    _img(train_dir / "fake" / "one pixel.png", 8, px=1)
    _img(train_dir / "fake" / "bomb.png", 9, "1", px=64)  # above 2x the limit: Pillow refuses at open
    _img(train_dir / "real" / "bomb warn.png", 10, "1", px=45)  # 1x-2x: Pillow would only warn, then decode
    (train_dir / "real" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    _img(train_dir / "real" / "._photo.jpg", 11, format="JPEG")
    os.symlink("..", train_dir / "real" / "loop")
    return root


class _NaNLoss(Callback):
    """The injected fault: the loss turns NaN on the first training batch."""

    order = 90  # before StopOnNonFinite (95) looks at it

    def after_loss(self) -> None:
        if self.training:
            self.learn.loss = self.learn.loss * float("nan")


def _faulty_fit(real_fit):
    def fit(learn, cfg):
        if cfg.name == "B":
            learn.add_cb(_NaNLoss())
        if cfg.name == "C":
            raise RuntimeError("injected failure in run C")
        if cfg.name == "D" and cfg.accum == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected on CPU)")
        return real_fit(learn, cfg)
    return fit


def _full_disk_for_e(real_save):
    def save(path: Path, arr) -> None:
        if path.parent.name == "E" and path.name.startswith(".tmp-valid_probs.npy"):
            path.write_bytes(b"\x93NUMPY half")  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(path, arr)
    return save


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


KILL_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from deepfake_fastai import atomic

    def half_then_die(tmp):
        tmp.write_bytes(sys.argv[2].encode()[:20])
        os.kill(os.getpid(), signal.SIGKILL)  # as when the runner is killed mid-write: no cleanup runs

    atomic.write_with(Path(sys.argv[1]), half_then_die)
""")


def _kill_mid_write(path: Path, content: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(path), content], env=env, check=False).returncode


def _plant_secret(mp: pytest.MonkeyPatch, home: Path) -> None:
    for name in list(os.environ):
        if name.startswith("KAGGLE_"):
            mp.delenv(name)
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "planted-user", "key": SECRET}))
    mp.setenv("HOME", str(home))
    mp.setenv("KAGGLE_USERNAME", "planted-user")
    mp.setenv("KAGGLE_KEY", SECRET)
    mp.setenv("NO_PROXY", "localhost,127.0.0.1")


def _first_sweep_with_faults(s: SimpleNamespace) -> None:
    with pytest.MonkeyPatch.context() as faults:
        faults.setattr(learner, "fit", _faulty_fit(learner.fit))
        faults.setattr(runfolder, "_save_npy", _full_disk_for_e(runfolder._save_npy))
        s.first = _cli("sweep", "--cold", str(s.sweep_file))
    s.status = {n: _status(s.runs / n) for n in RUNS}
    s.e_files = sorted(p.name for p in (s.runs / "E").iterdir())
    s.finished = {n: _hashes(s.runs / n) for n in "AD"}
    s.board_before = (s.runs / "leaderboard.csv").read_bytes()


def _kill_mid_writes(s: SimpleNamespace) -> None:
    """SIGKILL while writing E's metrics.json (the run's last write) and while overwriting the leaderboard."""
    s.kill_codes = [_kill_mid_write(s.runs / "E" / "metrics.json", '{"status": "complete", "auc": 1.0}'),
                    _kill_mid_write(s.runs / "leaderboard.csv", "rank,run\n1,E\n")]
    s.after_kill = SimpleNamespace(
        e_complete=is_complete(s.runs / "E"), e_files=sorted(p.name for p in (s.runs / "E").iterdir()),
        board=(s.runs / "leaderboard.csv").read_bytes(), e_record=sweep_mod.read_record(s.runs / "E"))


@pytest.fixture(scope="module")
def scenario(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    root = _mixed_folder(tiny_data, tmp / "mixed")
    sweep_file = tmp / "faults.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "faults", "runs_dir": str(tmp / "runs"),
        "data": {"source": "folder", "path": str(root), "data_dir": str(tmp / "data")},
        "defaults": {"arch": "test_resnet", "epochs": 1, "size": 32, "bs": 16, "lr": 0.01, "tta_n": 1,
                     "precision": "fp32"},
        "runs": [{"name": n} for n in RUNS]}))
    runs = tmp / "runs" / "faults"
    s = SimpleNamespace(tmp=tmp, root=root, sweep_file=sweep_file, runs=runs, logs=io.StringIO())
    handler, root_logger = logging.StreamHandler(s.logs), logging.getLogger()
    level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.INFO)
    with pytest.MonkeyPatch.context() as mp:
        _plant_secret(mp, tmp / "home")
        mp.setattr(warm, "run_worker", _worker_here)
        with pytest.MonkeyPatch.context() as limit:  # both sweeps see the same bad files; later stages Pillow's limit
            limit.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)
            _first_sweep_with_faults(s)
            _kill_mid_writes(s)
            s.second = _cli("sweep", "--cold", str(sweep_file))
        yield s
    root_logger.removeHandler(handler)
    root_logger.setLevel(level)


def test_mixed_folder_sweep_trains_on_good_images_and_lists_each_bad_one(scenario):
    rc, out, _ = scenario.first
    assert rc == 0
    for bad_id, reason in BAD.items():
        line = next((x for x in out.splitlines() if x.startswith(f"  {bad_id}: ")), "")
        assert reason in line, f"{bad_id} not listed with its reason in:\n{out}"
    metrics = json.loads((scenario.runs / "A" / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_valid"] == 64 + len(GOOD_EXTRA)
    assert metrics["bad_images"] == len(BAD)
    split = pd.read_csv(metrics["split_file"], dtype=str)  # lists undecodable files too; training skips them
    trained = set(split.id) - set(BAD)
    valid = set(pd.read_csv(scenario.runs / "A" / "valid_ids.csv", dtype=str).id)
    assert len(trained) == 64 + len(GOOD_EXTRA) and set(GOOD_EXTRA) <= trained and valid <= trained


def test_nan_loss_fails_the_run_with_the_reason_and_the_sweep_goes_on(scenario):
    assert scenario.status["B"]["status"] == "failed"
    assert scenario.status["B"]["error"] == ("NonFiniteLoss: loss became nan at epoch 0 batch 0 (training); "
                                             "lower lr or use precision fp32")
    assert scenario.status["A"]["status"] == "complete"
    board = pd.read_csv(io.BytesIO(scenario.board_before)).set_index("run")
    assert board.loc["B", "status"] == "failed" and "lower lr" in board.loc["B", "error"]


def test_an_exception_in_one_run_fails_only_that_run(scenario):
    assert scenario.status["C"]["status"] == "failed"
    assert scenario.status["C"]["error"] == "RuntimeError: injected failure in run C"
    assert "3 run(s) did not complete: B, C, E" in scenario.first[1]


def test_cuda_oom_is_retried_with_half_the_micro_batch(scenario):
    assert scenario.status["D"]["status"] == "complete"
    board = pd.read_csv(io.BytesIO(scenario.board_before)).set_index("run")
    assert board.loc["D", "note"] == "CUDA OOM: retried with micro-batch 8 x accum 2 (same bs 16)"


def test_a_full_disk_fails_the_run_naming_the_file_and_leaves_no_partial_artifact(scenario):
    error = scenario.status["E"]["error"]
    assert error.startswith("WriteError: cannot write ") and "E/valid_probs.npy: the disk is full" in error
    assert "valid_probs.npy" not in scenario.e_files and not [f for f in scenario.e_files if f.startswith(".tmp")]


def test_sigkill_during_an_artifact_write_leaves_nothing_taken_as_complete(scenario):
    assert scenario.kill_codes == [-signal.SIGKILL] * 2
    after = scenario.after_kill
    assert not after.e_complete and "metrics.json" not in after.e_files
    assert any(f.startswith(".tmp-metrics.json-") for f in after.e_files)  # the torn bytes, under a temp name
    assert after.board == scenario.board_before  # an overwrite killed halfway leaves the old file whole
    assert after.e_record["status"] == "failed"


def test_restart_finishes_the_work_and_keeps_finished_runs_byte_identical(scenario):
    rc, out, _ = scenario.second
    assert rc == 0 and "did not complete" not in out
    assert all(is_complete(scenario.runs / n) for n in RUNS)
    assert {n: _hashes(scenario.runs / n) for n in "AD"} == scenario.finished
    assert not list(scenario.runs.rglob(".tmp-*"))  # the killed write's leftovers were cleared


def test_a_read_only_output_folder_stops_the_sweep_in_one_clear_line(scenario, monkeypatch):
    before = {n: _hashes(scenario.runs / n) for n in RUNS}

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    rc, out, err = _cli("sweep", str(scenario.sweep_file))
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: cannot write {scenario.runs / 'sweep.yaml'}: the file system is read-only")
    assert {n: _hashes(scenario.runs / n) for n in RUNS} == before


def test_learners_load_only_from_run_folders_that_list_them(scenario, tmp_path, caplog):
    from deepfake_fastai import load_learner
    from deepfake_fastai.manifest import UntrustedFile

    run = scenario.runs / "A"
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    assert {"learner.pkl", "valid_probs.npy", "valid_ids.csv", "test_probs.npy", "config.yaml"} <= set(manifest)
    assert load_learner(run / "learner.pkl").dls.vocab is not None
    stray = tmp_path / "learner.pkl"
    shutil.copy(run / "learner.pkl", stray)
    with pytest.raises(UntrustedFile, match=r"learner.pkl was not written by deepfake_fastai .*Unpickling runs code: "
                                            r"pass trust=True"):
        load_learner(stray)
    with caplog.at_level(logging.WARNING):
        load_learner(stray, trust=True)
    assert "unpickling runs arbitrary code" in caplog.text
    copy = tmp_path / "A"
    shutil.copytree(run, copy)
    with open(copy / "learner.pkl", "ab") as f:
        f.write(b"\0")
    with pytest.raises(UntrustedFile, match="learner.pkl changed since .*manifest.json was written"):
        load_learner(copy / "learner.pkl")
    shutil.copy(run / "learner.pkl", copy / "learner.pkl")
    (copy / "manifest.json").unlink()  # a run folder from before manifests: metrics.json's learner_sha256
    assert load_learner(copy / "learner.pkl") is not None


def test_a_checkpoint_that_does_not_match_its_record_is_never_resumed(tmp_path, caplog):
    from deepfake_fastai import bce_recipe
    from deepfake_fastai.config import TrainConfig

    cfg = TrainConfig(arch="test_efficientnet", recipe="effnetv2_bce", epochs=3)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.pth").write_bytes(b"pretend weights")
    record = {"epoch": 0, "config": bce_recipe.config_key(cfg), "best_auc": 0.7,
              "sha256": hashlib.sha256(b"pretend weights").hexdigest()}
    (folder / "last.json").write_text(json.dumps(record))
    assert bce_recipe.resume_point(tmp_path, cfg)["epoch"] == 0
    (folder / "last.pth").write_bytes(b"other weights")  # a newer save whose record never got written, or a swap
    with caplog.at_level(logging.WARNING):
        assert bce_recipe.resume_point(tmp_path, cfg) is None
    assert "last.pth does not match the SHA-256 in last.json" in caplog.text and "training from epoch 0" in caplog.text


def test_the_planted_kaggle_key_never_appears_anywhere(scenario, monkeypatch, caplog, capsys):
    if not port_free():
        pytest.skip("localhost:7777 (kagglesdk's fixed TEST endpoint) is busy")
    _plant_secret(monkeypatch, scenario.tmp / "home2")
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    texts = [scenario.logs.getvalue(), *scenario.first[1:], *scenario.second[1:]]
    subs = scenario.tmp / "subs"
    with Server() as standin, caplog.at_level(logging.DEBUG):
        texts += _cli("ensemble", str(scenario.runs), "--out-dir", str(subs), "--competition", "comp")[1:]
        standin.fail["StartSubmissionUpload"] = 401
        texts += _cli("submit", "-m", "fails", "--out-dir", str(subs))[1:]
        standin.fail.clear()
        texts += _cli("submit", "-m", "works", "--out-dir", str(subs))[1:]
        texts += _cli("submissions", "--out-dir", str(subs))[1:]
        texts += _cli("report", str(scenario.runs), "--no-interpret", "--submissions", str(subs))[1:]
        from deepfake_fastai import submissions_io

        standin.fail["StartSubmissionUpload"] = 403
        with pytest.raises(Exception) as raised:
            submissions_io.upload(b"id,label\n", "x.csv", "comp", "m")
        texts.append(f"{raised.value!r} {raised.value}")
    assert "error: Kaggle rejected the credentials (401" in "".join(texts)
    assert len(standin.submissions) == 1 and standin.requests  # the key went to the server, nowhere else
    captured = capsys.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    planted = {scenario.tmp / "home" / ".kaggle" / "kaggle.json", scenario.tmp / "home2" / ".kaggle" / "kaggle.json"}
    written = [p for p in scenario.tmp.rglob("*") if p.is_file() and p not in planted]
    assert len(written) > 100 and any(p.suffix == ".html" for p in written)
    leaks = [str(p) for p in written if SECRET.encode() in p.read_bytes()]
    assert not leaks and not [t for t in texts if SECRET in t]
