"""Run a deployable model file with nothing but its runtime: what a deployer's process does, measured from its start.

Run by path, never imported as part of the ``deploy`` package (which imports torch):

    python deploy/standalone.py footprint JOB.json   # peak memory and cold start of one model, runtime and batch size
    python deploy/standalone.py accuracy JOB.json    # logits of the model on a saved batch of inputs, and its accuracy

It imports NumPy and the one runtime the file needs (ONNX Runtime for ``.onnx``, OpenVINO for ``.xml``, torch for
TorchScript ``.ts`` and for a slimbench checkpoint ``.pt``), so what it measures is what a process serving the file
pays. ``run_bench.py export`` copies it next to the files it writes. The job is a JSON object:

- ``kind``: ``onnx``, ``openvino``, ``torchscript`` or ``checkpoint``; ``path``: the model file; ``threads``;
- ``settings``: the runtime's memory settings (ONNX Runtime: ``arena``, ``memory_pattern``; a checkpoint:
  ``channels_last``, ``loader`` (``module:function`` that rebuilds the model from the file) and ``repo``, the folder
  that module is imported from);
- footprint: ``input_shape`` (batch first) and ``runs``; accuracy: ``inputs`` and ``labels`` (``.npy`` files: float32
  NCHW inputs, 0/1 labels) and ``batch``.

It prints one JSON line: footprint ``{import_mb, load_mb, peak_mb, import_ms, load_ms, compile_ms, first_ms,
steady_ms}``; accuracy ``{acc_mean, logits}`` (logits saved to ``logits`` when the job names a file).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import numpy as np


def high_water_mb() -> float:
    """Return this process's peak resident memory so far in MiB (``VmHWM``; ``ru_maxrss`` where /proc is absent)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _import(kind: str):
    if kind == "onnx":
        import onnxruntime

        return onnxruntime
    if kind == "openvino":
        import openvino

        return openvino
    import torch

    return torch


def _load_onnx(ort, path: str, threads: int, settings: dict, shape) -> tuple:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = bool(settings.get("arena", True))
    options.enable_mem_pattern = bool(settings.get("memory_pattern", True))
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda x: session.run(None, {name: x})[0]), 0.0


def _load_openvino(ov, path: str, threads: int, settings: dict, shape) -> tuple:
    core = ov.Core()
    model = core.read_model(path)
    model.reshape({model.inputs[0]: list(shape)})  # static shapes: what the study timed
    tick = time.perf_counter()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    compile_ms = 1000.0 * (time.perf_counter() - tick)

    def run(x):
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()

    return run, compile_ms


def _load_torch(torch, path: str, threads: int, settings: dict, shape) -> tuple:
    torch.set_num_threads(threads)
    if path.endswith(".ts"):
        module = torch.jit.load(path).eval()
        layout = torch.contiguous_format
    else:  # a checkpoint is rebuilt by the function that wrote it: its code, not its file, knows the architecture
        module = getattr(_loader_module(settings), settings["loader"].split(":")[1])(path).eval()
        layout = torch.channels_last if settings.get("channels_last") else torch.contiguous_format
        module = module.to(memory_format=layout)

    def run(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x).contiguous(memory_format=layout)).numpy()

    return run, 0.0


def _loader_module(settings: dict):
    """Return the module of a checkpoint's ``loader`` (``module:function``), imported from the project's ``repo``."""
    import importlib

    if settings["repo"] not in sys.path:
        sys.path.insert(0, settings["repo"])
    return importlib.import_module(settings["loader"].split(":")[0])


LOADERS = {"onnx": _load_onnx, "openvino": _load_openvino, "torchscript": _load_torch, "checkpoint": _load_torch}


def footprint(job: dict) -> dict:
    """Return the peak memory and cold start of one model file in its runtime, measured from this fresh process."""
    started_mb = high_water_mb()
    tick = time.perf_counter()
    runtime = _import(job["kind"])
    if job["kind"] == "checkpoint":  # the code that rebuilds a checkpoint (models, timm) is part of its runtime's import
        _loader_module(job["settings"])
    import_ms, import_mb = 1000.0 * (time.perf_counter() - tick), high_water_mb()
    tick = time.perf_counter()
    run, compile_ms = LOADERS[job["kind"]](runtime, job["path"], int(job["threads"]), job["settings"], job["input_shape"])
    load_ms, load_mb = 1000.0 * (time.perf_counter() - tick), high_water_mb()
    x = np.random.default_rng(0).standard_normal(job["input_shape"]).astype(np.float32)
    tick = time.perf_counter()
    run(x)
    first_ms = 1000.0 * (time.perf_counter() - tick)
    times = []
    for _ in range(int(job["runs"])):
        tick = time.perf_counter()
        run(x)
        times.append(1000.0 * (time.perf_counter() - tick))
    return {
        "start_mb": started_mb,
        "import_mb": import_mb,
        "load_mb": load_mb,
        "peak_mb": high_water_mb(),
        "import_ms": import_ms,
        "load_ms": load_ms,
        "compile_ms": compile_ms,
        "first_ms": first_ms,
        "steady_ms": float(np.median(times)) if times else None,
    }


def accuracy(job: dict) -> dict:
    """Return the model file's mean per-attribute accuracy (percent; logit > 0 is a positive) on saved inputs and labels."""
    inputs, labels = np.load(job["inputs"], mmap_mode="r"), np.load(job["labels"])
    runtime = _import(job["kind"])
    batch = int(job["batch"])
    run, _ = LOADERS[job["kind"]](runtime, job["path"], int(job["threads"]), job["settings"], (batch, *inputs.shape[1:]))
    logits = []
    for start in range(0, len(inputs), batch):
        chunk = np.ascontiguousarray(inputs[start : start + batch], dtype=np.float32)
        if len(chunk) < batch:  # a static-shape model: pad the last batch, keep its real rows
            padded = np.zeros((batch, *chunk.shape[1:]), np.float32)
            padded[: len(chunk)] = chunk
            logits.append(np.asarray(run(padded))[: len(chunk)])
        else:
            logits.append(np.asarray(run(chunk)))
    logits = np.concatenate(logits)
    if job.get("logits"):
        np.save(job["logits"], logits)
    return {"acc_mean": float(100.0 * ((logits > 0) == (labels > 0.5)).mean()), "images": int(len(labels))}


def main(argv: list[str]) -> int:
    """Run ``footprint`` or ``accuracy`` on the job file ``argv[1]`` and print its result as one JSON line; exit 2 on
    bad arguments."""
    if len(argv) != 2 or argv[0] not in ("footprint", "accuracy"):
        print("usage: python standalone.py footprint|accuracy JOB.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        job = json.load(handle)
    result = footprint(job) if argv[0] == "footprint" else accuracy(job)
    print(json.dumps({**result, "torch_imported": "torch" in sys.modules, "pid": os.getpid()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
