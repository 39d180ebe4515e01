"""CP of a k x k conv (the CP-3 form LWALM uses): kernel T x S x (k*k) at rank R -> 1x1 (S -> R), depthwise k x k
(R groups), 1x1 (R -> T, bias); with CPD-EPC (Phan, Tichavsky, Cichocki 2019/2020): among CP decompositions whose
error stays within a bound delta, move to one with a smaller sum of squared rank-1 norms. The ``cp`` and ``cp_epc``
rows of the method table.

ALS and EPC run in torch (on the GPU when there is one, float64 for small kernels, float32 for ResNet-scale ones);
the layers come back as float32 torch modules.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import tensorly as tl
import torch
from torch import nn

from compress.factorize.algebra import bias_copy, conv_like, relative_error, truncation_errors, unfoldings, weight64
from compress.factorize.factorization import Factorization, spatial_only
from compress.factorize.rank import rank_by_ratio, select_rank, weight_selector

_logger = logging.getLogger(__name__)


def cp_full_rank(conv: nn.Conv2d) -> int:
    """Return min(T*S, T*K, S*K) for the T x S x K (K = kh*kw) kernel: an upper bound on its CP rank,
    used as 'full rank' by ``rank_ratio`` for CP."""
    t, s = conv.out_channels, conv.in_channels
    k = conv.kernel_size[0] * conv.kernel_size[1]
    return min(t * s, t * k, s * k)


def cp_device() -> torch.device:
    """Return the device CP and EPC run on: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cp_dtype(shape, rank: int, precision: str = "auto") -> torch.dtype:
    """Return the float type of an ALS run: ``precision`` 'float32' or 'float64', or 'auto': float64
    while one sweep costs at most 5e7 multiply-adds (then it is cheap), float32 above (ResNet-scale
    kernels, where 7 digits are far below the fit error and float64 doubles the time).

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in ("auto", "float32", "float64"):
        raise ValueError(f"precision must be 'auto', 'float32' or 'float64', got {precision!r}")
    if precision == "auto":
        return torch.float64 if int(np.prod(shape)) * int(rank) <= 5e7 else torch.float32
    return torch.float64 if precision == "float64" else torch.float32


def _mttkrp(tensor: torch.Tensor, factors: list[torch.Tensor], mode: int) -> torch.Tensor:
    """Return X_(mode) times the Khatri-Rao product of the other factors, without forming it."""
    a, b, c = factors
    if mode == 0:
        return torch.einsum("tsk,sr,kr->tr", tensor, b, c)
    if mode == 1:
        return torch.einsum("tsk,tr,kr->sr", tensor, a, c)
    return torch.einsum("tsk,tr,sr->kr", tensor, a, b)


def _gram_except(factors: list[torch.Tensor], mode: int) -> torch.Tensor:
    gram = None
    for other_mode, other in enumerate(factors):
        if other_mode != mode:
            gram = other.T @ other if gram is None else gram * (other.T @ other)
    return gram


def _model_norm_sq(factors: list[torch.Tensor]) -> torch.Tensor:
    a, b, c = factors
    return ((a.T @ a) * (b.T @ b) * (c.T @ c)).sum()


def _error_sq(norm_sq: torch.Tensor, factors: list[torch.Tensor], mttkrp_last: torch.Tensor) -> torch.Tensor:
    """||X - [[A, B, C]]||^2 from ||X||^2, the factors and the mode-2 MTTKRP computed with the current A and B."""
    return norm_sq - 2.0 * (factors[2] * mttkrp_last).sum() + _model_norm_sq(factors)


def _solve(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Return rhs @ gram^-1 for a symmetric positive semi-definite gram, with a tiny ridge for singular ones."""
    ridge = (1e-12 if gram.dtype == torch.float64 else 1e-6) * gram.diagonal().mean().clamp_min(1e-30)
    return torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype, device=gram.device), rhs.T).T


def _svd_start(tensor: torch.Tensor, rank: int, seed: int) -> list[torch.Tensor]:
    """Return starting factors: per mode the leading left singular vectors of the unfolding (the first mode
    scaled by the singular values); columns beyond a mode's size are random, as there is no SVD for them."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    factors = []
    for mode in range(3):
        unfolding = tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)
        u, singular, _ = torch.linalg.svd(unfolding, full_matrices=False)
        kept = min(rank, u.shape[1])
        factor = torch.randn(tensor.shape[mode], rank, generator=generator, dtype=torch.float64).to(tensor)
        factor[:, :kept] = u[:, :kept] * (singular[:kept] if mode == 0 else 1.0)
        factors.append(factor)
    return factors


def cp_als(
    tensor: np.ndarray,
    rank: int,
    seed: int = 0,
    n_iter: int = 500,
    tol: float = 1e-8,
    precision: str = "auto",
    linesearch: bool = True,
) -> tuple[np.ndarray, list[np.ndarray], dict]:
    """Return ``(weights, [A, B, C], info)`` of a rank-``rank`` CP decomposition of a 3-way ``tensor`` by ALS.

    Runs in torch on :func:`cp_device` at :func:`cp_dtype`'s precision, starts from
    :func:`_svd_start`, extrapolates after each sweep along the last step (Bro's line search,
    step ``it^(1/3)``, kept only when it lowers the error) and stops once a sweep lowers the
    relative error by less than ``tol`` times itself, or after ``n_iter`` sweeps. Weights come back
    as ones (absorbed in the factors); ``info`` holds ``iterations``, ``rel_error`` and ``dtype``.

    Raises:
        ValueError: ``rank`` < 1 or a bad precision.
    """
    if rank < 1:
        raise ValueError(f"cp rank must be >= 1, got {rank}")
    dtype = cp_dtype(tensor.shape, rank, precision)
    x = torch.as_tensor(np.asarray(tensor), dtype=dtype, device=cp_device())
    norm_sq = (x * x).sum()
    factors = _svd_start(x, rank, seed)
    previous = float("inf")
    iterations = 0
    for iterations in range(1, int(n_iter) + 1):
        old = [f.clone() for f in factors] if linesearch else None
        for mode in range(3):
            rhs = _mttkrp(x, factors, mode)
            factors[mode] = _solve(_gram_except(factors, mode), rhs)
        error_sq = _error_sq(norm_sq, factors, rhs)
        if linesearch and iterations > 2:
            step = iterations ** (1.0 / 3.0)
            trial = [o + step * (f - o) for o, f in zip(old, factors)]
            trial_error_sq = _error_sq(norm_sq, trial, _mttkrp(x, trial, 2))
            if trial_error_sq < error_sq:
                factors, error_sq = trial, trial_error_sq
        error = float(torch.sqrt(error_sq.clamp_min(0.0) / norm_sq))
        if previous - error < tol * max(error, 1e-12):
            break
        previous = error
    reconstruction = torch.einsum("tr,sr,kr->tsk", *factors)
    error = float(torch.linalg.norm(x - reconstruction) / torch.linalg.norm(x)) if float(norm_sq) > 0 else 0.0
    out = [f.double().cpu().numpy() for f in factors]
    return np.ones(rank), out, {"iterations": iterations, "rel_error": error, "dtype": str(dtype).replace("torch.", "")}


def cp_reconstruct(weights: np.ndarray, factors: list[np.ndarray]) -> np.ndarray:
    """Return the full tensor of a CP decomposition."""
    return tl.cp_to_tensor((weights, factors))


def rank_one_norm_sum(weights: np.ndarray, factors: list[np.ndarray]) -> float:
    """Return the sum over components of the squared Frobenius norms of the rank-1 terms."""
    norms = np.abs(weights).copy()
    for factor in factors:
        norms = norms * np.linalg.norm(factor, axis=0)
    return float(np.sum(norms**2))


def _norm_sum(factors: list[torch.Tensor]) -> torch.Tensor:
    squared = torch.ones(factors[0].shape[1], dtype=factors[0].dtype, device=factors[0].device)
    for factor in factors:
        squared = squared * (factor * factor).sum(dim=0)
    return squared.sum()


def _penalties(factors: list[torch.Tensor], mode: int) -> torch.Tensor:
    """Return, per component, the product of the squared column norms of the factors other than ``mode``."""
    penalty = torch.ones(factors[mode].shape[1], dtype=factors[mode].dtype, device=factors[mode].device)
    for other_mode, other in enumerate(factors):
        if other_mode != mode:
            penalty = penalty * (other * other).sum(dim=0)
    return penalty


def _constrained_update(
    gram: torch.Tensor, rhs: torch.Tensor, target_sq: torch.Tensor, penalty: torch.Tensor, bound_sq: float, current: torch.Tensor
) -> torch.Tensor:
    """Return F minimising ||F diag(sqrt(penalty))||^2 subject to ||X_(n) - F K^T||^2 <= bound_sq.

    Only ``gram`` = K^T K, ``rhs`` = X_(n) K and ``target_sq`` = ||X||^2 are needed, since
    ||X_(n) - F K^T||^2 = ||X||^2 - 2 tr(F rhs^T) + tr(F gram F^T): the Khatri-Rao matrix K is
    never formed. The KKT conditions give F(nu) = rhs (gram + nu P)^-1 (P = diag(penalty)), whose
    error grows with nu >= 0, so the largest feasible nu is wanted. With
    P^-1/2 gram P^-1/2 = Q diag(l) Q^T, F(nu) = M diag(1 / (l + nu)) N for fixed M, N, so each
    trial nu costs R x R work; nu is found by bisection on log nu. The result is never worse
    than ``current``: if ``current`` is infeasible the least-squares solution (smallest error) is
    returned, and a candidate is only taken if it is feasible and has a smaller objective.
    """
    bound_sq = bound_sq * (1 + 1e-12)  # a bound set to the current error must count it feasible

    def error_sq(f: torch.Tensor) -> float:
        return float(target_sq - 2.0 * (f * rhs).sum() + ((f @ gram) * f).sum())

    def objective(f: torch.Tensor) -> float:
        return float((f * f * penalty[None, :]).sum())

    if error_sq(current) > bound_sq:
        return torch.linalg.lstsq(gram, rhs.T).solution.T
    inv_root = 1.0 / torch.sqrt(penalty.clamp_min(1e-300))
    eigenvalues, q = torch.linalg.eigh(inv_root[:, None] * gram * inv_root[None, :])
    eigenvalues = eigenvalues.clamp_min(0.0)
    left = (rhs * inv_root[None, :]) @ q
    right = q.T * inv_root[None, :]

    def solve(nu: float) -> torch.Tensor:
        return (left / (eigenvalues + nu).clamp_min(1e-300)[None, :]) @ right

    low, high = -30.0, 30.0
    if error_sq(solve(float(np.exp(high)))) <= bound_sq:
        low = high
    elif error_sq(solve(float(np.exp(low)))) > bound_sq:
        return current
    else:
        for _ in range(60):
            middle = 0.5 * (low + high)
            if error_sq(solve(float(np.exp(middle)))) <= bound_sq:
                low = middle
            else:
                high = middle
    candidate = solve(float(np.exp(low)))
    if error_sq(candidate) <= bound_sq and objective(candidate) < objective(current):
        return candidate
    return current


def _regularized_sweeps(
    x: torch.Tensor, factors: list[torch.Tensor], nu: float, sweeps: int, tol: float = 1e-6
) -> list[torch.Tensor]:
    """Return factors after at most ``sweeps`` ALS sweeps on ||X - [[A, B, C]]||^2 + nu * (sum of squared rank-1
    norms), stopping early once a sweep lowers that objective by less than ``tol`` times itself."""
    factors = [f.clone() for f in factors]
    norm_sq = (x * x).sum()
    previous = float("inf")
    for _ in range(sweeps):
        for mode in range(3):
            gram = _gram_except(factors, mode) + nu * torch.diag(_penalties(factors, mode))
            rhs = _mttkrp(x, factors, mode)
            factors[mode] = _solve(gram, rhs)
        objective = float(_error_sq(norm_sq, factors, rhs)) + nu * float(_norm_sum(factors))
        if previous - objective < tol * abs(objective):
            break
        previous = objective
    return factors


def epc_correct(
    tensor: np.ndarray,
    weights: np.ndarray,
    factors: list[np.ndarray],
    delta: float,
    n_iter: int = 100,
    penalty_steps: int = 12,
    path_sweeps: int = 50,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return a CP decomposition (unit weights, factors) of error <= ``delta`` (absolute Frobenius)
    whose sum of squared rank-1 norms is no larger than that of ``(weights, factors)``.

    Two stages, in float64 torch on :func:`cp_device`. (1) A warm-started penalty path on
    error^2 + nu * norm-sum: regularised ALS (at most ``path_sweeps`` sweeps, until it settles)
    from the best feasible decomposition so far; nu grows fourfold while the result meets the
    bound, then is bisected (on log nu) between the largest feasible and the smallest infeasible
    value, ``penalty_steps`` trials in all. Unlike single-factor updates this can leave a
    degenerate ALS point, where every factor is already its own least-squares optimum. (2)
    Polishing with exactly solved single-factor updates (:func:`_constrained_update`), which keep
    the bound and never raise the norm sum, for at most ``n_iter`` sweeps. If the start itself
    violates the bound it is returned unchanged (rescaled).
    """
    x = torch.as_tensor(np.asarray(tensor), dtype=torch.float64, device=cp_device())
    start = [torch.as_tensor(f, dtype=torch.float64, device=x.device).clone() for f in factors]
    start[0] = start[0] * torch.as_tensor(weights, dtype=torch.float64, device=x.device)[None, :]
    bound = float(delta)
    target_sq = (x * x).sum()

    def error(candidate) -> float:
        return float(torch.linalg.norm(x - torch.einsum("tr,sr,kr->tsk", *candidate)))

    def result(candidate):
        return np.ones(len(weights)), [f.cpu().numpy() for f in candidate]

    if error(start) > bound * (1 + 1e-12):
        return result(start)
    best = start
    feasible, infeasible = 0.0, None
    nu = 1e-6 * float(target_sq) / max(float(_norm_sum(start)), 1e-300)
    for _ in range(penalty_steps):
        candidate = _regularized_sweeps(x, best, nu, path_sweeps)
        if error(candidate) <= bound:
            feasible = nu
            if float(_norm_sum(candidate)) < float(_norm_sum(best)):
                best = candidate
        else:
            infeasible = nu
        nu = nu * 4.0 if infeasible is None else (float(np.sqrt(feasible * infeasible)) if feasible > 0 else infeasible / 4.0)
    factors_t = [f.clone() for f in best]
    previous = float(_norm_sum(factors_t))
    for _ in range(n_iter):
        for mode in range(3):
            gram, rhs = _gram_except(factors_t, mode), _mttkrp(x, factors_t, mode)
            factors_t[mode] = _constrained_update(gram, rhs, target_sq, _penalties(factors_t, mode), bound**2, factors_t[mode])
        current = float(_norm_sum(factors_t))
        if previous - current <= 1e-9 * max(previous, 1e-12):
            break
        previous = current
    if error(factors_t) > bound * (1 + 1e-9):  # round-off in the Gram form: fall back to the checked stage-1 result
        factors_t = best
    return result(factors_t)


def cp_layers(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """Return the (untrained) chain CP replaces a k x k conv with at ``rank`` (LWALM's CP-3 form): 1x1 S -> R,
    depthwise k x k over R (the conv's stride, padding, dilation), 1x1 R -> T (with the bias)."""
    return nn.Sequential(
        conv_like(conv.in_channels, rank, 1),
        conv_like(rank, rank, conv.kernel_size, like=conv, groups=rank),
        conv_like(rank, conv.out_channels, 1, bias=bias_copy(conv)),
    )


def cp_sequence(
    conv: nn.Conv2d,
    rank: int,
    seed: int = 0,
    epc: bool = False,
    delta: float | None = None,
    delta_relative: bool = True,
    als_iters: int = 500,
    tol: float = 1e-8,
    epc_iters: int = 100,
    epc_steps: int = 12,
) -> tuple[nn.Sequential, dict]:
    """Return (1x1 -> depthwise k x k -> 1x1 replacement, info) of a conv at CP ``rank``.

    The kernel is decomposed by :func:`cp_als` (at most ``als_iters`` sweeps, stopping at ``tol``).
    With ``epc`` the result is corrected by :func:`epc_correct` within ``delta`` (relative to
    ||W|| when ``delta_relative``, else absolute; None keeps the ALS error as the bound; a
    ``delta`` below the ALS error is raised to it, and ``info['delta_raised']`` says so).
    ``info`` holds ``rel_error``, ``norm_sum_als``, ``error_als``, ``als_iters_run``, ``als_dtype``
    and, with EPC, ``norm_sum_epc``, ``delta_abs``, ``delta_raised``. ``epc_iters`` and
    ``epc_steps`` bound the EPC polishing sweeps and penalty steps.

    Raises:
        ValueError: a grouped conv, a padding mode other than zeros, or rank < 1.
    """
    if conv.groups != 1:
        raise ValueError(f"cp needs an ungrouped conv, got groups={conv.groups}")
    if conv.padding_mode != "zeros":
        raise ValueError(f"cp moves padding to the depthwise conv, which needs padding_mode='zeros', got {conv.padding_mode!r}")
    if rank < 1:
        raise ValueError(f"cp rank must be >= 1, got {rank}")
    weight = weight64(conv)
    t, s, kh, kw = weight.shape
    tensor = weight.reshape(t, s, kh * kw)
    weights, factors, als = cp_als(tensor, rank, seed, n_iter=als_iters, tol=tol)
    als_error = float(np.linalg.norm(tensor - cp_reconstruct(weights, factors)))
    info = {
        "norm_sum_als": rank_one_norm_sum(weights, factors),
        "error_als": als_error / max(np.linalg.norm(tensor), 1e-300),
        "als_iters_run": als["iterations"],
        "als_dtype": als["dtype"],
    }
    if epc:
        bound = als_error if delta is None else (float(delta) * float(np.linalg.norm(tensor)) if delta_relative else float(delta))
        weights, factors = epc_correct(tensor, weights, factors, max(bound, als_error), n_iter=epc_iters, penalty_steps=epc_steps)
        info.update(
            {
                "norm_sum_epc": rank_one_norm_sum(weights, factors),
                "delta_abs": max(bound, als_error),
                "delta_raised": bound < als_error,
            }
        )
        if bound < als_error:
            # EPC cannot keep an error ALS itself does not reach; the bound is raised, and the caller is told.
            info["note"] = (
                f"cp_epc delta raised from {bound / max(np.linalg.norm(tensor), 1e-300):.4g} to the ALS error "
                f"{info['error_als']:.4g} (relative)"
            )
            _logger.warning("%s", info["note"])
    a, b, c = factors
    a = a * weights[None, :]
    sequence = cp_layers(conv, rank)
    first, depthwise, last = sequence
    first.weight.data.copy_(torch.from_numpy(b.T.copy()).view(rank, s, 1, 1))
    depthwise.weight.data.copy_(torch.from_numpy(c.T.copy()).view(rank, 1, kh, kw))
    last.weight.data.copy_(torch.from_numpy(a.copy()).view(t, rank, 1, 1))
    info["rel_error"] = relative_error(tensor, cp_reconstruct(np.ones(rank), [a, b, c]))
    return sequence, info


def cp_rank(module: nn.Module, options: dict) -> int:
    """Return the CP rank the selector in ``options`` picks: by ratio of the CP full-rank bound, or the
    largest multilinear rank the selector picks (a CP rank is at least every multilinear rank)."""
    selection, ratio, energy = weight_selector(options)
    full = cp_full_rank(module)
    if selection == "ratio":
        return rank_by_ratio(full, ratio)
    matrices = unfoldings(weight64(module))
    return min(full, max(select_rank(m, min(m.shape), selection, ratio, energy) for m in matrices))


def cp_error(module: nn.Module) -> Callable[[int], float]:
    """Return ``rank -> the largest truncation error of the three unfoldings at min(rank, mode size)``: a lower
    bound on any CP of that rank (a CP of rank R has every multilinear rank <= R)."""
    errors = [truncation_errors(m) for m in unfoldings(weight64(module))]
    return lambda rank: float(max(e[min(int(rank), len(e) - 1)] for e in errors))


def cp_decompose(module: nn.Module, rank: int, options: dict) -> tuple[nn.Sequential, dict]:
    """Return ``(replacement, info)`` of a CP (ALS) at ``rank``; ``info`` as :func:`compress.cp_sequence`."""
    return cp_sequence(module, int(rank), int(options["seed"]), als_iters=int(options["als_iters"]), tol=float(options["tol"]))


def cp_epc_decompose(module: nn.Module, rank: int, options: dict) -> tuple[nn.Sequential, dict]:
    """Return ``(replacement, info)`` of a CP followed by error-preserving correction (CPD-EPC) at ``rank``."""
    return cp_sequence(
        module,
        int(rank),
        int(options["seed"]),
        epc=True,
        delta=options["delta"],
        delta_relative=bool(options["delta_relative"]),
        als_iters=int(options["als_iters"]),
        tol=float(options["tol"]),
        epc_iters=int(options["epc_iters"]),
        epc_steps=int(options["epc_steps"]),
    )


CP = Factorization(
    applies_to=spatial_only,
    full_rank=cp_full_rank,
    rank_of=lambda module, r: r,
    select_rank=cp_rank,
    layers=cp_layers,
    decompose=cp_decompose,
    error_bound=cp_error,
)
CP_EPC = Factorization(
    applies_to=spatial_only,
    full_rank=cp_full_rank,
    rank_of=lambda module, r: r,
    select_rank=cp_rank,
    layers=cp_layers,
    decompose=cp_epc_decompose,
    error_bound=cp_error,
)
