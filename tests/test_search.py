"""The compression search (bench.search) and its front against the zoo (bench.front)."""

import os

import numpy as np
import optuna
import pytest
from helpers import TINY_SLIMNET, tiny_study

from bench.analysis.front import front_rows
from bench.analysis.pipeline_search import run_search, space_key, spread, suggest_pipeline
from bench.settings import SearchSettings, StudyConfigError
from bench.store.records import load_records, read_search, read_timing, read_trials, search_study_name
from bench.study.config import validate_config

# the tiny models stay below the majority predictor: the promotion floor is lifted so the fixture promotes one
SEARCH = {
    "trials": 3,
    "population": 2,
    "promote": 1,
    "timing_blocks": 2,
    "screen": {"epochs": 1, "limit_train": 16},
    "promote_below_majority": True,
}


def search_study(name: str, **search) -> dict:
    config = tiny_study(
        name,
        models=[
            {"name": "slimnet", "kwargs": TINY_SLIMNET},
            {"name": "mobilenetv3_small_100", "kwargs": {"input_size": [3, 64, 64]}},
        ],
        search={**SEARCH, **search},
    )
    config["timing"].update({"runtimes": ["onnxruntime", "onnxruntime_int8"], "int8": {"calibration_images": 16}})
    return config


def test_knobs_at_their_off_end_leave_the_model_unchanged():
    settings = SearchSettings()
    off = optuna.trial.FixedTrial(
        {
            "pruning_ratio": 0.0,
            "importance": "l1",
            "global_pruning": False,
            "round_to": 1,
            "stem_rank_ratio": 1.0,
            "svd_rank_ratio": 1.0,
            "quantize": False,
        }
    )
    assert suggest_pipeline(off, settings, "conv1.0") == []


def test_a_trial_becomes_the_pipeline_in_order_with_the_studys_int8_settings():
    settings = SearchSettings(prune_exclude=["conv1.*"], max_drop=0.25)
    trial = optuna.trial.FixedTrial(
        {
            "pruning_ratio": 0.35,
            "importance": "l2",
            "global_pruning": True,
            "round_to": 8,
            "stem_rank_ratio": 0.5,
            "svd_rank_ratio": 0.6,
            "quantize": True,
        }
    )
    steps = suggest_pipeline(trial, settings, "conv1.0", {"calibration_images": 16})
    assert steps == [
        {
            "method": "prune",
            "pruning_ratio": 0.35,
            "importance": "l2",
            "global_pruning": True,
            "round_to": 8,
            "exclude": ["conv1.*"],
        },
        {"method": "tucker2", "rank_ratio": 0.5, "layers": ["conv1.0"]},
        {"method": "svd", "rank_ratio": 0.6},
        {"method": "quantize", "calibration_images": 16, "max_drop": 0.25},
    ]


def test_a_model_without_a_stem_gets_no_stem_knob():
    trial = optuna.trial.FixedTrial(
        {
            "pruning_ratio": 0.0,
            "importance": "l1",
            "global_pruning": False,
            "round_to": 1,
            "svd_rank_ratio": 0.5,
            "quantize": False,
        }
    )
    assert suggest_pipeline(trial, SearchSettings(), None) == [{"method": "svd", "rank_ratio": 0.5}]


def test_space_key_changes_with_the_space_but_not_with_the_trial_count():
    base = space_key(SearchSettings(), "abc")
    assert space_key(SearchSettings(trials=40, promote=5), "abc") == base
    assert space_key(SearchSettings(max_pruning_ratio=0.5), "abc") != base
    assert space_key(SearchSettings(), "abd") != base


def test_spread_keeps_both_ends_and_spaces_the_rest():
    costs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert spread([0, 1, 2, 3, 4], costs, 3) == [1, 2, 0]  # cheapest, middle, dearest
    assert spread([0, 1], costs, 3) == [1, 0]
    assert spread([0, 1, 2], costs, 0) == []


def test_search_settings_are_checked_with_the_field_named():
    config = search_study("bad_search", model="resnet18")
    with pytest.raises(StudyConfigError, match="search.model"):
        validate_config(config)
    with pytest.raises(StudyConfigError, match="search.knobs: quantize needs a runtime with an int8 twin"):
        SearchSettings(runtime="eager_cl")
    with pytest.raises(StudyConfigError, match="search.screen"):
        validate_config(search_study("bad_screen", screen={"epochs": "one"}))


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory, cache_dir):
    results = str(tmp_path_factory.mktemp("search"))
    config = search_study("search")
    events = []
    summary = run_search(config, results, on_event=lambda kind, item: events.append((kind, item)))
    return config, results, summary, events


def _complete(trials):
    return [t for t in trials if t["state"] == "COMPLETE"]


def test_the_screening_front_is_exactly_the_non_dominated_trials(finished_search):
    config, results, summary, _ = finished_search
    trials = _complete(read_trials(results, config["study"]))
    assert len(trials) == 3
    cost = np.array([float(t["latency_ratio"]) for t in trials])
    score = np.array([float(t["acc_mean_val"]) for t in trials])
    for i, trial in enumerate(trials):
        beaten = np.any((cost <= cost[i]) & (score >= score[i]) & ((cost < cost[i]) | (score > score[i])))
        assert (trial["screening_front"] == "True") == (not beaten), trial


def test_the_promoted_front_is_timed_and_compared_with_the_zoo(finished_search):
    config, results, summary, _ = finished_search
    assert len(summary["promoted"]) == 1 and summary["runtime"] == "onnxruntime"
    records = load_records(results, config["study"])
    timing = read_timing(results, config["study"])
    assert set(summary["promoted"]) <= set(timing["cells"])  # the front is in the study's one timing phase
    rows = front_rows(records, timing, summary)
    assert rows == summary["front"]  # what search.json holds for the report
    zoo = {r["row"]["config_hash"] for r in records if r["cell"]["model"] == "mobilenetv3_small_100"}
    assert [r["key"] for r in rows] == [summary["base_hash"], summary["promoted"][0]]
    assert {r["zoo"] for r in rows} == zoo
    for row in rows:
        assert row["zoo_ratio_lo"] <= row["zoo_ratio"] <= row["zoo_ratio_hi"]
        assert row["dominates"] == (row["d_zoo_lo"] > 0 and row["zoo_ratio_hi"] < 1)
    promoted = next(r for r in records if r["row"]["config_hash"] == summary["promoted"][0])
    assert promoted["cell"]["finetune"]["limit_train"] is None  # the study's fine-tune, not the screening one
    assert read_search(results, config["study"])["promoted"] == summary["promoted"]


def test_screened_trials_leave_the_test_split_unseen_and_promoted_members_do_not(finished_search):
    config, results, summary, _ = finished_search
    trials = load_records(results, search_study_name(config["study"]))
    assert trials and all(r["cell"]["validation_only"] for r in trials)
    for record in trials:
        row = record["row"]
        assert float(row["acc_mean_val"]) > 0
        # nothing measured on the test split: no test accuracy (before or after the fine-tune), no predictions
        assert row["acc_mean"] == "" and row["acc_mean_nofinetune"] in ("", None) and row["mA"] == ""
        assert "test_predictions" not in record and record["per_attribute"] == []
    promoted = next(r for r in load_records(results, config["study"]) if r["row"]["config_hash"] == summary["promoted"][0])
    assert "validation_only" not in promoted["cell"] and float(promoted["row"]["acc_mean"]) > 0
    assert "test_predictions" in promoted


def test_a_longer_search_reuses_every_finished_trial(finished_search):
    config, results, _, _ = finished_search
    cells = os.path.join(results, config["study"], "search", "cells")
    before = {name: os.path.getmtime(os.path.join(cells, name)) for name in os.listdir(cells)}
    events = []
    run_search(search_study("search", trials=4), results, on_event=lambda kind, item: events.append((kind, item)))
    trials = read_trials(results, config["study"])
    assert len(trials) == 4 and [t["trial"] for t in trials] == ["0", "1", "2", "3"]
    assert [item["trial"] for kind, item in events if kind == "trial"] == [3]  # only the new one ran
    for name, mtime in before.items():
        assert os.path.getmtime(os.path.join(cells, name)) == mtime  # no finished trial's cell was recomputed


def test_a_killed_search_asks_its_running_trial_again_and_finds_its_cell(finished_search):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    config, results, summary, _ = finished_search
    config = search_study("search", trials=4)
    folder = os.path.join(results, config["study"], "search")
    storage = JournalStorage(JournalFileBackend(os.path.join(folder, "optuna.journal")))
    study = optuna.load_study(
        study_name=space_key(SearchSettings.from_mapping(config["search"]), summary["base_hash"]), storage=storage
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("compression")]
    study.enqueue_trial(done[0].params)
    killed = study.ask()  # a trial that was running when the search was killed
    suggest_pipeline(killed, SearchSettings.from_mapping(config["search"]), summary["stem"], config["timing"]["int8"])
    assert killed.params == done[0].params
    cells = os.path.join(folder, "cells")
    before = {name: os.path.getmtime(os.path.join(cells, name)) for name in os.listdir(cells)}
    events = []
    run_search(search_study("search", trials=5), results, on_event=lambda kind, item: events.append((kind, item)))
    trials = {int(t["trial"]): t for t in read_trials(results, config["study"])}
    assert trials[killed.number]["state"] == "KILLED"
    again = [t for n, t in trials.items() if n > killed.number and t["config_hash"] == done[0].user_attrs["config_hash"]]
    assert again and again[0]["state"] == "COMPLETE"
    # the re-asked pipeline was answered from its cell as a repeat: it spent no trial of the budget, another one ran
    assert again[0]["repeat_of"] == str(done[0].number)
    assert sum(t["state"] in ("COMPLETE", "FAIL") and not t["repeat_of"] for t in trials.values()) == 5
    for name, mtime in before.items():
        assert os.path.getmtime(os.path.join(cells, name)) == mtime


def test_validation_accuracy_is_the_records_acc_mean_val(finished_search):
    """A base cached before records held acc_mean_val gets it recomputed alike (the search's uncompressed trial uses it)."""
    import models
    from bench.data.loading import load_data
    from bench.training.evaluate import validation_accuracy

    config, results, summary, _ = finished_search
    record = next(r for r in load_records(results, config["study"]) if r["row"]["config_hash"] == summary["base_hash"])
    model = models.load_model(os.path.join(results, config["study"], "checkpoints", summary["base_hash"], "model.pt")).eval()
    data = load_data(config["data"])
    assert validation_accuracy(record["cell"], model, data) == pytest.approx(float(record["row"]["acc_mean_val"]), abs=1e-9)


def test_a_second_run_of_a_search_is_refused_while_one_holds_it(finished_search):
    from bench.analysis.pipeline_search import SearchBusyError
    from bench.store.files import file_lock

    config, results, _, _ = finished_search
    with file_lock(os.path.join(results, config["study"], "search", "search"), timeout=0):
        with pytest.raises(SearchBusyError, match="another run is searching"):
            run_search(search_study("search", trials=9), results)
    assert len(read_trials(results, config["study"])) < 9  # the refused run asked nothing


def test_promotion_keeps_the_floor_the_searched_model_and_the_constraint():
    from bench.analysis.pipeline_search import promotion_choice

    def row(ratio, acc, key, front=False):
        return {"state": "COMPLETE", "config_hash": key, "latency_ratio": ratio, "acc_mean_val": acc, "screening_front": front}

    rows = [
        row(0.5, 86.0, "a", True),
        row(0.3, 79.0, "b", True),
        row(0.2, 84.0, "c", True),
        row(1.0, 88.0, "base", True),
        row(0.4, 85.0, "c2"),
        row(0.6, 87.0, "d", True),
    ]
    # front mode: the majority floor (80) keeps "b" out, the searched model is never promoted
    assert sorted(rows[i]["config_hash"] for i in promotion_choice(rows, "base", 5, 80.0, None)) == ["a", "c", "d"]
    # constrained mode: the most accurate within the ratio, front or not
    assert [rows[i]["config_hash"] for i in promotion_choice(rows, "base", 2, 80.0, 0.5)] == ["a", "c2"]


def test_the_searched_model_is_a_point_of_the_screening_front(tmp_path):
    """A trial the searched model itself beats (slower and less accurate) is off the front, so it is never promoted."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from bench.analysis.pipeline_search import trial_rows

    study = optuna.create_study(
        directions=["maximize", "minimize"], storage=JournalStorage(JournalFileBackend(str(tmp_path / "j")))
    )
    for key, acc, ratio in (("slow", 80.0, 1.5), ("fast", 75.0, 0.5)):
        trial = study.ask()
        trial.set_user_attr("config_hash", key)
        trial.set_user_attr("latency_ratio", ratio)
        study.tell(trial, [acc, ratio])
    rows = trial_rows(study)
    assert [r["screening_front"] for r in rows] == [True, True]
    rows = trial_rows(study, searched=(1.0, 85.0))
    assert [r["screening_front"] for r in rows] == [False, True]


def test_the_majority_floor_holds_for_a_fine_tuning_screen_only():
    """A screen that fine-tunes is held to the majority predictor's accuracy; a BatchNorm-only screen (which underestimates
    what the fine-tune recovers) and promote_below_majority are not."""
    from bench.analysis.pipeline_search import promotion_floor
    from bench.settings import FinetuneSettings

    tuned, recalibrated = FinetuneSettings(epochs=1, limit_train=1000), FinetuneSettings(epochs=0, bn_recalibration=256)
    assert promotion_floor(SearchSettings(), tuned, 80.7) == 80.7
    assert promotion_floor(SearchSettings(), recalibrated, 80.7) == float("-inf")
    assert promotion_floor(SearchSettings(promote_below_majority=True), tuned, 80.7) == float("-inf")
