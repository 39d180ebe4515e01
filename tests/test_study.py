import json
import os

import pytest

from bench.store.records import record_path
from bench.store.schema import MAJORITY, config_hash
from bench.study.config import merge_config
from bench.study.preflight import preflight
from bench.study.runner import run_study
from tests.helpers import tiny_study


def _config(tmp_path, **train):
    return tiny_study(train=train)


def _log(events):
    return lambda kind, payload: events.append(
        (kind, payload["model"] if "model" in payload else len(payload["cells"]) if kind == "timed" else payload["cells"])
    )


def test_rerun_skips_finished_cells_retimes_only_when_asked_and_force_recomputes(tmp_path, cache_dir):
    config = _config(tmp_path)
    results = str(tmp_path / "results")
    events = []
    rows = run_study(config, results, on_event=_log(events))
    assert [r["model"] for r in rows] == [MAJORITY, "slimnet"]
    assert events == [
        ("study", 2),  # the pre-flight passed: 2 cells
        ("start", MAJORITY),
        ("done", MAJORITY),
        ("start", "slimnet"),
        ("done", "slimnet"),
        ("timing", 1),
        ("timed", 1),
    ]
    record_file = record_path(results, preflight(config, results)[0][1])
    timing_file = os.path.join(results, "unit", "timing.json")
    written = os.stat(record_file).st_mtime_ns, os.stat(timing_file).st_mtime_ns
    events.clear()
    again = run_study(config, results, on_event=_log(events))
    assert events == [("study", 2), ("skip", MAJORITY), ("skip", "slimnet")]  # nothing computed, nothing timed
    assert again == rows and (os.stat(record_file).st_mtime_ns, os.stat(timing_file).st_mtime_ns) == written
    events.clear()
    run_study(config, results, retime=True, on_event=_log(events))
    assert events[-2:] == [("timing", 1), ("timed", 1)] and os.stat(record_file).st_mtime_ns == written[0]
    events.clear()
    run_study(config, results, force=True, on_event=_log(events))
    assert ("start", "slimnet") in events and os.stat(record_file).st_mtime_ns > written[0]


def test_a_rerun_that_adds_a_cell_times_the_whole_set_again(tmp_path, cache_dir):
    results = str(tmp_path / "results")
    run_study(_config(tmp_path), results)
    events = []
    added = tiny_study(compressions=["svd:rank_ratio=0.5"], finetune={"epochs": 0}, timing={"layer_runtimes": []})
    run_study(added, results, on_event=_log(events))
    assert ("timing", 2) in events
    timing = json.load(open(os.path.join(results, "unit", "timing.json")))
    assert len(timing["cells"]) == 2 and {r["variant"] for r in timing["latency"]} == {"", "svd 0.5"}


def test_killed_cell_resumes_from_its_last_epoch(tmp_path, cache_dir, monkeypatch):
    import bench.study.runner as study

    config = _config(tmp_path, epochs=2)
    results = str(tmp_path / "results")
    real_evaluate = study.evaluate_cell_model

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after training, before the record is written

    monkeypatch.setattr(study, "evaluate_cell_model", killed)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, results)
    cell = preflight(config, results)[0][1]
    assert os.path.isfile(os.path.join(results, "unit", "checkpoints", config_hash(cell), "last.pt"))
    assert not os.path.isfile(record_path(results, cell))
    monkeypatch.setattr(study, "evaluate_cell_model", real_evaluate)
    import bench.training.train as train

    epochs_run = []
    real_train = train.train_model

    def counting(*args, **kwargs):
        result = real_train(*args, **kwargs)
        epochs_run.append(len(result.history))
        return result

    monkeypatch.setattr(study, "train_model", counting)
    rows = run_study(config, results)
    assert rows[1]["best_epoch"] in (1, 2) and epochs_run == [2]  # history restored, not retrained from zero
    record = json.load(open(record_path(results, cell)))
    assert [h["epoch"] for h in record["history"]] == [1, 2]


def test_the_summary_averages_seeds_of_one_experiment_only(tmp_path, cache_dir):
    """Two epoch counts x two seeds: two rows of 'seeds 2', each the mean of its own pair (issue 15)."""
    import pandas as pd

    from bench.report.labels import group_labels
    from bench.report.tables import summary_table
    from bench.store.records import load_records

    results = str(tmp_path / "results")
    config = _config(tmp_path)
    config["timing"] = {"latency": False}
    for epochs in (1, 2):
        run_study(merge_config(config, {"seeds": [0, 1], "train": {"epochs": epochs}}), results)
    records = load_records(results, "unit")
    labels = group_labels(records)
    frame = pd.read_csv(os.path.join(results, "unit", "results.csv"), dtype={"config_hash": str, "variant": str}).fillna(
        {"variant": ""}
    )
    headers, rows, _ = summary_table(frame, labels)
    # The 48-image, 2-epoch run can end under the majority predictor on some CPUs (machine C: Intel AVX-512) and then
    # carries the divergence heuristic's mark; what this test checks is the grouping and averaging of seeds.
    by_label = {row[0].removesuffix(" (diverged)"): row for row in rows}
    assert set(by_label) == {"majority class", "slimnet (epochs 1)", "slimnet (epochs 2)"}
    acc = headers.index("Acc")
    for epochs in (1, 2):
        row = by_label[f"slimnet (epochs {epochs})"]
        assert row[-1] == "2"
        own = frame[(frame["model"] == "slimnet") & (frame["epochs"] == epochs)]["acc_mean"]
        assert len(own) == 2
        assert row[acc].startswith(f"{own.mean():.2f} +- {own.std():.2f}")  # mean +- sd over its own two seeds


def test_a_study_reuses_the_same_cell_finished_in_another_study_and_force_trains_it_again(tmp_path, cache_dir):
    import torch

    from bench.store.records import load_records

    results = str(tmp_path / "results")
    first = run_study(tiny_study(timing={"latency": False}), results)
    events = []
    other = tiny_study("other", compressions=["svd:rank_ratio=0.5"], finetune={"epochs": 0}, timing={"latency": False})
    rows = run_study(other, results, on_event=_log(events))
    # the majority and Slim-Net cells are the unit study's in all but the study: reused, not trained; the variant is new
    # and starts from the copied checkpoints
    assert events[1:] == [("reused", MAJORITY), ("reused", "slimnet"), ("start", "slimnet"), ("done", "slimnet")]
    records = {r["row"]["config_hash"]: r for r in load_records(results, "other")}
    base = next(r for r in records.values() if r["cell"]["model"] == "slimnet" and not r["cell"].get("compression"))
    trained = next(r for r in first if r["model"] == "slimnet")
    assert base["reused_from"] == "unit" and base["row"]["study"] == "other" and base["cell"]["study"] == "other"
    assert base["row"]["config_hash"] == config_hash(base["cell"]) != trained["config_hash"]
    assert float(base["row"]["acc_mean"]) == float(trained["acc_mean"])
    assert {p["study"] for p in base["per_attribute"] + base["history"]} == {"other"}
    model_file = os.path.join(results, "other", "checkpoints", base["row"]["config_hash"], "model.pt")
    assert torch.load(model_file, weights_only=True)["config_hash"] == base["row"]["config_hash"]
    assert len(rows) == 3
    events.clear()
    run_study(other, results, force=True, on_event=_log(events))
    assert ("start", "slimnet") in events and ("reused", "slimnet") not in events
