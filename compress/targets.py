"""Compression to a target instead of a ratio: "a third of the parameters", "half the latency".

* :func:`global_ranks` picks per-layer ranks for a factorization under a MAC or parameter budget
  for the whole model: every layer starts whole and the budget is met by the moves (one step
  down a layer's rank ladder) that add the least squared relative weight error per unit of cost
  saved, so layers whose spectrum decays fast give up most.
* :func:`measured_speedup` times a compressed model against its original in a runtime of the
  ``deploy`` registry, interleaved; :func:`search_for_latency` searches a one-number knob (a MAC
  budget, a pruning ratio) for the least compression that reaches a latency target there.
* :func:`slower_in_runtime` says whether a layer's replacement runs slower than the layer itself
  in a runtime (each timed alone on its real input), so it can be left whole.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from torch import nn

import deploy
from compress.factorizations import Factorization, count_params, replacement_cost
from compress.layers import layer_macs

_logger = logging.getLogger(__name__)

LEVELS = tuple(np.round(np.arange(1, 33) / 32, 5))  # rank ratios each layer's ladder steps through


def rank_ladders(how: Factorization, candidates: list[tuple[str, nn.Module, tuple, tuple]], cost: str = "macs") -> dict:
    """Return ``{layer: {'own': its cost, 'rungs': [(rank, cost, squared error), ...]}}``, rungs by falling cost.

    ``how`` is the factorization's row; ``candidates`` are ``(name, module, input_shape, output_shape)``
    of the layers it may factorize; ``cost`` is 'macs' or 'params'. A layer's rungs are the ranks
    ``rank_ratio`` in :data:`LEVELS` gives, kept only where the replacement costs less than the
    layer; each rung's error is the row's ``error_bound``.
    """
    index = 1 if cost == "macs" else 0
    ladders = {}
    for name, module, input_shape, output_shape in candidates:
        own = layer_macs(module, output_shape) if cost == "macs" else count_params(module)
        error = how.error_bound(module)
        rungs, seen = [], set()
        for level in sorted(LEVELS, reverse=True):
            rank = how.select_rank(module, {"rank_selection": "ratio", "rank_ratio": float(level)})
            key = tuple(rank) if isinstance(rank, (list, tuple)) else int(rank)
            if key in seen:
                continue
            seen.add(key)
            spent = replacement_cost(how, module, rank, input_shape)[index]
            if spent < own:
                rungs.append((rank, spent, error(rank) ** 2))
        if rungs:
            ladders[name] = {"own": own, "rungs": rungs}
    return ladders


def least_budget(ladders: dict, total_cost: float) -> float:
    """Return the smallest fraction of ``total_cost`` the ladders reach, every layer at its lowest rung."""
    return (total_cost - sum(ladder["own"] - ladder["rungs"][-1][1] for ladder in ladders.values())) / total_cost


def global_ranks(how: Factorization, name: str, candidates: list[tuple[str, nn.Module, tuple, tuple]], total_cost: int, budget: float,
                 cost: str = "macs") -> dict:
    """Return ``{layer: rank}`` meeting ``budget`` (a fraction of ``total_cost``) with the least added error.

    ``how``, ``candidates`` and ``cost`` are as for :func:`rank_ladders` (``name`` is the method's, for
    messages); ``total_cost`` is the model's MACs
    (conv and linear layers) or parameters. Greedy: starting from every layer whole, the step
    down a ladder that adds the least squared relative error per unit of cost saved goes first.

    Raises:
        ValueError: the budget cannot be met even with every ladder at its lowest rung (the
            message gives the least reachable fraction).
    """
    ladders = rank_ladders(how, candidates, cost)
    if budget * total_cost < least_budget(ladders, total_cost) * total_cost - 1e-9:
        raise ValueError(f"{name}: a {cost} budget of {budget:g} cannot be reached by factorizing the selected layers; "
                         f"the least reachable is {least_budget(ladders, total_cost):.3f} of the model's {cost}")
    at = {name: -1 for name in ladders}
    current_cost, target, chosen = float(total_cost), budget * total_cost, {}

    def step(name):
        ladder, position = ladders[name], at[name]
        before_cost = ladder["own"] if position < 0 else ladder["rungs"][position][1]
        before_error = 0.0 if position < 0 else ladder["rungs"][position][2]
        rank, after_cost, after_error = ladder["rungs"][position + 1]
        return rank, before_cost - after_cost, after_error - before_error

    while current_cost > target:
        movable = [name for name in ladders if at[name] + 1 < len(ladders[name]["rungs"])]
        best = min(movable, key=lambda name: step(name)[2] / max(step(name)[1], 1e-30))
        rank, saved, _ = step(best)
        at[best] += 1
        current_cost -= saved
        chosen[best] = rank
    return chosen


def measured_speedup(original: nn.Module, compressed: nn.Module, runtime: str, example: torch.Tensor, batch: int = 1,
                     blocks: int = 5) -> float:
    """Return latency(original) / latency(compressed) in ``runtime``, both built from the registry and timed
    interleaved on one random batch of ``batch`` at ``example``'s size.

    Raises:
        deploy.RuntimeUnavailable / deploy.RuntimeParityError: as :func:`deploy.deploy`.
    """
    x = np.random.default_rng(0).standard_normal((batch, *example.shape[1:])).astype(np.float32)
    built = {"original": deploy.deploy(original, runtime, x[:1]), "compressed": deploy.deploy(compressed, runtime, x[:1])}
    timings = deploy.compare({k: (d.run, d.prepare(x), d.sync) for k, d in built.items()}, blocks, min_iters=10, min_seconds=0.15)
    return timings["original"].median_ms / timings["compressed"].median_ms


def search_for_latency(build: Callable[[float], nn.Module], original: nn.Module, runtime: str, example: torch.Tensor,
                       target_latency: float, low: float, high: float, batch: int = 1, points: int = 8) -> tuple[float, nn.Module, float]:
    """Return ``(knob, compressed model, measured speed-up)``: the least compressed model keeping at most
    ``target_latency`` of the original's latency in ``runtime``, among ``points`` knobs spread evenly over
    [``low``, ``high``] (more compression as the knob falls).

    A grid, not a bisection: measured speed-up is not monotonic in the knob (channel counts cross the
    multiples a runtime's kernels prefer, so keeping fewer channels can run slower), and a bisection
    misled by one such step or by timing noise ends on a different branch. The chosen knob is measured a second time and kept only if it still meets the
    target; otherwise the next knob down is tried.

    Raises:
        ValueError: no knob reaches the target (the best measured speed-up is named).
    """
    needed = 1.0 / target_latency
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
                return knob, model, min(speedup, confirmed)
    best = max(speedup for _, speedup in measured.values())
    raise ValueError(f"target_latency={target_latency:g} in {runtime} is out of reach: the best of {points} compression levels "
                     f"measured {best:.2f}x faster than the original, {needed:.2f}x is needed")


def slower_in_runtime(layer: nn.Module, replacement: nn.Module, input_shape, runtime: str, blocks: int = 3) -> tuple[bool, float, float]:
    """Return ``(slower, layer ms, replacement ms)``: ``layer`` and its ``replacement`` each built alone in
    ``runtime`` and timed interleaved at batch 1 on ``input_shape``."""
    x = np.random.default_rng(0).standard_normal((1, *input_shape[1:])).astype(np.float32)
    built = {"layer": deploy.deploy(layer, runtime, x), "replacement": deploy.deploy(replacement, runtime, x)}
    timings = deploy.compare({k: (d.run, d.prepare(x), d.sync) for k, d in built.items()}, blocks, min_iters=10, min_seconds=0.05)
    before, after = timings["layer"].median_ms, timings["replacement"].median_ms
    return after > before, before, after
