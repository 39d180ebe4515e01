"""Issue 11: nothing cached that is wrong, nothing silent. One test (or more) per row of the issue's table."""

import json
import os

import numpy as np
import pytest
import torch

import compress
import models
from bench import metrics
from bench.data.celeba import CELEBA_ATTRIBUTES, CelebAFormatError, read_attr_csv
from bench.data.loading import EmptySplitError, load_celeba
from bench.settings import StudyConfigError, TrainSettings
from bench.store.files import partial_name, remove_stale_partials
from bench.store.records import record_path
from bench.study.config import load_config, merge_config
from bench.study.preflight import preflight
from bench.study.runner import CellResultError, check_row, run_study
from bench.training.train import TrainingDivergedError, divergence_reason, train_model
from tests.helpers import tiny_study
from tests.test_celeba import _write_copy


def _config(**overrides):
    return tiny_study("faults", **merge_config({"timing": {"latency": False}}, overrides))


def _events(log):
    return lambda kind, cell: log.append((kind, cell["model"])) if kind != "study" else None


# ---- a truncated or garbage record --------------------------------------------------------------


def test_corrupt_record_is_named_quarantined_and_recomputed(tmp_path, cache_dir, caplog):
    config, results = _config(), str(tmp_path / "results")
    run_study(config, results)
    cell = preflight(config, results)[0][1]
    path = record_path(results, cell)
    with open(path, "r+", encoding="utf-8") as handle:
        handle.truncate(100)  # a record cut mid-write by a full disk
    garbage = os.path.join(os.path.dirname(path), "slimnet-0123456789ab.json")
    with open(garbage, "w", encoding="utf-8") as handle:
        handle.write("garbage")
    log = []
    rows = run_study(config, results, on_event=_events(log))
    assert log == [("skip", "majority"), ("start", "slimnet"), ("done", "slimnet")]
    assert len(rows) == 2
    quarantined = sorted(os.listdir(os.path.join(os.path.dirname(path), "quarantine")))
    assert quarantined == sorted([os.path.basename(path), os.path.basename(garbage)])
    assert os.path.basename(path) in caplog.text and "not JSON" in caplog.text
    with open(os.path.join(results, "faults", "results.csv"), encoding="utf-8") as handle:
        assert len(handle.read().strip().splitlines()) == 3  # header + the two valid records
    assert json.load(open(path))["row"]["model"] == "slimnet"


def test_report_rebuilds_tables_from_valid_records(tmp_path, cache_dir):
    from bench.report.render import render_report

    config, results = _config(), str(tmp_path / "results")
    run_study(config, results)
    cell = preflight(config, results)[0][1]
    with open(record_path(results, cell), "w", encoding="utf-8") as handle:
        handle.write("{")
    render_report(results, "faults", str(tmp_path / "reports"), plots=False)
    with open(os.path.join(results, "faults", "results.csv"), encoding="utf-8") as handle:
        assert len(handle.read().strip().splitlines()) == 2  # the stale slimnet row is gone with its record


# ---- an empty split, and NaN rows ---------------------------------------------------------------


def test_empty_split_fails_before_any_cell(tmp_path, cache_dir):
    root = tmp_path / "celeba"
    _write_copy(root, n=6)
    with open(root / "list_eval_partition.txt", "w") as handle:  # every image in train, as in the shared sample
        handle.write("".join(f"{i + 1:06d}.jpg 0\r\n" for i in range(6)))
    config, results = _config(data={"data_dir": str(root)}), str(tmp_path / "results")
    log = []
    with pytest.raises(EmptySplitError, match=r"the val and test splits are empty \(train 6, val 0, test 0"):
        run_study(config, results, on_event=_events(log))
    assert log == [] and not os.path.isdir(os.path.join(results, "faults", "cells"))


def test_rows_with_nan_metrics_are_never_cached():
    cell = {"model": "slimnet", "variant": "", "seed": 0}
    check_row(cell, {"acc_mean": 90.0, "mA": 80.0, "f1": 60.0, "hamming_loss": 0.1})
    with pytest.raises(CellResultError, match=r"metrics \['acc_mean'\] are \[nan\]"):
        check_row(cell, {"acc_mean": float("nan"), "mA": 80.0, "f1": 60.0, "hamming_loss": 0.1})


# ---- same path, different contents --------------------------------------------------------------


def test_changed_data_files_change_every_cell_hash(tmp_path, cache_dir):
    root = tmp_path / "celeba"
    _write_copy(root, n=12)
    before = load_celeba(str(root), cache_dir=cache_dir, name="x").fingerprint
    lines = open(root / "list_attr_celeba.txt", newline="").read().split("\r\n")
    lines[2] = lines[2].replace(" 1", "-1", 1) if " 1" in lines[2] else lines[2].replace("-1", " 1", 1)
    open(root / "list_attr_celeba.txt", "w", newline="").write("\r\n".join(lines))
    after = load_celeba(str(root), cache_dir=cache_dir, name="x").fingerprint
    assert before != after and len(after) == 16
    limited = load_celeba(str(root), limits={"train": 2}, cache_dir=cache_dir, name="x").fingerprint
    assert limited not in (before, after)  # the split sizes count too


def test_report_keeps_datasets_apart(tmp_path, cache_dir):
    from bench.report.labels import group_labels

    config, results = _config(), str(tmp_path / "results")
    cells = preflight(config, results)[0]
    records = [
        {"cell": {**cell, "data_fingerprint": fingerprint}, "row": {"config_hash": f"{index}{fingerprint}"}}
        for index, cell in enumerate(cells[1:])
        for fingerprint in ("aaaa", "bbbb")
    ]
    labels = group_labels(records)
    assert len(set(labels.values())) == 2
    assert all("data aaaa" in label or "data bbbb" in label for label in labels.values())


# ---- nested config keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("data:\n  limit_tran: 10\n", "unknown key data.limit_tran: did you mean data.limit_train?"),
        ("timing:\n  latncy: false\n", "unknown key timing.latncy: did you mean timing.latency?"),
        ("train:\n  epoch: 2\n", "unknown key train.epoch: did you mean train.epochs?"),
        ("finetune:\n  distil: 0.5\n", "unknown key finetune.distil: did you mean finetune.distill?"),
        ("models:\n  - name: slimnet\n    train: {lr_step: 2}\n", "unknown key models[0].train.lr_step"),
        (
            "models:\n  - name: slimnet\n    compressions:\n      - {steps: ['svd'], finetune: {epochz: 1}}\n",
            "unknown key models[0].compressions[0].finetune.epochz: did you mean models[0].compressions[0].finetune.epochs?",
        ),
        ("studdy: x\n", "unknown key studdy: did you mean study?"),
    ],
)
def test_typos_at_every_nesting_level_are_named(tmp_path, text, message):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(StudyConfigError) as caught:
        load_config(str(path))
    assert str(caught.value).startswith(f"{path}: {message}")


# ---- NaN loss and divergence --------------------------------------------------------------------


def test_nan_loss_stops_training_with_epoch_and_step(tiny_synthetic):
    model = models.create_model("slimnet", filter_count_values=[4, 4, 4, 4], initial_conv=[8, 7, 2])
    with torch.no_grad():
        model[0][0].weight.fill_(float("nan"))  # what an exploding step leaves behind
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 1 step 1 \(lr 0.001\); lower the learning rate"):
        train_model(model, tiny_synthetic, TrainSettings(epochs=1, batch_size=16, lr=1e-3))


def test_divergence_is_detected_from_the_loss_history():
    assert (
        divergence_reason([{"epoch": 1, "train_loss": 0.5, "val_loss": 0.4}, {"epoch": 2, "train_loss": 0.3, "val_loss": 0.3}])
        == ""
    )
    assert "rose from 0.69 at the start to 2.572e+05" in divergence_reason(
        [{"epoch": 1, "train_loss": 257172.0, "val_loss": 9.0, "start_loss": 0.69}]
    )
    assert "rose from 0.5 at the start to 0.9 at epoch 2" in divergence_reason(
        [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.4}, {"epoch": 2, "train_loss": 0.9, "val_loss": 0.4}]
    )
    assert "validation loss nan" in divergence_reason([{"epoch": 1, "train_loss": 0.5, "val_loss": float("nan")}])
    stuck = [
        {"epoch": 1, "train_loss": 0.70, "val_loss": 0.7, "val_acc": 61.0, "start_loss": 0.69},
        {"epoch": 2, "train_loss": 0.71, "val_loss": 0.7, "val_acc": 60.0},
    ]
    assert "under the majority predictor's 80.00 %" in divergence_reason(stuck, majority_val_acc=80.0)
    assert divergence_reason(stuck, majority_val_acc=62.0) == ""
    assert divergence_reason(stuck[:1], majority_val_acc=80.0) == ""  # one epoch says too little


def test_a_distilled_fine_tune_that_learned_is_not_diverged():
    """Distillation's soft term has a floor of its own (the soft targets' entropy times T^2): a fine-tune that ends at a loss
    of 1.63, above plain BCE's 2 ln 2 = 1.386, and beats its base, was flagged "(diverged)" on real CelebA (issue 23)."""
    history = [
        {"epoch": 1, "train_loss": 1.70, "val_loss": 0.40, "val_acc": 83.5, "start_loss": 1.82},
        {"epoch": 2, "train_loss": 1.631, "val_loss": 0.39, "val_acc": 83.89},
    ]
    assert divergence_reason(history, majority_val_acc=80.5) == ""


def test_a_diverged_cell_is_flagged_in_its_row_and_the_summary(tmp_path, cache_dir):
    from bench.report.render import render_report

    config, results = _config(train={"lr": 10.0, "epochs": 2}), str(tmp_path / "results")
    try:
        rows = run_study(config, results)
    except TrainingDivergedError:
        pytest.skip("lr 10 produced a NaN loss on this machine (the NaN path is tested above)")
    assert rows[1]["diverged"]
    summary = open(render_report(results, "faults", str(tmp_path / "reports"), plots=False)["summary.md"]).read()
    assert "slimnet (diverged)" in summary and "training diverged:" in summary


# ---- patterns that match nothing ----------------------------------------------------------------


def test_layer_patterns_matching_nothing_are_an_error():
    model = models.create_model("slimnet")
    with pytest.raises(ValueError, match=r"layers='nomatch\.\*' matches no conv or linear layer of the model; close names:"):
        compress.apply(model, "svd", torch.zeros(1, 3, 218, 178), layers="nomatch.*")
    with pytest.raises(ValueError, match=r"exclude='conv9\.\*' matches no conv"):
        compress.apply(model, "prune", torch.zeros(1, 3, 218, 178), pruning_ratio=0.2, exclude="conv9.*")


# ---- an unwritable results folder ---------------------------------------------------------------


def test_unwritable_results_folder_fails_before_any_work(tmp_path, cache_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    log = []
    with pytest.raises(PermissionError, match=r"results folder .*a-file/results/faults' is not writable"):
        run_study(_config(), str(blocker / "results"), on_event=_events(log))
    assert log == []


# ---- partial files of killed processes ----------------------------------------------------------


def test_stale_partials_of_dead_processes_are_removed(tmp_path):
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale_file = tmp_path / f"cache.npy.partial@{os.uname().nodename}@{dead}"
    stale_dir = tmp_path / f".synthetic.partial@{os.uname().nodename}@{dead}"
    live = tmp_path / os.path.basename(partial_name(str(tmp_path / "cells.json")))
    other_host = tmp_path / f"cache.npy.partial@another-host@{dead}"
    stale_file.write_bytes(b"x" * 10)
    stale_dir.mkdir()
    (stale_dir / "000001.jpg").write_bytes(b"x")
    live.write_text("{}")
    other_host.write_text("x")
    removed = remove_stale_partials(str(tmp_path))
    assert sorted(removed) == sorted([str(stale_file), str(stale_dir)])
    assert live.exists() and other_host.exists()


# ---- misspelled attribute names -----------------------------------------------------------------


def test_kaggle_csv_with_misspelled_attributes_is_refused(tmp_path):
    names = list(CELEBA_ATTRIBUTES)
    names[2], names[39] = "Atractive", "Young_"
    path = tmp_path / "list_attr_celeba.csv"
    path.write_text("image_id," + ",".join(names) + "\n000001.jpg," + ",".join(["1"] * 40) + "\n")
    with pytest.raises(
        CelebAFormatError,
        match=r"unknown CelebA attributes 'Atractive' \(did you mean 'Attractive'\?\), "
        r"'Young_' \(did you mean 'Young'\?\)",
    ):
        read_attr_csv(path)


# ---- a text file as checkpoint ------------------------------------------------------------------


def test_a_text_file_is_not_a_pytorch_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_text("101\n")
    with pytest.raises(ValueError, match=r"is not a PyTorch checkpoint \(it is a text file"):
        models.create_model("slimnet", checkpoint_path=str(path))


def test_bad_checkpoint_fails_before_the_majority_cell(tmp_path, cache_dir):
    path = tmp_path / "weights.pt"
    path.write_text("101\n")
    config = _config(models=[{"name": "slimnet", "checkpoint": str(path)}])
    log = []
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        run_study(config, str(tmp_path / "results"), on_event=_events(log))
    assert log == []


# ---- inputs smaller than a model accepts --------------------------------------------------------


def test_minimum_input_size_is_checked_at_creation():
    with pytest.raises(
        ValueError, match=r"slimnet needs inputs of at least 131x131 px \(height x width\), got input_size 3x109x89"
    ):
        models.create_model("slimnet", input_size=(3, 109, 89))
    assert models.create_model("slimnet", input_size=(3, 131, 131)).data_config["input_size"] == (3, 131, 131)


def test_course_cnn_builds_its_dense_layers_for_the_input_size():
    model = models.create_model("course_cnn", input_size=(3, 96, 64)).eval()
    assert model(torch.zeros(2, 3, 96, 64)).shape == (2, 40)
    with pytest.raises(ValueError, match="at least 32x32"):
        models.create_model("course_cnn", input_size=(3, 16, 16))


# ---- the CLI: one line per error ----------------------------------------------------------------


def test_cli_reports_os_errors_in_one_line(tmp_path, capsys):
    import run_bench

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code = run_bench.main(["--results-dir", str(blocker / "results"), "-q", "--no-plots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: results folder")


# ---- CPD-EPC's delta ----------------------------------------------------------------------------


def test_cp_epc_says_when_it_raises_delta(caplog):
    from compress.factorize.cp import cp_sequence

    conv = torch.nn.Conv2d(8, 8, 3)
    _, info = cp_sequence(conv, 4, epc=True, delta=1e-9, als_iters=50, epc_iters=5, epc_steps=2)
    assert info["delta_raised"] and info["note"].startswith("cp_epc delta raised from 1e-09 to the ALS error")
    assert "cp_epc delta raised" in caplog.text


# ---- the threshold convention -------------------------------------------------------------------


def test_a_probability_of_exactly_one_half_is_negative():
    probs = np.array([[0.5, 0.5000001, 0.4999999]])
    assert metrics.binarize(probs).tolist() == [[0.0, 1.0, 0.0]]
    labels = np.array([[0.0, 1.0, 0.0]])
    assert metrics.per_attribute_accuracy(labels, probs).tolist() == [100.0, 100.0, 100.0]
    from torchmetrics.functional.classification import multilabel_accuracy

    torch_acc = multilabel_accuracy(torch.tensor(probs), torch.tensor(labels, dtype=torch.long), num_labels=3, average=None)
    assert torch_acc.tolist() == [1.0, 1.0, 1.0]  # torchmetrics: preds > threshold, the same convention
    assert metrics.majority_classes(np.array([[1.0], [0.0]])).tolist() == [0.0]  # a 50/50 tie predicts negative


def test_a_real_distilled_fine_tune_is_not_flagged(tiny_synthetic):
    from bench.metrics import majority_per_attribute_accuracy
    from bench.study.variants import parse_variant
    from bench.training.pipeline import compress_and_finetune

    torch.manual_seed(0)
    model = models.create_model("slimnet", filter_count_values=[8, 8, 8, 8], initial_conv=[16, 7, 2])
    config = TrainSettings(epochs=2, batch_size=16, lr=1e-3)
    train_model(model, tiny_synthetic, config)
    out = compress_and_finetune(
        model, tiny_synthetic, parse_variant("svd:rank_ratio=0.5"), {"epochs": 2, "distill": 0.7, "temperature": 2.0}, config
    )
    majority = float(
        majority_per_attribute_accuracy(
            tiny_synthetic.labels[tiny_synthetic.splits["train"]], tiny_synthetic.labels[tiny_synthetic.splits["val"]]
        ).mean()
    )
    assert out.history[-1]["train_loss"] > 2 * np.log(2)  # above the old plain-BCE bound: the soft term's floor
    assert divergence_reason(out.history, majority) == ""


# ---- issue 34: no row that shows another model's numbers, no traceback after hours of work -------------------------


@pytest.mark.parametrize("timing", [{"latency": False}, {"latency": True, "runtimes": ["eager_cl"]}])
def test_a_quantized_variant_shows_its_int8_numbers_whatever_is_timed(tmp_path, cache_dir, timing):
    from helpers import FAST_TIMING

    config = tiny_study(
        "q", compressions=["quantize:calibration_images=16"], timing={**FAST_TIMING, **timing, "layer_runtimes": []}
    )
    rows = {(r["variant"] or ""): r for r in run_study(config, str(tmp_path))}
    base, quantized = rows[""], rows["int8"]
    assert quantized["int8_settings"]  # it was evaluated as the int8 model it is
    from bench.data.loading import load_data
    from bench.study.runner import _int8_deployed

    saved = models.load_model(os.path.join(str(tmp_path), "q", "checkpoints", quantized["config_hash"], "model.pt"))
    shipped = _int8_deployed(saved, load_data(config["data"])).artifact[1]
    assert quantized["disk_bytes"] == len(shipped) != base["disk_bytes"]  # sized as the int8 file it ships as
    from bench.training.evaluate import runtime_accuracy

    data = load_data(config["data"])
    int8_accuracy = runtime_accuracy(_int8_deployed(saved, data), data, saved.data_config, "test")
    assert quantized["acc_mean"] == pytest.approx(int8_accuracy, abs=1e-9)  # measured in the int8 model, not the float one


def test_a_killed_timing_phase_names_its_signal_and_how_to_resume(monkeypatch, tmp_path, cache_dir):
    import subprocess

    from bench.study import timing_phase

    config = tiny_study("killed", timing={"latency": False})
    run_study(config, str(tmp_path))
    from bench.store.records import load_records

    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: subprocess.CompletedProcess(args, -9, stdout="", stderr=""))
    with pytest.raises(timing_phase.TimingPhaseError, match=r"killed by signal 9 \(SIGKILL\).*--retime"):
        timing_phase.run_timing_phase(
            str(tmp_path),
            "killed",
            load_records(str(tmp_path), "killed"),
            config["data"],
            timing_phase.TimingSettings(),
            "slimnet",
        )


def test_a_study_below_the_majority_predictor_says_so():
    from bench.report.tables import majority_lines

    def record(model, acc, low):
        return {"row": {"model": model, "variant": "", "acc_mean": acc, "acc_mean_lo": low, "config_hash": model}}

    below = [record("majority", 80.7, 80.4), record("slimnet", 80.5, 80.1), record("resnet18", 80.9, 80.5)]
    (line,) = majority_lines(below)
    assert "no model is surely more accurate than the majority-class predictor (80.70 %" in line and "resnet18" in line
    assert majority_lines(below + [record("mobilenet", 88.0, 87.6)]) == []


def test_an_attribute_the_training_split_cannot_teach_is_named(tiny_synthetic, capsys):
    import dataclasses

    labels = tiny_synthetic.labels.copy()
    labels[:, 3] = 0  # no positive anywhere
    data = dataclasses.replace(tiny_synthetic, labels=labels)
    (line,) = data.attribute_warnings()
    assert f"attribute {tiny_synthetic.attr_names[3]!r} has no positive image among the 48 training images" in line
    assert all(" has no " in warning for warning in tiny_synthetic.attribute_warnings())


def test_mlflow_failing_after_the_study_leaves_everything_written_and_says_how_to_log_again(
    tmp_path, cache_dir, capsys, monkeypatch
):
    pytest.importorskip("mlflow")
    import yaml

    import run_bench
    from bench.report import tracking

    def refuse(*args, **kwargs):
        raise RuntimeError("the server went away")

    monkeypatch.setattr(tracking, "log_study", refuse)
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "study": "tracked",
                "data": {"synthetic_images": 60},
                "timing": {"latency": False},
                "models": [{"name": "slimnet", "kwargs": {"filter_count_values": [4, 4, 4, 4], "initial_conv": [8, 7, 2]}}],
                "train": {"epochs": 1, "batch_size": 16},
            }
        )
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["--config", str(path), "--results-dir", str(tmp_path / "r"), "--reports-dir", str(tmp_path / "rep")]
    code = run_bench.main(argv + ["-q", "--no-plots", "--mlflow", uri])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "the server went away" in err[0] and "rerun the same command" in err[0]
    assert (tmp_path / "rep" / "tracked" / "summary.md").is_file() and (tmp_path / "r" / "tracked" / "results.csv").is_file()
