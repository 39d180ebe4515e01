"""Compression to a latency target: timings of a compressed model (or one layer's replacement) against the original in
a runtime of the ``deploy`` registry, and the search for the least compression that reaches a target there."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from torch import nn

import deploy
from compress.options import FASTEST, UNREACHABLE_CHOICES

_logger = logging.getLogger(__name__)


def fastest_runtime(model: nn.Module, example: torch.Tensor, batch: int = 1, blocks: int = 3) -> str:
    """Return the exact (fp32) runtime of the registry that runs ``model`` fastest here at ``batch`` (all of them timed
    interleaved on one random batch; runtimes whose packages are missing are left out).

    Raises:
        RuntimeError: no exact runtime can be built here.
    """
    x = np.random.default_rng(0).standard_normal((batch, *example.shape[1:])).astype(np.float32)
    exact = [name for name, entry in deploy.RUNTIMES.items() if entry.exact]
    built, _ = deploy.deploy_all(model, exact, x[:1])
    if not built:
        raise RuntimeError(f"no fp32 runtime of {exact} can be built here")
    timings = deploy.compare({name: d.timed(x) for name, d in built.items()}, blocks, min_iters=10, min_seconds=0.1)
    return min(timings, key=lambda name: timings[name].median_ms)


def resolve_runtime(runtime: str, model: nn.Module, example: torch.Tensor, batch: int = 1) -> str:
    """Return ``runtime``, or for :data:`FASTEST` the original model's fastest fp32 runtime (:func:`fastest_runtime`)."""
    return fastest_runtime(model, example, batch) if runtime == FASTEST else runtime


def measured_speedup(
    original: nn.Module, compressed: nn.Module, runtime: str, example: torch.Tensor, batch: int = 1, blocks: int = 5
) -> float:
    """Return latency(original) / latency(compressed) in ``runtime``, both built from the registry and timed
    interleaved on one random batch of ``batch`` at ``example``'s size.

    Raises:
        deploy.RuntimeUnavailable / deploy.RuntimeParityError: as :func:`deploy.deploy`.
    """
    x = np.random.default_rng(0).standard_normal((batch, *example.shape[1:])).astype(np.float32)
    built = {"original": deploy.deploy(original, runtime, x[:1]), "compressed": deploy.deploy(compressed, runtime, x[:1])}
    timings = deploy.compare({k: d.timed(x) for k, d in built.items()}, blocks, min_iters=10, min_seconds=0.15)
    return timings["original"].median_ms / timings["compressed"].median_ms


def search_for_latency(
    build: Callable[[float], nn.Module],
    original: nn.Module,
    runtime: str,
    example: torch.Tensor,
    target_latency: float,
    low: float,
    high: float,
    batch: int = 1,
    points: int = 8,
    if_unreachable: str = "error",
) -> tuple[float, nn.Module, float, str, bool]:
    """Return ``(knob, compressed model, measured speed-up, runtime, reached)``: the least compressed model keeping at
    most ``target_latency`` of the original's latency in ``runtime`` (:data:`FASTEST`: the original's fastest fp32
    runtime, named in the result), among ``points`` knobs spread evenly over [``low``, ``high``] (more compression as the
    knob falls). When no knob reaches the target, ``if_unreachable='fastest'`` returns the knob measured fastest with
    ``reached`` False, and ``'error'`` raises.

    A grid, not a bisection: measured speed-up is not monotonic in the knob (channel counts cross the
    multiples a runtime's kernels prefer, so keeping fewer channels can run slower), and a bisection
    misled by one such step or by timing noise ends on a different branch. The chosen knob is measured a second time
    and kept only if it still meets the target; otherwise the next knob down is tried.

    Raises:
        ValueError: no knob reaches the target and ``if_unreachable`` is ``'error'`` (the best measured speed-up is
            named), or ``if_unreachable`` is not one of :data:`compress.options.UNREACHABLE_CHOICES`.
    """
    if if_unreachable not in UNREACHABLE_CHOICES:
        raise ValueError(f"if_unreachable: expected one of {UNREACHABLE_CHOICES}, got {if_unreachable!r}")
    needed = 1.0 / target_latency
    runtime = resolve_runtime(runtime, original, example, batch)
    knobs = sorted(np.linspace(low, high, points), reverse=True)
    measured = {}
    for knob in knobs:
        model = build(float(knob))
        measured[float(knob)] = (model, measured_speedup(original, model, runtime, example, batch))
        _logger.info("latency target: knob %.4f -> %.2fx in %s", knob, measured[float(knob)][1], runtime)
    for knob in sorted(measured, reverse=True):
        model, speedup = measured[knob]
        if speedup >= needed:
            confirmed = measured_speedup(original, model, runtime, example, batch)
            if confirmed >= needed:
                return knob, model, min(speedup, confirmed), runtime, True
    fastest = max(measured, key=lambda knob: measured[knob][1])
    if if_unreachable == "fastest":
        _logger.warning(
            "target_latency %g in %s out of reach: keeping the level measured fastest (knob %.4f, %.2fx; %.2fx needed)",
            target_latency,
            runtime,
            fastest,
            measured[fastest][1],
            needed,
        )
        return fastest, measured[fastest][0], measured[fastest][1], runtime, False
    raise ValueError(
        f"target_latency={target_latency:g} in {runtime} is out of reach: the best of {points} compression levels "
        f"measured {measured[fastest][1]:.2f}x faster than the original, {needed:.2f}x is needed "
        f"(if_unreachable=fastest keeps that level instead)"
    )


def missed_target(target_latency: float, where: str, speedup: float, level: str) -> str:
    """Return the summary's warning for a latency target not reached: ``level`` (e.g. ``'pruning ratio 0.900'``) was
    kept, measured ``speedup`` times faster than the original in ``where`` (a runtime's description)."""
    return (
        f"target_latency {target_latency:g} in {where} not reached: kept the level measured fastest ({level}, "
        f"{speedup:.2f}x faster than the original, {1.0 / target_latency:.2f}x needed)"
    )


def slower_in_runtime(
    layer: nn.Module, replacement: nn.Module, input_shape, runtime: str, blocks: int = 3
) -> tuple[bool, float, float]:
    """Return ``(slower, layer ms, replacement ms)``: ``layer`` and its ``replacement`` each built alone in
    ``runtime`` and timed interleaved at batch 1 on ``input_shape``."""
    x = np.random.default_rng(0).standard_normal((1, *input_shape[1:])).astype(np.float32)
    built = {"layer": deploy.deploy(layer, runtime, x), "replacement": deploy.deploy(replacement, runtime, x)}
    timings = deploy.compare({k: d.timed(x) for k, d in built.items()}, blocks, min_iters=10, min_seconds=0.05)
    before, after = timings["layer"].median_ms, timings["replacement"].median_ms
    return after > before, before, after
