"""notebooks/inspect.ipynb runs top to bottom in a fresh Jupyter kernel: a real tiny training, then every plot.

The notebook reads its folders and sizes from DFF_* environment variables, which the kernel inherits, so
everything lands in tmp_path. A sweep folder written from numpy arrays (test_report.make_sweep) stands in for
`make sweep`, so the leaderboard cell and the multi-run ROC run too.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_report import make_sweep

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inspect.ipynb"
CELL_TIMEOUT_S = 300  # the training cell takes ~30 s on 2 cores; a hung kernel must not hang CI
FIGURES = 4  # ROC, confusion matrix, learning curves, calibration
INTERPRET_FIGURES = 3  # top losses, Grad-CAM, t-SNE: only where deepfake_fastai.interpret exists


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def text_of(cell) -> str:
    """Everything a cell printed or displayed as text (stdout, text/plain, text/html)."""
    parts = []
    for out in cell.outputs:
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(parts)


def pin_kernel(tmp: Path) -> None:
    """A "python3" kernelspec that runs this interpreter, found before any user-wide one (JUPYTER_PATH)."""
    spec = tmp / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert code_cells(nb) and all(not c.outputs and c.execution_count is None for c in code_cells(nb))


def test_inspect_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    sweep_dir, _ = make_sweep(tmp_path / "runs", ["sweep_a", "sweep_b"], {"sweep_c": "RuntimeError: out of memory"})
    pin_kernel(tmp_path)
    env = {"DFF_RUNS": tmp_path / "runs", "DFF_DATA": tmp_path / "data", "DFF_SWEEP": sweep_dir,
           "DFF_ARCH": "test_resnet", "DFF_SIZE_PX": "32", "DFF_N_IMAGES": "64",
           "JUPYTER_PATH": tmp_path / "jupyter", "JUPYTER_RUNTIME_DIR": tmp_path / "jupyter_runtime",
           "IPYTHONDIR": tmp_path / "ipython", "MPLCONFIGDIR": tmp_path / "mpl"}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})  # the kernel's working directory
    client.execute()  # CellExecutionError (cell source + traceback) on the first cell that raises

    cells = code_cells(nb)
    assert all(c.execution_count for c in cells)  # every cell ran
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    run_dir = tmp_path / "runs" / "notebook" / "test_resnet_r32-32_fine_tune_s42"
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "complete"
    text = "\n".join(text_of(c) for c in cells)
    assert "sweep_a" in text and "sweep_b" in text  # the leaderboard
    assert "sweep_c: failed RuntimeError: out of memory" in text
    pngs = [o for c in cells for o in c.outputs if "image/png" in o.get("data", {})]
    if importlib.util.find_spec("deepfake_fastai.interpret"):
        assert len(pngs) == FIGURES + INTERPRET_FIGURES and "no interpret module" not in text
    else:
        assert len(pngs) == FIGURES and "no interpret module" in text  # the note says why the rest is missing
