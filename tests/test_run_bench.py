"""End-to-end test of the main job on a tiny configuration."""

import os

import pandas as pd
import pytest

import run_bench
from bench.store.schema import PER_ATTRIBUTE_COLUMNS, RESULT_COLUMNS

TINY_YAML = """
study: e2e
data: {synthetic_images: 60, synthetic_seed: 1}
models:
  - name: slimnet
    kwargs: {filter_count_values: [4, 4, 4, 4], initial_conv: [8, 7, 2]}
    compressions: ["svd:rank_ratio=0.5"]
  - {name: mobilenetv3_small_100, kwargs: {input_size: [3, 218, 178]}}
seeds: [0]
train: {epochs: 1, batch_size: 16, lr: 0.001}
finetune: {epochs: 1, limit_train: 16}
timing: {batch_n: 2, blocks: 2, max_blocks: 4, max_seconds: 5, peak_tries: 1, min_iters: 2, min_seconds: 0.0, layer_blocks: 1,
         layer_min_iters: 2, layer_min_seconds: 0.0, int8: {calibration_images: 8}}
"""


def test_main_job_end_to_end(tmp_path, cache_dir, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    results, reports = tmp_path / "results", tmp_path / "reports"
    argv = ["--config", str(config), "--results-dir", str(results), "--reports-dir", str(reports), "-q"]
    assert run_bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "| majority class |" in out and "| slimnet |" in out and "| mobilenetv3_small_100 |" in out
    assert "| slimnet [svd 0.5] |" in out and "| slimnet [svd 0.5] | svd:rank_ratio=0.5 |" in out  # short name, and its key

    table = pd.read_csv(results / "e2e" / "results.csv")
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert table["model"].tolist() == ["majority", "slimnet", "slimnet", "mobilenetv3_small_100"]
    compressed = table[table["compression"] == "svd:rank_ratio=0.5"]
    assert len(compressed) == 1 and compressed["params"].iloc[0] < table["params"].iloc[1]
    assert compressed["acc_mean_nofinetune"].notna().all() and compressed["finetune_seconds"].notna().all()
    every_layer = pd.read_csv(results / "e2e" / "layers.csv")
    layers = every_layer[every_layer["kind"] == "replaced"]
    assert len(layers) > 0 and (layers["method"] == "svd").all() and layers["measured_speedup"].notna().all()
    assert set(layers["runtime"]) == {"eager", "onnxruntime"}
    assert len(layers[layers["runtime"] == "eager"]) == len(layers[layers["runtime"] == "onnxruntime"])
    profiled = every_layer[every_layer["kind"] == "profiled"]  # every model's layers in its runtime's own profiler
    assert set(profiled["model"]) == {"slimnet", "mobilenetv3_small_100"} and profiled["measured_ms"].notna().all()

    latency = pd.read_csv(results / "e2e" / "latency.csv")
    import deploy

    expected = set(deploy.list_runtimes(available_only=True))
    assert set(latency["runtime"]) == expected and set(latency["batch"]) == {1, 2}
    assert len(latency) == 3 * len(expected) * 2  # slimnet, its svd variant, mobilenet x runtimes x 2 batch sizes
    assert latency["floor_ratio"].notna().all() and (latency["floor_ratio"] > 0).all()
    assert latency["max_abs_diff"].notna().all()
    variant = latency[latency["variant"] == "svd 0.5"]
    assert variant["speedup"].notna().all() and variant["realization"].notna().all()
    assert latency[latency["variant"] != "svd 0.5"]["speedup"].isna().all()
    models = table[table["model"] != "majority"]
    for column in (
        "params",
        "macs",
        "disk_bytes",
        "disk_bytes_zip",
        "acc_mean",
        "acc_majority",
        "mA",
        "inst_acc",
        "precision",
        "recall",
        "f1",
        "hamming_loss",
        "ece",
        "ece_ts",
        "temperature",
        "ppp",
        "runtime_b1",
        "latency_b1_ms",
        "floor_ratio_b1",
        "latency_bN_ms",
        "runtime_bN",
        "batch_n",
        "runtime_int8_b1",
        "latency_int8_b1_ms",
        "acc_mean_int8",
        "acc_int8_delta",
        "train_seconds",
        "epochs",
        "n_train",
        "n_val",
        "n_test",
        "seed",
        "torch_version",
        "onnxruntime_version",
        "cpu_name",
        "threads",
        "peak_gflops",
        "peak_library",
        "timestamp",
        "config_hash",
    ):
        assert models[column].notna().all(), column
    import torch

    assert models["gpu_b1_ms"].notna().all() if torch.cuda.is_available() else models["gpu_b1_ms"].isna().all()
    assert (table["n_train"] == 48).all() and (table["acc_majority"] == table["acc_majority"].iloc[0]).all()

    per_attribute = pd.read_csv(results / "e2e" / "per_attribute.csv")
    assert list(per_attribute.columns) == list(PER_ATTRIBUTE_COLUMNS)
    assert len(per_attribute) == 4 * 40 and per_attribute["attribute"].iloc[0] == "5_o_Clock_Shadow"

    assert compressed["speedup_b1"].notna().all() and compressed["realization_b1"].notna().all()
    # the summary's ratios are its latencies divided (issue 24): no reader can divide two columns and get another figure
    base = table[(table["model"] == "slimnet") & table["compression"].isna()].iloc[0]
    for suffix in ("b1", "bN"):
        assert compressed[f"speedup_{suffix}"].iloc[0] == pytest.approx(
            base[f"latency_{suffix}_ms"] / compressed[f"latency_{suffix}_ms"].iloc[0], rel=1e-4
        )
        for _, row in models.iterrows():
            assert row[f"ref_ratio_{suffix}"] == pytest.approx(
                row[f"latency_{suffix}_ms"] / base[f"latency_{suffix}_ms"], rel=1e-4
            )
            assert row[f"ref_ratio_{suffix}_lo"] <= row[f"ref_ratio_{suffix}"] <= row[f"ref_ratio_{suffix}_hi"]
    latency_md = (reports / "e2e" / "latency.md").read_text()
    assert "## Compute floor" in latency_md and "slimnet, batch 1: fastest exact runtime" in latency_md
    assert "## Realized speed-up of compressed variants" in latency_md
    for name in (
        "summary.md",
        "summary.tex",
        "summary.csv",
        "per_attribute.md",
        "per_attribute.tex",
        "layers.md",
        "layers.tex",
        "latency.md",
        "latency.tex",
        "realization.tex",
        "acc_vs_params.png",
        "acc_vs_params.pdf",
        "acc_vs_macs.png",
        "acc_vs_latency.png",
        "acc_vs_latency_per_runtime.png",
        "floor_ratio.png",
        "per_attribute_accuracy.png",
        "reliability.png",
        "training_curves.png",
    ):
        assert (reports / "e2e" / name).is_file(), name

    # Rerun: every cell is cached; `report` re-renders from results alone.
    assert run_bench.main(argv) == 0
    assert capsys.readouterr().out.count("cached result, skipped") == 4
    os.remove(reports / "e2e" / "summary.md")
    assert (
        run_bench.main(["report", "--study", "e2e", "--results-dir", str(results), "--reports-dir", str(reports), "--no-plots"])
        == 0
    )
    assert (reports / "e2e" / "summary.md").is_file()


def test_bad_input_gives_one_clear_line(tmp_path, capsys):
    assert run_bench.main(["--data-dir", str(tmp_path / "nowhere"), "--results-dir", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data_dir ") and "does not exist" in err and "Traceback" not in err
    assert run_bench.main(["--models", "resnet19", "--results-dir", str(tmp_path), "-q"]) == 2
    assert "unknown model 'resnet19'" in capsys.readouterr().err
    assert run_bench.main(["report", "--study", "never-run", "--results-dir", str(tmp_path)]) == 2
    assert "run the study first" in capsys.readouterr().err


def test_models_command(capsys):
    assert run_bench.main(["models"]) == 0
    assert "slimnet" in capsys.readouterr().out


def test_profile_command(capsys):
    argv = [
        "profile",
        "--models",
        "slimnet",
        "--runtimes",
        "eager,onnxruntime",
        "--batch-sizes",
        "1",
        "--repeats",
        "2",
        "--min-iters",
        "2",
        "--min-seconds",
        "0",
    ]
    assert run_bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "fp32 peak" in out and "| slimnet | 0.246 | eager | 1 |" in out and "| slimnet | 0.246 | onnxruntime | 1 |" in out
    import re

    assert re.search(r"\| \d+\.\d\dx \|", out)  # the floor ratio, written like 1.12x


def test_models_flag_keeps_the_configs_entries():
    config = run_bench.config_from_args(run_bench.build_parser().parse_args(["run", "--models", "slimnet,squeezenet1_1"]))
    slimnet, squeezenet = config["models"]
    assert slimnet["name"] == "slimnet" and len(slimnet["compressions"]) == 4  # the YAML's entry, with its variants
    assert squeezenet == "squeezenet1_1"
