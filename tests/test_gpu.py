"""The GPU path (issue 13): training, evaluation and GPU latency on CUDA. Skipped without a GPU."""

import json
import os

import pytest
import torch

from bench.study.runner import run_study
from tests.helpers import tiny_study

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_a_study_trains_evaluates_and_times_on_cuda(tmp_path, cache_dir):
    config = tiny_study("gpu", device="cuda", timing={"runtimes": ["eager", "onnxruntime"], "batch_n": 4})
    rows = run_study(config, str(tmp_path / "results"))
    row = rows[1]
    assert row["device"].startswith("cuda")
    assert float(row["gpu_b1_ms"]) > 0 and float(row["gpu_bN_ms"]) > 0
    latency = json.load(open(os.path.join(tmp_path, "results", "gpu", "timing.json")))["latency"]
    assert {x["device"] for x in latency} == {"cpu", "cuda"}
