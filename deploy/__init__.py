"""Where models are deployed: a registry of runtimes and timings that can be trusted.

    deployed = deploy.deploy(model, "onnxruntime", example)     # parity with eager checked
    timings = deploy.compare({"a": deployed.timed(x), ...})
    peak = deploy.peak_gflops()["peak_gflops"]                   # the compute floor's denominator

Below ``compress`` and ``bench`` (both use it) and above ``models`` only: it imports neither.
``runtimes`` (the registry), ``int8`` (quantizers), ``timing`` (interleaved blocks, probes, intervals),
``machine`` (instruction sets, peak, thread and allocator pins), ``op_profile`` (ONNX Runtime's per-node times).
"""

from deploy.int8 import (
    Int8Settings,
    calibration_subset,
    equalize_chains,
    linear_chains,
    node_errors,
    prepare_onnx,
    quantize_onnx,
    quantize_openvino,
    weighted_nodes,
)
from deploy.machine import cpu_isa, floor_ms, isa_text, peak_gflops, steady_allocator, torch_threads
from deploy.op_profile import op_time_breakdown
from deploy.runtimes import (
    RUNTIMES,
    Deployed,
    RuntimeParityError,
    RuntimeUnavailable,
    deploy,
    deploy_all,
    export_onnx,
    float_twin,
    int8_settings,
    int8_source,
    int8_twin,
    list_runtimes,
    resolve_runtimes,
    unavailable_reason,
)
from deploy.timing import (
    Interleaved,
    LoadProbe,
    MemoryProbe,
    Timing,
    bootstrap_mean,
    bootstrap_ratio,
    compare,
    memory_probe_module,
    time_calls,
)

__all__ = [
    "Int8Settings",
    "calibration_subset",
    "equalize_chains",
    "int8_source",
    "linear_chains",
    "cpu_isa",
    "isa_text",
    "int8_settings",
    "node_errors",
    "op_time_breakdown",
    "prepare_onnx",
    "quantize_onnx",
    "quantize_openvino",
    "weighted_nodes",
    "RUNTIMES",
    "Deployed",
    "Interleaved",
    "LoadProbe",
    "MemoryProbe",
    "bootstrap_mean",
    "bootstrap_ratio",
    "memory_probe_module",
    "RuntimeParityError",
    "RuntimeUnavailable",
    "Timing",
    "compare",
    "deploy",
    "deploy_all",
    "float_twin",
    "int8_twin",
    "resolve_runtimes",
    "export_onnx",
    "floor_ms",
    "list_runtimes",
    "peak_gflops",
    "steady_allocator",
    "time_calls",
    "torch_threads",
    "unavailable_reason",
]
