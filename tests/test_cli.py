"""The command line: help a newcomer can read, and one clear line + exit 2 on bad input."""

from pathlib import Path

import pytest

from deepfake_fastai.cli import main


def test_help_lists_the_commands_and_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "train" in out and "data" in out and "examples:" in out and "--source folder" in out


def test_bad_config_file_exits_2_naming_file_and_key(tmp_path: Path, capsys):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("arch: test_resnet\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "mine.yaml" in err and "learning_rate" in err and "Traceback" not in err


def test_unknown_arch_exits_2_before_any_work(tmp_path: Path, capsys):
    assert main(["train", "--arch", "convnext_tinyy", "--runs-dir", str(tmp_path)]) == 2
    assert "convnext_tiny" in capsys.readouterr().err  # the suggestion
    assert not any(tmp_path.iterdir())


def test_data_command_summarises_a_folder(tmp_path: Path, tiny_data: Path, capsys):
    rc = main(["data", "--path", str(tiny_data), "--size", "32"])
    out = capsys.readouterr().out
    assert rc == 0 and "64 labelled images" in out and "test 16" in out and "fake (positive)" in out


@pytest.mark.parametrize("flags, source", [
    (["--competition", "c"], "kaggle_competition"), (["--dataset", "o/n"], "kaggle_dataset"),
    (["--path", "x.csv"], "csv"), (["--path", "imgs"], "folder"), ([], "synthetic"),
])
def test_the_data_flag_given_implies_the_source(flags, source):
    from deepfake_fastai.cli import build_parser, data_config

    assert data_config(build_parser().parse_args(["train", *flags])).source == source


@pytest.mark.parametrize("flags, workers", [([], "auto"), (["--num-workers", "auto"], "auto"),
                                            (["--num-workers", "4"], 4)])
def test_num_workers_flag_is_auto_or_a_count(flags, workers, capsys):
    from deepfake_fastai.cli import build_parser, train_config

    assert train_config(build_parser().parse_args(["train", *flags])).num_workers == workers
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--num-workers", "lots"])
    assert "expected auto or a number, got 'lots'" in capsys.readouterr().err
