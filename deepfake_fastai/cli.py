"""The `deepfake-fastai` command: user-facing output lives here, the work in the stage modules."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import warnings
from pathlib import Path

from . import runfolder
from .atomic import WriteError
from .config import ConfigError, DataConfig, TrainConfig, from_dict, load_yaml
from .ensemble import METHODS, METRICS
from .submit import KINDS

EPILOG = """examples:
  deepfake-fastai data                               generate the embedded data set and show its split
  deepfake-fastai train                              resnet18 @ 64 px on the embedded data (CPU-sized)
  deepfake-fastai train --arch convnext_tiny --size 128 --epochs 5
  deepfake-fastai train --source folder --path ../shared/data/cifake --size 32
  deepfake-fastai train --config my_run.yaml         any TrainConfig field; data: {...} for the source
  deepfake-fastai sweep                              the quickstart sweep (archs x sizes) + leaderboard
  deepfake-fastai sweep sweeps/cifake.yaml --limit 2
  deepfake-fastai leaderboard runs/quickstart
  deepfake-fastai ensemble runs/quickstart           greedy ensemble of a sweep -> submissions/<time>_greedy.csv
  deepfake-fastai submit -m "greedy, 4 runs" --dry-run  validate the newest submission; drop --dry-run to upload
  deepfake-fastai robustness runs/quickstart/<run>   AUC after JPEG 90/70/50, blur 1/2, rescale 0.5
  deepfake-fastai report runs/quickstart             one HTML page: leaderboard, ROC, per-run plots
  deepfake-fastai submissions                        past submissions with validation (and public) scores
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, turn known errors into one clear line and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so a killed run records "failed", not "running"
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "quiet", False):
        import fastprogress.fastprogress as fastprogress

        # fastai's fine_tune ignores Learner.no_bar() (fastai issue 3959); fastprogress's own switch, read at each
        # redraw (printing()), silences every bar: training, TTA, the cache (fastprogress issue 105)
        fastprogress.NO_BAR = True
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError, PermissionError, ImportError, RuntimeError, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what finished is on disk; the same command resumes from it
        print("\ninterrupted: complete runs (and folds) are kept; run the same command again to resume",
              file=sys.stderr)
        return 130


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepfake-fastai", description="Train, sweep, ensemble and submit AI-image detectors.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true",
                        help=f"only warnings and results (sweep: each run's console output goes to <run>/"
                             f"{runfolder.WORKER_LOG})")
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="prepare a data set (generate/download, cache, split) and summarise it",
                          parents=[common])
    _add_data_args(data)
    data.add_argument("--item-resize-px", type=int, default=64,
                      help="cache images at this max side, px (a run's item_resize_px)")
    data.add_argument("--size", type=int, dest="item_resize_px", action=_Renamed, help=argparse.SUPPRESS)
    data.set_defaults(func=cmd_data)
    tr = sub.add_parser("train", help="train one model and write a run folder", parents=[common],
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_train_args(tr)
    _add_data_args(tr)
    tr.set_defaults(func=cmd_train)
    sw = sub.add_parser("sweep", help="run a sweep file (grid of archs x resolutions), resumable", parents=[common])
    sw.add_argument("file", nargs="?", type=Path, default=Path("sweeps/quickstart.yaml"),
                    help="sweep YAML (default sweeps/quickstart.yaml)")
    sw.add_argument("--limit", type=int, help="run only the first N runs of the sweep")
    sw.add_argument("--check", action="store_true", help="validate and list the runs, train nothing")
    sw.add_argument("--backend", choices=["local", "ray"], default="local",
                    help="local: one run after another here; ray: Ray tasks (pip install 'deepfake-fastai[ray]')")
    sw.add_argument("--address", help="Ray cluster address (e.g. auto, or ray://head:10001); default: a local Ray")
    sw.add_argument("--cold", action="store_true",
                    help="start each run in a fresh interpreter (~20 s of imports) instead of forking a warm one")
    sw.set_defaults(func=cmd_sweep)
    lb = sub.add_parser("leaderboard", help="print (and rewrite) a sweep folder's leaderboard", parents=[common])
    lb.add_argument("folder", type=Path, help="runs/<sweep name>")
    lb.set_defaults(func=cmd_leaderboard)
    rb = sub.add_parser("robustness", help="validation AUC of a finished run after JPEG, blur and rescaling",
                        parents=[common])
    rb.add_argument("run", type=Path, help="a complete run folder, e.g. runs/quickstart/resnet18_r96-96_fine_tune_s42")
    rb.set_defaults(func=cmd_robustness)
    rp = sub.add_parser("report", help="write runs/<sweep>/report.html (leaderboard, ROC curves, per-run plots, "
                        "top losses, Grad-CAM, t-SNE)", parents=[common])
    rp.add_argument("folder", type=Path, help="runs/<sweep name>")
    rp.add_argument("--submissions", type=Path,
                    help="folder of submission records whose newest ensemble of this sweep is drawn "
                         "(default: submissions/, or /kaggle/working/submissions in a Kaggle notebook)")
    rp.add_argument("--no-interpret", dest="interpret", action="store_false",
                    help="leave out each run's top losses, Grad-CAM and t-SNE (they load every learner: slower)")
    rp.set_defaults(func=cmd_report)
    ens = sub.add_parser("ensemble", help="ensemble finished runs and write a validated submission",
                         parents=[common])
    _add_ensemble_args(ens)
    _add_format_args(ens)
    ens.set_defaults(func=cmd_ensemble)
    sm = sub.add_parser("submit", help="validate a submission, then upload it to Kaggle", parents=[common])
    sm.add_argument("file", nargs="?", type=Path, help="submission CSV (default: the newest in --out-dir)")
    sm.add_argument("-m", "--message", required=True, help="submission description shown on Kaggle")
    sm.add_argument("--competition", help="competition slug (default: the record's, or KAGGLE_COMPETITION)")
    sm.add_argument("--dry-run", action="store_true", help="validate and record, but do not upload")
    sm.add_argument("--sample-submission", type=Path, help="validate against this sample_submission.csv")
    sm.add_argument("--out-dir", type=Path, help="submissions folder (default submissions/)")
    sm.set_defaults(func=cmd_submit)
    ls = sub.add_parser("submissions", help="list past submissions with their scores", parents=[common])
    ls.add_argument("--out-dir", type=Path, help="submissions folder (default submissions/)")
    ls.add_argument("--offline", action="store_true", help="do not ask Kaggle for public scores")
    ls.set_defaults(func=cmd_submissions)
    return parser


class _Renamed(argparse.Action):
    """An old flag that still works, with one warning line naming its new name."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        new = "--" + self.dest.replace("_", "-")
        print(f"warning: {option_string} is deprecated, use {new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data source (default: the embedded synthetic data)")
    g.add_argument("--source", choices=["synthetic", "folder", "csv", "kaggle_competition", "kaggle_dataset"])
    g.add_argument("--path", help="folder with one sub-folder per class (and optional test/), or a CSV")
    g.add_argument("--competition", help="Kaggle competition slug")
    g.add_argument("--dataset", help="Kaggle dataset handle owner/name")
    g.add_argument("--positive-class", help="class whose probability is predicted (default: fake)")
    g.add_argument("--label-from-name", metavar="REGEX",
                   help="folder source: class = first (group) of REGEX in each file stem, e.g. '(.)$' (last character)")
    g.add_argument("--group-from-name", metavar="REGEX",
                   help="group = first (group) of REGEX in each file stem, e.g. '^([^_]+)_' for <video>_<frame>.jpg: "
                        "every split keeps a group (video, identity) on one side")
    g.add_argument("--group-col", help="csv source: the column holding each image's group")
    g.add_argument("--folds", type=int, help="K >= 2: K-fold cross-validation (K models, out-of-fold scores)")
    g.add_argument("--difficulty", choices=["easy", "default", "hard"], help="synthetic data difficulty")
    g.add_argument("--valid-pct", type=float, help="fraction held out for validation (default 0.2)")
    g.add_argument("--test-pct", type=float,
                   help="fraction held out as a labelled test set, scored after training (70/15/15: "
                        "--valid-pct 0.15 --test-pct 0.15)")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run (defaults: TrainConfig's)")
    g.add_argument("--config", type=Path, help="YAML with TrainConfig fields; flags override it")
    g.add_argument("--arch", help="any timm model name, e.g. resnet50, convnext_tiny, vit_small_patch16_224")
    g.add_argument("--size", type=int, help="final image side, px")
    g.add_argument("--item-resize-px", type=int,
                   help="per-item side, px: the data cache's images and the per-item Resize before batching "
                        "(default: --size)")
    g.add_argument("--item-resize", type=int, dest="item_resize_px", action=_Renamed, help=argparse.SUPPRESS)
    g.add_argument("--bs", type=int, help="effective batch size")
    g.add_argument("--accum", type=int, help="gradient-accumulation micro-batches per step")
    g.add_argument("--epochs", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--weights-file", help="local weights file for offline pretrained runs")
    g.add_argument("--input", choices=["rgb", "npr"],
                   help="what the network sees: the image, or its NPR up-sampling residual (crops, no resizing)")
    g.add_argument("--precision", choices=["auto", "fp16", "bf16", "fp32"])
    g.add_argument("--tta-n", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--num-workers", type=_num_workers, metavar="N|auto",
                   help="DataLoader worker processes (default auto: 0 on CPU, one per core up to 8 on CUDA)")
    g.add_argument("--runs-dir", help="parent folder of run folders (default runs)")
    g.add_argument("--name", help="run folder name (default: derived from the config)")


def _num_workers(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got '{text}'") from None


def data_config(args: argparse.Namespace, base: dict | None = None) -> DataConfig:
    raw = dict(base or {})
    for key in ("source", "path", "competition", "dataset", "positive_class", "difficulty", "label_from_name",
                "valid_pct", "test_pct", "group_from_name", "group_col", "folds"):
        if getattr(args, key, None) is not None:
            raw[key] = getattr(args, key)
    if "source" not in raw:  # the flag given implies the source: --competition x is a competition, not synthetic
        if raw.get("competition"):
            raw["source"] = "kaggle_competition"
        elif raw.get("dataset"):
            raw["source"] = "kaggle_dataset"
        elif raw.get("path"):
            raw["source"] = "csv" if str(raw["path"]).endswith(".csv") else "folder"
    return from_dict(DataConfig, raw, "data")


def train_config(args: argparse.Namespace) -> TrainConfig:
    raw = load_yaml(args.config) if args.config else {}
    where = str(args.config or "flags")
    data = data_config(args, raw.pop("data", None))
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None and f.name != "data":
            raw[f.name] = value
    cfg = from_dict(TrainConfig, raw, where)
    return dataclasses.replace(cfg, data=data)


def cmd_data(args: argparse.Namespace) -> int:
    from .data import prepare

    cfg = data_config(args)
    prepared = prepare(cfg, item_resize_px=args.item_resize_px)
    items = prepared.items
    print(f"data set {prepared.key}: {len(items)} labelled images, classes "
          f"{prepared.negative_class} / {prepared.positive_class} (positive)")
    folds = f" (fold 0 of {cfg.folds})" if cfg.folds else ""
    print(f"  train {int((~items.is_valid).sum())}, valid {int(items.is_valid.sum())}{folds}, "
          f"labelled test {len(prepared.labelled_test)}, unlabelled test {len(prepared.test)}, "
          f"skipped {len(prepared.bad_images)}")
    if "group" in items.columns:
        print(f"  groups: {items.group.nunique()} in train/valid, none on both sides")
    print(f"  split file: {prepared.split_file}")
    print(f"  cached images: {prepared.cache_dir}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import run

    result = run(train_config(args))
    m = result.metrics
    print(f"\nrun folder: {result.run_dir}")
    print(f"  AUC {m['auc']:.4f}  accuracy {m['accuracy']:.4f}  log loss {m['log_loss']:.4f}  "
          f"({m['fit_time_s']:.0f} s, {m['images_per_s']:.0f} images/s, {m['precision_mode']})")
    if "test_auc" in m:
        print(f"  labelled test ({m['n_labelled_test']} images, never used to pick anything): AUC {m['test_auc']:.4f}  "
              f"accuracy {m['test_accuracy']:.4f}  precision {m['test_precision']:.4f}  recall {m['test_recall']:.4f}  "
              f"F1 {m['test_f1']:.4f}  confusion [[TN FP] [FN TP]] {m['test_confusion']}")
    print(f"  metrics: {result.run_dir / runfolder.METRICS}")
    if m.get("folds"):  # K models, one per fold folder: the run's scores are out-of-fold
        print(f"  {m['folds']} folds (AUC per fold {m['fold_auc']}, spread {m['auc_fold_std']}): one model each in "
              f"{result.run_dir}/{runfolder.FOLD_PREFIX}<k>/")
        return 0
    model = result.model_path  # em_traces runs keep a scikit-learn model
    print(f"  {'learner' if model == result.learner_path else 'model'}: {model}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import format_table, load_sweep, preflight, run_sweep, skipped_lines, sweep_dir

    sweep = load_sweep(args.file)
    if args.check:
        for cfg in preflight(sweep, args.limit):
            print(f"  {cfg.run_name}: {cfg.arch} item {cfg.item_resize_px}px -> {cfg.size}px, {cfg.epochs} epochs")
        return 0
    rows = run_sweep(sweep, limit=args.limit, backend=args.backend, address=args.address, quiet=args.quiet,
                     cold=args.cold)
    print(f"\nleaderboard ({sweep.metric}): {sweep_dir(sweep) / 'leaderboard.csv'}")
    print(format_table(rows, sweep.metric))
    skipped = skipped_lines(rows)
    if skipped:
        print("\n" + "\n".join(skipped))
    _print_leak_notes(rows)
    failed = [r["run"] for r in rows if r.get("status") != "complete"]
    if failed:
        print(f"\n{len(failed)} run(s) did not complete: {', '.join(failed)} (see their {runfolder.STATUS})")
    return 0


def _print_leak_notes(rows: list[dict]) -> None:
    """The data checks' findings (leaks, near-duplicates, names that look like groups) under the leaderboard."""
    from .data import leak_notes

    split_file = next((r["split_file"] for r in rows if r.get("split_file")), None)
    notes = leak_notes(Path(split_file)) if split_file else []
    if notes:
        print("\ndata checks:\n" + "\n".join(f"  {n}" for n in notes))


def cmd_leaderboard(args: argparse.Namespace) -> int:
    import yaml

    from .sweep import format_table, load_leaderboard

    rows = load_leaderboard(args.folder)
    metric = yaml.safe_load((args.folder / "sweep.yaml").read_text()).get("metric", "auc")
    print(format_table(rows, metric))
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from . import robustness
    if not runfolder.is_complete(args.run):
        raise FileNotFoundError(f"{args.run} is not a complete run folder (no complete {runfolder.METRICS})")
    table = robustness.evaluate(args.run)
    robustness.record(args.run, table)
    print(f"validation AUC of {args.run.name} (plain predictions, no TTA):")
    print(robustness.format_table(table))
    print(f"recorded in {args.run / runfolder.METRICS} under 'robustness'")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(args.folder, args.submissions, interpret=args.interpret)
    print(f"report: {path.resolve()} (one self-contained file: open it in a browser, or attach it)")
    return 0


def _add_ensemble_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", default=["runs"],
                   help="run folders, sweep folders, globs or run names (default: every complete run in runs/)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run names are looked up")
    p.add_argument("--method", choices=METHODS, help="default greedy (weighted when --weights is given)")
    p.add_argument("--metric", choices=list(METRICS), default="auc", help="what greedy/weighted optimise")
    p.add_argument("--weights", help="comma-separated weights, one per run, in the order the runs are listed")
    p.add_argument("--iterations", type=int, default=50, help="greedy selection steps (bag size)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out validation halves")
    p.add_argument("--per-group", action="store_true",
                   help="one submission row per group (video): the mean of its test images' probabilities; "
                        "groups from the runs' data.group_from_name, ids matched to the sample submission's by stem")
    p.add_argument("--clip", type=float, metavar="EPS",
                   help="clip the submitted probabilities to [EPS, 1-EPS] (log-loss competitions); default: none")
    p.add_argument("--calibrate", action="store_true",
                   help="temperature-scale the submitted probabilities (one T fitted on the validation / "
                        "out-of-fold predictions by log loss)")
    p.add_argument("--name", help="submission name (default: the method)")
    p.add_argument("--competition", help="Kaggle competition slug recorded for `submit`")
    p.add_argument("--out-dir", type=Path, help="submissions folder (default submissions/)")


def _add_format_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("submission format (default: inferred from the competition's sample_submission.csv)")
    g.add_argument("--sample-submission", type=Path, help="the competition's sample_submission.csv")
    g.add_argument("--id-col", help="header of the id column")
    g.add_argument("--label-col", help="header of the prediction column")
    g.add_argument("--label-kind", choices=KINDS, help="prob (probability), index (class index) or name")
    g.add_argument("--classes", help="comma-separated class vocabulary in index order")
    g.add_argument("--threshold", type=float, help="index/name kinds: positive-class probability cut-off")


def _format_overrides(args: argparse.Namespace) -> dict:
    raw = {"id_col": args.id_col, "label_col": args.label_col, "kind": args.label_kind,
           "classes": args.classes.split(",") if args.classes else None, "threshold": args.threshold}
    return {k: v for k, v in raw.items() if v is not None}


def cmd_ensemble(args: argparse.Namespace) -> int:
    from . import ensemble, submit
    from .data import sample_lists_videos

    if args.sample_submission and not args.sample_submission.is_file():
        raise FileNotFoundError(f"--sample-submission {args.sample_submission}: no such file")
    run_dirs = ensemble.resolve_run_dirs(args.runs, args.runs_dir)
    runs = ensemble.load_runs(run_dirs)
    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    method = args.method or ("weighted" if weights else "greedy")
    pattern = ensemble.group_rule(run_dirs) if args.per_group else None  # before the work: a missing rule fails fast
    result = ensemble.build(runs, method, args.metric, weights, args.iterations, args.seed, args.calibrate,
                            args.clip)
    test_folder = submit.find_test_folder(run_dirs)  # the ids to cover: every test file, decodable or not
    result = ensemble.cover(result, submit.read_test_ids(test_folder)) if test_folder else result
    folds = f" ({len(set(result.valid_folds))}-fold, out-of-fold)" if result.valid_folds is not None else ""
    print(f"{len(runs)} runs, {len(result.valid_ids)} validation{folds} and {len(result.test_ids)} test images\n")
    print("\n".join(ensemble.summary_lines(result)))
    _warn_fallback(result, runs[0].metrics)
    if not len(result.test_ids):
        print("\nthe runs have no test images: nothing to submit")
        return 0
    classes = (result.negative_class, result.positive_class)
    sample = args.sample_submission or submit.find_sample_submission(run_dirs)
    if sample:
        expected = submit.expected_from_sample(sample, *classes, _format_overrides(args))
    elif pattern:
        raise FileNotFoundError("--per-group needs the competition's sample_submission.csv (its ids are the groups, "
                                "e.g. videos): pass --sample-submission")
    else:
        source = test_folder or run_dirs[0] / runfolder.ids_file("test")
        print(f"\nno sample_submission.csv found: format from the flags, ids from {source}")
        expected = submit.expected_from_ids(source, *classes, _format_overrides(args))
    ids, probs, per_group = result.test_ids, result.test_probs, {}
    if pattern:
        ids, probs, rows = ensemble.per_group_rows(result, pattern, expected.ids)
        per_group, empty = {"per_group": rows}, rows["no_frames"]["ids"]
        print(f"\nper group: {len(result.test_ids)} test images -> {rows['n_groups']} groups by '{pattern}'")
        if empty:
            print(f"WARNING: {len(empty)} group(s) of the sample submission have no test image (e.g. {empty[:3]}): "
                  f"probability {ensemble.FALLBACK_PROB} (the prior), listed in the record's per_group.no_frames")
    elif sample and sample_lists_videos(expected.ids, result.test_ids):  # a per-video competition, per image
        raise ValueError(f"{sample} lists groups (its ids start the test images' names, e.g. {expected.ids[0]}): the "
                         f"competition scores one row per video; add --per-group (needs data.group_from_name)")
    frame = submit.make_frame(ids, probs, expected.fmt, classes, expected.ids)
    record = {**ensemble.to_record(result), **per_group,
              "competition": args.competition or submit.competition_of(run_dirs)}
    extras = {submit.PROBS_SUFFIX: submit.to_csv_bytes(ensemble.probs_frame(result))}
    path = submit.write_submission(frame, expected, record, args.out_dir, args.name or method, extras)
    fmt = expected.fmt
    print(f"\nsubmission: {path} ({len(frame)} rows; {fmt.id_col},{fmt.label_col} as {fmt.kind}; "
          f"valid against {expected.source})")
    print(f"record:     {path.with_suffix('.json')}")
    print(f'next:       deepfake-fastai submit {path} -m "..." [--dry-run]')
    return 0


def _warn_fallback(result, metrics: dict) -> None:
    """Name, loudly, the test images no run could decode and the probability they were given instead."""
    if not result.fallback_ids:
        return
    from .ensemble import FALLBACK_PROB

    report = Path(metrics.get("split_file", ".")).parent / "bad_images.csv"
    shown = ", ".join(result.fallback_ids[:5]) + (", ..." if len(result.fallback_ids) > 5 else "")
    print(f"\nWARNING: {len(result.fallback_ids)} test image(s) could not be decoded (reasons: {report}): "
          f"{shown}. They get probability {FALLBACK_PROB} (the uninformed prior) so the submission covers every "
          f"test file; replace them with readable copies and rerun for real predictions.")


def cmd_submit(args: argparse.Namespace) -> int:
    from . import submit

    path = args.file or submit.newest_submission(args.out_dir)
    entry = submit.submit_file(path, args.message, args.competition, args.dry_run, args.sample_submission)
    if args.dry_run:
        print(f"dry run: {path} is valid; would submit to {entry['competition'] or '(no competition set)'} "
              f"with message {args.message!r}; credentials: {entry['credentials'] or 'none found'}")
    else:
        reply = entry["reply"]
        print(f"submitted {path} to {entry['competition']}: {reply['message']} (ref {reply['ref']})")
    print(f"recorded in {path.with_suffix('.json')}")
    return 0


def cmd_submissions(args: argparse.Namespace) -> int:
    from . import submissions_io, submit

    records = submit.read_records(args.out_dir)
    if not records:
        print(f"no submissions in {args.out_dir or submit.default_out_dir()}")
        return 0
    public: dict = {}
    if not args.offline:
        for competition in submit.submitted_competitions(records):
            public.update(submissions_io.public_scores(competition))
    print(f"{'created':<25}  {'metric':<8} {'valid':>6} {'held':>6} {'single':>6}  {'sent':>4} {'public':>7}  file")
    for row in submit.submission_rows(records, public):
        cells = [f"{row[k]:6.4f}" if isinstance(row[k], float) else f"{'-':>6}"
                 for k in ("validation", "holdout", "best_single")]
        print(f"{row['created']:<25}  {row['metric']:<8} {' '.join(cells)}  {row['submitted']:>4} "
              f"{row['public_score'] or '-':>7}  {row['csv']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
