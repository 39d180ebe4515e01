import json
import os

import pytest

from bench.study import (DEFAULT_CONFIG, MAJORITY, StudyConfigError, config_hash, expand_cells, load_config, merge_config,
                         record_path, run_study)


def _config(tmp_path, **train):
    data = {**DEFAULT_CONFIG["data"], "synthetic_images": 60, "cache_dir": os.environ.get("SLIMBENCH_CACHE")}
    return merge_config(DEFAULT_CONFIG, {
        "study": "unit",
        "data": data,
        "models": [{"name": "slimnet", "kwargs": {"filter_count_values": [4, 4, 4, 4], "initial_conv": [8, 7, 2]}}],
        "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, **train},
        "profile": {"latency": True, "batch_n": 2, "min_iters": 2, "min_seconds": 0.0},
    })


def test_cells_have_a_majority_row_and_one_per_model_and_seed(tmp_path):
    config = merge_config(_config(tmp_path), {"seeds": [0, 1], "models": ["slimnet", "squeezenet1_1"]})
    cells = expand_cells(config)
    assert [c["model"] for c in cells] == [MAJORITY, "slimnet", "slimnet", "squeezenet1_1", "squeezenet1_1"]
    assert [c["seed"] for c in cells[1:]] == [0, 1, 0, 1]
    assert cells[1]["train"]["seed"] == 0 and cells[2]["train"]["seed"] == 1


def test_config_hash_is_stable_and_sensitive():
    cell = {"model": "slimnet", "train": {"epochs": 1, "lr": 0.001}}
    assert config_hash(cell) == config_hash({"train": {"lr": 0.001, "epochs": 1}, "model": "slimnet"})
    assert config_hash(cell) != config_hash({**cell, "train": {"epochs": 2, "lr": 0.001}})
    assert len(config_hash(cell)) == 12


@pytest.mark.parametrize("override, message", [
    ({"models": ["resnet19"]}, "models\\[0\\]: unknown model 'resnet19'"),
    ({"models": [{"nam": "slimnet"}]}, "models\\[0\\]: expected a model name"),
    ({"models": [{"name": "slimnet", "epochs": 3}]}, "unknown keys \\['epochs'\\]"),
    ({"train": {"epoch": 3}}, "unknown fields \\['epoch'\\]"),
    ({"train": {"epochs": 0}}, "'epochs' must be >= 1"),
    ({"seeds": []}, "at least one seed"),
])
def test_bad_config_values_are_named(tmp_path, override, message):
    with pytest.raises((StudyConfigError, ValueError), match=message):
        expand_cells(merge_config(_config(tmp_path), override))


def test_load_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        load_config(str(tmp_path / "absent.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("studdy: x\n")
    with pytest.raises(StudyConfigError, match="unknown top-level keys \\['studdy'\\]"):
        load_config(str(bad))
    bad.write_text("models: [slimnet\n")
    with pytest.raises(StudyConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_shipped_configs_are_valid():
    from run_bench import DEFAULT_CONFIG_PATH, HERE

    cells = expand_cells(load_config(DEFAULT_CONFIG_PATH))
    assert [c["model"] for c in cells] == [MAJORITY] + ["slimnet"] * 5 + ["mobilenetv3_small_100", "squeezenet1_1"]
    assert [c["compression"][0]["method"] for c in cells if c.get("compression")] == ["svd", "prune", "cp", "cp_epc"]
    cells = expand_cells(load_config(os.path.join(HERE, "configs", "resnet18_lwalm.yaml")))
    assert [c["variant"] for c in cells] == ["", "", "TKD+SVD", "CPD+SVD", "CPD-EPC+SVD"]
    cells = expand_cells(load_config(os.path.join(HERE, "configs", "pse_dmtl.yaml")))
    assert [c["model"] for c in cells] == [MAJORITY, "slimnet", "slimnet_pse", "slimnet_dmtl", "slimnet_dmtl_pse"]
    cells = expand_cells(load_config(os.path.join(HERE, "configs", "course.yaml")))
    assert cells[2]["train"]["freeze_backbone_epochs"] == 1 and cells[2]["pretrained"]


def test_rerun_skips_finished_cells_and_force_recomputes(tmp_path, cache_dir):
    config = _config(tmp_path)
    results = str(tmp_path / "results")
    events = []
    rows = run_study(config, results, on_event=lambda kind, cell: events.append((kind, cell["model"])))
    assert [r["model"] for r in rows] == [MAJORITY, "slimnet"]
    assert events == [("start", MAJORITY), ("done", MAJORITY), ("start", "slimnet"), ("done", "slimnet")]
    record_file = record_path(results, expand_cells(config)[1])
    first = json.load(open(record_file))
    events.clear()
    again = run_study(config, results, on_event=lambda kind, cell: events.append((kind, cell["model"])))
    assert events == [("skip", MAJORITY), ("skip", "slimnet")]
    assert again == rows
    events.clear()
    run_study(config, results, force=True, on_event=lambda kind, cell: events.append((kind, cell["model"])))
    assert ("start", "slimnet") in events
    assert json.load(open(record_file))["row"]["timestamp"] >= first["row"]["timestamp"]


def test_killed_cell_resumes_from_its_last_epoch(tmp_path, cache_dir, monkeypatch):
    import bench.study as study

    config = _config(tmp_path, epochs=2)
    results = str(tmp_path / "results")
    real_evaluate = study.evaluate_cell_model

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after training, before the record is written

    monkeypatch.setattr(study, "evaluate_cell_model", killed)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, results)
    cell = expand_cells(config)[1]
    assert os.path.isfile(os.path.join(results, "unit", "checkpoints", config_hash(cell), "last.pt"))
    assert not os.path.isfile(record_path(results, cell))
    monkeypatch.setattr(study, "evaluate_cell_model", real_evaluate)
    import bench.train as train

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
