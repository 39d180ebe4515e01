"""The factorization rows: everything the engine needs to know about one factorization method.

A :class:`Factorization` says which layers a method applies to, what its full rank is, how a
rank is chosen from the weights alone, how the replacement is built and decomposed, and the
relative weight error a rank will have (read from spectra, without decomposing). The engine
(``compress/factorize.py``) and the budget search (``compress/targets.py``) read nothing else, so
a new factorization is one decomposition function and one row: a :class:`Factorization` in the
method table (``compress/methods.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from compress import decompose
from compress.layers import per_layer_macs
from compress.options import DATA_DRIVEN_SELECTORS
from compress.rank import rank_by_ratio, select_rank

Rank = Any  # an int, or (rank_out, rank_in) for tucker2


@dataclass(frozen=True)
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


def count_params(module: nn.Module) -> int:
    """Return the number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


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

def _weight_selector(options: dict) -> tuple[str, float | None, float | None]:
    selection = options["rank_selection"]
    if selection in DATA_DRIVEN_SELECTORS:
        raise ValueError(f"rank_selection {selection!r} needs data: choose ranks with compress.search "
                         f"(or run it as a study step) and pass them as ranks={{layer: rank}}")
    ratio = float(options["rank_ratio"]) if selection == "ratio" else None
    energy = float(options["energy"]) if selection == "energy" else None
    return selection, ratio, energy


def svd_rank(module: nn.Module, options: dict) -> int:
    """Return the SVD rank the weight-only selector in ``options`` picks for ``module``."""
    selection, ratio, energy = _weight_selector(options)
    (matrix,) = decompose.unfoldings(decompose.weight64(module))
    return select_rank(matrix, min(matrix.shape), selection, ratio, energy)


def tucker2_rank(module: nn.Module, options: dict) -> tuple[int, int]:
    """Return the Tucker-2 ranks (R_out, R_in) the selector in ``options`` picks, one per unfolding."""
    selection, ratio, energy = _weight_selector(options)
    weight = decompose.weight64(module)
    out_unfolding, in_unfolding, _ = decompose.unfoldings(weight)
    t, s = weight.shape[:2]
    return select_rank(out_unfolding, t, selection, ratio, energy), select_rank(in_unfolding, s, selection, ratio, energy)


def cp_rank(module: nn.Module, options: dict) -> int:
    """Return the CP rank the selector in ``options`` picks: by ratio of the CP full-rank bound, or the
    largest multilinear rank the selector picks (a CP rank is at least every multilinear rank)."""
    selection, ratio, energy = _weight_selector(options)
    full = decompose.cp_full_rank(module)
    if selection == "ratio":
        return rank_by_ratio(full, ratio)
    matrices = decompose.unfoldings(decompose.weight64(module))
    return min(full, max(select_rank(m, min(m.shape), selection, ratio, energy) for m in matrices))


# ---- weight error from spectra ---------------------------------------------------------------------

def truncation_errors(matrix: np.ndarray) -> np.ndarray:
    """Return e[r] = relative Frobenius error of the best rank-r approximation of ``matrix``, r = 0..min(shape)."""
    singular = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
    total = float(np.sum(singular ** 2))
    if total == 0:
        return np.zeros(len(singular) + 1)
    tail = np.concatenate([np.cumsum((singular ** 2)[::-1])[::-1], [0.0]])
    return np.sqrt(tail / total)


def svd_error(module: nn.Module) -> Callable[[int], float]:
    """Return ``rank -> relative weight error`` of a truncated SVD: exact (the dropped singular values)."""
    (matrix,) = decompose.unfoldings(decompose.weight64(module))
    errors = truncation_errors(matrix)
    return lambda rank: float(errors[int(rank)])


def tucker2_error(module: nn.Module) -> Callable[[tuple[int, int]], float]:
    """Return ``(R_out, R_in) -> sqrt(e_out^2 + e_in^2)`` of the two truncated unfoldings: the HOSVD bound,
    at or above what HOOI reaches."""
    out_unfolding, in_unfolding, _ = decompose.unfoldings(decompose.weight64(module))
    out_errors, in_errors = truncation_errors(out_unfolding), truncation_errors(in_unfolding)
    return lambda rank: float(np.hypot(out_errors[rank[0]], in_errors[rank[1]]))


def cp_error(module: nn.Module) -> Callable[[int], float]:
    """Return ``rank -> the largest truncation error of the three unfoldings at min(rank, mode size)``: a lower
    bound on any CP of that rank (a CP of rank R has every multilinear rank <= R)."""
    errors = [truncation_errors(m) for m in decompose.unfoldings(decompose.weight64(module))]
    return lambda rank: float(max(e[min(int(rank), len(e) - 1)] for e in errors))


# ---- decomposition ---------------------------------------------------------------------------------

def svd_decompose(module: nn.Module, rank: int, options: dict) -> tuple[nn.Sequential, dict]:
    """Return ``(replacement, {'rel_error'})`` of a truncated SVD at ``rank``."""
    sequence, error = decompose.svd_sequence(module, int(rank))
    return sequence, {"rel_error": error}


def tucker2_decompose(module: nn.Module, rank: tuple[int, int], options: dict) -> tuple[nn.Sequential, dict]:
    """Return ``(replacement, {'rel_error'})`` of a Tucker-2 (HOOI) at ``rank`` = (R_out, R_in)."""
    sequence, error = decompose.tucker2_sequence(module, tuple(rank), int(options["seed"]))
    return sequence, {"rel_error": error}


def cp_decompose(module: nn.Module, rank: int, options: dict) -> tuple[nn.Sequential, dict]:
    """Return ``(replacement, info)`` of a CP (ALS) at ``rank``; ``info`` as :func:`compress.decompose.cp_sequence`."""
    return decompose.cp_sequence(module, int(rank), int(options["seed"]), als_iters=int(options["als_iters"]), tol=float(options["tol"]))


def cp_epc_decompose(module: nn.Module, rank: int, options: dict) -> tuple[nn.Sequential, dict]:
    """Return ``(replacement, info)`` of a CP followed by error-preserving correction (CPD-EPC) at ``rank``."""
    return decompose.cp_sequence(module, int(rank), int(options["seed"]), epc=True, delta=options["delta"],
                                 delta_relative=bool(options["delta_relative"]), als_iters=int(options["als_iters"]),
                                 tol=float(options["tol"]), epc_iters=int(options["epc_iters"]), epc_steps=int(options["epc_steps"]))


SVD = Factorization(pointwise_only, matrix_full_rank, lambda m, r: r, svd_rank, decompose.svd_layers, svd_decompose, svd_error)
TUCKER2 = Factorization(spatial_only, lambda m: min(m.out_channels, m.in_channels),
                        lambda m, r: (max(1, min(m.out_channels, r)), max(1, min(m.in_channels, r))),
                        tucker2_rank, decompose.tucker2_layers, tucker2_decompose, tucker2_error)
CP = Factorization(spatial_only, decompose.cp_full_rank, lambda m, r: r, cp_rank, decompose.cp_layers, cp_decompose, cp_error)
CP_EPC = Factorization(spatial_only, decompose.cp_full_rank, lambda m, r: r, cp_rank, decompose.cp_layers, cp_epc_decompose, cp_error)
