"""Where a model's time goes, layer by layer, against what the machine allows: the roofline.

A layer cannot run faster than its **roofline floor**: max(its compute at the machine's fp32 peak, its bytes at the
bandwidth of the smallest cache level that holds them). MACs and bytes come from the exported ONNX graph at the batch
size (:func:`graph_costs`): a convolution moves its input, weights, bias and output once (BatchNorm and activations
are folded or fused into it by every runtime here, so they move nothing of their own); a pooling, concatenation or
addition moves its inputs and output. The measured time of each node comes from the runtime's own profiler, on the
graph it actually runs (:data:`PROFILERS`: ONNX Runtime's profiling, OpenVINO's performance counters), each runtime
node traced back to the ONNX node it computes and from there to the torch module (:func:`module_path`).

Depthwise layers move many bytes per MAC: they sit under the memory roof, where fewer MACs buy little time. That is
the usual answer to "MACs down, latency not" (:func:`roofline_rows` says which roof bounds each layer).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from deploy.machine import torch_threads
from deploy.runtimes import openvino_config, ort_options

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
# Ops a runtime folds or fuses into the weighted op before them: they add no memory traffic of their own.
FUSED_OPS = ("Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "BatchNormalization", "Identity")
FREE_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Shape", "Constant", "Identity")  # views: no bytes move
_DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 6: 4, 7: 8, 10: 2, 16: 2, 11: 8}  # onnx TensorProto element types


@dataclass(frozen=True)
class NodeCost:
    """What one ONNX node computes at a batch size: its ``op`` type, the torch module it comes from (``layer``), a short
    ``shape`` description (e.g. ``depthwise 3x3``), ``macs`` and the ``bytes`` it moves."""

    op: str
    layer: str
    shape: str
    macs: int
    bytes: int


def module_path(onnx_name: str) -> str:
    """Return the torch module path of an ONNX node named by torch's exporter, e.g. ``/slim1/sse1/squeeze/squeeze.0/Conv``
    -> ``slim1.sse1.squeeze.0`` (a Sequential's child appears as ``parent.index`` after its parent's scope)."""
    parts = [p for p in onnx_name.strip("/").split("/")[:-1] if p]
    path: list[str] = []
    for part in parts:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


def conv_cost(input_shape, weight_shape, output_shape, bias: bool, dtype_bytes: int = 4) -> tuple[int, int]:
    """Return ``(MACs, bytes moved)`` of a convolution or dense layer: MACs = output elements x weights per output channel
    (``prod(weight) / output channels``, which holds for grouped and depthwise weights); bytes = input + weights (+ bias)
    + output, at ``dtype_bytes`` each."""
    out_channels = int(output_shape[1])
    macs = int(np.prod(output_shape)) * int(np.prod(weight_shape)) // out_channels
    elements = int(np.prod(input_shape)) + int(np.prod(weight_shape)) + (out_channels if bias else 0) + int(np.prod(output_shape))
    return macs, elements * dtype_bytes


def _shape_text(op: str, weight_shape, group: int) -> str:
    if op != "Conv":
        return op.lower()
    kernel = "x".join(str(int(k)) for k in weight_shape[2:])
    if group > 1 and int(weight_shape[1]) == 1:
        return f"depthwise {kernel}"
    if kernel == "1x1" and group == 1:
        return "pointwise 1x1"
    return f"conv {kernel}" + (f" /{group}" if group > 1 else "")


def graph_costs(onnx_model: bytes, batch: int) -> dict[str, NodeCost]:
    """Return ``{ONNX node name: NodeCost}`` of every node that computes or moves data in ``onnx_model`` at ``batch``
    (shapes inferred with the batch dimension fixed; fused activations and views cost nothing and are left out)."""
    import onnx

    model = onnx.load_from_string(onnx_model)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = batch
    model = onnx.shape_inference.infer_shapes(model)
    shapes, types = {}, {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        tensor = value.type.tensor_type
        shapes[value.name] = [d.dim_value for d in tensor.shape.dim]
        types[value.name] = tensor.elem_type
    for init in model.graph.initializer:
        shapes[init.name], types[init.name] = list(init.dims), init.data_type
    costs = {}
    for node in model.graph.node:
        if node.op_type in FUSED_OPS + FREE_OPS:
            continue
        known = [name for name in list(node.input) + list(node.output) if name in shapes]
        dtype = _DTYPE_BYTES.get(types.get(node.output[0], 1), 4)
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in shapes and node.output[0] in shapes:
            weight = shapes[node.input[1]]
            if node.op_type == "MatMul":  # (K, N) weights: one output column per N
                weight = list(reversed(weight))
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            macs, moved = conv_cost(shapes[node.input[0]], weight, shapes[node.output[0]], len(node.input) > 2, dtype)
            costs[node.name] = NodeCost(
                node.op_type, module_path(node.name), _shape_text(node.op_type, weight, group), macs, moved
            )
        else:
            moved = sum(int(np.prod(shapes[name])) * _DTYPE_BYTES.get(types[name], 4) for name in known)
            costs[node.name] = NodeCost(node.op_type, module_path(node.name), node.op_type.lower(), 0, moved)
    return costs


def _producers(graph) -> tuple[dict, dict]:
    by_output = {out: node for node in graph.node for out in node.output}
    return by_output, {node.name: node for node in graph.node}


def source_node(name: str, by_output: dict, by_name: dict) -> str | None:
    """Return the ONNX node a runtime node named ``name`` computes: the node of that name, or the producer of the tensor it
    is named after (ONNX Runtime names a fused node after its last output, with layout suffixes), walked back over fused
    activations to the weighted op they were fused into; None for a node of the runtime's own (a layout reorder)."""
    for suffix in ("_kernel_time", "_nchwc", "/WithoutBiases"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    node = by_name.get(name) or by_output.get(name)
    while node is not None and node.op_type in FUSED_OPS + ("Add",):
        inputs = [by_output.get(i) for i in node.input]
        weighted = [n for n in inputs if n is not None and n.op_type in WEIGHTED_OPS]
        if node.op_type == "Add" and not weighted:
            break  # a residual addition of its own
        node = weighted[0] if weighted else inputs[0]
    return node.name if node is not None else None


def _ort_node_times(onnx_model: bytes, x: np.ndarray, threads: int, runs: int, warmup: int) -> list[tuple[str, str, list]]:
    import onnxruntime as ort

    options = ort_options(threads)
    with tempfile.TemporaryDirectory(prefix="slimbench-roofline-") as folder:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(warmup + runs):
            session.run(None, {name: x})
        with open(session.end_profiling(), encoding="utf-8") as handle:
            events = json.load(handle)
    times: dict[str, list] = {}
    for event in sorted((e for e in events if e.get("cat") == "Node"), key=lambda e: e["ts"]):
        if event.get("name", "").endswith("_kernel_time"):
            times.setdefault(event["name"], []).append(event["dur"] / 1000.0)
    # ONNX Runtime names a node after the tensor it writes: that name leads back to the ONNX node (source_node)
    return [(node[: -len("_kernel_time")], node, values[warmup:]) for node, values in times.items() if len(values) > warmup]


def _openvino_node_times(onnx_model: bytes, x: np.ndarray, threads: int, runs: int, warmup: int) -> list[tuple[str, str, list]]:
    import openvino as ov

    core = ov.Core()
    source = core.read_model(onnx_model, b"")
    source.reshape({source.inputs[0]: list(x.shape)})
    compiled = core.compile_model(source, "CPU", {**openvino_config(threads), "PERF_COUNT": True})
    request = compiled.create_infer_request()
    fused = {
        op.get_friendly_name(): str(op.get_rt_info()["originalLayersNames"].astype(str))
        for op in compiled.get_runtime_model().get_ordered_ops()
    }
    times: dict[str, list] = {}
    for index in range(warmup + runs):
        request.infer({0: x})
        if index < warmup:
            continue
        for info in request.profiling_info:
            if info.status == ov.ProfilingInfo.Status.EXECUTED:
                times.setdefault(info.node_name, []).append(info.real_time.total_seconds() * 1000.0)
    return [(node, _openvino_source(fused.get(node, "")), values) for node, values in times.items()]


def _openvino_source(original: str) -> str:
    """Return the ONNX node an OpenVINO node computes, from the names of the ONNX nodes fused into it (the weighted one
    when there is one; '' for a node of OpenVINO's own, such as a reorder)."""
    names = [n for n in original.split(",") if n]
    weighted = [n for n in names if n.split("/")[-1].startswith(WEIGHTED_OPS)]
    return (weighted or names or [""])[0]


# runtime -> (onnx model, input batch, threads, runs, warm-up runs) -> [(runtime node, the name that leads to its ONNX
# node, [ms per run])]
PROFILERS = {"onnxruntime": _ort_node_times, "openvino": _openvino_node_times}


def profile_layers(runtime: str, onnx_model: bytes, x: np.ndarray, threads: int, runs: int = 10, warmup: int = 3) -> list[dict]:
    """Return one row per node ``runtime`` runs for ``onnx_model`` on the batch ``x``: ``node`` (the runtime's name),
    ``source`` (the ONNX node it computes, '' for a node of the runtime's own), ``op``, ``layer`` (torch module),
    ``shape``, ``macs``, ``bytes`` (of the ONNX node at this batch, once per ONNX node) and ``measured_ms`` (median per
    run of the runtime's profiler; a profiler's node times add up to a little less than a timed call).

    Raises:
        KeyError: a runtime without a per-node profiler here (see :data:`PROFILERS`).
    """
    import onnx

    graph = onnx.load_from_string(onnx_model).graph
    by_output, by_name = _producers(graph)
    costs = graph_costs(onnx_model, int(x.shape[0]))
    rows, costed = [], set()
    for node, hint, values in PROFILERS[runtime](onnx_model, x, threads, runs, warmup):
        source = source_node(hint, by_output, by_name) if hint else None
        cost = costs.get(source) if source not in costed else None
        if cost is not None:
            costed.add(source)
        rows.append(
            {
                "node": node,
                "source": source or "",
                "op": cost.op if cost else (by_name[source].op_type if source in by_name else "layout"),
                "layer": cost.layer if cost else (module_path(source) if source else ""),
                "shape": cost.shape if cost else "",
                "macs": cost.macs if cost else 0,
                "bytes": cost.bytes if cost else 0,
                "measured_ms": float(np.median(values)),
            }
        )
    return rows


def roofline_floor_ms(macs: int, moved: int, peak_gflops: float, bandwidth_gbs: float) -> float:
    """Return the least time in ms a layer can take: max(2 x MACs at ``peak_gflops``, ``moved`` bytes at ``bandwidth_gbs``)."""
    return max(2.0 * macs / (peak_gflops * 1e9), moved / (bandwidth_gbs * 1e9)) * 1e3


def level_bandwidth(moved: int, levels: list[dict]) -> dict:
    """Return the bandwidth level (``{'level', 'capacity', 'gbs'}``, smallest capacity first in ``levels``) whose capacity
    holds ``moved`` bytes; the last level (main memory) for anything larger."""
    for level in levels:
        if moved <= level["capacity"]:
            return level
    return levels[-1]


def roofline_rows(rows: list[dict], peak_gflops: float, levels: list[dict]) -> list[dict]:
    """Return ``rows`` (:func:`profile_layers`) with their roofline: ``intensity`` (FLOPs per byte), ``level`` and
    ``bandwidth_gbs`` (the cache level the bytes fit in), ``bound`` ('compute' or 'memory'), ``floor_ms`` and
    ``floor_ratio`` (measured / floor; empty for nodes with nothing to move, such as layout reorders)."""
    out = []
    for row in rows:
        if not row["bytes"]:
            out.append(
                {**row, "intensity": None, "level": "", "bandwidth_gbs": None, "bound": "", "floor_ms": None, "floor_ratio": None}
            )
            continue
        level = level_bandwidth(row["bytes"], levels)
        compute_ms = 2.0 * row["macs"] / (peak_gflops * 1e9) * 1e3
        memory_ms = row["bytes"] / (level["gbs"] * 1e9) * 1e3
        floor = max(compute_ms, memory_ms)
        out.append(
            {
                **row,
                "intensity": 2.0 * row["macs"] / row["bytes"],
                "level": level["level"],
                "bandwidth_gbs": level["gbs"],
                "bound": "compute" if compute_ms >= memory_ms else "memory",
                "floor_ms": floor,
                "floor_ratio": row["measured_ms"] / floor if floor > 0 else None,
            }
        )
    return out


def cache_capacities(threads: int) -> list[tuple[str, int]]:
    """Return ``[('L2', bytes), ('L3', bytes)]``: the L2 caches of ``threads`` cores together and the shared L3, read from
    ``/sys/devices/system/cpu/cpu0/cache`` (Linux; 1 MiB per core and 32 MiB where it cannot be read)."""
    sizes = {}
    folder = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(folder)):
            path = os.path.join(folder, index)
            with (
                open(os.path.join(path, "level"), encoding="utf-8") as level,
                open(os.path.join(path, "size"), encoding="utf-8") as size,
            ):
                text = size.read().strip().upper()
                factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
                sizes[int(level.read())] = int(text.rstrip("KMG")) * factor
    except (OSError, ValueError):
        pass
    return [("L2", sizes.get(2, 1 << 20) * max(1, int(threads))), ("L3", sizes.get(3, 32 << 20))]


def stream_gbs(run: Callable[[], float | None], moved: int, tries: int = 5, min_seconds: float = 0.02) -> float:
    """Return the best bandwidth in GB/s of ``run``, a call that moves ``moved`` bytes: calls are repeated until
    ``min_seconds`` per try (the clock's resolution and the call's overhead spread over them), best of ``tries``. A
    ``run`` that returns seconds (a runtime profiler's time for the work alone) is taken at its word."""
    run()
    best = float("inf")
    for _ in range(tries):
        calls, profiled, tick = 0, 0.0, time.perf_counter()
        while True:
            seconds = run()
            calls, profiled = calls + 1, profiled + (float(seconds) if seconds is not None else 0.0)
            elapsed = time.perf_counter() - tick
            if elapsed >= min_seconds:
                break
        best = min(best, (profiled if profiled > 0 else elapsed) / calls)
    return moved / best / 1e9


def _relu_chain(elements: int, length: int) -> bytes:
    from onnx import TensorProto, helper

    names = ["x"] + [f"t{i}" for i in range(length - 1)] + ["y"]
    nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]]) for i in range(length)]
    spec = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [elements]) for name in ("x", "y")]
    model = helper.make_model(helper.make_graph(nodes, "stream", spec[:1], spec[1:]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _stream_probes(elements: int, threads: int) -> dict[str, tuple[Callable[[], float | None], int]]:
    """Return ``{library: (run, bytes moved per run)}``: a copy (NumPy, one thread), an out-of-place add (torch), a chain of
    16 ReLUs (ONNX Runtime, which runs them one by one) and one ReLU timed by OpenVINO's own counters (it fuses chains)."""
    x = np.full(elements, 0.5, dtype=np.float32)  # the values do not matter to a copy: no random numbers to wait for
    y = np.empty_like(x)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    moved = 2 * x.nbytes

    def numpy_run() -> None:
        np.copyto(y, x)

    def torch_run() -> None:
        torch.add(tx, 1.0, out=ty)

    probes = {"numpy": (numpy_run, moved), "torch": (torch_run, moved)}
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(_relu_chain(elements, 16), ort_options(threads), providers=["CPUExecutionProvider"])

        def onnxruntime_run() -> None:
            session.run(None, {"x": x})

        probes["onnxruntime"] = (onnxruntime_run, 16 * moved)
    except ImportError:
        pass
    try:
        import openvino as ov

        core = ov.Core()
        request = core.compile_model(
            core.read_model(_relu_chain(elements, 1), b""), "CPU", {**openvino_config(threads), "PERF_COUNT": True}
        ).create_infer_request()

        def openvino_run() -> float:
            request.infer({0: x})
            return sum(
                i.real_time.total_seconds() for i in request.profiling_info if i.status == ov.ProfilingInfo.Status.EXECUTED
            )

        probes["openvino"] = (openvino_run, moved)
    except ImportError:
        pass
    return probes


def bandwidth_levels(threads: int | None = None, tries: int = 3) -> list[dict]:
    """Return the sustainable bandwidth at each level of the memory hierarchy, smallest first: ``[{'level', 'capacity',
    'working_set', 'gbs', 'library', 'per_library': {library: GB/s}}]`` for L2, L3 and main memory. Each level is probed
    with a working set (input + output) of half its capacity (main memory: 8x the L3) in every library at hand
    (:func:`_stream_probes`), best of ``tries``; the best library counts, as for the fp32 peak, and a level is credited
    with a larger level's bandwidth when that is higher (``library`` then names the larger level)."""
    threads = int(threads or torch.get_num_threads())
    capacities = cache_capacities(threads)
    levels = [(name, capacity, capacity // 2) for name, capacity in capacities]
    levels.append(("memory", 1 << 62, 8 * capacities[-1][1]))
    out = []
    with torch_threads(threads):
        for name, capacity, working_set in levels:
            probes = _stream_probes(max(1024, working_set // 8), threads)  # two float32 buffers
            per_library = {lib: stream_gbs(run, moved, tries) for lib, (run, moved) in probes.items()}
            library = max(per_library, key=per_library.get)
            entry = {"level": name, "capacity": capacity, "working_set": working_set, "gbs": per_library[library]}
            out.append({**entry, "library": library, "per_library": per_library})
    # What fits in a smaller level fits in the larger ones too: it runs at least as fast as there. (Small working sets
    # pay each call's overhead: machine D's L2 probe read 103 GB/s where its L3 probe read 160.)
    for smaller, larger in zip(reversed(out[:-1]), reversed(out[1:])):
        if larger["gbs"] > smaller["gbs"]:
            smaller.update({"gbs": larger["gbs"], "library": f"{larger['library']} ({larger['level']})"})
    return out


__all__ = [
    "NodeCost",
    "PROFILERS",
    "bandwidth_levels",
    "cache_capacities",
    "conv_cost",
    "graph_costs",
    "level_bandwidth",
    "module_path",
    "profile_layers",
    "roofline_floor_ms",
    "roofline_rows",
    "source_node",
    "stream_gbs",
]
