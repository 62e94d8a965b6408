"""notebooks/kaggle.ipynb runs headless on a stand-in /kaggle/input made here: install check, competition
found, a two-run sweep, the ensemble, and /kaggle/working/submission.csv in the sample submission's format."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pandas as pd
from nbclient import NotebookClient
from test_notebook import code_cells, pin_kernel, text_of

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "kaggle.ipynb"
CELL_TIMEOUT_S = 600  # the sweep cell: a torch import and two tiny runs on 2 cores


def test_kaggle_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.outputs and c.execution_count is None for c in code_cells(nb))


def test_kaggle_notebook_writes_a_submission_from_the_input_competition(tiny_data, tmp_path, monkeypatch):
    kaggle = tmp_path / "kaggle"
    competition = kaggle / "input" / "some-deepfake-competition"
    shutil.copytree(tiny_data, competition)  # train/{real,fake}/, test/, sample_submission.csv
    (kaggle / "input" / "other-dataset").mkdir()  # an unrelated input is not taken for the competition
    (kaggle / "working").mkdir()
    pin_kernel(tmp_path)
    env = {"KAGGLE_KERNEL_RUN_TYPE": "Batch", "KAGGLE_INPUT": kaggle / "input", "KAGGLE_WORKING": kaggle / "working",
           "DFF_ARCH": "test_resnet", "DFF_SIZE_PX": "32", "DFF_EPOCHS": "1",
           "JUPYTER_PATH": tmp_path / "jupyter", "JUPYTER_RUNTIME_DIR": tmp_path / "jupyter_runtime",
           "IPYTHONDIR": tmp_path / "ipython", "MPLCONFIGDIR": tmp_path / "mpl"}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    text = "\n".join(text_of(c) for c in code_cells(nb))
    assert "Kaggle: True (Batch)" in text and "kept" in text and "already installed" in text
    assert f"competition data: {competition}" in text
    submission = pd.read_csv(kaggle / "working" / "submission.csv")
    sample = pd.read_csv(competition / "sample_submission.csv")
    assert list(submission.columns) == list(sample.columns)
    assert sorted(submission.iloc[:, 0].astype(str)) == sorted(sample.iloc[:, 0].astype(str))
    assert submission.iloc[:, 1].between(0, 1).all()
    leaderboard = pd.read_csv(kaggle / "working" / "runs" / "kaggle" / "leaderboard.csv")
    assert (leaderboard.status == "complete").all() and len(leaderboard) == 2
