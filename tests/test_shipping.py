"""Shipping a model (issues 32 and 33) end to end on a tiny study: the per-layer roofline rows of the timing phase, peak
memory and cold start from fresh processes, the report's tables, and `run_bench.py export` with its checks."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import FAST_TIMING, TINY_SLIMNET, tiny_study

import deploy
from bench.store.records import read_csv_table, read_timing
from bench.study.runner import run_study
from deploy.footprint import STANDALONE, measure_footprint, save_artifact

RUNTIMES = ["onnxruntime", "onnxruntime_int8", "openvino", "openvino_int8"]


@pytest.fixture(scope="module")
def shipped_study(tmp_path_factory, cache_dir):
    results = str(tmp_path_factory.mktemp("shipping"))
    config = tiny_study(
        "shipping",
        compressions=["prune:pruning_ratio=0.5"],
        timing={
            **FAST_TIMING,
            "runtimes": RUNTIMES,
            "profile_runtimes": ["onnxruntime", "openvino"],
            "profile_runs": 3,
            "footprint": True,
            "int8": {"calibration_images": 16},
            "footprint_repeats": 2,
            "layer_runtimes": [],
        },
    )
    run_study(config, results)
    return config, results


def test_every_layer_of_every_model_is_profiled_against_its_roofline(shipped_study):
    config, results = shipped_study
    layers = read_csv_table(os.path.join(results, "shipping", "layers.csv"))
    profiled = layers[layers["kind"] == "profiled"]
    assert set(profiled["runtime"]) == {"onnxruntime", "openvino"} and set(profiled["batch"].astype(int)) == {1, 2}
    convs = profiled[profiled["macs"].astype(float) > 0]
    assert set(convs["bound"]) <= {"compute", "memory"} and (convs["floor_ratio"].astype(float) > 0).all()
    assert (convs["floor_ms"].astype(float) <= convs["measured_ms"].astype(float) * 50).all()
    latency = read_csv_table(os.path.join(results, "shipping", "latency.csv"))
    fp32 = latency[latency["runtime"].isin(["onnxruntime", "openvino"])]
    assert (fp32["roofline_ms"].astype(float) > 0).all()
    assert np.allclose(fp32["roofline_ratio"].astype(float), fp32["median_ms"].astype(float) / fp32["roofline_ms"].astype(float))
    machine = read_timing(results, "shipping")["machine"]
    assert [level["level"] for level in machine["bandwidth"]] == ["L2", "L3", "memory"]


def test_peak_memory_and_cold_start_come_from_fresh_processes_per_runtime(shipped_study):
    _, results = shipped_study
    latency = read_csv_table(os.path.join(results, "shipping", "latency.csv"))
    assert latency["peak_mb"].notna().all() and (latency["footprint_repeats"].astype(int) == 2).all()
    assert (latency["peak_mb"].astype(float) >= latency["import_mb"].astype(float)).all()
    assert (latency["cold_ms"].astype(float) >= latency["load_ms"].astype(float)).all()
    assert set(latency.loc[latency["runtime"] == "onnxruntime", "memory_settings"]) == {
        "ONNX Runtime CPU arena on, memory pattern on"
    }
    results_csv = read_csv_table(os.path.join(results, "shipping", "results.csv"))
    slimnet = results_csv[results_csv["model"] == "slimnet"]
    assert slimnet["peak_mb_b1"].notna().all() and slimnet["cold_ms_b1"].notna().all()


def test_the_report_has_the_footprint_table_the_roofline_and_the_verdicts(shipped_study):
    from bench.report.render import render_report

    _, results = shipped_study
    written = render_report(results, "shipping", os.path.join(results, "reports"))
    assert {"footprint.md", "roofline.png", "acc_vs_peak_memory.png"} <= set(written)
    text = open(written["footprint.md"], encoding="utf-8").read()
    assert "| slimnet | onnxruntime |" in text and "spread" in text
    page = open(written["index.html"], encoding="utf-8").read()
    assert "Per-layer roofline" in page and "Memory and cold start" in page


def test_a_known_allocation_raises_the_peak_by_about_its_size(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    def model(extra_floats: int) -> str:
        weight = numpy_helper.from_array(np.ones(max(extra_floats, 1), np.float32), "w")
        nodes = [helper.make_node("ReduceSum", ["w"], ["s"], keepdims=0), helper.make_node("Add", ["x", "s"], ["y"])]
        spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
        graph = helper.make_graph(nodes, "g", spec[:1], spec[1:], [weight])
        onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx_model.ir_version = 8
        path = str(tmp_path / f"m{extra_floats}.onnx")
        with open(path, "wb") as handle:
            handle.write(onnx_model.SerializeToString())
        return path

    small = measure_footprint("onnx", model(1), (1, 4), 1, repeats=2, runs=1)
    large = measure_footprint("onnx", model(64 << 18), (1, 4), 1, repeats=2, runs=1)  # 64 MiB of weights
    assert 60 < large["model_mb"] - small["model_mb"] < 200  # held at least once (ONNX Runtime may keep a copy)
    assert not small["torch_imported"]
    no_arena = measure_footprint("onnx", model(1), (1, 4), 1, {"arena": False, "memory_pattern": False}, repeats=1, runs=1)
    assert no_arena["memory_settings"] == "ONNX Runtime CPU arena off, memory pattern off" != small["memory_settings"]


def test_export_ships_files_that_reproduce_the_study_without_torch(shipped_study, tmp_path, capsys):
    import run_bench
    from bench.export.package import export_model

    _, results = shipped_study
    for runtime in ("onnxruntime_int8", "openvino_int8"):
        out = tmp_path / runtime
        exported = export_model(results, "shipping", "slimnet [prune 0.5]", runtime, str(out))
        assert abs(exported.acc_mean - exported.study_acc_mean) <= 0.1
        card = json.loads((out / "card.json").read_text())
        latency = read_csv_table(os.path.join(results, "shipping", "latency.csv"))
        row = latency[(latency["variant"] == "prune 0.5") & (latency["runtime"] == runtime) & (latency["batch"] == 1)].iloc[0]
        # the card's numbers are the table's to the last digit (a 0.4971665 on the card against 0.497167 in the table
        # failed a relative approx: the card must carry the stored value, not the record's extra digits)
        assert card["costs"]["latency_ms"]["1"]["median"] == float(row["median_ms"])
        assert card["accuracy"]["acc_mean"] == float(row["acc_mean"])
        assert card["costs"]["latency_ms"]["1"]["peak_mb"] == float(row["peak_mb"])
        assert (out / "thresholds.json").is_file() and (out / "card.md").is_file() and (out / "run_model.py").is_file()
        model_file = str(out / ("model.onnx" if runtime.startswith("onnx") else "model.xml"))
        script = (
            "import json, subprocess, sys; "
            f"job = {{'kind': {'onnx' if runtime.startswith('onnx') else 'openvino'!r}, 'path': {model_file!r}, 'threads': 1, "
            "'settings': {}, 'input_shape': [1, 3, 218, 178], 'runs': 1}; "
            "json.dump(job, open(sys.argv[1], 'w'))"
        )
        job = str(tmp_path / f"{runtime}.json")
        subprocess.run([sys.executable, "-c", script, job], check=True)
        shipped = subprocess.run([sys.executable, str(out / "run_model.py"), "footprint", job], capture_output=True, text=True)
        assert shipped.returncode == 0, shipped.stderr
        assert json.loads(shipped.stdout.splitlines()[-1])["torch_imported"] is False
    # bad input: one line, the value named, nothing half-written
    cases = [
        (["--model", "slimnet [nope]", "--runtime", "openvino_int8"], "--model 'slimnet [nope]'"),
        (["--model", "slimnet [prune 0.5]", "--runtime", "tensorrt"], "--runtime 'tensorrt'"),
        (["--model", "slimnet [prune 0.5]", "--runtime", "eager"], "did not time"),
    ]
    for extra, named in cases:
        out = tmp_path / "bad"
        capsys.readouterr()
        code = run_bench.main(["export", "--results-dir", results, "--study", "shipping", "--out", str(out)] + extra)
        error = capsys.readouterr().err
        assert code == 2 and not out.exists() and named in error and error.count("\n") == 1
    code = run_bench.main(
        [
            "export",
            "--results-dir",
            results,
            "--study",
            "nope",
            "--model",
            "x",
            "--runtime",
            "eager",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    existing = tmp_path / "onnxruntime_int8"
    with pytest.raises(ValueError, match="exists"):
        export_model(results, "shipping", "slimnet [prune 0.5]", "onnxruntime_int8", str(existing))
    with pytest.raises(ValueError, match="does not exist or cannot be written"):
        export_model(results, "shipping", "slimnet [prune 0.5]", "onnxruntime_int8", str(tmp_path / "no" / "such" / "dir"))


def test_an_export_that_does_not_reproduce_the_study_writes_nothing(shipped_study, tmp_path, monkeypatch):
    from bench.export import package

    _, results = shipped_study
    monkeypatch.setattr(package, "run_standalone", lambda mode, job: {"acc_mean": 1.0, "images": 6, "torch_imported": False})
    with pytest.raises(ValueError, match="nothing written"):
        package.export_model(results, "shipping", "slimnet [prune 0.5]", "onnxruntime", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".export-")]


def test_the_standalone_runner_refuses_bad_arguments():
    done = subprocess.run([sys.executable, STANDALONE, "dance"], capture_output=True, text=True)
    assert done.returncode == 2 and "usage" in done.stderr


def test_a_runtime_without_a_file_of_its_own_ships_the_checkpoint(tmp_path):
    import models

    model = models.create_model("slimnet", **TINY_SLIMNET).eval()
    example = np.zeros((1, 3, 218, 178), np.float32)
    eager = deploy.deploy(model, "eager_cl", example)
    with pytest.raises(ValueError, match="ships the model's checkpoint"):
        save_artifact(eager, str(tmp_path), "m")
    kind, path, settings = save_artifact(eager, str(tmp_path), "m", checkpoint="/some/model.pt", loader="models:load_model")
    assert (kind, path, settings["channels_last"], settings["loader"]) == (
        "checkpoint",
        "/some/model.pt",
        True,
        "models:load_model",
    )
