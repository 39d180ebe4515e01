"""Tucker-2 of a k x k conv: 1x1 (S -> R_in), k x k core (R_in -> R_out, the conv's stride and padding), 1x1
(R_out -> T, bias), by HOSVD and a few HOOI sweeps (tensorly, float64); and the ``tucker2`` row of the method table."""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorly as tl
import torch
from tensorly.decomposition import partial_tucker
from torch import nn

from compress.factorize.algebra import bias_copy, conv_like, relative_error, truncation_errors, unfoldings, weight64
from compress.factorize.factorization import Factorization, spatial_only
from compress.factorize.rank import select_rank, weight_selector

tl.set_backend("numpy")


tl.set_backend("numpy")


def _leading_eigenvectors(unfolding: np.ndarray, rank: int) -> np.ndarray:
    """Return the ``rank`` leading left singular vectors of a wide matrix, via eigh of its Gram matrix."""
    values, vectors = np.linalg.eigh(unfolding @ unfolding.T)
    return vectors[:, np.argsort(values)[::-1][:rank]]


def tucker2_layers(conv: nn.Conv2d, ranks: tuple[int, int]) -> nn.Sequential:
    """Return the (untrained) chain Tucker-2 replaces a k x k conv with at (R_out, R_in): 1x1 S -> R_in,
    k x k R_in -> R_out (the conv's stride, padding, dilation), 1x1 R_out -> T (with the bias)."""
    rank_out, rank_in = int(ranks[0]), int(ranks[1])
    return nn.Sequential(
        conv_like(conv.in_channels, rank_in, 1),
        conv_like(rank_in, rank_out, conv.kernel_size, like=conv),
        conv_like(rank_out, conv.out_channels, 1, bias=bias_copy(conv)),
    )


def tucker2_sequence(conv: nn.Conv2d, ranks: tuple[int, int], seed: int = 0, n_iter: int = 5) -> tuple[nn.Sequential, float]:
    """Return (three-conv replacement, relative weight error) of a k x k conv at (R_out, R_in).

    Raises:
        ValueError: a grouped conv or ranks out of range.
    """
    if conv.groups != 1:
        raise ValueError(f"tucker2 needs an ungrouped conv, got groups={conv.groups}")
    rank_out, rank_in = int(ranks[0]), int(ranks[1])
    if not (1 <= rank_out <= conv.out_channels and 1 <= rank_in <= conv.in_channels):
        raise ValueError(f"tucker2 ranks must be in [1, {conv.out_channels}] x [1, {conv.in_channels}], got {ranks}")
    weight = weight64(conv)
    # HOSVD start from the small Gram matrices (512 x 512 for ResNet's last layers; an SVD of the
    # 512 x 4608 unfolding is 100x slower), then a few HOOI sweeps by tensorly.
    u_out0 = _leading_eigenvectors(tl.unfold(weight, 0), rank_out)
    u_in0 = _leading_eigenvectors(tl.unfold(weight, 1), rank_in)
    core0 = tl.tenalg.multi_mode_dot(weight, [u_out0.T, u_in0.T], modes=[0, 1])
    (core, (u_out, u_in)), _ = partial_tucker(
        weight,
        rank=[rank_out, rank_in],
        modes=[0, 1],
        init=(core0, [u_out0, u_in0]),
        random_state=seed,
        n_iter_max=n_iter,
        tol=1e-8,
    )
    approximation = tl.tenalg.multi_mode_dot(core, [u_out, u_in], modes=[0, 1])
    sequence = tucker2_layers(conv, (rank_out, rank_in))
    first, middle, last = sequence
    first.weight.data.copy_(torch.from_numpy(u_in.T.copy()).view(rank_in, conv.in_channels, 1, 1))
    middle.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(core)))
    last.weight.data.copy_(torch.from_numpy(u_out.copy()).view(conv.out_channels, rank_out, 1, 1))
    return sequence, relative_error(weight, approximation)


def tucker2_rank(module: nn.Module, options: dict) -> tuple[int, int]:
    """Return the Tucker-2 ranks (R_out, R_in) the selector in ``options`` picks, one per unfolding."""
    selection, ratio, energy = weight_selector(options)
    weight = weight64(module)
    out_unfolding, in_unfolding, _ = unfoldings(weight)
    t, s = weight.shape[:2]
    return select_rank(out_unfolding, t, selection, ratio, energy), select_rank(in_unfolding, s, selection, ratio, energy)


def tucker2_error(module: nn.Module) -> Callable[[tuple[int, int]], float]:
    """Return ``(R_out, R_in) -> sqrt(e_out^2 + e_in^2)`` of the two truncated unfoldings: the HOSVD bound,
    at or above what HOOI reaches."""
    out_unfolding, in_unfolding, _ = unfoldings(weight64(module))
    out_errors, in_errors = truncation_errors(out_unfolding), truncation_errors(in_unfolding)
    return lambda rank: float(np.hypot(out_errors[rank[0]], in_errors[rank[1]]))


def tucker2_decompose(module: nn.Module, rank: tuple[int, int], options: dict) -> tuple[nn.Sequential, dict]:
    """Return ``(replacement, {'rel_error'})`` of a Tucker-2 (HOOI) at ``rank`` = (R_out, R_in)."""
    sequence, error = tucker2_sequence(module, tuple(rank), int(options["seed"]))
    return sequence, {"rel_error": error}


TUCKER2 = Factorization(
    applies_to=spatial_only,
    full_rank=lambda module: min(module.out_channels, module.in_channels),
    rank_of=lambda module, r: (max(1, min(module.out_channels, r)), max(1, min(module.in_channels, r))),
    select_rank=tucker2_rank,
    layers=tucker2_layers,
    decompose=tucker2_decompose,
    error_bound=tucker2_error,
)
