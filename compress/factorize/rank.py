"""Per-layer rank selection from the weights alone: ``ratio``, ``energy`` and ``vbmf``.

The data-driven selectors (``grad_align``, ``binary_search``) live in ``compress.rank_search``: they
fine-tune candidate models and so need data.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

from compress.options import DATA_DRIVEN_SELECTORS


def rank_by_ratio(full_rank: int, rank_ratio: float) -> int:
    """Return ``round(rank_ratio * full_rank)`` clipped to [1, full_rank].

    Raises:
        ValueError: ``rank_ratio`` not in (0, 1].
    """
    if not 0 < rank_ratio <= 1:
        raise ValueError(f"rank_ratio must be in (0, 1], got {rank_ratio!r}")
    return int(min(full_rank, max(1, round(rank_ratio * full_rank))))


def rank_by_energy(matrix: np.ndarray, energy: float) -> int:
    """Return the smallest rank whose singular values keep ``energy`` of the squared spectrum.

    Raises:
        ValueError: ``energy`` not in (0, 1].
    """
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    singular = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
    total = float(np.sum(singular**2))
    if total == 0:
        return 1
    kept = np.cumsum(singular**2) / total
    return int(min(len(singular), np.searchsorted(kept, energy - 1e-12) + 1))


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    return 0.5 * (x - (1 + alpha) + np.sqrt((x - (1 + alpha)) ** 2 - 4 * alpha))


def _evb_free_energy(sigma2: float, rows: int, cols: int, singular: np.ndarray, residual: float, x_bar: float) -> float:
    alpha = rows / cols
    x = singular**2 / (cols * sigma2)
    big, small = x[x > x_bar], x[x <= x_bar]
    tau_big = _tau(big, alpha)
    return float(
        np.sum(small - np.log(small))
        + np.sum(big - tau_big)
        + np.sum(np.log((tau_big + 1) / big))
        + alpha * np.sum(np.log(tau_big / alpha + 1))
        + residual / (cols * sigma2)
        + (rows - len(singular)) * np.log(sigma2)
    )


def rank_by_vbmf(matrix: np.ndarray) -> int:
    """Return the rank empirical variational Bayesian matrix factorization keeps (at least 1).

    EVBMF's global analytic solution (Nakajima et al., JMLR 2013) with the noise variance
    estimated by minimising the free energy, as MUSCO applies it to a layer's unfoldings.
    """
    y = np.asarray(matrix, dtype=np.float64)
    if y.shape[0] > y.shape[1]:
        y = y.T
    rows, cols = y.shape
    alpha = rows / cols
    tau_bar = 2.5129 * math.sqrt(alpha)
    singular = np.linalg.svd(y, compute_uv=False)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    # Index bounds of the noise-variance search interval (Nakajima et al., Theorem 3 and eq. 32).
    upper_index = int(min(math.ceil(rows / (1 + alpha)) - 1, rows)) - 1
    upper = float(np.sum(singular**2)) / (rows * cols)
    tail = singular[upper_index + 1 :] if upper_index + 1 < len(singular) else singular[-1:]
    lower = max(float(tail[0] ** 2) / (cols * x_bar), float(np.mean(tail**2)) / cols)
    if not lower < upper:
        return 1
    sigma2 = minimize_scalar(_evb_free_energy, args=(rows, cols, singular, 0.0, x_bar), bounds=(lower, upper), method="bounded").x
    threshold = math.sqrt(cols * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar))
    return max(1, int(np.sum(singular > threshold)))


def select_rank(
    matrix: np.ndarray, full_rank: int, rank_selection: str, rank_ratio: float | None = None, energy: float | None = None
) -> int:
    """Return a rank for one unfolding ``matrix`` by ``rank_selection`` ('ratio' with ``rank_ratio``,
    'energy' with ``energy``, or 'vbmf').

    Raises:
        ValueError: unknown selector or out-of-range ``rank_ratio``/``energy``.
    """
    if rank_selection == "ratio":
        return rank_by_ratio(full_rank, rank_ratio)
    if rank_selection == "energy":
        return min(full_rank, rank_by_energy(matrix, energy))
    if rank_selection == "vbmf":
        return min(full_rank, rank_by_vbmf(matrix))
    raise ValueError(
        f"rank_selection {rank_selection!r} is not one of 'ratio', 'energy', 'vbmf' "
        "('grad_align' and 'binary_search' need data: see compress.rank_search)"
    )


def weight_selector(options: dict) -> tuple[str, float | None, float | None]:
    """Return ``(rank_selection, rank_ratio or None, energy or None)`` of resolved factorization ``options``.

    Raises:
        ValueError: a data-driven selector (it needs data: ``compress.rank_search``).
    """
    selection = options["rank_selection"]
    if selection in DATA_DRIVEN_SELECTORS:
        raise ValueError(
            f"rank_selection {selection!r} needs data: choose ranks with compress.rank_search "
            f"(or run it as a study step) and pass them as ranks={{layer: rank}}"
        )
    ratio = float(options["rank_ratio"]) if selection == "ratio" else None
    energy = float(options["energy"]) if selection == "energy" else None
    return selection, ratio, energy
