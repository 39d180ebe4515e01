"""The GPU path (issue 13): training, evaluation and GPU latency on CUDA. Skipped without a GPU."""
import os

import pytest
import torch

from bench.config import DEFAULT_CONFIG, merge_config
from bench.schema import load_records
from bench.study import run_study

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_a_study_trains_evaluates_and_times_on_cuda(tmp_path, cache_dir):
    config = merge_config(DEFAULT_CONFIG, {
        "study": "gpu",
        "data": {**DEFAULT_CONFIG["data"], "synthetic_images": 60, "cache_dir": os.environ.get("SLIMBENCH_CACHE")},
        "models": ["slimnet"],
        "device": "cuda",
        "train": {"epochs": 1, "batch_size": 16},
        "profile": {"runtimes": ["eager", "onnxruntime"], "batch_n": 4, "blocks": 2, "min_iters": 2, "min_seconds": 0.0},
    })
    rows = run_study(config, str(tmp_path / "results"))
    row = rows[1]
    assert row["device"].startswith("cuda")
    assert float(row["gpu_b1_ms"]) > 0 and float(row["gpu_bN_ms"]) > 0
    latency = load_records(str(tmp_path / "results"), "gpu")[1]["latency"]
    assert {x["device"] for x in latency} == {"cpu", "cuda"}
