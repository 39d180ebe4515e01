"""Study configs the tests share: a tiny Slim-Net on the 60-image synthetic set."""

import os

from bench.study.config import DEFAULT_CONFIG, merge_config

TINY_SLIMNET = {"filter_count_values": [4, 4, 4, 4], "initial_conv": [8, 7, 2]}
# Two runtimes keep the timing phase short; tests/test_run_bench.py times every runtime end to end.
FAST_TIMING = {
    "latency": True,
    "runtimes": ["eager", "onnxruntime"],
    "layer_runtimes": ["eager", "onnxruntime"],
    "batch_n": 2,
    "blocks": 2,
    "max_blocks": 4,
    "min_iters": 2,
    "min_seconds": 0.0,
    "max_seconds": 3.0,
    "peak_tries": 1,
    "profile_runtimes": [],  # tests/test_shipping.py profiles layers and measures footprints end to end
}


def tiny_study(study: str = "unit", **overrides) -> dict:
    """Return a full study config: 60 synthetic images (cached in ``$SLIMBENCH_CACHE``), a tiny Slim-Net,
    one epoch, quick timing; ``overrides`` are merged in (nested mappings merge)."""
    data = {**DEFAULT_CONFIG["data"], "synthetic_images": 60, "cache_dir": os.environ.get("SLIMBENCH_CACHE")}
    return merge_config(
        DEFAULT_CONFIG,
        merge_config(
            {
                "study": study,
                "data": data,
                "models": [{"name": "slimnet", "kwargs": TINY_SLIMNET}],
                "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3},
                "timing": FAST_TIMING,
            },
            overrides,
        ),
    )
