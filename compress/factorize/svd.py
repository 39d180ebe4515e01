"""Truncated SVD of a Linear or 1x1 conv: W (out x in) -> [in -> R, the conv's stride and padding] [R -> out, bias],
the singular values split as sqrt(S) into both factors; and the ``svd`` row of the method table. Runs in float64 NumPy."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from compress.factorize.algebra import conv_like, relative_error, truncation_errors, unfoldings, weight64
from compress.factorize.factorization import Factorization, matrix_full_rank, pointwise_only
from compress.factorize.rank import select_rank, weight_selector


def svd_layers(module: nn.Module, rank: int) -> nn.Sequential:
    """Return the (untrained) two-layer chain SVD replaces a Linear or 1x1 conv with at ``rank``: in -> R
    (carrying the conv's stride and padding), R -> out (with the bias)."""
    if isinstance(module, nn.Linear):
        return nn.Sequential(
            nn.Linear(module.in_features, rank, bias=False), nn.Linear(rank, module.out_features, bias=module.bias is not None)
        )
    return nn.Sequential(
        conv_like(module.in_channels, rank, 1, like=module),
        conv_like(rank, module.out_channels, 1, bias=None if module.bias is None else module.bias.detach()),
    )


def svd_sequence(module: nn.Module, rank: int) -> tuple[nn.Sequential, float]:
    """Return (two-layer replacement, relative weight error) of a Linear or 1x1 conv at ``rank``.

    The singular values are split as sqrt(S) into both factors, so their norms are balanced
    (which the norm-constrained fine-tuning assumes). Stride and padding go to the first layer.

    Raises:
        ValueError: a grouped conv, a conv with kernel other than 1x1, or a rank out of range.
    """
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.kernel_size != (1, 1):
            raise ValueError(f"svd needs a Linear or an ungrouped 1x1 conv, got {module}")
    weight = weight64(module).reshape(module.weight.shape[0], -1)
    full = min(weight.shape)
    if not 1 <= rank <= full:
        raise ValueError(f"svd rank must be in [1, {full}] for a {weight.shape[0]}x{weight.shape[1]} weight, got {rank}")
    u, s, vt = np.linalg.svd(weight, full_matrices=False)
    root = np.sqrt(s[:rank])
    first = root[:, None] * vt[:rank]  # R x in
    second = u[:, :rank] * root[None, :]  # out x R
    error = relative_error(weight, second @ first)
    sequence = svd_layers(module, rank)
    a, b = sequence
    a.weight.data.copy_(torch.from_numpy(first).view_as(a.weight))
    b.weight.data.copy_(torch.from_numpy(second).view_as(b.weight))
    if module.bias is not None:
        b.bias.data.copy_(module.bias.detach())
    return sequence, error


def svd_rank(module: nn.Module, options: dict) -> int:
    """Return the SVD rank the weight-only selector in ``options`` picks for ``module``."""
    selection, ratio, energy = weight_selector(options)
    (matrix,) = unfoldings(weight64(module))
    return select_rank(matrix, min(matrix.shape), selection, ratio, energy)


def svd_error(module: nn.Module) -> Callable[[int], float]:
    """Return ``rank -> relative weight error`` of a truncated SVD: exact (the dropped singular values)."""
    (matrix,) = unfoldings(weight64(module))
    errors = truncation_errors(matrix)
    return lambda rank: float(errors[int(rank)])


def svd_decompose(module: nn.Module, rank: int, options: dict) -> tuple[nn.Sequential, dict]:
    """Return ``(replacement, {'rel_error'})`` of a truncated SVD at ``rank``."""
    sequence, error = svd_sequence(module, int(rank))
    return sequence, {"rel_error": error}


SVD = Factorization(
    applies_to=pointwise_only,
    full_rank=matrix_full_rank,
    rank_of=lambda module, r: r,
    select_rank=svd_rank,
    layers=svd_layers,
    decompose=svd_decompose,
    error_bound=svd_error,
)
