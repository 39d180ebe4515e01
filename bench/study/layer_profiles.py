"""Per-layer time against the roofline, for every model of the timing phase (``layers.csv`` rows of kind ``profiled``).

In the timing phase's process, after the blocks, each model runs in each profiled runtime (``timing.profile_runtimes``)
at batch 1 and batch N under the runtime's own profiler (``deploy.roofline``): every node the runtime executes, with the
MACs and bytes of the ONNX node it computes, its roofline floor at the machine's fp32 peak and the bandwidth of the
cache level its bytes fit in (``deploy.roofline.bandwidth_levels``, measured at the start of the phase), and measured /
floor. Per model the floors add up to its roofline floor, which the latency rows show beside the MAC floor.
"""

from __future__ import annotations

import numpy as np

from deploy import roofline

PROFILED = "profiled"  # layers.csv kind of these rows; the compression's own per-layer table is kind "replaced"


def layer_rows(
    identity: dict, onnx_model: bytes, example: np.ndarray, runtime: str, batch: int, threads: int, machine: dict, runs: int
) -> list[dict]:
    """Return the ``layers.csv`` rows of one model (``identity``: its study, model, variant, seed and config_hash columns)
    in ``runtime`` at ``batch``: one per node the runtime runs, with its roofline (``deploy.roofline.roofline_rows``).

    Raises:
        KeyError: a runtime without a per-node profiler (``deploy.roofline.PROFILERS``).
    """
    x = np.repeat(example[:1], batch, axis=0)
    nodes = roofline.profile_layers(runtime, onnx_model, x, threads, runs=runs, warmup=max(2, runs // 3))
    rows = roofline.roofline_rows(nodes, machine["peak_gflops"], machine["bandwidth"])
    return [{**identity, "kind": PROFILED, "runtime": runtime, "batch": batch, **row} for row in rows]


def model_roofline(rows: list[dict]) -> dict[tuple[str, str, int], dict]:
    """Return ``{(config_hash, runtime, batch): {'roofline_ms', 'profiled_ms'}}``: per model, runtime and batch size the
    sum of its nodes' roofline floors and of their profiled times."""
    totals: dict[tuple[str, str, int], dict] = {}
    for row in rows:
        key = (row["config_hash"], row["runtime"], int(row["batch"]))
        entry = totals.setdefault(key, {"roofline_ms": 0.0, "profiled_ms": 0.0})
        entry["roofline_ms"] += row["floor_ms"] or 0.0
        entry["profiled_ms"] += row["measured_ms"]
    return totals


__all__ = ["PROFILED", "layer_rows", "model_roofline"]
