"""Every study's verdict against the zoo (issue 31): does a compressed model dominate an uncompressed model of another
architecture, each in its fastest runtime at the batch size?"""

import numpy as np
import pytest

from bench import metrics
from bench.study.dominance import dominance, dominance_rows, fastest_latency


def _record(key, model, predictions, labels, compression="", int8=""):
    return {
        "cell": {"model": model, "compression": compression},
        "row": {"config_hash": key, "int8_settings": int8},
        "test_predictions": metrics.pack_bits(predictions),
        "test_labels": metrics.pack_bits(labels),
    }


def _latency(key, runtime, batch, blocks, exact=True):
    return {
        "config_hash": key,
        "runtime": runtime,
        "exact": exact,
        "device": "cpu",
        "batch": batch,
        "median_ms": float(np.median(blocks)),
        "block_medians_ms": "|".join(str(b) for b in blocks),
    }


@pytest.fixture
def study():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (400, 8))
    zoo_predictions = labels.copy()
    zoo_predictions[:100] = 1 - zoo_predictions[:100]  # the zoo model is wrong on the first 100 images
    member_predictions = labels.copy()
    member_predictions[:20] = 1 - member_predictions[:20]  # the quantized variant on 20
    records = [
        _record("base", "slimnet", zoo_predictions, labels),
        _record("q", "slimnet", member_predictions, labels, compression="prune + int8", int8="ptq"),
        _record("zoo", "mobilenet", zoo_predictions, labels),
        _record("maj", "majority", labels * 0, labels),
    ]
    latency = [
        _latency("q", "onnxruntime_int8", 1, [1.0, 1.01, 0.99], exact=False),
        _latency("q", "openvino_int8", 1, [0.5, 0.51, 0.49], exact=False),  # the variant's fastest
        _latency("zoo", "onnxruntime", 1, [2.0, 2.02, 1.98]),
        _latency("zoo", "openvino", 1, [1.0, 1.02, 0.98]),  # the zoo model's fastest fp32
        _latency("zoo", "openvino_int8", 1, [0.8, 0.82, 0.78], exact=False),
        _latency("base", "openvino", 1, [2.0, 2.0, 2.0]),
    ]
    return records, {"latency": latency}


def test_each_model_is_compared_in_its_fastest_runtime_of_its_kind(study):
    records, timing = study
    assert fastest_latency(timing, "zoo", 1, exact=True)["runtime"] == "openvino"
    assert fastest_latency(timing, "zoo", 1, exact=False)["runtime"] == "openvino_int8"
    assert fastest_latency(timing, "q", 1, exact=True) is None  # a quantized variant is only timed in int8
    assert fastest_latency(timing, "zoo", 8, exact=True) is None


def test_a_more_accurate_faster_variant_dominates_and_only_against_another_architecture(study):
    records, timing = study
    (row,) = dominance_rows(records, timing)  # the variant against MobileNet: not against its own base, nor the majority
    assert (row["member"], row["zoo"], row["batch"]) == ("q", "zoo", 1)
    assert (row["member_runtime"], row["zoo_runtime"], row["zoo_int8_runtime"]) == ("openvino_int8", "openvino", "openvino_int8")
    assert row["d_acc"] == pytest.approx(100 * 80 / 400)  # 80 more images right, on every one of the 8 attributes
    assert row["ratio"] == pytest.approx(0.5) and row["ratio_lo"] < 0.5 < row["ratio_hi"] < 1
    assert row["zoo_int8_ratio"] == pytest.approx(0.5 / 0.8)
    assert row["dominates"] is True and row["why_not"] == ""


def test_a_slower_variant_is_told_why_it_does_not_dominate(study):
    records, timing = study
    for row in timing["latency"]:
        if row["config_hash"] == "q":
            row["block_medians_ms"] = "3.0|3.1|2.9"
            row["median_ms"] = 3.0
    (row,) = dominance_rows(records, timing)
    assert row["dominates"] is False and row["why_not"].startswith("latency 3.00x") and row["why_not"].endswith("is slower")
    assert dominance_rows(records, None) == []  # untimed: nothing to say


def test_dominance_needs_both_intervals_past_the_tie():
    assert dominance((0.5, 0.1, 0.9), (0.8, 0.7, 0.9)) == {"dominates": True, "why_not": ""}
    assert "accuracy +0.50 pt [-0.10, +1.10] is not surely higher" == dominance((0.5, -0.1, 1.1), (0.8, 0.7, 0.9))["why_not"]
    assert "latency 1.20x [1.10, 1.30] is slower" == dominance((0.5, 0.1, 0.9), (1.2, 1.1, 1.3))["why_not"]
    assert not dominance(None, (0.5, 0.4, 0.6))["dominates"]


def test_the_verdict_reads_its_numbers_as_the_table_prints_them_from_the_csv(tmp_path):
    # -0.5650000000000003 prints -0.57, but dominance.csv keeps -0.565, which the table prints -0.56
    from bench.report.tables import _signed_text
    from bench.store.records import read_csv_table, write_csv_atomic
    from bench.store.schema import DOMINANCE_COLUMNS

    difference, ratio = (-0.5650000000000003, -0.7975, -0.3225), (0.6, 0.59, 0.61)
    row = {"member": "a", "zoo": "b", "batch": 1, "d_acc": difference[0], "d_acc_lo": difference[1]}
    row.update({"d_acc_hi": difference[2], **dominance(difference, ratio)})
    write_csv_atomic(str(tmp_path / "d.csv"), DOMINANCE_COLUMNS, [row])
    stored = read_csv_table(str(tmp_path / "d.csv")).iloc[0]
    shown = _signed_text(stored["d_acc"], stored["d_acc_lo"], stored["d_acc_hi"])
    assert shown == "-0.56 [-0.80, -0.32]"
    assert stored["why_not"] == "accuracy -0.56 pt [-0.80, -0.32] is lower"
