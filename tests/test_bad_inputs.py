"""Every bad value a user can give is refused before the first cell: exit code 2, one line naming the field (issue 23)."""

import pytest
import yaml

import run_bench

BASE = {
    "study": "bad",
    "data": {"synthetic_images": 60},
    "models": [{"name": "slimnet", "kwargs": {"filter_count_values": [4, 4, 4, 4], "initial_conv": [8, 7, 2]}}],
    "train": {"epochs": 1, "batch_size": 16},
    "timing": {"latency": False},
}


def _with(path: str, value) -> dict:
    config = yaml.safe_load(yaml.safe_dump(BASE))
    where = config
    keys = path.split(".")
    for key in keys[:-1]:
        where = where.setdefault(key, {}) if not key.isdigit() else where[int(key)]
    where[keys[-1]] = value
    return config


CASES = [
    # (config edit or None, extra CLI arguments, what the one line must say)
    (("seeds", 3), [], "seeds: expected a list of distinct integers"),
    (("seeds", "12"), [], "seeds: expected a list of distinct integers"),
    (("seeds", "42"), [], "seeds: expected a list of distinct integers"),
    (("train.lr", "0.01"), [], "train.lr: expected in (0, inf], got '0.01'"),
    (("train.epochs", 1.7), [], "train.epochs: expected an integer in [1, inf], got 1.7"),
    (("train.epochs", "ten"), [], "train.epochs: expected an integer in [1, inf], got 'ten'"),
    (("train.pos_weight", "false"), [], "train.pos_weight: expected true or false, got 'false'"),
    (("train.hflip", "false"), [], "train.hflip: expected true or false, got 'false'"),
    (("timing.latency", "false"), [], "timing.latency: expected true or false, got 'false'"),
    (("profile", {"latency": False}), [], "unknown key profile: it is called timing now"),
    (("train.device", "gpu"), [], "train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    (("study", 123), [], "study: expected a name"),
    (("data.limit_train", "48"), [], "data.limit_train: expected an integer in [1, inf], got '48'"),
    (("data.limit_train", -5), [], "data.limit_train: expected an integer in [1, inf], got -5"),
    (("models.0.kwargs", {"bogus": 1}), [], "models: slimnet: kwargs ['bogus']"),
    (
        ("models.0.compressions", ["svd:rank_ratio=0.5,exclude=nothing.*"]),
        [],
        "exclude='nothing.*' matches no conv or linear layer",
    ),
    (
        ("models.0.compressions", [{"steps": [{"method": "svd", "exclude": "nothing.*"}]}]),
        [],
        "exclude='nothing.*' matches no conv or linear layer",
    ),
    (("models.0.compressions", ["svd:rank_ratio=0.5,rank_ratio=0.9"]), [], "option 'rank_ratio' is given twice"),
    (None, ["--lr", "nan"], "--lr (sets train.lr): expected in (0, inf], got nan"),
    (None, ["--epochs", "ten"], "--epochs (sets train.epochs): expected an integer in [1, inf], got 'ten'"),
    (None, ["--compress", "+"], "has no step"),
    (None, ["--seeds", "a,b"], "--seeds (sets seeds): expected a list of distinct integers >= 0"),
    (None, ["--reports-dir", "/proc/1/reports"], "reports folder '/proc/1/reports/bad' is not writable"),
    (None, ["--device", "gpu"], "--device (sets device): expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    # issue 34: refused before the first cell, not after it
    (("models.0.compressions", ["quantize:calibration=foo"]), [], "option calibration: set from the study's data"),
    (("models.0.compressions", ["quantize:calibration_method=foo"]), [], "calibration_method 'foo' is not one of"),
    (
        ("models.0.compressions", ["quantize:calibration_images=100"]),
        [],
        "quantize calibration_images=100 but the training split holds 48 images",
    ),
    (
        ("timing", {"latency": True, "runtimes": ["onnxruntime_int8"]}),
        [],
        "timing.int8: calibration_images=64 (int8 runtimes of the float models) but the training split holds 48",
    ),
    (None, ["--threads", "999"], "threads: 999 threads on"),
    (None, ["--synthetic-images", "100000000"], "data.synthetic_images: 100,000,000 images need about"),
    (None, ["--mlflow", "http://127.0.0.1:9"], "--mlflow http://127.0.0.1:9: cannot log experiment 'bad' there"),
    (None, ["--mlflow", "sqlite:////no/such/folder/mlflow.db"], "its folder /no/such/folder does not exist"),
]


@pytest.mark.parametrize("edit, extra, message", CASES, ids=[c[2][:40] for c in CASES])
def test_a_bad_value_stops_the_run_before_any_cell_in_one_line(tmp_path, cache_dir, capsys, edit, extra, message):
    config = _with(*edit) if edit else yaml.safe_load(yaml.safe_dump(BASE))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    code = run_bench.main(
        [
            "--config",
            str(path),
            "--results-dir",
            str(results),
            "--reports-dir",
            str(tmp_path / "reports"),
            "-q",
            "--no-plots",
            *extra,
        ]
    )
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert message in err, err
    assert "cells, data" not in captured.out  # the error is the only thing said, not a study that then stops
    assert not list(results.glob("*/cells/*.json"))  # no cell ran


def test_an_empty_study_file_is_refused_not_run_as_the_default_study(tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    assert run_bench.main(["--config", str(path), "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the file is empty" in err and str(path) in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["profile", "--batch-sizes", "0"], "--batch-sizes: expected comma-separated integers >= 1"),
        (["profile", "--batch-sizes", "one"], "--batch-sizes: expected comma-separated integers >= 1"),
    ],
)
def test_bad_profile_arguments_are_one_line(capsys, argv, message):
    assert run_bench.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
