"""The sweep report: ONE self-contained HTML file (inline CSS, images as base64 data URIs, no external reference).

    write_report("runs/quickstart")   # -> runs/quickstart/report.html

It holds the leaderboard (rows link to the runs), the ROC curves of every complete run (+ the newest ensemble
written from this sweep, re-scored from its members' validation probabilities), then per run its learning
curves, confusion matrix, calibration diagram and metrics, and the runs that did not complete with their error.
With ``interpret=True`` (the default) each run also gets its top losses, Grad-CAM and t-SNE (interpret.py:
loads the run's learner, so torch is imported then and only then); a run whose learner or images cannot be had
gets a note instead. Every text that comes from a file (run names, errors, configs, records) is HTML-escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import atomic, runfolder
from .config import TRACES_ARCH
from .inspection import Run, RunStatus, Sweep, load_sweep
from .plots import DPI, calibration_figure, confusion_figure, learning_curves_figure, png_bytes, roc_figure

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
INTEGER_COLUMNS = {"rank", "item_resize_px", "size", "epochs"}  # stored as floats once a failed run leaves a gap
HEADLINE = ("auc", "accuracy", "log_loss", "precision", "recall", "f1", "real_accuracy", "fake_accuracy",
            "test_auc", "test_accuracy", "test_precision", "test_recall", "test_f1", "test_confusion",
            "unseen_auc", "unseen_accuracy", "unseen_log_loss")  # metrics shown first, in this order
AUC_TOLERANCE = 1e-4  # re-scored ensemble vs its record: weights are stored rounded to 6 decimals

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1700px;
       padding: 1rem 2rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; margin-top: 2.5rem; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.8rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f2f4f7; } tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td { color: #a40000; }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1rem; }
.figs.wide { grid-template-columns: repeat(auto-fit, minmax(640px, 1fr)); align-items: start; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.5rem; white-space: pre-wrap; word-break: break-word; }
.note { color: #8a5a00; }
"""


@dataclass(frozen=True, eq=False)
class EnsembleView:
    """The newest ensemble written from this sweep, re-scored on the validation set from its members' runs."""

    label: str  # legend label
    y: np.ndarray  # validation labels, 1 = positive class
    p: np.ndarray  # the ensemble's validation scores
    record: dict[str, Any]  # its submission record (members, weights, method, validation scores)
    note: str = ""  # a discrepancy worth showing, e.g. the re-scored AUC differs from the recorded one


# ------------------------------------------------------------------------------------------------- I/O edge
def write_report(sweep_folder: Path | str, submissions_dir: Path | str | None = None,
                 interpret: bool = True) -> Path:
    """Write ``<sweep_folder>/report.html`` atomically and return its path.

    ``interpret`` adds each run's top losses, Grad-CAM and t-SNE (loads every learner: slower).
    """
    from .submit import default_out_dir

    sweep = load_sweep(Path(sweep_folder))
    record = newest_ensemble_record(sweep.path, Path(submissions_dir or default_out_dir()))
    view = ensemble_view(sweep, record) if record else None
    inspections = {r.name: inspection_html(r) for r in sweep.runs} if interpret else None
    page = render_report(sweep, view, inspections=inspections)
    write_plot_files(page, sweep)
    path = atomic.write_text(sweep.path / REPORT_FILE, page)
    log.info("wrote %s (%d complete runs, %d not complete%s)", path, len(sweep.runs), len(sweep.others),
             ", with the ensemble" if view else "")
    return path


IMG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')


def plot_files(page: str, sweep: Sweep) -> dict[Path, bytes]:
    """Where each embedded plot also goes as a PNG file: <run>/plots/<kind>.png, sweep-wide ones in plots/."""
    names = sorted((r.name for r in sweep.runs), key=len, reverse=True)
    out: dict[Path, bytes] = {}
    for data, alt in IMG_RE.findall(page):
        alt = html.unescape(alt)
        run = next((n for n in names if alt.endswith(" " + n)), None)
        kind = alt[: -len(run) - 1] if run else alt
        folder = sweep.path / run / runfolder.PLOTS if run else sweep.path / "plots"
        out[folder / (re.sub(r"[^A-Za-z0-9]+", "_", kind).strip("_").lower() + ".png")] = base64.b64decode(data)
    return out


def write_plot_files(page: str, sweep: Sweep) -> None:
    """The report's plots as PNG files beside the runs (for notebooks and slides), each written atomically."""
    for path, data in plot_files(page, sweep).items():
        atomic.write_bytes(path, data)


def inspection_html(run: Run) -> str:
    """The run's top losses, Grad-CAM and t-SNE as inline PNGs, with a note for each part that failed."""
    from . import interpret  # lazy: its model code imports torch/fastai, which the rest of the report never needs

    figures, notes = interpret.run_figures(run)
    images = "".join(img_tag(fig, f"{name} {run.name}") for name, fig in figures) + stored_plots_html(run)
    note = "".join(f'<p class="note">not shown: {esc(n)}</p>' for n in notes)
    return f'<h3>Inspection</h3>{note}<div class="figs wide">{images}</div>' if images else f"<h3>Inspection</h3>{note}"


def stored_plots_html(run: Run) -> str:
    """The explanation plots an em_traces run wrote (mean kernel per class, feature importances)."""
    from .traces import PLOT_FILES

    if run.config.arch != TRACES_ARCH:
        return ""
    files = [run.path / runfolder.PLOTS / name for name in PLOT_FILES if (run.path / runfolder.PLOTS / name).is_file()]
    return "".join(f'<img src="data:image/png;base64,{base64.b64encode(f.read_bytes()).decode("ascii")}" '
                   f'alt="{esc(f.stem)} {esc(run.name)}">' for f in files)


def newest_ensemble_record(sweep_path: Path, submissions_dir: Path) -> dict[str, Any] | None:
    """The newest submission record whose ensemble candidates are all runs of this sweep folder."""
    folder = Path(sweep_path).resolve()
    found = []
    for path in sorted(Path(submissions_dir).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            log.warning("%s: skipped (%s)", path, e)
            continue
        candidates = record.get("candidates") if isinstance(record, dict) else None
        if candidates and all(Path(str(c.get("run_dir", ""))).resolve().parent == folder for c in candidates):
            found.append(record)
    return max(found, key=lambda r: (str(r.get("created", "")), str(r.get("csv", "")))) if found else None


def ensemble_view(sweep: Sweep, record: dict[str, Any]) -> EnsembleView | None:
    """Re-score an ensemble record on the validation set from its runs' probabilities (None if it cannot be)."""
    from sklearn.metrics import roc_auc_score

    from .ensemble import combine

    by_dir = {r.path.resolve(): r for r in sweep.runs}
    candidates = record["candidates"]
    runs = [by_dir.get(Path(str(c.get("run_dir", ""))).resolve()) for c in candidates]
    if None in runs:
        gone = [c.get("run") for c, r in zip(candidates, runs, strict=True) if r is None]
        log.warning("ensemble %s: run(s) %s are no longer complete here; left out of the report",
                    record.get("csv"), gone)
        return None
    ids = runs[0].valid["id"]
    try:
        probs = np.stack([r.valid.set_index("id").loc[ids, "prob"].to_numpy() for r in runs])
    except (KeyError, ValueError):
        log.warning("ensemble %s: its runs do not share one validation split; left out", record.get("csv"))
        return None
    method = str(record.get("method", "mean"))
    weights = [float(c.get("weight", 0.0)) for c in candidates]
    y, p = runs[0].valid["y"].to_numpy(), combine(method, probs, weights)
    members = sum(w > 0 for w in weights)
    recorded = record.get("validation", {}).get("ensemble", {}).get("auc")
    note = ""
    if recorded is not None and len(np.unique(y)) == 2 and abs(roc_auc_score(y, p) - recorded) > AUC_TOLERANCE:
        note = f"re-scored AUC {roc_auc_score(y, p):.4f} differs from the recorded {recorded:.4f}"
        log.warning("ensemble %s: %s", record.get("csv"), note)
    return EnsembleView(f"ensemble: {method} of {members} run{'s' * (members != 1)}", y, p, record, note)


# ------------------------------------------------------------------------------------------ HTML (pure)
def esc(value: Any) -> str:
    """Text made safe inside HTML elements and attribute values."""
    return html.escape(str(value), quote=True)


def anchor(name: str) -> str:
    """A stable HTML id for a run (a hash keeps names that differ only in odd characters apart)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
    return f"run-{slug}" if slug == name else f"run-{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def fmt(value: Any, integer: bool = False) -> str:
    """A cell: 4 decimals below 10, 1 above, whole numbers for ``integer`` columns, empty for missing."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.0f}" if integer else f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _num_td(value: Any, integer: bool = False) -> str:
    """A table cell, right-aligned when it holds a number."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    text = esc(fmt(value, integer))
    return f"<td class=num>{text}</td>" if number and text else f"<td>{text}</td>"


def img_tag(fig, alt: str, dpi: int = DPI) -> str:
    """The figure as an inline PNG <img> (a data URI: the report needs no other file)."""
    data = base64.b64encode(png_bytes(fig, dpi)).decode("ascii")
    width, height = (round(v * dpi) for v in fig.get_size_inches())
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}" width="{width}" height="{height}">'


def leaderboard_html(frame: pd.DataFrame) -> str:
    """The leaderboard as a table; every run name links to its section, incomplete runs in red."""
    cols = [c for c in frame.columns if frame[c].map(fmt).ne("").any()]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    rows = []
    for record in frame.to_dict("records"):
        cells = []
        for c in cols:
            value = record[c]
            if c == "run":
                cells.append(f'<td><a href="#{esc(anchor(str(value)))}">{esc(value)}</a></td>')
            else:
                cells.append(_num_td(value, c in INTEGER_COLUMNS))
        bad = "" if record.get("status") == "complete" else ' class="bad"'
        rows.append(f"<tr{bad}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def metrics_html(metrics: dict[str, Any]) -> str:
    """A run's metrics as a two-column table, headline metrics first."""
    keys = [k for k in HEADLINE if k in metrics] + sorted(k for k in metrics if k not in HEADLINE)
    rows = "".join(f"<tr><th>{esc(k)}</th>{_num_td(metrics[k])}</tr>" for k in keys)
    return f"<table>{rows}</table>"


def run_html(run: Run, inspection: str = "") -> str:
    """One run's section: what it was, its learning curves, confusion matrix, calibration, metrics, inspection."""
    cfg, m = run.config, run.metrics
    y, p = run.valid["y"].to_numpy(), run.valid["prob"].to_numpy()
    classes = (run.negative_class, run.positive_class)
    what = (f"{cfg.arch}, item resize {cfg.item_resize_px} px → {cfg.size} px, {cfg.epochs} epochs, "
            f"batch {cfg.bs} (accumulation {cfg.accum}), lr {cfg.lr:g}, precision {m.get('precision_mode', '?')}, "
            f"seed {cfg.seed}, {len(run.valid)} validation images, positive class '{run.positive_class}'")
    figures = [
        img_tag(learning_curves_figure(run.history, f"Learning curves: {run.name}"), f"learning curves {run.name}"),
        img_tag(confusion_figure(y, p, classes), f"confusion matrix {run.name}"),
        img_tag(calibration_figure(y, p, positive=run.positive_class), f"calibration {run.name}"),
    ]
    return (f'<section class="run" id="{esc(anchor(run.name))}"><h2>{esc(run.name)}</h2>'
            f'<p class="sub">{esc(what)}</p>'
            f'<div class="figs">{"".join(figures)}</div>{metrics_html(m)}{inspection}'
            f'<p><a href="#top">back to the top</a></p></section>')


def ensemble_html(view: EnsembleView) -> str:
    """The ensemble's method, members and weights, and its recorded validation scores."""
    r = view.record
    metric = str(r.get("metric", "auc"))
    val, hold = r.get("validation", {}), r.get("holdout", {})
    members = "".join(f"<tr><td>{esc(m.get('run'))}</td>{_num_td(m.get('weight'))}</tr>"
                      for m in r.get("members", []))
    scores = "".join(
        f"<tr><td>{esc(label)}</td>{_num_td(val.get(key, {}).get(metric))}{_num_td(hold.get(key))}</tr>"
        for key, label in (("ensemble", "ensemble"), ("best_single", "best single run"), ("plain_mean", "plain mean")))
    note = f'<p class="note">{esc(view.note)}</p>' if view.note else ""
    folds = hold.get("scheme") == "folds"  # fold runs: chosen on the other folds, scored on each fold in turn
    column = "other folds" if folds else "held-out half"
    how = ("chosen on the other folds, scored on each fold in turn (out-of-fold rows pooled)" if folds
           else "chosen on one half of the validation set, scored on the other")
    return (f'<section id="ensemble"><h2>Ensemble</h2>'
            f'<p class="sub">newest submission from this sweep: {esc(r.get("csv", "?"))} '
            f'({esc(r.get("created", "?"))}), method {esc(r.get("method", "?"))}, metric {esc(metric)}</p>{note}'
            f'<table><thead><tr><th>member run</th><th>weight</th></tr></thead><tbody>{members}</tbody></table>'
            f'<table><thead><tr><th>validation {esc(metric)}</th><th>all rows</th><th>{column}</th></tr>'
            f'</thead><tbody>{scores}</tbody></table>'
            f'<p class="sub">{column}: {how}.</p>'
            f'</section>')


def others_html(others: tuple[RunStatus, ...]) -> str:
    """Runs that did not complete, each with its status and error."""
    items = "".join(f'<li id="{esc(anchor(o.name))}"><b>{esc(o.name)}</b>: {esc(o.status)}'
                    f'{f"<pre>{esc(o.error)}</pre>" if o.error else ""}</li>' for o in others)
    return f'<section id="incomplete"><h2>Runs that did not complete ({len(others)})</h2><ul>{items}</ul></section>'


def render_report(sweep: Sweep, ensemble: EnsembleView | None = None, generated: datetime | None = None,
                  inspections: dict[str, str] | None = None) -> str:
    """The whole report as one HTML string; ``inspections`` maps run names to their inspection HTML."""
    generated = generated or datetime.now(timezone.utc)
    series = [(r.name, r.valid["y"].to_numpy(), r.valid["prob"].to_numpy()) for r in sweep.runs]
    curve = (ensemble.label, ensemble.y, ensemble.p) if ensemble else None
    roc = (img_tag(roc_figure(series, curve, f"ROC curves, validation set: {sweep.name}"), "ROC curves")
           if series else "<p>No complete runs yet.</p>")
    total = len(sweep.runs) + len(sweep.others)
    parts = [
        f'<h1 id="top">Sweep report: {esc(sweep.name)}</h1>',
        f'<p class="sub">{len(sweep.runs)} of {total} runs complete, ranked by {esc(sweep.metric)}; folder '
        f'{esc(sweep.path.resolve())}; generated {esc(generated.isoformat(timespec="seconds"))}</p>',
        f"<h2>Leaderboard</h2>{leaderboard_html(sweep.leaderboard)}",
        f"<h2>ROC curves</h2>{roc}",
        ensemble_html(ensemble) if ensemble else "",
        *(run_html(r, (inspections or {}).get(r.name, "")) for r in sweep.runs),
        others_html(sweep.others) if sweep.others else "",
    ]
    body = "\n".join(p for p in parts if p)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Sweep report: {esc(sweep.name)}</title><style>{CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")
