"""What a deployed model costs a process beyond its latency: peak memory and cold start, each from fresh processes.

A model in a runtime is first written as the file a deployer ships (:func:`save_artifact`: ONNX, OpenVINO IR,
TorchScript, or the cell's checkpoint for eager PyTorch); then each repeat starts a new interpreter that runs
``deploy/standalone.py`` on it, importing only that runtime: its high-water mark (``VmHWM``) after the import (the
baseline every model in that runtime pays), after loading (and compiling), and after a first and further inferences,
and the times of each step. A fresh process per repeat catches the peak that polling would miss; the runtime's memory
settings are recorded with the figures (:func:`memory_settings`), since they change them (ONNX Runtime's arena).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

STANDALONE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standalone.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".ts", "checkpoint": ".pt"}


class FootprintError(RuntimeError):
    """A fresh-process measurement failed (the message carries its exit code or signal and its last error line)."""


def save_artifact(
    deployed, folder: str, stem: str, checkpoint: str | None = None, loader: str | None = None
) -> tuple[str, str, dict]:
    """Write what ``deployed`` (a ``deploy.Deployed``) ships as a file in ``folder`` (named ``stem`` + the kind's suffix);
    return ``(kind, path, settings)`` for :func:`measure_footprint`. Eager PyTorch ships the model's checkpoint
    (``checkpoint``, not copied), rebuilt by ``loader`` (``module:function``, e.g. ``models:load_model``).

    Raises:
        ValueError: a runtime without a deployable file, or eager PyTorch without its checkpoint and loader.
    """
    kind, payload = deployed.artifact
    if kind == "checkpoint":
        if not checkpoint or not loader:
            raise ValueError(f"{deployed.runtime} ships the model's checkpoint: pass it and the function that loads it")
        return kind, checkpoint, {**payload, "repo": REPO, "loader": loader}
    if kind not in SUFFIXES:
        raise ValueError(f"{deployed.runtime} has no deployable file")
    path = os.path.join(folder, stem + SUFFIXES[kind])
    if kind == "onnx":
        with open(path, "wb") as handle:
            handle.write(payload)
    elif kind == "openvino":
        import openvino as ov

        ov.save_model(payload, path, compress_to_fp16=False)
    else:
        import torch

        torch.jit.save(payload, path)
    return kind, path, {}


def memory_settings(kind: str, settings: dict) -> str:
    """Return the runtime memory settings a footprint was measured with, in words (a figure is meaningless without them)."""
    if kind == "onnx":
        arena = "on" if settings.get("arena", True) else "off"
        pattern = "on" if settings.get("memory_pattern", True) else "off"
        return f"ONNX Runtime CPU arena {arena}, memory pattern {pattern}"
    if kind == "openvino":
        return "OpenVINO CPU plugin defaults (latency hint)"
    return "torch's CPU allocator (glibc malloc defaults)"


def run_standalone(mode: str, job: dict, timeout: float = 300.0) -> dict:
    """Run ``deploy/standalone.py mode`` on ``job`` in a new interpreter; return its JSON result.

    Raises:
        FootprintError: the process failed, was killed or timed out (exit code or signal and its last error line named).
    """
    with tempfile.TemporaryDirectory(prefix="slimbench-standalone-") as work:
        path = os.path.join(work, "job.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(job, handle)
        try:
            done = subprocess.run([sys.executable, STANDALONE, mode, path], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FootprintError(f"{mode} of {job['path']} took over {timeout:.0f} s") from None
    if done.returncode != 0:
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        raise FootprintError(f"{mode} of {job['path']} failed ({how}): {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_footprint(
    kind: str, path: str, input_shape, threads: int, settings: dict | None = None, runs: int = 5, repeats: int = 3
) -> dict:
    """Return the footprint of one model file at one batch size over ``repeats`` fresh processes: for each figure its
    median, and ``*_spread`` (largest minus smallest): ``import_mb`` (peak after importing the runtime), ``peak_mb``
    (after loading and ``runs`` + 1 inferences), ``model_mb`` (peak - import: what the model and its buffers add),
    ``load_ms`` (reading and compiling), ``compile_ms`` (the compiling part, OpenVINO), ``first_ms`` (the first
    inference), ``cold_ms`` (load + first), ``steady_ms``; and ``memory_settings``, ``repeats``, ``torch_imported``.

    Raises:
        FootprintError: a repeat failed.
    """
    settings = dict(settings or {})
    job = {"kind": kind, "path": path, "threads": int(threads), "settings": settings, "input_shape": list(input_shape)}
    results = [run_standalone("footprint", {**job, "runs": runs}) for _ in range(repeats)]
    for result in results:
        result["model_mb"] = result["peak_mb"] - result["import_mb"]
        result["cold_ms"] = result["load_ms"] + result["first_ms"]
    summary = {"memory_settings": memory_settings(kind, settings), "repeats": repeats}
    summary["torch_imported"] = any(r["torch_imported"] for r in results)
    for name in ("import_mb", "peak_mb", "model_mb", "load_ms", "compile_ms", "first_ms", "cold_ms", "steady_ms"):
        values = np.array([r[name] for r in results if r[name] is not None], dtype=float)
        summary[name] = float(np.median(values)) if len(values) else None
        summary[f"{name}_spread"] = float(values.max() - values.min()) if len(values) else None
    return summary


__all__ = ["FootprintError", "measure_footprint", "memory_settings", "run_standalone", "save_artifact"]
