"""Factorization to a budget instead of a ratio: "a third of the parameters", "half the MACs".

:func:`global_ranks` picks per-layer ranks for a factorization under a MAC or parameter budget
for the whole model: every layer starts whole and the budget is met by the moves (one step
down a layer's rank ladder) that add the least squared relative weight error per unit of cost
saved, so layers whose spectrum decays fast give up most.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from compress.factorize.factorization import Factorization, replacement_cost
from compress.layers import layer_macs
from models import count_params

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


def global_ranks(
    how: Factorization,
    name: str,
    candidates: list[tuple[str, nn.Module, tuple, tuple]],
    total_cost: int,
    budget: float,
    cost: str = "macs",
) -> dict:
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
        raise ValueError(
            f"{name}: a {cost} budget of {budget:g} cannot be reached by factorizing the selected layers; "
            f"the least reachable is {least_budget(ladders, total_cost):.3f} of the model's {cost}"
        )
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
