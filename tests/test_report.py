import numpy as np
import pandas as pd

from bench.metrics import pareto_front
from bench.report.markup import to_latex, to_markdown
from bench.report.tables import summary_table
from bench.store.schema import RESULT_COLUMNS, make_row


def test_pareto_front():
    costs = [1, 2, 3, 4, 2.5]
    scores = [80, 85, 84, 90, 86]
    assert pareto_front(costs, scores).tolist() == [0, 1, 4, 3]


def _frame():
    rows = [
        make_row(RESULT_COLUMNS, {"model": "majority", "variant": "", "params": 0, "macs": 0, "acc_mean": 80.0, "mA": 50.0}),
        make_row(
            RESULT_COLUMNS,
            {
                "model": "a",
                "variant": "",
                "params": 1_000_000,
                "macs": 2e8,
                "acc_mean": 90.0,
                "mA": 70.0,
                "ppp": 70.0,
                "latency_b1_ms": 5.0,
                "runtime_b1": "onnxruntime",
                "floor_ratio_b1": 1.125,
            },
        ),
        make_row(
            RESULT_COLUMNS,
            {
                "model": "b",
                "variant": "",
                "params": 4_000_000,
                "macs": 1e8,
                "acc_mean": 91.0,
                "mA": 60.0,
                "ppp": 15.0,
                "latency_b1_ms": 9.0,
                "runtime_b1": "eager_cl",
                "floor_ratio_b1": 3.0,
            },
        ),
    ]
    return pd.DataFrame(rows).replace("", np.nan)


def test_summary_table_bolds_best_model_per_column_never_majority():
    headers, rows, bold = summary_table(_frame())
    assert rows[0][0] == "majority class" and rows[1][0] == "a"
    acc = headers.index("Acc")
    ma = headers.index("mA")
    cpu = headers.index("b1 (ms)")
    assert bold[2][acc] and not bold[1][acc] and not bold[0][acc]
    assert bold[1][ma] and bold[1][cpu]
    assert rows[1][headers.index("#P (M)")] == "1.000"
    assert rows[0][headers.index("GPU b1 (ms)")] == ""  # not measured stays empty, never 0
    assert rows[1][headers.index("Runtime")] == "onnxruntime" and rows[1][headers.index("b1 / floor")] == "1.12x"


def test_markdown_and_latex_rendering():
    headers, rows, bold = ["Model", "Acc"], [["slim_net", "90.00"]], [[False, True]]
    assert "| slim_net | **90.00** |" in to_markdown(headers, rows, bold)
    latex = to_latex(headers, rows, bold, caption="a 50% test")
    assert r"slim\_net & \textbf{90.00} \\" in latex and r"\toprule" in latex and r"50\% test" in latex


def test_one_seed_shows_half_the_bootstrap_interval():
    frame = _frame().assign(acc_mean_lo=[79.0, 89.0, 90.5], acc_mean_hi=[81.0, 91.0, 91.5], seed=0, config_hash=["m", "a", "b"])
    headers, rows, _ = summary_table(frame)
    assert rows[1][headers.index("Acc")] == "90.00 +- 1.00" and rows[2][headers.index("Acc")] == "91.00 +- 0.50"


def test_pipes_inside_markdown_cells_are_escaped():
    assert "| prune:exclude=conv1.*\\|*.squeeze.* | 1 |" in to_markdown(
        ["Model", "n"], [["prune:exclude=conv1.*|*.squeeze.*", "1"]]
    )


def test_latency_figures_carry_their_interval_and_a_diverged_row_is_never_bold():
    frame = _frame().assign(
        latency_b1_lo=[np.nan, 4.8, 8.0],
        latency_b1_hi=[np.nan, 5.2, 10.0],
        ref_ratio_b1=[np.nan, 1.0, 1.8],
        ref_ratio_b1_lo=[np.nan, 1.0, 1.7],
        ref_ratio_b1_hi=[np.nan, 1.0, 1.9],
        seed=0,
        config_hash=["m", "a", "b"],
        diverged=["", "", "train loss rose"],
    )
    headers, rows, bold = summary_table(frame)
    assert rows[1][headers.index("b1 (ms)")] == "5.00 +- 0.20" and rows[2][headers.index("b1 (ms)")] == "9.00 +- 1.00"
    assert rows[2][headers.index("b1 / ref")] == "1.80x +- 0.10x"
    assert rows[2][0] == "b (diverged)" and not bold[2][headers.index("Acc")]  # 91.0 is the highest, but diverged


def test_comparisons_use_the_studys_reference_model():
    from bench import metrics
    from bench.report.tables import comparisons

    labels = np.array([[1, 0], [0, 1], [1, 1]])

    def record(model, key, predictions, compression=None, base=None):
        cell = {"model": model, "seed": 0, **({"compression": compression, "base_hash": base} if compression else {})}
        return {
            "cell": cell,
            "row": {"config_hash": key},
            "test_labels": metrics.pack_bits(labels),
            "test_predictions": metrics.pack_bits(np.asarray(predictions)),
            "per_attribute": [{"attribute": "x"}, {"attribute": "y"}],
        }

    records = [
        record("resnet18", "r", labels),
        record("slimnet", "s", 1 - labels),
        record("resnet18", "v", labels, [{"method": "svd"}], "r"),
    ]
    names = {"r": "resnet18", "s": "slimnet", "v": "resnet18 [svd]"}
    rows, _ = comparisons(records, names, "resnet18")
    assert {(r["comparison"], r["kind"]) for r in rows} == {
        ("resnet18 [svd] vs resnet18", "variant vs its base"),
        ("slimnet vs resnet18", "model vs resnet18"),
    }
    assert next(r for r in rows if r["comparison"] == "slimnet vs resnet18")["d_acc_mean"] == -100.0


def test_plots_drawn_by_forked_workers_come_back_in_order():
    import os

    from bench.report import plots

    jobs = [lambda i=i: {f"plot{i}": str(os.getpid())} for i in range(5)]
    results = plots._run_jobs(jobs)
    assert [list(r) for r in results] == [[f"plot{i}"] for i in range(5)]
    if (os.cpu_count() or 1) > 1:
        assert all(r[f"plot{i}"] != str(os.getpid()) for i, r in enumerate(results))  # drawn in other processes


def test_the_search_report_says_what_the_screen_did():
    from bench.report.render import screen_text
    from bench.settings import FinetuneSettings

    recalibrated = FinetuneSettings(epochs=0, bn_recalibration=256).to_dict()
    assert screen_text(recalibrated) == "re-estimating its BatchNorm statistics on 256 training images, without a fine-tune"
    tuned = FinetuneSettings(epochs=1, limit_train=1000, distill=0.5).to_dict()
    assert screen_text(tuned) == "a 1-epoch fine-tune on 1000 training images (distillation 0.5)"
    assert screen_text(FinetuneSettings(epochs=0).to_dict()) == "its compressed model as is, without a fine-tune"


def test_the_front_table_prints_a_latency_as_the_summary_does():
    from bench.report.tables import front_table

    record = {
        "row": {
            "config_hash": "k",
            "params": 30538,
            "macs": 31497292,
            "acc_mean": 81.25,
            "acc_mean_lo": 80.9,
            "acc_mean_hi": 81.6,
        }
    }
    row = {
        "key": "k",
        "latency_ms": 1.0,
        "latency_ms_lo": 0.949,
        "latency_ms_hi": 1.051,
        "d_base": -7.18,
        "d_base_lo": -7.47,
        "d_base_hi": -6.87,
        "runtime": "onnxruntime_int8",
        "base_ratio": 0.28,
        "base_ratio_lo": 0.25,
        "base_ratio_hi": 0.30,
    }
    headers, table = front_table([row], [record], {"k": "pruned"})
    assert table[0][headers.index("Latency (ms)")] == "1.00 +- 0.05"  # was "1 +- 0.051"


def test_summary_note_names_the_cpus_instruction_sets_without_an_article_to_agree_with():
    from bench.report.report_tables import StudyResults, _summary_note

    frame = _frame()
    frame["dataset"], frame["batch_n"] = "synthetic", 8
    frame["cpu_isa"] = ["", "AVX2", "AVX2"]
    results = StudyResults(study="s", frame=frame, records=[], labels={}, reference="a", timing=None)
    assert "the CPU's instruction sets (cpu_isa): AVX2 (int8 speed depends on VNNI)" in _summary_note(results)
    frame["cpu_isa"] = np.nan
    assert "(cpu_isa): not recorded (" in _summary_note(results)


def test_what_a_compression_could_not_do_is_listed_under_warnings_one_line_each():
    from bench.report.tables import warning_lines

    row = make_row(
        RESULT_COLUMNS,
        {
            "model": "slimnet",
            "seed": 0,
            "config_hash": "h",
            "acc_mean": 88.0,
            "compression_warnings": "target_latency 0.3 in openvino not reached: kept the level measured fastest "
            "(pruning ratio 0.900, 3.08x faster than the original, 3.33x needed); int8 accuracy control: NOT within",
        },
    )
    assert warning_lines([{"row": row}], {"h": "slimnet [prune + int8]"}) == [
        "slimnet [prune + int8] (seed 0): target_latency 0.3 in openvino not reached: kept the level measured fastest "
        "(pruning ratio 0.900, 3.08x faster than the original, 3.33x needed)",
        "slimnet [prune + int8] (seed 0): int8 accuracy control: NOT within",
    ]
