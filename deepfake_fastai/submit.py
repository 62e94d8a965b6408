"""Submissions: the competition's CSV format, building and validating the file, writing it, sending it.

A submission is ``submissions/<UTC timestamp>_<name>.csv`` plus a JSON record beside it (format, where the
expected ids came from, members/weights/method/validation scores when it comes from an ensemble, the toolkit's
git commit, and every upload attempt with Kaggle's reply). Files are never overwritten; the validator runs
before any write and again before any upload, on the exact bytes that are written or sent.

Label kinds (``KINDS``): ``prob`` = probability in [0, 1] of the class ``prob_of``; ``index`` = class index into
``classes``; ``name`` = class name. The seed notebooks wrote ``filename,class`` with indices and
``image_id,label`` with names; both are a ``SubmissionFormat``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import atomic, runfolder
from .config import ConfigError
from .data import SAMPLE_NAME, list_test, match_ids, read_table  # noqa: F401 - submit's API too
from .submissions_io import SubmitError

log = logging.getLogger(__name__)

KINDS = ("prob", "index", "name")
KAGGLE_WORKING = Path("/kaggle/working")  # a Kaggle notebook's output folder
KAGGLE_INPUT = Path("/kaggle/input")  # a Kaggle notebook's read-only data
NAN_TEXT = {"", "nan", "na", "n/a", "null", "none"}  # what pandas/Kaggle read as missing, lower-cased
PROBS_SUFFIX = ".probs.csv"  # the ensemble's raw test probabilities, beside its submission
SHOW = 5  # offending ids named in an error message


class SubmissionError(ValueError):
    """A submission file or format is wrong; the message lists every problem found."""


def on_kaggle() -> bool:
    """True inside a Kaggle notebook (fastkaggle's ``iskaggle`` test, without importing the kaggle client)."""
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE", ""))


def default_out_dir() -> Path:
    """Where submissions go: /kaggle/working/submissions in a Kaggle notebook, else ./submissions."""
    return KAGGLE_WORKING / "submissions" if on_kaggle() else Path("submissions")


# --------------------------------------------------------------------------------------------- the format
@dataclass(frozen=True)
class SubmissionFormat:
    """The competition's CSV: header, label kind and class vocabulary."""

    id_col: str = "id"  # header of the id column
    label_col: str = "label"  # header of the prediction column
    kind: str = "prob"  # prob | index | name (see KINDS)
    classes: tuple[str, ...] = ()  # class vocabulary in index order; () = the runs' two classes, sorted (fastai)
    prob_of: str | None = None  # prob kind: class whose probability the column holds (None = positive class)
    threshold: float = 0.5  # index/name kinds: positive-class probability from which the positive class is chosen

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))  # YAML/JSON give lists
        if self.kind not in KINDS:
            raise ConfigError(f"submission kind must be one of {', '.join(KINDS)}; got '{self.kind}'")
        if not self.id_col or not self.label_col or self.id_col == self.label_col:
            raise ConfigError(f"submission needs two different column names, got {self.id_col!r}, {self.label_col!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"submission threshold must be in [0, 1], got {self.threshold}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "submission") -> SubmissionFormat:
        """Build from a mapping (config or a record), rejecting unknown keys with the allowed ones named."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {names}")
        try:
            return cls(**raw)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{where}: {e}") from None

    def resolved(self, negative: str, positive: str) -> SubmissionFormat:
        """This format with the runs' classes filled in where it left them open."""
        classes = self.classes or tuple(sorted((negative, positive)))  # fastai's vocab is sorted
        return dataclasses.replace(self, classes=classes, prob_of=self.prob_of or positive)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def infer_format(sample: pd.DataFrame, classes: Sequence[str] = (), where: str = SAMPLE_NAME,
                 kind: str | None = None) -> SubmissionFormat:
    """The format of a sample submission (all columns as text): id column, label column and (unless given) kind."""
    columns = list(sample.columns)
    if len(columns) != 2:
        raise SubmissionError(f"{where}: expected 2 columns (id, prediction), found {columns}; only two-column "
                              f"submissions are supported")
    id_col, label_col = columns
    by_lower = {c.lower(): c for c in classes}
    prob_of = by_lower.get(label_col.lower())  # a column named after a class holds that class's probability
    if kind is not None:
        return SubmissionFormat(id_col, label_col, kind, prob_of=prob_of if kind == "prob" else None)
    values = [v.strip() for v in sample[label_col] if v.strip()]
    if not values:
        raise SubmissionError(f"{where}: no example labels, so their kind is unknown; give the kind in config")
    if all(_is_number(v) for v in values):
        integers = all(re.fullmatch(r"[+-]?\d+", v) for v in values)
        kind = "index" if integers and prob_of is None else "prob"
        if kind == "index":
            log.warning("%s: integer examples read as class indices; if the competition scores probabilities, "
                        "set the kind to prob", where)
        return SubmissionFormat(id_col, label_col, kind, prob_of=prob_of)
    unknown = sorted(set(values) - set(classes))
    if classes and unknown:
        raise SubmissionError(f"{where}: labels {unknown[:SHOW]} are not classes of the runs {list(classes)}")
    return SubmissionFormat(id_col, label_col, "name")


# ------------------------------------------------------------------------------- what the competition expects
@dataclass(frozen=True, eq=False)
class Expected:
    """What a valid submission must be: its format (classes resolved) and the test ids."""

    fmt: SubmissionFormat
    ids: tuple[str, ...]
    source: str  # the file the ids (and an inferred format) were read from


def expected_from_sample(sample_csv: Path, negative: str, positive: str,
                         overrides: dict[str, Any] | None = None) -> Expected:
    """Format and test ids from a sample_submission.csv; ``overrides`` (config) win over what is inferred."""
    sample = read_table(sample_csv)
    fmt = infer_format(sample, (negative, positive), str(sample_csv), (overrides or {}).get("kind"))
    if overrides:
        fmt = SubmissionFormat.from_dict({**dataclasses.asdict(fmt), **overrides}, str(sample_csv))
    if fmt.id_col not in sample.columns:
        raise SubmissionError(f"{sample_csv}: no id column {fmt.id_col!r}; columns are {list(sample.columns)}")
    return Expected(fmt.resolved(negative, positive), tuple(sample[fmt.id_col]), str(sample_csv))


def expected_from_ids(ids_csv: Path, negative: str, positive: str,
                      overrides: dict[str, Any] | None = None) -> Expected:
    """Format from config alone and the test ids of a run's test_ids.csv or of a test/ folder (when the
    competition has no sample submission)."""
    fmt = SubmissionFormat.from_dict(dict(overrides or {}), "submission format")
    return Expected(fmt.resolved(negative, positive), read_test_ids(Path(ids_csv)), str(ids_csv))


def read_test_ids(source: Path, column: str = "id") -> tuple[str, ...]:
    """The ids in ``source``: a test/ folder's image file stems (every file, decodable or not), or a CSV column."""
    if source.is_dir():
        return tuple(list_test(source.parent).id)
    table = read_table(source)
    return tuple(table[column if column in table.columns else "id"])


def expected_from_record(record: dict[str, Any], sample_csv: Path | None = None) -> Expected:
    """What a written submission was validated against (to validate it again before an upload)."""
    if sample_csv is not None:
        table = read_table(sample_csv)
        if "format" in record:
            fmt = SubmissionFormat.from_dict(record["format"], "record format")
        else:  # a file made elsewhere: only a probability format can be checked without the runs' classes
            fmt = infer_format(table, where=str(sample_csv))
            if fmt.kind != "prob":
                raise SubmissionError(f"{sample_csv}: labels are class {fmt.kind}s, whose vocabulary only a "
                                      f"record tells; write the submission with `deepfake-fastai ensemble`")
        column = fmt.id_col if fmt.id_col in table.columns else table.columns[0]
        return Expected(fmt, tuple(table[column]), str(sample_csv))
    if "format" not in record or "expected_ids_from" not in record:
        raise SubmissionError("no record of this submission's format beside it; pass the competition's "
                              "sample_submission.csv (--sample-submission) to validate it against")
    fmt = SubmissionFormat.from_dict(record["format"], "record format")
    source = Path(record["expected_ids_from"])
    if not source.exists():
        raise SubmissionError(f"{source} (the test ids this submission was made for) is gone; pass the "
                              f"competition's sample_submission.csv (--sample-submission)")
    return Expected(fmt, read_test_ids(source, fmt.id_col), str(source))


# ------------------------------------------------------------------------------------------ the frame (pure)
def _labels(probs: np.ndarray, fmt: SubmissionFormat, classes: tuple[str, str]) -> list[Any]:
    """The label column for positive-class probabilities ``probs``; ``classes`` = (negative, positive)."""
    negative, positive = classes
    if fmt.kind == "prob":
        if fmt.prob_of not in (positive, negative):
            raise SubmissionError(f"prob_of {fmt.prob_of!r} is neither class of the runs {list(classes)}")
        return list(1.0 - probs if fmt.prob_of == negative else probs)
    missing = [c for c in classes if c not in fmt.classes]
    if missing:
        raise SubmissionError(f"classes {missing} of the runs are not in the format's classes {list(fmt.classes)}")
    chosen = np.where(probs >= fmt.threshold, positive, negative)
    return [fmt.classes.index(c) for c in chosen] if fmt.kind == "index" else list(chosen)


def make_frame(ids: Sequence[str], probs: np.ndarray, fmt: SubmissionFormat, classes: tuple[str, str],
               expected_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Submission rows for predicted ``ids``; with ``expected_ids``, in that order, named as expected there.

    ``classes`` = (negative, positive); ``probs`` are of the positive class. Expected ids without a prediction
    are left out, so the validator reports them.
    """
    probs = np.asarray(probs, dtype=np.float64)
    fmt = fmt.resolved(*classes)
    frame = pd.DataFrame({fmt.id_col: list(ids), fmt.label_col: _labels(probs, fmt, classes)})
    if expected_ids is None:
        return frame
    frame[fmt.id_col] = match_ids(list(ids), expected_ids)
    frame = frame[frame[fmt.id_col].notna()].set_index(fmt.id_col)
    order = [e for e in expected_ids if e in frame.index]
    return frame.loc[order].reset_index()


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """The CSV bytes that are validated, written and uploaded (probabilities with 6 decimals)."""
    return frame.to_csv(index=False, lineterminator="\n", float_format="%.6f").encode("utf-8")


# ------------------------------------------------------------------------------------- the validator (pure)
def _first(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in list(items)[:SHOW])
    return shown + (", ..." if len(items) > SHOW else "")


def _id_problems(ids: pd.Series, expected: Sequence[str]) -> list[str]:
    """Empty, duplicated, missing and extra ids."""
    problems, wanted, got = [], set(expected), set(ids)
    blank = ids[ids.str.strip() == ""]
    if len(blank):
        problems.append(f"{len(blank)} rows have an empty id (CSV lines {_first(list(blank.index + 2))})")
    dup = ids[ids.duplicated() & (ids.str.strip() != "")].unique()
    if len(dup):
        problems.append(f"{len(dup)} ids appear more than once (first: {_first(dup)})")
    missing = [i for i in expected if i not in got]
    if missing:
        problems.append(f"{len(missing)} of {len(expected)} test ids are missing (first: {_first(missing)})")
    extra = [i for i in ids.unique() if i not in wanted and i.strip()]
    if extra:
        problems.append(f"{len(extra)} ids are not test ids (first: {_first(extra)})")
    return problems


def _label_problems(ids: pd.Series, labels: pd.Series, fmt: SubmissionFormat) -> list[str]:
    """NaN labels, and labels of the wrong type or out of range for the format's kind."""
    problems = []
    nan = labels.str.strip().str.lower().isin(NAN_TEXT)
    if nan.any():
        problems.append(f"{int(nan.sum())} labels are NaN or empty (ids: {_first(list(ids[nan]))})")
    ids, labels = ids[~nan], labels[~nan].str.strip()
    pairs = [f"{i}={v}" for i, v in zip(ids, labels, strict=True)]
    if fmt.kind == "prob":
        value = pd.to_numeric(labels, errors="coerce")
        bad, out = value.isna().to_numpy(), (value.notna() & ~value.between(0.0, 1.0)).to_numpy()
        what = ("labels are not numbers", "probabilities are outside [0, 1]")
    elif fmt.kind == "index":
        is_int = labels.str.fullmatch(r"[+-]?\d+").to_numpy()
        value = pd.to_numeric(labels.where(is_int), errors="coerce")
        bad, out = ~is_int, (is_int & ~value.between(0, len(fmt.classes) - 1).to_numpy())
        what = ("labels are not class indices (integers)", f"class indices are outside 0..{len(fmt.classes) - 1} "
                                                            f"(classes {list(fmt.classes)})")
    else:
        bad, out = ~labels.isin(fmt.classes).to_numpy(), np.zeros(len(labels), dtype=bool)
        what = (f"labels are not class names {list(fmt.classes)}", "")
    for mask, text in zip((bad, out), what, strict=True):
        if mask.any():
            shown = _first([p for p, m in zip(pairs, mask, strict=True) if m])
            problems.append(f"{int(mask.sum())} {text} (first: {shown})")
    return problems


def validate_frame(frame: pd.DataFrame, expected: Expected) -> None:
    """Raise SubmissionError listing every problem of a submission read as text (see ``read_table``)."""
    fmt = expected.fmt
    header = [fmt.id_col, fmt.label_col]
    if list(frame.columns) != header:
        raise SubmissionError(f"submission is invalid: header is {list(frame.columns)}, expected {header}")
    if fmt.kind in ("index", "name") and not fmt.classes:
        raise SubmissionError(f"format kind {fmt.kind!r} needs the class vocabulary (classes)")
    ids, labels = frame[fmt.id_col].astype(str), frame[fmt.label_col].astype(str)
    problems = _id_problems(ids, expected.ids) + _label_problems(ids, labels, fmt)
    if problems:
        raise SubmissionError(f"submission is invalid ({len(frame)} rows, {len(expected.ids)} test ids "
                              f"from {expected.source}):\n  - " + "\n  - ".join(problems))


def validate_csv(data: bytes, expected: Expected) -> pd.DataFrame:
    """Validate CSV bytes exactly as they will be written or uploaded; returns them parsed as text."""
    try:
        text = data.decode("utf-8")
        header = next(csv.reader(io.StringIO(text)), [])
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise SubmissionError(f"submission is not a readable UTF-8 CSV: {e}") from None
    if header != list(frame.columns):  # pandas renames repeated headers ("label.1"); report the real ones
        frame.columns = header if len(header) == len(frame.columns) else frame.columns
    validate_frame(frame, expected)
    return frame


# ------------------------------------------------------------------------------------------------- writing
def toolkit_version() -> str:
    """The installed package's version (from its metadata: no import of the package, whose __init__ is higher)."""
    try:
        return importlib.metadata.version("deepfake-fastai")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def git_commit() -> str | None:
    """The toolkit's git commit ("-dirty" if it has uncommitted changes), or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "submission"


def _claim(out_dir: Path, name: str, now: datetime) -> Path:
    """A new ``<timestamp>_<name>.csv`` path in ``out_dir``, created empty so no other writer can take it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = f"{now:%Y%m%d-%H%M%S}_{_safe(name)}"
    for n in range(1, 1000):
        path = out_dir / f"{base}{'' if n == 1 else f'-{n}'}.csv"
        if path.with_suffix(".json").exists():
            continue
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))  # exclusive: never overwrite
            return path
        except FileExistsError:
            continue
    raise SubmissionError(f"{out_dir}: no free name for {base}")


def write_submission(frame: pd.DataFrame, expected: Expected, record: dict[str, Any], out_dir: Path | None = None,
                     name: str = "submission", extras: dict[str, bytes] | None = None) -> Path:
    """Validate, then write ``<out_dir>/<timestamp>_<name>.csv`` and its JSON record; never overwrites.

    ``record`` is merged into the JSON (e.g. an ensemble's members and scores); ``extras`` maps a suffix such
    as ".probs.csv" to bytes written beside the CSV. In a Kaggle notebook the CSV is also copied to
    /kaggle/working/submission.csv, the file a notebook submission is scored from.
    """
    data = to_csv_bytes(frame)
    validate_csv(data, expected)  # before anything is written
    now = datetime.now(timezone.utc)
    path = _claim(Path(out_dir or default_out_dir()), name, now)
    atomic.write_bytes(path, data)
    for suffix, payload in (extras or {}).items():
        atomic.write_bytes(path.with_name(path.stem + suffix), payload)
    full = {**record, "name": name, "csv": path.name, "created": now.isoformat(timespec="seconds"),
            "sha256": hashlib.sha256(data).hexdigest(), "n_rows": len(frame),
            "format": dataclasses.asdict(expected.fmt), "expected_ids_from": str(Path(expected.source).resolve()),
            "toolkit": {"version": toolkit_version(), "git_commit": git_commit()}, "kaggle": record.get("kaggle", [])}
    atomic.write_json(path.with_suffix(".json"), full)
    if on_kaggle():
        atomic.write_bytes(KAGGLE_WORKING / "submission.csv", data)
    log.info("wrote %s (%d rows)", path, len(frame))
    return path


# ---------------------------------------------------------------------------------- finding the sample CSV
def _data_roots(run_dir: Path) -> list[Path]:
    """Folders where a run's data set (and so its sample_submission.csv) may live, most likely first."""
    try:
        data = runfolder.read_config(run_dir).data
        info = runfolder.read_metrics(run_dir)
    except (ConfigError, OSError, ValueError):
        return []
    if data.source == "synthetic":
        roots = [Path(data.data_dir) / "synthetic" / str(info.get("data_key", ""))]
    elif data.source in ("folder", "csv"):
        path = Path(data.path).expanduser()
        roots = [path, path.parent] if data.source == "folder" else [path.parent]
    elif data.source == "kaggle_competition":
        roots = [KAGGLE_INPUT / data.competition, Path("../input") / data.competition,
                 Path(data.data_dir) / data.competition]
    else:
        roots = []
    return [r / data.subdir for r in roots] + roots if data.subdir else roots


def find_sample_submission(run_dirs: Sequence[Path]) -> Path | None:
    """The sample_submission.csv of the runs' data set, found from their config, or None."""
    for run_dir in run_dirs:
        for root in _data_roots(Path(run_dir)):
            if (root / SAMPLE_NAME).is_file():
                return (root / SAMPLE_NAME).resolve()
    if on_kaggle():
        found = sorted(KAGGLE_INPUT.glob(f"*/{SAMPLE_NAME}"))
        return found[0] if len(found) == 1 else None
    return None


def find_test_folder(run_dirs: Sequence[Path]) -> Path | None:
    """The runs' test/ folder, found from their config, if it lists every test id they predicted."""
    ids_csv = Path(run_dirs[0]) / runfolder.ids_file("test")
    predicted = set(read_table(ids_csv)["id"]) if ids_csv.is_file() else set()
    for root in _data_roots(Path(run_dirs[0])):
        if (root / "test").is_dir() and predicted <= set(list_test(root).id):
            return (root / "test").resolve()
    return None


def competition_of(run_dirs: Sequence[Path]) -> str | None:
    """The Kaggle competition the runs were trained for (data.competition), if any."""
    for run_dir in run_dirs:
        try:
            data = runfolder.read_config(run_dir).data
        except (ConfigError, OSError):
            continue
        if data.source == "kaggle_competition" and data.competition:
            return data.competition
    return None


# ------------------------------------------------------------------------------------ records and uploads
def read_record(path: Path) -> dict[str, Any]:
    """A submission's JSON record ({} when there is none)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise SubmissionError(f"{path}: not valid JSON ({e})") from None


def newest_submission(out_dir: Path | None = None) -> Path:
    """The most recently written submission CSV in ``out_dir`` (one with a record beside it)."""
    out_dir = Path(out_dir or default_out_dir())
    found = [p for p in out_dir.glob("*.csv") if not p.name.endswith(PROBS_SUFFIX) and p.with_suffix(".json").is_file()]
    if not found:
        raise SubmissionError(f"{out_dir}: no submissions yet; run `deepfake-fastai ensemble` first")
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name))  # a CSV is written once, never touched again


def submit_file(csv_path: Path, message: str, competition: str | None = None, dry_run: bool = False,
                sample_submission: Path | None = None) -> dict[str, Any]:
    """Validate a written submission, upload it to Kaggle (unless ``dry_run``), record the attempt and reply."""
    from . import submissions_io

    csv_path = Path(csv_path)
    if not message or not message.strip():
        raise SubmissionError("a submission message is required (-m MESSAGE)")
    if not csv_path.is_file():
        raise SubmissionError(f"{csv_path}: no such submission file; `deepfake-fastai submissions` lists them, "
                              f"`deepfake-fastai ensemble` writes one")
    record_path = csv_path.with_suffix(".json")
    record = read_record(record_path)
    expected = expected_from_record(record, sample_submission)
    data = csv_path.read_bytes()
    validate_csv(data, expected)
    competition = competition or record.get("competition") or os.environ.get("KAGGLE_COMPETITION")
    entry: dict[str, Any] = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "competition": competition, "message": message, "file": csv_path.name,
                             "sha256": hashlib.sha256(data).hexdigest(), "dry_run": dry_run}
    try:
        if dry_run:
            entry.update(status="dry_run", credentials=submissions_io.credential_source())
        elif not competition:
            raise SubmitError("no competition to submit to: pass --competition SLUG, train with "
                              "data.competition, or set KAGGLE_COMPETITION")
        else:
            entry.update(status="submitted", reply=submissions_io.upload(data, csv_path.name, competition, message))
    except SubmitError as e:
        entry.update(status="failed", error=str(e))
        raise
    finally:
        atomic.write_json(record_path, {**record, "kaggle": [*record.get("kaggle", []), entry]})
    return entry


# ------------------------------------------------------------------------------------------------- listing
def read_records(out_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every submission record in ``out_dir``, oldest first."""
    out_dir = Path(out_dir or default_out_dir())
    records = []
    for path in sorted(out_dir.glob("*.json")):
        record = read_record(path)
        if "csv" in record:  # the name on disk, not the one written inside: a renamed pair is listed as it is now
            records.append({**record, "csv": path.with_suffix(".csv").name})
    return records


def submitted_competitions(records: Sequence[dict[str, Any]]) -> list[str]:
    """The competitions the records were uploaded to (where public scores can be looked up)."""
    found = {k.get("competition") for r in records for k in r.get("kaggle", []) if k.get("status") == "submitted"}
    return sorted(c for c in found if c)


def submission_rows(records: Sequence[dict[str, Any]],
                    public: dict[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One summary row per submission: validation scores and, when known, Kaggle's public score."""
    rows = []
    for r in records:
        metric = r.get("metric", "auc")
        uploads = [k for k in r.get("kaggle", []) if k.get("status") == "submitted"]
        ref = uploads[-1].get("reply", {}).get("ref") if uploads else None
        rows.append({
            "csv": r["csv"], "created": r.get("created", ""), "method": r.get("method", "-"), "metric": metric,
            "validation": r.get("validation", {}).get("ensemble", {}).get(metric),
            "holdout": r.get("holdout", {}).get("ensemble"),
            "best_single": r.get("validation", {}).get("best_single", {}).get(metric),
            "submitted": len(uploads), "ref": ref,
            "public_score": (public or {}).get(ref, {}).get("public_score") if ref else None,
        })
    return rows
