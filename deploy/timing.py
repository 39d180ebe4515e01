"""Timings that can be trusted on a shared machine.

* :func:`compare` times candidates interleaved: several blocks, each running every candidate
  once (in a rotating order), so a burst of load hits all of them alike; each candidate's figure
  is the mean of its block medians (each block's median call), so that the ratio of two figures from the same blocks
  is a weighted mean of their per-block ratios: a machine phase that slows both models of a block cancels in it,
  where a ratio of two medians over blocks let it through whenever the two medians fell in different blocks.
* :class:`LoadProbe` times a short fixed kernel before and after each block; a block timed while
  the kernel ran well above its best time is retimed once and, if still slow, flagged busy.
* :func:`bootstrap_mean` and :func:`bootstrap_ratio` give a figure's and a ratio's 95 % interval over blocks.

What the machine itself offers (its peak, the compute floor, thread and allocator pins) is ``deploy.machine``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from deploy.machine import steady_allocator, torch_threads


def _median_call_ms(call: Callable[[], Any], repeats: int) -> float:
    """Return the median wall time in ms of ``repeats`` calls, after the probe's settling pause."""
    time.sleep(PROBE_SETTLE_SECONDS)
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        call()
        times.append(time.perf_counter() - tick)
    return 1000.0 * float(np.median(times))


def time_calls(
    run: Callable[[Any], Any],
    x: Any,
    sync: Callable[[], None] = lambda: None,
    min_iters: int = 5,
    min_seconds: float = 0.2,
    warmup: int = 2,
) -> np.ndarray:
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


# ONNX Runtime's and OpenVINO's worker threads spin for a while after each call; a probe timed while they
# spin measures them, not the machine (the README's "Measured figures" gives the numbers). The probes wait this long first.
PROBE_SETTLE_SECONDS = 0.02


class LoadProbe:
    """A short fixed kernel (a 512 x 512 fp32 matmul on ``threads`` torch threads, median of ``repeats``) whose
    time says whether the machine is busy: ``ratio()`` is its current time over the best time seen.

    It sees other processes competing for the cores. It does not see phases in which cache- and
    memory-bound work slows while compute-bound work does not: :class:`MemoryProbe` is for those.
    ``reference_ms``, a best time measured earlier, carries the idle reference across processes.
    """

    name = "gemm"

    def __init__(
        self,
        threads: int | None = None,
        size: int = 512,
        repeats: int = 5,
        calibration_rounds: int = 5,
        reference_ms: float | None = None,
    ):
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
        with torch_threads(self.threads):
            torch.mm(self._a, self._b)
            value = _median_call_ms(lambda: torch.mm(self._a, self._b), self._repeats)
        self.best_ms = min(self.best_ms, value)
        return value

    def ratio(self) -> float:
        """Return the kernel's time now over its best time (1.0 on an idle machine)."""
        return self.measure_ms() / self.best_ms


class MemoryProbe:
    """A memory-bound probe: a small depthwise-separable graph (the kind of work Slim-Net and MobileNets do)
    called through ``run`` (a callable on ``x``, e.g. the graph deployed in the runtime being timed);
    ``ratio()`` is its median time over ``calls`` calls now, over the best such median seen.

    Depthwise convolutions move many bytes per multiply, so this probe slows in the phases in which
    cache-bound work slows and a GEMM does not.
    """

    name = "memory"

    # 31 calls, not 9: a call takes about 0.35 ms, and the median of 9 varied by 15 % between back-to-back reads in
    # ONNX Runtime on an idle machine (thread wake-ups), so the best of them sat 1.17x under a typical read and blocks
    # were retimed and flagged busy at the 1.3x threshold with nothing slowing them; with 31 the reads sit within
    # 1.05x of the best (machine C, /tmp script timing the probe between 0.6 s blocks of Slim-Net).
    def __init__(self, run: Callable[[Any], Any], x: Any, calls: int = 31, calibration_rounds: int = 5):
        self._run, self._x, self._calls = run, x, calls
        self.best_ms = float("inf")
        for _ in range(2):
            run(x)
        for _ in range(calibration_rounds):
            self.ratio()

    def measure_ms(self) -> float:
        """Return the graph's median time now, in ms (and lower the best time if this is better)."""
        value = _median_call_ms(lambda: self._run(self._x), self._calls)
        self.best_ms = min(self.best_ms, value)
        return value

    def ratio(self) -> float:
        """Return the graph's time now over its best time (1.0 outside a slow phase)."""
        return self.measure_ms() / self.best_ms


def memory_probe_module() -> "torch.nn.Module":
    """Return the graph :class:`MemoryProbe` runs, for a (1, 32, 56, 56) input: two depthwise-separable blocks."""
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(32, 32, 3, padding=1, groups=32),
        nn.Conv2d(32, 64, 1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, groups=64),
        nn.Conv2d(64, 32, 1),
        nn.ReLU(),
    ).eval()


@dataclass
class Timing:
    """One candidate's latency from interleaved blocks, in ms per call.

    ``median_ms`` is the mean over blocks of each block's median call (blocks flagged busy left out while enough
    others remain; see the module's docstring for why the mean); ``p10_ms``/``p90_ms``/``iqr_ms`` describe all
    timed calls; ``spread_pct`` is (max - min) of the block medians over ``median_ms``; ``load_ratio`` the worst
    probe ratio around the blocks; ``busy`` is set when a block stayed above the busy ratio after its retime;
    ``retimed`` counts retimed blocks (shared by all candidates of a comparison).
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


INTERLEAVE_MODES = ("blocks", "calls", "bursts")
# Timed calls of one turn in 'bursts' interleaving, after one untimed call that brings the candidate's weights back into
# the caches the other candidates' calls evicted.
BURST_CALLS = 4


class Interleaved:
    """Interleaved timing of fixed candidates ({name: (run, input, sync)}), one block at a time.

    Each block times every candidate (``min_iters`` calls and ``min_seconds`` at least), starting one
    candidate further than the block before, so no candidate always runs first or last. With
    ``interleave='blocks'`` a candidate's calls of a block run back to back; with ``'calls'`` the
    candidates take turns call by call (A B C A B C ...), each as many calls as its ``min_seconds``
    needs at its last block's pace, so every candidate sees the same moments of the machine, but each
    call starts with caches the other candidates filled; with ``'bursts'`` they take turns of
    ``BURST_CALLS`` timed calls, each turn after one untimed call that warms the caches again. The
    probes (:class:`LoadProbe`, :class:`MemoryProbe`) are read before and after each block: a block
    whose worst ratio exceeds ``busy_ratio`` is retimed once and, if still slow, flagged busy. Blocks
    can be added until the figures are as sure as needed (:meth:`add_block`).

    Raises:
        ValueError: no candidates, or an unknown ``interleave``.
    """

    def __init__(
        self,
        candidates: dict[str, tuple[Callable[[Any], Any], Any, Callable[[], None]]],
        min_iters: int = 3,
        min_seconds: float = 0.1,
        warmup: int = 2,
        probes: tuple = (),
        busy_ratio: float = 1.3,
        interleave: str = "blocks",
    ):
        if not candidates:
            raise ValueError("interleaved timing needs at least one candidate")
        if interleave not in INTERLEAVE_MODES:
            raise ValueError(f"interleave: expected one of {INTERLEAVE_MODES}, got {interleave!r}")
        self.interleave = interleave
        steady_allocator()
        self.candidates, self.names = candidates, list(candidates)
        self.min_iters, self.min_seconds, self.probes, self.busy_ratio = min_iters, min_seconds, tuple(probes), busy_ratio
        self.pace_ms = {}  # each candidate's last median: how many calls make its min_seconds in a call-level block
        for name in self.names:  # first calls build caches, compile graphs, allocate: never part of a block
            run, x, sync = candidates[name]
            self.pace_ms[name] = float(np.median(time_calls(run, x, sync, min_iters=1, min_seconds=0.0, warmup=warmup)))
        self.samples = {name: [] for name in self.names}
        self.block_medians = {name: [] for name in self.names}
        self.block_busy: list[bool] = []
        self.block_load: list[dict[str, float]] = []
        self.retimed = 0

    def _load(self) -> dict[str, float]:
        return {probe.name: probe.ratio() for probe in self.probes}

    def add_block(self) -> None:
        """Time one more block of every candidate (retimed once when a probe says the machine was slow)."""
        shift = len(self.block_busy) % len(self.names)
        order = self.names[shift:] + self.names[:shift]
        for attempt in range(2):
            before = self._load()
            if self.interleave == "blocks":
                times = self._calls_back_to_back(order)
            else:
                times = self._calls_in_turn(order, 1 if self.interleave == "calls" else BURST_CALLS)
            after = self._load()
            load = {k: max(before[k], after[k]) for k in before}
            slow = any(v > self.busy_ratio for v in load.values())
            if not slow or attempt == 1:
                break
            self.retimed += 1
        self.block_busy.append(slow)
        self.block_load.append(load)
        for name in self.names:
            self.samples[name].extend(times[name].tolist())
            self.block_medians[name].append(float(np.median(times[name])))
            self.pace_ms[name] = self.block_medians[name][-1]

    def _calls_back_to_back(self, order: list[str]) -> dict[str, np.ndarray]:
        return {
            name: time_calls(*self.candidates[name], min_iters=self.min_iters, min_seconds=self.min_seconds, warmup=0)
            for name in order
        }

    def _calls_in_turn(self, order: list[str], burst: int) -> dict[str, np.ndarray]:
        wanted = {
            name: max(self.min_iters, int(np.ceil(1000.0 * self.min_seconds / max(self.pace_ms[name], 1e-3)))) for name in order
        }
        times: dict[str, list] = {name: [] for name in order}
        while any(len(times[name]) < wanted[name] for name in order):
            for name in order:
                if len(times[name]) < wanted[name]:  # a burst's untimed first call warms the caches again
                    warm = 1 if burst > 1 else 0
                    times[name].extend(time_calls(*self.candidates[name], min_iters=burst, min_seconds=0.0, warmup=warm))
        return {name: np.asarray(values) for name, values in times.items()}

    def kept_blocks(self) -> list[int]:
        """Return the indices of the blocks the figures use: the quiet ones, or every block when fewer than half are quiet."""
        quiet = [i for i, busy in enumerate(self.block_busy) if not busy]
        return quiet if len(quiet) * 2 >= len(self.block_busy) else list(range(len(self.block_busy)))

    def timings(self) -> dict[str, Timing]:
        """Return {name: :class:`Timing`} from the blocks so far."""
        kept = self.kept_blocks()
        worst = max((max(load.values(), default=1.0) for load in self.block_load), default=1.0)
        result = {}
        for name in self.names:
            values, medians = np.asarray(self.samples[name]), np.asarray(self.block_medians[name])[kept]
            middle = float(np.mean(medians))
            q10, q25, q75, q90 = np.percentile(values, [10, 25, 75, 90])
            result[name] = Timing(
                middle,
                float(q10),
                float(q90),
                float(q75 - q25),
                int(len(values)),
                medians.tolist(),
                100.0 * float(medians.max() - medians.min()) / middle if middle > 0 else 0.0,
                worst,
                any(self.block_busy[i] for i in kept),
                self.retimed,
            )
        return result


def compare(
    candidates: dict[str, tuple[Callable[[Any], Any], Any, Callable[[], None]]],
    blocks: int = 5,
    min_iters: int = 3,
    min_seconds: float = 0.1,
    warmup: int = 2,
    probe=None,
    busy_ratio: float = 1.3,
) -> dict[str, Timing]:
    """Time ``candidates`` ({name: (run, input, sync)}) in ``blocks`` interleaved blocks; return {name: :class:`Timing`}
    (see :class:`Interleaved`; ``probe`` is one probe, or a tuple of them, or None).

    Raises:
        ValueError: no candidates, or fewer than one block.
    """
    if not candidates or blocks < 1:
        raise ValueError(f"compare needs at least one candidate and one block, got {len(candidates)} and {blocks}")
    probes = probe if isinstance(probe, tuple) else ((probe,) if probe is not None else ())
    timer = Interleaved(candidates, min_iters, min_seconds, warmup, probes, busy_ratio)
    for _ in range(blocks):
        timer.add_block()
    return timer.timings()


def bootstrap_mean(block_medians, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Return the 95 % bootstrap interval (2.5th, 97.5th percentiles) of the mean of ``block_medians`` (a
    :class:`Timing`'s ``median_ms``), resampling whole blocks."""
    values = np.asarray(block_medians, dtype=float)
    index = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    means = np.mean(values[index], axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def bootstrap_ratio(
    numerator, denominator, resamples: int = 1000, seed: int = 0, paired: bool = True
) -> tuple[float, float, float]:
    """Return ``(ratio, low, high)``: mean(numerator) / mean(denominator) of block medians (the quotient of the two
    :class:`Timing` figures), with its 95 % bootstrap interval from resampling whole blocks: paired (the default: both
    timed in the same blocks, a block's two medians stay together, so what a block's machine phase does to both
    cancels) or, for figures from different comparisons, each resampled on its own.

    Raises:
        ValueError: paired sequences that differ in length (they were not timed in the same blocks), or an empty one.
    """
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if (paired and len(a) != len(b)) or not len(a) or not len(b):
        raise ValueError(f"a ratio needs block medians from the same blocks, got {len(a)} and {len(b)}")
    generator = np.random.default_rng(seed)
    index_a = generator.integers(0, len(a), (resamples, len(a)))
    index_b = index_a if paired else generator.integers(0, len(b), (resamples, len(b)))
    ratios = np.mean(a[index_a], axis=1) / np.mean(b[index_b], axis=1)
    return float(np.mean(a) / np.mean(b)), float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))
