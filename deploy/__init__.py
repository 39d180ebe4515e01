"""Where models are deployed: a registry of runtimes and timings that can be trusted.

    deployed = deploy.deploy(model, "onnxruntime", example)     # parity with eager checked
    timings = deploy.compare({"a": (deployed.run, deployed.prepare(x), deployed.sync), ...})
    peak = deploy.peak_gflops()["peak_gflops"]                   # the compute floor's denominator

Below ``compress`` and ``bench`` (both use it) and above ``models`` only: it imports neither.
"""
from deploy.quantize import (Int8Settings, calibration_subset, cpu_isa, equalize_chains, isa_text, linear_chains, node_errors,
                             op_time_breakdown, prepare_onnx, quantize_onnx, quantize_openvino, weighted_nodes)
from deploy.runtimes import (RUNTIMES, Deployed, RuntimeParityError, RuntimeUnavailable, deploy, export_onnx, int8_settings,
                             int8_source, list_runtimes, unavailable_reason)
from deploy.timing import (Interleaved, LoadProbe, MemoryProbe, Timing, bootstrap_median, bootstrap_ratio, compare,
                           memory_probe_module, floor_ms, peak_gflops, steady_allocator, time_calls, torch_threads)

__all__ = ["Int8Settings", "calibration_subset", "equalize_chains", "int8_source", "linear_chains", "cpu_isa", "isa_text", "int8_settings", "node_errors", "op_time_breakdown", "prepare_onnx", "quantize_onnx", "quantize_openvino",
           "weighted_nodes", "RUNTIMES", "Deployed", "Interleaved", "LoadProbe", "MemoryProbe", "bootstrap_median", "bootstrap_ratio", "memory_probe_module", "RuntimeParityError", "RuntimeUnavailable", "Timing", "compare", "deploy",
           "export_onnx", "floor_ms", "list_runtimes", "peak_gflops", "steady_allocator", "time_calls", "torch_threads",
           "unavailable_reason"]
