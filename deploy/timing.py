"""Timings that can be trusted on a shared machine, and the machine's compute floor.

* :func:`compare` times candidates interleaved: several blocks, each running every candidate
  once (in a rotating order), so a burst of load hits all of them alike; each candidate's figure
  is the median of its block medians.
* :class:`LoadProbe` times a short fixed kernel before and after each block; a block timed while
  the kernel ran well above its best time is retimed once and, if still slow, flagged busy.
* :func:`steady_allocator` pins glibc malloc's thresholds, without which eager PyTorch's speed
  depends on what the process freed earlier (measured: Slim-Net batch 1 at 10.0 or 6.9 ms).
* :func:`peak_gflops` measures fp32 GEMM throughput in every library at hand (ONNX Runtime's MLAS,
  torch, NumPy) and keeps the best; :func:`floor_ms` turns MACs into the time a model needs at
  that peak, the least any runtime can take.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters from glibc's malloc.h


def steady_allocator(threshold: int = 1 << 30) -> bool:
    """Pin glibc malloc's mmap and trim thresholds at ``threshold`` bytes (process-wide, idempotent).

    glibc serves large buffers by ``mmap`` below a threshold it moves as the process frees
    memory, so the same forward pass either reuses heap pages or pays page faults for every
    activation buffer, depending on the process's history: eager Slim-Net at batch 1 measured 10.0
    ms in one process and 6.9 ms in another, identical otherwise. Pinned thresholds keep large
    buffers on the heap. Returns False where there is no glibc (nothing to pin).
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


def time_calls(run: Callable[[Any], Any], x: Any, sync: Callable[[], None] = lambda: None, min_iters: int = 5,
               min_seconds: float = 0.2, warmup: int = 2) -> np.ndarray:
    """Return the wall time in ms of each call ``run(x)`` after ``warmup`` untimed calls, timed one by one
    until both ``min_iters`` calls and ``min_seconds`` have passed (``sync`` waits for a GPU)."""
    for _ in range(warmup):
        run(x)
    sync()
    times = []
    started = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - started < min_seconds:
        tick = time.perf_counter()
        run(x)
        sync()
        times.append(1000.0 * (time.perf_counter() - tick))
    return np.asarray(times)


class LoadProbe:
    """A short fixed kernel (a 512 x 512 fp32 matmul on ``threads`` torch threads, median of ``repeats``) whose
    time says whether the machine is busy: ``ratio()`` is its current time over the best time seen.

    It sees other processes competing for the cores (two busy loops per core: ratio > 2). It does
    not see everything: this machine also has phases, lasting seconds to minutes, in which
    cache-bound work (ONNX Runtime's Slim-Net: 1.17 -> 1.73 ms) runs 1.5x slower while this matmul
    and a scalar loop do not; candidate kernels that tracked those phases (a depthwise conv in
    torch, small conv stacks in ONNX Runtime) were too noisy on a quiet machine to serve.

    ``reference_ms``, a best time measured earlier (e.g. at the start of a study), carries the idle
    reference across processes and cells, so load lasting a whole cell is still seen.
    """

    def __init__(self, threads: int | None = None, size: int = 512, repeats: int = 5, calibration_rounds: int = 5,
                 reference_ms: float | None = None):
        self.threads = threads
        generator = torch.Generator().manual_seed(0)
        self._a = torch.randn(size, size, generator=generator)
        self._b = torch.randn(size, size, generator=generator)
        self._repeats = repeats
        self.best_ms = float(reference_ms) if reference_ms else float("inf")
        steady_allocator()
        for _ in range(calibration_rounds):
            self.ratio()

    def measure_ms(self) -> float:
        """Return the kernel's median time now, in ms (and lower the best time if this is better)."""
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            torch.mm(self._a, self._b)
            times = []
            for _ in range(self._repeats):
                tick = time.perf_counter()
                torch.mm(self._a, self._b)
                times.append(time.perf_counter() - tick)
        finally:
            torch.set_num_threads(previous)
        value = 1000.0 * float(np.median(times))
        self.best_ms = min(self.best_ms, value)
        return value

    def ratio(self) -> float:
        """Return the kernel's time now over its best time (1.0 on an idle machine)."""
        return self.measure_ms() / self.best_ms


@dataclass
class Timing:
    """One candidate's latency from :func:`compare`, in ms per call.

    ``median_ms`` is the median of the block medians; ``p10_ms``/``p90_ms``/``iqr_ms`` describe all
    timed calls; ``spread_pct`` is (max - min) / median of the block medians; ``load_ratio`` the
    worst probe ratio around the blocks; ``busy`` is set when a block stayed above the busy ratio
    after its retime; ``retimed`` counts retimed blocks (shared by all candidates of a comparison).
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    iterations: int
    block_medians: list[float] = field(default_factory=list)
    spread_pct: float = 0.0
    load_ratio: float = 1.0
    busy: bool = False
    retimed: int = 0


def compare(candidates: dict[str, tuple[Callable[[Any], Any], Any, Callable[[], None]]], blocks: int = 5,
            min_iters: int = 3, min_seconds: float = 0.1, warmup: int = 2, probe: LoadProbe | None = None,
            busy_ratio: float = 1.3) -> dict[str, Timing]:
    """Time ``candidates`` ({name: (run, input, sync)}) interleaved; return {name: :class:`Timing`}.

    Each of ``blocks`` blocks times every candidate once (``min_iters`` calls and ``min_seconds``
    at least), starting each block one candidate further, so no candidate always runs first or
    last. With a ``probe``, a block whose probe ratio before or after exceeds ``busy_ratio`` is
    retimed once; if the retime is also slow, its candidates are flagged ``busy``. Calls
    :func:`steady_allocator` first.

    Raises:
        ValueError: no candidates, or fewer than one block.
    """
    if not candidates or blocks < 1:
        raise ValueError(f"compare needs at least one candidate and one block, got {len(candidates)} and {blocks}")
    steady_allocator()
    names = list(candidates)
    for name in names:  # first calls build caches, compile graphs, allocate: never part of a block
        run, x, sync = candidates[name]
        time_calls(run, x, sync, min_iters=1, min_seconds=0.0, warmup=warmup)
    samples = {name: [] for name in names}
    medians = {name: [] for name in names}
    worst_load, busy, retimed = 1.0, False, 0
    for block in range(blocks):
        order = names[block % len(names):] + names[:block % len(names)]
        for attempt in range(2):
            before = probe.ratio() if probe else 1.0
            times = {name: time_calls(candidates[name][0], candidates[name][1], candidates[name][2], min_iters, min_seconds, warmup=0)
                     for name in order}
            load = max(before, probe.ratio()) if probe else 1.0
            if load <= busy_ratio or attempt == 1:
                break
            retimed += 1
        busy = busy or load > busy_ratio
        worst_load = max(worst_load, load)
        for name in names:
            samples[name].extend(times[name].tolist())
            medians[name].append(float(np.median(times[name])))
    result = {}
    for name in names:
        values, block_medians = np.asarray(samples[name]), np.asarray(medians[name])
        middle = float(np.median(block_medians))
        q10, q25, q75, q90 = np.percentile(values, [10, 25, 75, 90])
        result[name] = Timing(middle, float(q10), float(q90), float(q75 - q25), int(len(values)), block_medians.tolist(),
                              100.0 * float(block_medians.max() - block_medians.min()) / middle if middle > 0 else 0.0,
                              worst_load, busy, retimed)
    return result


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
    flops = 2.0 * size ** 3
    per_library = {}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        per_library["torch"] = flops / _best_seconds(lambda: torch.mm(a, b), repeats) / 1e9
        an, bn = a.numpy(), b.numpy()
        per_library["numpy"] = flops / _best_seconds(lambda: an @ bn, repeats) / 1e9
    finally:
        torch.set_num_threads(previous)
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
