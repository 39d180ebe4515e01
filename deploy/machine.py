"""What the machine offers and how a process is set up to measure it.

* :func:`cpu_isa` reads the vector instruction sets int8 speed depends on (AVX2, AVX-512, VNNI, AMX).
* :func:`peak_gflops` measures fp32 GEMM throughput in every library at hand (ONNX Runtime's MLAS,
  torch, NumPy) and keeps the best; :func:`floor_ms` turns MACs into the time a model needs at
  that peak, the least any runtime can take.
* :func:`steady_allocator` pins glibc malloc's thresholds, without which eager PyTorch's speed
  depends on what the process freed earlier; :func:`torch_threads` sets torch's thread count for a block of code.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import time
from typing import Any, Callable

import numpy as np
import torch


def cpu_isa() -> dict:
    """Return the vector instruction sets of this CPU that int8 and bf16 speed depend on: ``{'avx2', 'avx512', 'vnni',
    'amx', 'bf16'}`` (bools; ``bf16``: native bf16 arithmetic, AVX512_BF16 or AMX).

    Read from ``/proc/cpuinfo`` (Linux); elsewhere from torch's CPU capability, with VNNI and AMX unknown (False).
    """
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = set(next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), []))
    except OSError:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
        flags = {"avx2"} | ({"avx512f"} if "AVX512" in capability else set())
    return {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "amx": "amx_tile" in flags,
        "bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
    }


def isa_text(isa: dict | None = None) -> str:
    """Return the instruction sets of :func:`cpu_isa` as a table cell, e.g. ``AVX2``, ``AVX-512 VNNI``,
    ``AVX-512 VNNI BF16 AMX``."""
    isa = cpu_isa() if isa is None else isa
    parts = ["AVX-512" if isa["avx512"] else "AVX2" if isa["avx2"] else "SSE"]
    parts += [name for name, key in (("VNNI", "vnni"), ("BF16", "bf16"), ("AMX", "amx")) if isa.get(key)]
    return " ".join(parts)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters from glibc's malloc.h


def steady_allocator(threshold: int = 1 << 30) -> bool:
    """Pin glibc malloc's mmap and trim thresholds at ``threshold`` bytes (process-wide, idempotent).

    glibc serves large buffers by ``mmap`` below a threshold it moves as the process frees
    memory, so the same forward pass either reuses heap pages or pays page faults for every
    activation buffer, depending on the process's history. Pinned thresholds keep large buffers on
    the heap (``tests/test_deploy.py`` shows a freed 256 MB buffer staying with the process).
    Returns False where there is no glibc (nothing to pin).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold))) and bool(mallopt(_M_TRIM_THRESHOLD, int(threshold)))


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Context manager that sets ``torch.set_num_threads(threads)`` and restores the previous count (None: no change)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tick)
    return best


def _ort_matmul(size: int, threads: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    spec = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [size, size]) for name in "ABC"]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a, b = (np.random.default_rng(k).standard_normal((size, size), dtype=np.float32) for k in (0, 1))
    return lambda: session.run(None, {"A": a, "B": b})


def peak_gflops(threads: int | None = None, size: int = 2048, repeats: int = 5) -> dict:
    """Return this machine's fp32 peak as the best GEMM throughput any library here reaches.

    A ``size`` x ``size`` matmul (2 * size^3 flops) is timed ``repeats`` times in ONNX Runtime
    (MLAS), torch and NumPy on ``threads`` threads (default: torch's); the best time of the fastest
    library counts. Returns ``{'peak_gflops', 'peak_library', 'per_library': {library: GFLOP/s},
    'threads'}``. NumPy's BLAS thread count is its own (usually all cores).
    """
    threads = int(threads or torch.get_num_threads())
    flops = 2.0 * size**3
    per_library = {}
    with torch_threads(threads):
        a, b = torch.randn(size, size), torch.randn(size, size)
        per_library["torch"] = flops / _best_seconds(lambda: torch.mm(a, b), repeats) / 1e9
        an, bn = a.numpy(), b.numpy()
        per_library["numpy"] = flops / _best_seconds(lambda: an @ bn, repeats) / 1e9
    try:
        per_library["onnxruntime"] = flops / _best_seconds(_ort_matmul(size, threads), repeats) / 1e9
    except ImportError:
        pass
    library = max(per_library, key=per_library.get)
    return {"peak_gflops": per_library[library], "peak_library": library, "per_library": per_library, "threads": threads}


def floor_ms(macs: float, batch: int, peak: float) -> float:
    """Return the least time in ms one batch can take at ``peak`` GFLOP/s: 2 * MACs * batch / peak.

    Raises:
        ValueError: a peak that is not positive.
    """
    if not peak > 0:
        raise ValueError(f"the peak must be positive GFLOP/s, got {peak!r}")
    return 2.0 * float(macs) * int(batch) / (float(peak) * 1e9) * 1e3
