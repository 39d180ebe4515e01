"""The factorization row: everything the engine needs to know about one factorization method.

A :class:`Factorization` says which layers a method applies to, what its full rank is, how a
rank is chosen from the weights alone, how the replacement is built and decomposed, and the
relative weight error a rank will have (read from spectra, without decomposing). The engine
(``compress.factorize.engine``) and the budget search (``compress.factorize.budget``) read nothing else, so
a new factorization is one module here with its decomposition and its row, and one line of the method table
(``compress/methods.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from compress.layers import per_layer_macs
from models import count_params

Rank = Any  # an int, or (rank_out, rank_in) for tucker2


Rank = Any  # an int, or (rank_out, rank_in) for tucker2


@dataclass(frozen=True, kw_only=True)
class Factorization:
    """How one factorization treats a layer.

    ``applies_to(module)`` returns why it cannot factorize ``module`` (None if it can);
    ``full_rank(module)`` is what ``rank_ratio=1`` means; ``rank_of(module, r)`` turns a scalar rank
    r in [1, full_rank] into this method's rank; ``select_rank(module, options)`` picks a rank by
    the weight-only selectors (``options`` resolved, see ``compress.options.resolve_options``);
    ``layers(module, rank)`` builds the replacement's structure (no weights: its cost);
    ``decompose(module, rank, options)`` returns ``(nn.Sequential replacement, info)`` where
    ``info`` holds ``rel_error`` and any method-specific columns; ``error_bound(module)`` returns
    ``rank -> relative weight error`` from the weight's spectra (exact, or a bound the docstring of
    the function given names), which the global budget search trades against cost.
    """

    applies_to: Callable[[nn.Module], str | None]
    full_rank: Callable[[nn.Module], int]
    rank_of: Callable[[nn.Module, int], Rank]
    select_rank: Callable[[nn.Module, dict], Rank]
    layers: Callable[[nn.Module, Rank], nn.Sequential]
    decompose: Callable[[nn.Module, Rank, dict], tuple[nn.Sequential, dict]]
    error_bound: Callable[[nn.Module], Callable[[Rank], float]]


def replacement_cost(how: Factorization, module: nn.Module, rank, input_shape) -> tuple[int, int]:
    """Return ``(params, MACs)`` of the layers factorization ``how`` replaces ``module`` with at ``rank``,
    on ``input_shape`` (one example), without decomposing anything (the structure is built on the meta device)."""
    with torch.device("meta"):
        skeleton = how.layers(module, rank)
    return count_params(skeleton), sum(per_layer_macs(skeleton, (1, *input_shape[1:])))


# ---- which layers ----------------------------------------------------------------------------------


def ungrouped(module: nn.Module) -> str | None:
    """Return why a grouped or depthwise conv cannot be factorized, or None for any other layer."""
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        return f"grouped/depthwise conv (groups={module.groups})"
    return None


def _is_pointwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or module.kernel_size == (1, 1)


def pointwise_only(module: nn.Module) -> str | None:
    """Return why ``module`` is not an ungrouped Linear or 1x1 conv (None if it is)."""
    if ungrouped(module):
        return ungrouped(module)
    return None if _is_pointwise(module) else f"{module.kernel_size[0]}x{module.kernel_size[1]} conv: use tucker2 or cp"


def spatial_only(module: nn.Module) -> str | None:
    """Return why ``module`` is not an ungrouped k x k conv, k > 1 (None if it is)."""
    if ungrouped(module):
        return ungrouped(module)
    return "1x1 conv or linear: use svd" if _is_pointwise(module) else None


def matrix_full_rank(module: nn.Module) -> int:
    """Return min(out, in * k * k): the rank of the weight seen as a matrix."""
    return min(module.weight.shape[0], module.weight[0].numel())


# ---- rank selection from weights -------------------------------------------------------------------

# ---- weight error from spectra ---------------------------------------------------------------------

# ---- decomposition ---------------------------------------------------------------------------------
