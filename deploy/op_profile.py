"""Where an ONNX Runtime call spends its time, from ONNX Runtime's own profiler."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from deploy.int8 import WEIGHTED_OPS

CONV_OPS = ("Conv", "FusedConv", "QLinearConv", "NhwcFusedConv", "ConvInteger")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
LAYOUT_OPS = ("ReorderInput", "ReorderOutput", "Transpose")


def op_time_breakdown(onnx_model: bytes, images: np.ndarray, threads: int, runs: int = 30, warmup: int = 5) -> dict[str, float]:
    """Return where one ONNX Runtime call of ``onnx_model`` on ``images`` spends its time, from ONNX Runtime's profiler:
    ``{'conv', 'qdq', 'layout', 'other': ms per call, 'float_nodes': nodes of a QDQ model left in float (not conv, not Q/DQ)}``.

    The profiler's kernel times add up to less than a timed call (no session overhead); use the shares, not the sum.
    """
    import json

    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory(prefix="slimbench-profile-") as folder:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(warmup + runs):
            session.run(None, {name: images})
        with open(session.end_profiling(), encoding="utf-8") as handle:
            events = json.load(handle)
    per_node: dict[str, list] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_node.setdefault(event["name"], []).append(event)
    totals = {"conv": 0.0, "qdq": 0.0, "layout": 0.0, "other": 0.0}
    for node_events in per_node.values():
        op = node_events[0].get("args", {}).get("op_name", "")
        key = "conv" if op in CONV_OPS else "qdq" if op in QDQ_OPS else "layout" if op in LAYOUT_OPS else "other"
        timed = sorted(node_events, key=lambda e: e["ts"])[warmup:]  # the first calls allocate and warm caches
        totals[key] += sum(e["dur"] for e in timed) / 1000.0 / runs
    graph = onnx.load_from_string(onnx_model).graph
    quantized = any(node.op_type in QDQ_OPS for node in graph.node)
    totals["float_nodes"] = sum(node.op_type not in CONV_OPS + QDQ_OPS + WEIGHTED_OPS for node in graph.node) if quantized else 0
    return totals
