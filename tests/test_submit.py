"""Submissions: format inference, frames, the validator, writing, and the real kaggle client against a stand-in."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake_fastai import submissions_io
from deepfake_fastai import submit as S
from deepfake_fastai.config import ConfigError, DataConfig, TrainConfig, dump_yaml

sys.path.insert(0, str(Path(__file__).parent))
from kaggle_standin import Server, port_free  # noqa: E402

CLASSES = ("real", "fake")  # (negative, positive), as the runs name them
SECRET = "k3y-that-must-never-show"


def sample(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(textwrap.dedent(text)), dtype=str, keep_default_na=False)


def expected(ids, **fmt) -> S.Expected:
    return S.Expected(S.SubmissionFormat(**fmt).resolved(*CLASSES), tuple(ids), "test ids")


# ------------------------------------------------------------------------------------------ format inference
@pytest.mark.parametrize("text, id_col, label_col, kind, prob_of", [
    ("id,label\ntest_000000,0.5\ntest_000001,0.5\n", "id", "label", "prob", None),  # the embedded data set
    ("filename,class\na.jpg,0\nb.jpg,1\n", "filename", "class", "index", None),  # seed notebook 1
    ("image_id,label\nx,real\ny,fake\n", "image_id", "label", "name", None),  # seed notebook 2
    ("id,fake\nx,0.5\n", "id", "fake", "prob", "fake"),  # a column named after a class holds its probability
    ("id,Real\nx,0\n", "id", "Real", "prob", "real"),
    ("id,target\nx,0.0\ny,1e-3\n", "id", "target", "prob", None),
])
def test_infer_format_from_sample_submissions(text, id_col, label_col, kind, prob_of):
    fmt = S.infer_format(sample(text), CLASSES)
    assert (fmt.id_col, fmt.label_col, fmt.kind, fmt.prob_of) == (id_col, label_col, kind, prob_of)


@pytest.mark.parametrize("text, message", [
    ("id,real,fake\nx,0.5,0.5\n", "expected 2 columns"),
    ("id,label\n", "no example labels"),
    ("id,label\nx,cat\n", "not classes of the runs"),
])
def test_infer_format_refuses_what_it_cannot_read(text, message):
    with pytest.raises(S.SubmissionError, match=message):
        S.infer_format(sample(text), CLASSES)


def test_a_kind_from_config_needs_no_example_labels():
    fmt = S.infer_format(sample("image_id,label\n"), CLASSES, kind="name")
    assert (fmt.id_col, fmt.label_col, fmt.kind) == ("image_id", "label", "name")


def test_format_from_config_rejects_unknown_keys_and_kinds():
    fmt = S.SubmissionFormat.from_dict({"id_col": "filename", "label_col": "class", "kind": "index",
                                        "classes": ["fake", "real"]})
    assert fmt.classes == ("fake", "real")
    with pytest.raises(ConfigError, match="labelcol"):
        S.SubmissionFormat.from_dict({"labelcol": "x"})
    with pytest.raises(ConfigError, match="prob, index, name"):
        S.SubmissionFormat.from_dict({"kind": "probability"})


def test_resolved_fills_the_sorted_vocabulary_and_positive_class():
    fmt = S.SubmissionFormat(kind="index").resolved("real", "fake")
    assert fmt.classes == ("fake", "real") and fmt.prob_of == "fake"  # fastai's sorted vocab


# ------------------------------------------------------------------------------------------------- frames
def test_make_frame_for_each_kind():
    ids, probs = ["a", "b", "c"], np.array([0.9, 0.5, 0.1])
    prob = S.make_frame(ids, probs, S.SubmissionFormat().resolved(*CLASSES), CLASSES)
    assert list(prob.columns) == ["id", "label"] and np.allclose(prob.label, probs)
    of_real = S.make_frame(ids, probs, S.SubmissionFormat(label_col="real", prob_of="real"), CLASSES)
    assert np.allclose(of_real.real, 1 - probs)
    index = S.make_frame(ids, probs, S.SubmissionFormat("filename", "class", "index").resolved(*CLASSES), CLASSES)
    assert list(index["class"]) == [0, 0, 1]  # vocab (fake, real): fake = 0; 0.5 reaches the threshold
    name = S.make_frame(ids, probs, S.SubmissionFormat("image_id", "label", "name", threshold=0.6), CLASSES)
    assert list(name.label) == ["fake", "real", "real"]


def test_make_frame_matches_ids_by_file_stem_in_expected_order():
    fmt = S.SubmissionFormat("filename", "class", "index").resolved(*CLASSES)
    frame = S.make_frame(["b", "a", "zz"], np.array([0.2, 0.8, 0.5]), fmt, CLASSES, ["a.jpg", "b.jpg", "c.jpg"])
    assert frame.to_dict("list") == {"filename": ["a.jpg", "b.jpg"], "class": [0, 1]}
    with pytest.raises(S.SubmissionError, match="missing"):  # c.jpg has no prediction: the validator says so
        S.validate_csv(S.to_csv_bytes(frame), S.Expected(fmt, ("a.jpg", "b.jpg", "c.jpg"), "sample"))


@pytest.mark.parametrize("fmt", [
    {"id_col": "filename", "label_col": "class", "kind": "index"},
    {"id_col": "image_id", "label_col": "label", "kind": "name"},
    {"id_col": "id", "label_col": "label", "kind": "prob"},
])
def test_seed_notebook_formats_round_trip_through_the_validator(fmt):
    ids = [f"img{i}" for i in range(6)]
    exp = expected(ids, **fmt)
    data = S.to_csv_bytes(S.make_frame(ids, np.linspace(0, 1, 6), exp.fmt, CLASSES, ids))
    assert data.decode().splitlines()[0] == f"{fmt['id_col']},{fmt['label_col']}"
    assert len(S.validate_csv(data, exp)) == 6


# ---------------------------------------------------------------------------------------------- validator
IDS = [f"t{i:02d}" for i in range(20)]


def csv_of(rows, header="id,label") -> bytes:
    return (header + "\n" + "".join(f"{i},{v}\n" for i, v in rows)).encode()


GOOD = [(i, 0.5) for i in IDS]


@pytest.mark.parametrize("data, kind, messages", [
    (csv_of(GOOD[8:]), "prob", ["8 of 20 test ids are missing", "t00, t01, t02, t03, t04, ..."]),
    (csv_of(GOOD + [("t03", 0.1)]), "prob", ["1 ids appear more than once", "t03"]),
    (csv_of(GOOD + [("t99", 0.1), ("u1", 0.2)]), "prob", ["2 ids are not test ids", "t99"]),
    (csv_of(GOOD[:-1] + [("t19", "nan")]), "prob", ["1 labels are NaN or empty", "t19"]),
    (csv_of(GOOD[:-1] + [("t19", "")]), "prob", ["NaN or empty"]),
    (csv_of(GOOD, header="image_id,label"), "prob", ["header is ['image_id', 'label'], expected ['id', 'label']"]),
    (csv_of(GOOD, header="id,label,extra"), "prob", ["header is"]),
    (csv_of(GOOD[:-2] + [("t18", 1.2), ("t19", -0.1)]), "prob", ["2 probabilities are outside [0, 1]", "t18=1.2"]),
    (csv_of(GOOD[:-1] + [("t19", "high")]), "prob", ["1 labels are not numbers", "t19=high"]),
    (csv_of([(i, "fake") for i in IDS[:-1]] + [("t19", "deepfake")]), "name",
     ["1 labels are not class names ['fake', 'real']", "t19=deepfake"]),
    (csv_of([(i, 1) for i in IDS[:-1]] + [("t19", 2)]), "index", ["class indices are outside 0..1", "t19=2"]),
    (csv_of([(i, 1) for i in IDS[:-1]] + [("t19", "1.0")]), "index", ["not class indices (integers)"]),
    (csv_of(GOOD + [("", 0.5)]), "prob", ["1 rows have an empty id (CSV lines 22)"]),
    (b"", "prob", ["not a readable UTF-8 CSV"]),
])
def test_validator_names_each_problem(data, kind, messages):
    with pytest.raises(S.SubmissionError) as e:
        S.validate_csv(data, expected(IDS, kind=kind))
    for message in messages:
        assert message in str(e.value)


def test_validator_lists_every_problem_at_once():
    with pytest.raises(S.SubmissionError) as e:
        S.validate_csv(csv_of(GOOD[1:] + [("t05", 2.0), ("x", 0.3)]), expected(IDS))
    text = str(e.value)
    assert "missing" in text and "more than once" in text and "not test ids" in text and "outside [0, 1]" in text


def test_validator_accepts_a_good_file_and_keeps_ids_as_text():
    ids = ["000123", "007"]
    frame = S.validate_csv(csv_of([(i, 0.25) for i in ids]), expected(ids))
    assert list(frame.id) == ids


# ------------------------------------------------------------------------------------------------ writing
def write_ids(path: Path, ids) -> Path:
    pd.DataFrame({"id": list(ids)}).to_csv(path, index=False)
    return path


def test_write_submission_never_overwrites_and_records(tmp_path: Path):
    exp = S.expected_from_ids(write_ids(tmp_path / "ids.csv", IDS), *CLASSES)
    frame = S.make_frame(IDS, np.full(20, 0.25), exp.fmt, CLASSES, exp.ids)
    record = {"method": "greedy", "members": [{"run": "r1", "weight": 1.0}], "competition": "comp"}
    paths = [S.write_submission(frame, exp, record, tmp_path / "subs", "ens", {".probs.csv": b"id,prob\n"})
             for _ in range(3)]  # same second, same name: three files
    assert len({p.name for p in paths}) == 3 and all(p.read_bytes() == S.to_csv_bytes(frame) for p in paths)
    assert paths[0].name.endswith("_ens.csv") and paths[1].name.endswith("_ens-2.csv")
    saved = json.loads(paths[0].with_suffix(".json").read_text())
    assert saved["members"] == record["members"] and saved["format"]["kind"] == "prob"
    assert saved["toolkit"]["version"] and "git_commit" in saved["toolkit"] and saved["n_rows"] == 20
    assert (tmp_path / "subs" / (paths[0].stem + ".probs.csv")).is_file()
    assert S.newest_submission(tmp_path / "subs") == paths[-1]


def test_an_invalid_frame_writes_nothing(tmp_path: Path):
    exp = S.expected_from_ids(write_ids(tmp_path / "ids.csv", IDS), *CLASSES)
    frame = S.make_frame(IDS[:5], np.full(5, 0.25), exp.fmt, CLASSES)
    with pytest.raises(S.SubmissionError, match="15 of 20 test ids are missing"):
        S.write_submission(frame, exp, {}, tmp_path / "subs", "bad")
    assert not (tmp_path / "subs").exists() or not any((tmp_path / "subs").iterdir())


def run_folder(tmp_path: Path, data: DataConfig, data_key: str = "") -> Path:
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(TrainConfig(data=data)))
    (run / "metrics.json").write_text(json.dumps({"status": "complete", "data_key": data_key}))
    return run


def test_sample_submission_is_found_from_a_synthetic_run(tmp_path: Path):
    root = tmp_path / "data" / "synthetic" / "syn64-abc"
    root.mkdir(parents=True)
    (root / "sample_submission.csv").write_text("id,label\ntest_000000,0.5\n")
    run = run_folder(tmp_path, DataConfig(data_dir=str(tmp_path / "data")), "syn64-abc")
    found = S.find_sample_submission([run])
    assert found == (root / "sample_submission.csv").resolve()
    exp = S.expected_from_sample(found, *CLASSES)
    assert exp.ids == ("test_000000",) and exp.fmt.kind == "prob" and exp.fmt.prob_of == "fake"
    assert S.expected_from_sample(found, *CLASSES, {"kind": "name"}).fmt.kind == "name"  # config wins


def test_inside_a_kaggle_notebook_paths_are_kaggles(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setattr(S, "KAGGLE_WORKING", tmp_path / "working")
    monkeypatch.setattr(S, "KAGGLE_INPUT", tmp_path / "input")
    comp = tmp_path / "input" / "some-comp"
    comp.mkdir(parents=True)
    (comp / "sample_submission.csv").write_text("id,label\na,0.5\n")
    run = run_folder(tmp_path, DataConfig(source="kaggle_competition", competition="some-comp"))
    assert S.default_out_dir() == tmp_path / "working" / "submissions"
    assert S.find_sample_submission([run]) == (comp / "sample_submission.csv").resolve()
    assert S.competition_of([run]) == "some-comp"
    exp = S.expected_from_sample(comp / "sample_submission.csv", *CLASSES)
    path = S.write_submission(S.make_frame(["a"], np.array([0.7]), exp.fmt, CLASSES), exp, {})
    assert path.parent == tmp_path / "working" / "submissions"
    assert (tmp_path / "working" / "submission.csv").read_bytes() == path.read_bytes()


# -------------------------------------------------------------------------------------- the Kaggle boundary
@pytest.fixture
def no_kaggle_env(tmp_path: Path, monkeypatch) -> Path:
    """No Kaggle credentials anywhere: an empty HOME and config folder, no KAGGLE_* variables."""
    for name in list(os.environ):
        if name.startswith("KAGGLE_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    return home


@pytest.fixture
def written(tmp_path: Path) -> Path:
    """A valid submission written by write_submission, with its record."""
    exp = S.expected_from_ids(write_ids(tmp_path / "ids.csv", IDS), *CLASSES)
    frame = S.make_frame(IDS, np.linspace(0, 1, 20), exp.fmt, CLASSES)
    return S.write_submission(frame, exp, {"competition": "deepfake-comp"}, tmp_path / "subs", "ens")


@pytest.fixture(scope="module")
def standin_server():
    if not port_free():
        pytest.skip("localhost:7777 (kagglesdk's fixed TEST endpoint) is busy")
    with Server() as state:
        yield state


@pytest.fixture
def standin(standin_server, no_kaggle_env: Path, monkeypatch):
    """The stand-in, reset, with the client pointed at it and legacy credentials in the environment."""
    standin_server.reset()
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLE_USERNAME", "standin-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    return standin_server


@pytest.mark.parametrize("setup, source", [
    ({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, "KAGGLE_USERNAME/KAGGLE_KEY"),
    ({"KAGGLE_API_TOKEN": "t"}, "KAGGLE_API_TOKEN"),
    ({"file": "kaggle.json"}, "kaggle.json"),
    ({"file": "access_token"}, "~/.kaggle/access_token"),
    ({}, None),
])
def test_credential_source_names_where_never_what(no_kaggle_env: Path, monkeypatch, setup, source):
    for key, value in setup.items():
        if key == "file":
            content = json.dumps({"username": "u", "key": SECRET}) if value == "kaggle.json" else SECRET
            (no_kaggle_env / ".kaggle" / value).write_text(content)
        else:
            monkeypatch.setenv(key, value)
    found = submissions_io.credential_source()
    assert (found is None) if source is None else (source in found and SECRET not in found)


def test_without_credentials_submit_fails_in_seconds_with_the_fix(written: Path, no_kaggle_env: Path):
    script = (f"import sys, time; from deepfake_fastai import submit; t = time.time()\n"
              f"try:\n    submit.submit_file({str(written)!r}, 'msg')\n"
              f"except submit.SubmitError as e:\n    print(e)\n"
              f"print('kaggle imported:', 'kaggle' in sys.modules, 'seconds:', round(time.time() - t, 2))\n")
    start = time.time()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ), cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for fix in ("kaggle.json", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "kaggle.com/settings/api"):
        assert fix in out
    assert "kaggle imported: False" in out and float(out.rsplit("seconds:", 1)[1]) < 5
    assert time.time() - start < 30  # the whole process, interpreter and pandas included, on a busy box
    record = json.loads(written.with_suffix(".json").read_text())
    assert record["kaggle"][-1]["status"] == "failed"


def test_an_unreachable_api_fails_in_seconds(written: Path, no_kaggle_env: Path, monkeypatch):
    if not port_free(80):
        pytest.skip("something listens on localhost:80")
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")  # http://localhost, where nothing answers
    with pytest.raises(S.SubmitError, match="cannot reach the Kaggle API at http://localhost"):
        S.submit_file(written, "msg")
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "MOON")
    with pytest.raises(S.SubmitError, match="KAGGLE_API_ENVIRONMENT"):
        S.submit_file(written, "msg")


def test_dry_run_validates_and_records_without_uploading(written: Path, no_kaggle_env: Path):
    entry = S.submit_file(written, "try it", dry_run=True)
    assert entry["status"] == "dry_run" and entry["credentials"] is None and entry["competition"] == "deepfake-comp"
    assert json.loads(written.with_suffix(".json").read_text())["kaggle"][-1]["message"] == "try it"
    with pytest.raises(S.SubmissionError, match="message is required"):
        S.submit_file(written, "  ", dry_run=True)


def test_submit_uploads_the_validated_bytes_with_the_message(written: Path, standin, capsys, caplog):
    entry = S.submit_file(written, "greedy of 4 runs, valid AUC 0.97")
    assert entry["status"] == "submitted" and entry["reply"]["ref"] == 1001
    [received] = standin.submissions
    assert received["bytes"] == written.read_bytes()  # byte-identical
    assert received["description"] == "greedy of 4 runs, valid AUC 0.97"
    assert received["competition"] == "deepfake-comp"
    assert [r.method for r in standin.requests] == ["POST", "PUT", "POST"]
    assert standin.requests[0].headers["Authorization"].startswith("Basic ")  # the key went only there
    record = json.loads(written.with_suffix(".json").read_text())
    assert record["kaggle"][-1]["reply"] == {"message": "Successfully submitted to deepfake-comp", "ref": 1001}
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text + json.dumps(record)


@pytest.mark.parametrize("step, status, phrase", [
    ("StartSubmissionUpload", 401, "rejected the credentials"),
    ("StartSubmissionUpload", 403, "accept the rules of 'deepfake-comp'"),
    ("StartSubmissionUpload", 429, "daily submission limit"),
    ("StartSubmissionUpload", 500, "server error (500)"),
    ("CreateSubmission", 429, "daily submission limit"),
    ("upload", 500, "did not accept the submission"),  # the client returns a message instead of raising
])
def test_each_error_status_gives_a_clear_message(written: Path, standin, capsys, caplog, step, status, phrase):
    standin.fail[step] = status
    with pytest.raises(S.SubmitError) as e:
        S.submit_file(written, "will fail")
    assert phrase in str(e.value) and not standin.submissions
    record = json.loads(written.with_suffix(".json").read_text())
    assert record["kaggle"][-1]["status"] == "failed" and phrase in record["kaggle"][-1]["error"]
    captured = capsys.readouterr()
    assert SECRET not in str(e.value) + captured.out + captured.err + caplog.text + json.dumps(record)


def test_an_edited_file_is_refused_before_any_request(written: Path, standin):
    written.write_bytes(written.read_bytes().replace(b"t03,", b"t3,"))
    with pytest.raises(S.SubmissionError, match="t03"):
        S.submit_file(written, "edited")
    assert not standin.requests


def test_a_file_made_elsewhere_is_checked_against_the_sample_submission(tmp_path: Path, no_kaggle_env: Path):
    (tmp_path / "sample.csv").write_bytes(csv_of(GOOD))
    mine = tmp_path / "mine.csv"
    mine.write_bytes(csv_of(GOOD[:-1]))
    with pytest.raises(S.SubmissionError, match="no record"):
        S.submit_file(mine, "msg", dry_run=True)
    with pytest.raises(S.SubmissionError, match="1 of 20 test ids are missing"):
        S.submit_file(mine, "msg", dry_run=True, sample_submission=tmp_path / "sample.csv")
    mine.write_bytes(csv_of(GOOD))
    assert S.submit_file(mine, "msg", dry_run=True, sample_submission=tmp_path / "sample.csv")["status"] == "dry_run"
    assert S.read_record(tmp_path / "mine.json")["kaggle"][0]["message"] == "msg"


def test_no_competition_is_a_clear_error(tmp_path: Path, standin):
    exp = S.expected_from_ids(write_ids(tmp_path / "ids.csv", IDS), *CLASSES)
    path = S.write_submission(S.make_frame(IDS, np.full(20, 0.5), exp.fmt, CLASSES), exp, {}, tmp_path / "s")
    with pytest.raises(S.SubmitError, match="--competition"):
        S.submit_file(path, "msg")
    assert S.submit_file(path, "msg", competition="other-comp")["reply"]["ref"] == 1001


def test_listing_shows_validation_and_public_scores(written: Path, standin):
    record_path = written.with_suffix(".json")
    record = json.loads(record_path.read_text())
    record.update(metric="auc", method="greedy", validation={"ensemble": {"auc": 0.97}}, holdout={"ensemble": 0.95})
    record_path.write_text(json.dumps(record))
    S.submit_file(written, "first")
    assert S.submitted_competitions(S.read_records(written.parent)) == ["deepfake-comp"]
    public = submissions_io.public_scores("deepfake-comp")
    [row] = S.submission_rows(S.read_records(written.parent), public)
    assert (row["validation"], row["holdout"], row["submitted"]) == (0.97, 0.95, 1)
    assert row["public_score"] == "0.9123" and row["ref"] == 1001
    [offline] = S.submission_rows(S.read_records(written.parent))
    assert offline["public_score"] is None


# --------------------------------------------------------------------------- Kaggle failures seen from the CLI
@pytest.mark.parametrize("fault, phrase", [
    ({"fail": 401}, "check that your key or token is current"),
    ({"fail": 403}, "accept the rules of 'deepfake-comp'"),
    ({"fail": 429}, "wait, then retry"),
    ({"fail": 500}, "server error (500): retry later"),
    ({"delay": 3.0}, "did not answer within 1 s: retry later"),
])
def test_the_cli_reports_each_kaggle_failure_in_one_line_and_keeps_the_files(written: Path, standin, monkeypatch,
                                                                              capsys, fault, phrase):
    from deepfake_fastai import cli

    monkeypatch.setattr(submissions_io, "READ_TIMEOUT_S", 1.0)
    for kind, value in fault.items():
        getattr(standin, kind)["StartSubmissionUpload"] = value
    csv_before, record_before = written.read_bytes(), json.loads(written.with_suffix(".json").read_text())
    assert cli.main(["submit", str(written), "-m", "will fail"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and phrase in err and "Traceback" not in err
    assert SECRET not in err and not standin.submissions
    assert written.read_bytes() == csv_before  # the submission and its record are kept, the attempt added
    record = json.loads(written.with_suffix(".json").read_text())
    assert {**record, "kaggle": []} == {**record_before, "kaggle": []} and record["kaggle"][-1]["status"] == "failed"


@pytest.mark.parametrize("fault", [{"fail": 401}, {"fail": 500}, {"delay": 3.0}])
def test_the_listing_goes_on_without_public_scores_when_kaggle_fails(written: Path, standin, monkeypatch, capsys,
                                                                      caplog, fault):
    from deepfake_fastai import cli

    monkeypatch.setattr(submissions_io, "READ_TIMEOUT_S", 1.0)
    S.submit_file(written, "first")
    for kind, value in fault.items():
        getattr(standin, kind)["ListSubmissions"] = value
    assert cli.main(["submissions", "--out-dir", str(written.parent)]) == 0
    assert written.name in capsys.readouterr().out and "public scores unavailable" in caplog.text
    assert SECRET not in caplog.text
