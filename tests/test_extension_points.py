"""One row per addition (issue 30): a made-up runtime (with its int8 twin), compression method, dataset layout and report
table each take one row of their table, and everything downstream finds them by that row alone.
(A made-up factorization and model are in tests/test_compress.py and tests/test_models.py.)"""

import dataclasses
import os

import numpy as np
import pytest
import torch
from helpers import TINY_SLIMNET

import deploy
import models


def _eager_twin_build(model, example, threads=None, device="cpu", calibration=None, int8=None):
    built = deploy.runtimes.build_eager(model, example, threads, device)
    return dataclasses.replace(built, runtime="made_up")


def _int8_twin_build(model, example, threads=None, device="cpu", calibration=None, int8=None):
    # a stand-in int8 runtime: the float model with its logits nudged, so its accuracy is measured, not copied
    built = deploy.runtimes.build_eager(model, example, threads, device)
    return dataclasses.replace(built, runtime="made_up_int8", run=lambda x: built.run(x) + 0.01, int8_settings="made-up int8")


def test_a_made_up_runtime_with_its_int8_twin_is_one_pair_of_rows(monkeypatch, tiny_synthetic, tmp_path):
    from bench.settings import SearchSettings, TimingSettings
    from bench.study.timing_phase import Candidate, time_candidates

    monkeypatch.setitem(
        deploy.RUNTIMES, "made_up", deploy.runtimes.RuntimeEntry("made_up", _eager_twin_build, "a test fp32 runtime")
    )
    monkeypatch.setitem(
        deploy.RUNTIMES,
        "made_up_int8",
        deploy.runtimes.RuntimeEntry("made_up_int8", _int8_twin_build, "its int8 twin", tolerance=None, quantizes="made_up"),
    )
    assert deploy.int8_twin("made_up") == "made_up_int8" and deploy.float_twin("made_up_int8") == "made_up"
    assert SearchSettings.from_mapping({"runtime": "made_up", "knobs": ["prune", "quantize"]}).int8_runtime() == "made_up_int8"

    torch.manual_seed(0)
    model = models.create_model("slimnet", **TINY_SLIMNET)
    path = str(tmp_path / "model.pt")
    models.save_model(model, path)
    identity = {"study": "s", "model": "slimnet", "variant": "", "seed": 0, "config_hash": "abc"}
    candidate = Candidate("abc", identity, path, None, 1000, models.count_params(model), 80.0, 16, False)
    settings = TimingSettings.from_mapping(
        {
            "runtimes": ["made_up", "made_up_int8"],
            "batch_n": 2,
            "blocks": 2,
            "max_blocks": 2,
            "min_iters": 1,
            "min_seconds": 0.0,
            "max_seconds": 0.0,
            "peak_tries": 1,
            "int8": {"calibration_images": 4},
        }
    )
    timing = time_candidates([candidate], tiny_synthetic, settings, "abc")
    rows = {(r["runtime"], r["batch"]): r for r in timing["latency"]}
    assert set(rows) == {("made_up", 1), ("made_up", 2), ("made_up_int8", 1), ("made_up_int8", 2)}
    int8 = rows[("made_up_int8", 1)]
    assert int8["exact"] is False and int8["acc_mean"] is not None and int8["acc_delta"] == pytest.approx(int8["acc_mean"] - 80.0)
    columns = timing["columns"]["abc"]
    assert columns["runtime_b1"] == "made_up" and columns["runtime_int8_b1"] == "made_up_int8"
    assert columns["acc_mean_int8"] == int8["acc_mean"]


def _fp16_name(step):
    return "fp16" + (" checked" if step.get("check") else "")


def test_a_made_up_method_is_one_row_that_variants_pipelines_and_sensitivity_read(monkeypatch, tiny_synthetic):
    """A last-step method with a data option and a short name, and a layer method analysable by sensitivity: nothing
    outside the method table names them."""
    from bench.analysis.sensitivity import units_of
    from bench.study.variants import VariantSpecError, parse_variant, variant_name
    from bench.training.pipeline import step_options
    from compress.compression_report import CompressionReport
    from compress.methods import METHODS, Method
    from compress.options import Option

    seen = {}

    def run_fp16(model, example, resolved):
        seen.update(resolved)
        model.quantization = None
        return CompressionReport("fp16", {})

    options = {
        "check": Option("compare against fp32", "bool", default=False),
        "calibration": Option("images", "object"),
        "calibration_images": Option("how many", "int", 1, None, default=64),
    }
    monkeypatch.setitem(
        METHODS,
        "fp16",
        Method(
            name="fp16",
            description="a test deploy-only method",
            run=run_fp16,
            options=options,
            last_step=True,
            data_options=("calibration",),
            short_name=_fp16_name,
        ),
    )
    monkeypatch.setitem(METHODS, "halfsvd", dataclasses.replace(METHODS["svd"], name="halfsvd"))
    assert variant_name(parse_variant("svd:rank_ratio=0.5+fp16:check=true")) == "svd 0.5 + fp16 checked"
    with pytest.raises(VariantSpecError, match="fp16 can only be the last step"):
        parse_variant("fp16+svd:rank_ratio=0.5")
    with pytest.raises(VariantSpecError, match="option calibration: set from the study's data"):
        parse_variant("fp16:calibration=foo")
    model = models.create_model("slimnet", **TINY_SLIMNET).eval()
    filled = step_options(model, tiny_synthetic, {"method": "fp16", "check": True})
    # the first calibration_images training images (the tiny set has 48)
    assert filled["check"] is True and filled["calibration"].shape[0] == min(64, len(tiny_synthetic.splits["train"]))
    example = torch.zeros(1, *model.data_config["input_size"])
    assert [u.name for u in units_of(model, "halfsvd", example)] == [u.name for u in units_of(model, "svd", example)]
    with pytest.raises(ValueError, match="not analysable one unit at a time"):
        units_of(model, "fp16", example)


def test_a_made_up_dataset_layout_is_one_row(monkeypatch, tmp_path, cache_dir):
    """A JSON-lines layout: one reader and one row; data.format accepts its name and auto-detection finds it."""
    import json

    from PIL import Image

    from bench.data import layouts
    from bench.data.loading import load_data
    from bench.data.source import AttributeSource

    names = []
    for i in range(9):
        name = f"{i}.png"
        Image.fromarray(np.full((20, 16, 3), 20 * i, np.uint8)).save(tmp_path / name)
        names.append({"image": name, "labels": [i % 2, 1 - i % 2], "split": i % 3})
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(n) for n in names))

    def find(path, options):
        found = os.path.join(path, "labels.jsonl")
        if not os.path.isfile(found):
            raise layouts.LayoutAbsent("no labels.jsonl")
        return found

    def read(found, options, name):
        rows = [json.loads(line) for line in open(found)]
        return AttributeSource(
            name or "jsonl",
            tuple(os.path.join(os.path.dirname(found), r["image"]) for r in rows),
            np.array([r["labels"] for r in rows], np.uint8),
            ("a", "b"),
            np.array([r["split"] for r in rows]),
            (found,),
        )

    monkeypatch.setattr(layouts, "LAYOUTS", layouts.LAYOUTS + (layouts.Layout("jsonl", "a JSON-lines test layout", find, read),))
    for data_format in ("jsonl", None):
        data = load_data({"data_dir": str(tmp_path), "format": data_format, "cache_dir": cache_dir})
        assert (
            data.name == "jsonl"
            and data.attr_names == ("a", "b")
            and {k: len(v) for k, v in data.splits.items()} == {"train": 3, "val": 3, "test": 3}
        )


def test_a_made_up_report_table_is_one_row(monkeypatch, tmp_path, cache_dir):
    """A table of parameters: one builder and one row of REPORT_TABLES, written as Markdown and LaTeX and on the page."""
    from helpers import tiny_study

    from bench.report import report_tables
    from bench.report.render import render_report
    from bench.study.runner import run_study

    results = str(tmp_path / "results")
    run_study(tiny_study("table", timing={"latency": False}), results)

    def build(results_):
        rows = [[r["row"]["model"], str(r["row"]["params"])] for r in results_.records]
        return report_tables.Built(["Model", "Params"], rows, f"{results_.study}: parameters", caption="Parameters")

    monkeypatch.setattr(
        report_tables, "REPORT_TABLES", report_tables.REPORT_TABLES + (report_tables.ReportTable("params", "Parameters", build),)
    )
    written = render_report(results, "table", str(tmp_path / "reports"))
    assert {"params.md", "params.tex"} <= set(written)
    assert "| slimnet |" in open(written["params.md"]).read()
    assert "<h2>Parameters</h2>" in open(written["index.html"]).read()
