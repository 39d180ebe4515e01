"""Low-rank factorizations of single layers into chains of standard layers.

* ``svd_sequence``: Linear or 1x1 conv W (out x in) -> [in -> R] [R -> out, bias].
* ``tucker2_sequence``: k x k conv -> 1x1 (S -> R_in), k x k (R_in -> R_out), 1x1 (R_out -> T, bias).
* ``cp_sequence``: k x k conv, kernel T x S x (k*k), CP rank R (the CP-3 form LWALM uses) ->
  1x1 (S -> R), depthwise k x k (R groups), 1x1 (R -> T, bias).
* ``epc_correct``: CPD-EPC (Phan, Tichavsky, Cichocki 2019/2020): among CP decompositions whose
  error stays within a bound delta, move to one with a smaller sum of squared rank-1 norms.

Decompositions run in float64 NumPy through tensorly; the layers come back as float32 torch modules.
"""
from __future__ import annotations

import numpy as np
import tensorly as tl
import torch
from tensorly.decomposition import parafac, partial_tucker
from torch import nn

tl.set_backend("numpy")


def _weight64(module: nn.Module) -> np.ndarray:
    return module.weight.detach().cpu().double().numpy()


def _bias(module: nn.Module):
    return None if module.bias is None else module.bias.detach().clone().float()


def relative_error(original: np.ndarray, approximation: np.ndarray) -> float:
    """Return ||original - approximation||_F / ||original||_F (0 for an all-zero original)."""
    norm = float(np.linalg.norm(original))
    return 0.0 if norm == 0 else float(np.linalg.norm(original - approximation) / norm)


def _conv(in_ch, out_ch, kernel, like: nn.Conv2d | None = None, groups=1, bias=None) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel, groups=groups, bias=bias is not None,
                     stride=like.stride if like is not None else 1,
                     padding=like.padding if like is not None else 0,
                     dilation=like.dilation if like is not None else 1)
    if bias is not None:
        conv.bias.data.copy_(bias)
    return conv


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
    weight = _weight64(module).reshape(module.weight.shape[0], -1)
    full = min(weight.shape)
    if not 1 <= rank <= full:
        raise ValueError(f"svd rank must be in [1, {full}] for a {weight.shape[0]}x{weight.shape[1]} weight, got {rank}")
    u, s, vt = np.linalg.svd(weight, full_matrices=False)
    root = np.sqrt(s[:rank])
    first = root[:, None] * vt[:rank]  # R x in
    second = u[:, :rank] * root[None, :]  # out x R
    error = relative_error(weight, second @ first)
    if isinstance(module, nn.Linear):
        a = nn.Linear(module.in_features, rank, bias=False)
        b = nn.Linear(rank, module.out_features, bias=module.bias is not None)
        a.weight.data.copy_(torch.from_numpy(first))
        b.weight.data.copy_(torch.from_numpy(second))
    else:
        a = _conv(module.in_channels, rank, 1, like=module)
        b = _conv(rank, module.out_channels, 1, bias=_bias(module))
        a.weight.data.copy_(torch.from_numpy(first).view(rank, -1, 1, 1))
        b.weight.data.copy_(torch.from_numpy(second).view(module.out_channels, rank, 1, 1))
    if module.bias is not None:
        b.bias.data.copy_(module.bias.detach())
    return nn.Sequential(a, b), error


def _leading_eigenvectors(unfolding: np.ndarray, rank: int) -> np.ndarray:
    """Return the ``rank`` leading left singular vectors of a wide matrix, via eigh of its Gram matrix."""
    values, vectors = np.linalg.eigh(unfolding @ unfolding.T)
    return vectors[:, np.argsort(values)[::-1][:rank]]


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
    weight = _weight64(conv)
    # HOSVD start from the small Gram matrices (512 x 512 for ResNet's last layers; an SVD of the
    # 512 x 4608 unfolding is 100x slower), then a few HOOI sweeps by tensorly.
    u_out0 = _leading_eigenvectors(tl.unfold(weight, 0), rank_out)
    u_in0 = _leading_eigenvectors(tl.unfold(weight, 1), rank_in)
    core0 = tl.tenalg.multi_mode_dot(weight, [u_out0.T, u_in0.T], modes=[0, 1])
    (core, (u_out, u_in)), _ = partial_tucker(weight, rank=[rank_out, rank_in], modes=[0, 1], init=(core0, [u_out0, u_in0]),
                                              random_state=seed, n_iter_max=n_iter, tol=1e-8)
    approximation = tl.tenalg.multi_mode_dot(core, [u_out, u_in], modes=[0, 1])
    first = _conv(conv.in_channels, rank_in, 1)
    middle = _conv(rank_in, rank_out, conv.kernel_size, like=conv)
    last = _conv(rank_out, conv.out_channels, 1, bias=_bias(conv))
    first.weight.data.copy_(torch.from_numpy(u_in.T.copy()).view(rank_in, conv.in_channels, 1, 1))
    middle.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(core)))
    last.weight.data.copy_(torch.from_numpy(u_out.copy()).view(conv.out_channels, rank_out, 1, 1))
    return nn.Sequential(first, middle, last), relative_error(weight, approximation)


def cp_full_rank(conv: nn.Conv2d) -> int:
    """Return min(T*S, T*K, S*K) for the T x S x K (K = kh*kw) kernel: an upper bound on its CP rank,
    used as 'full rank' by ``rank_ratio`` for CP."""
    t, s = conv.out_channels, conv.in_channels
    k = conv.kernel_size[0] * conv.kernel_size[1]
    return min(t * s, t * k, s * k)


def cp_als(tensor: np.ndarray, rank: int, seed: int = 0, n_iter: int = 500) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return (weights, [A, B, C]) of a rank-``rank`` CP decomposition by tensorly's ALS."""
    cp = parafac(tensor, rank=rank, init="random" if rank > min(tensor.shape) else "svd", n_iter_max=n_iter,
                 tol=1e-9, random_state=seed, normalize_factors=False)
    return np.asarray(cp.weights), [np.asarray(f) for f in cp.factors]


def cp_reconstruct(weights: np.ndarray, factors: list[np.ndarray]) -> np.ndarray:
    """Return the full tensor of a CP decomposition."""
    return tl.cp_to_tensor((weights, factors))


def rank_one_norm_sum(weights: np.ndarray, factors: list[np.ndarray]) -> float:
    """Return the sum over components of the squared Frobenius norms of the rank-1 terms."""
    norms = np.abs(weights).copy()
    for factor in factors:
        norms = norms * np.linalg.norm(factor, axis=0)
    return float(np.sum(norms ** 2))


def _constrained_update(gram: np.ndarray, rhs: np.ndarray, target_sq: float, penalty: np.ndarray, bound_sq: float,
                        current: np.ndarray) -> np.ndarray:
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

    def error_sq(f: np.ndarray) -> float:
        return target_sq - 2.0 * float(np.sum(f * rhs)) + float(np.sum((f @ gram) * f))

    def objective(f: np.ndarray) -> float:
        return float(np.sum(f ** 2 * penalty[None, :]))

    if error_sq(current) > bound_sq:
        return np.linalg.lstsq(gram, rhs.T, rcond=None)[0].T
    inv_root = 1.0 / np.sqrt(np.maximum(penalty, 1e-300))
    eigenvalues, q = np.linalg.eigh(inv_root[:, None] * gram * inv_root[None, :])
    eigenvalues = np.maximum(eigenvalues, 0.0)
    left = (rhs * inv_root[None, :]) @ q
    right = q.T * inv_root[None, :]

    def solve(nu: float) -> np.ndarray:
        return (left / np.maximum(eigenvalues + nu, 1e-300)[None, :]) @ right

    low, high = -30.0, 30.0
    if error_sq(solve(np.exp(high))) <= bound_sq:
        low = high
    elif error_sq(solve(np.exp(low))) > bound_sq:
        return current
    else:
        for _ in range(60):
            middle = 0.5 * (low + high)
            if error_sq(solve(np.exp(middle))) <= bound_sq:
                low = middle
            else:
                high = middle
    candidate = solve(np.exp(low))
    if error_sq(candidate) <= bound_sq and objective(candidate) < objective(current):
        return candidate
    return current


def _penalties(factors: list[np.ndarray], mode: int) -> np.ndarray:
    penalty = np.ones(factors[mode].shape[1])
    for other_mode, other in enumerate(factors):
        if other_mode != mode:
            penalty = penalty * np.sum(other ** 2, axis=0)
    return penalty


def _normal_equations(tensor: np.ndarray, factors: list[np.ndarray], mode: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (K^T K, X_(mode) K) for the Khatri-Rao product K of the other factors, without forming K."""
    gram = np.ones((factors[mode].shape[1],) * 2)
    for other_mode, other in enumerate(factors):
        if other_mode != mode:
            gram = gram * (other.T @ other)
    rhs = tl.tenalg.unfolding_dot_khatri_rao(tensor, (np.ones(factors[mode].shape[1]), factors), mode)
    return gram, rhs


def _regularized_als(tensor: np.ndarray, factors: list[np.ndarray], nu: float, n_iter: int) -> list[np.ndarray]:
    """Return factors after ``n_iter`` sweeps minimising ||X - [[A, B, C]]||^2 + nu * (sum of squared rank-1 norms)."""
    factors = [f.copy() for f in factors]
    for _ in range(n_iter):
        for mode in range(len(factors)):
            gram, rhs = _normal_equations(tensor, factors, mode)
            factors[mode] = np.linalg.lstsq(gram + nu * np.diag(_penalties(factors, mode)), rhs.T, rcond=None)[0].T
    return factors


def epc_correct(tensor: np.ndarray, weights: np.ndarray, factors: list[np.ndarray], delta: float,
                n_iter: int = 100, penalty_steps: int = 24) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return a CP decomposition (unit weights, factors) of error <= ``delta`` (absolute Frobenius)
    whose sum of squared rank-1 norms is no larger than that of ``(weights, factors)``.

    Two stages. (1) A penalty path: regularised ALS on error^2 + nu * norm-sum, restarted from the
    given decomposition, with nu bisected on a log scale (``penalty_steps`` trials of ``n_iter``
    sweeps) for the largest nu whose result still meets the bound; unlike single-factor updates
    this can leave a degenerate ALS point, where every factor is already its own least-squares
    optimum. (2) Polishing with exactly solved single-factor updates (:func:`_constrained_update`),
    which keep the bound and never raise the norm sum. If the start itself violates the bound it
    is returned unchanged (rescaled).
    """
    start = [f.copy() for f in factors]
    start[0] = start[0] * weights[None, :]
    bound = float(delta)
    target_sq = float(np.sum(tensor ** 2))
    ones = np.ones(len(weights))

    def error(candidate):
        return float(np.linalg.norm(tensor - cp_reconstruct(ones, candidate)))

    def norm_sum(candidate):
        return rank_one_norm_sum(ones, candidate)

    best = start
    if error(start) > bound * (1 + 1e-12):
        return ones, start
    low, high = -12.0, 2.0
    for _ in range(penalty_steps):
        middle = 0.5 * (low + high)
        candidate = _regularized_als(tensor, start, target_sq * np.exp(middle) / max(norm_sum(start), 1e-300), n_iter)
        if error(candidate) <= bound:
            low = middle
            if norm_sum(candidate) < norm_sum(best):
                best = candidate
        else:
            high = middle
    factors = [f.copy() for f in best]
    previous = norm_sum(factors)
    for _ in range(n_iter):
        for mode in range(len(factors)):
            gram, rhs = _normal_equations(tensor, factors, mode)
            factors[mode] = _constrained_update(gram, rhs, target_sq, _penalties(factors, mode), bound ** 2, factors[mode])
        current = norm_sum(factors)
        if previous - current <= 1e-9 * max(previous, 1e-12):
            break
        previous = current
    if error(factors) > bound * (1 + 1e-9):  # round-off in the Gram form: fall back to the checked stage-1 result
        factors = best
    return ones, factors


def cp_sequence(conv: nn.Conv2d, rank: int, seed: int = 0, epc: bool = False, delta: float | None = None,
                delta_relative: bool = True, als_iters: int = 200, epc_iters: int = 100,
                epc_steps: int = 24) -> tuple[nn.Sequential, dict]:
    """Return (1x1 -> depthwise k x k -> 1x1 replacement, info) of a conv at CP ``rank``.

    With ``epc`` the ALS result is corrected by :func:`epc_correct` within ``delta`` (relative
    to ||W|| when ``delta_relative``, else absolute; None keeps the ALS error as the bound).
    ``info`` holds ``rel_error``, ``norm_sum_als``, ``error_als`` and, with EPC,
    ``norm_sum_epc``, ``delta_abs``. ``als_iters`` bounds the ALS sweeps; ``epc_iters`` and
    ``epc_steps`` the EPC sweeps per penalty trial and the number of trials.

    Raises:
        ValueError: a grouped conv, a padding mode other than zeros, or rank < 1.
    """
    if conv.groups != 1:
        raise ValueError(f"cp needs an ungrouped conv, got groups={conv.groups}")
    if conv.padding_mode != "zeros":
        raise ValueError(f"cp moves padding to the depthwise conv, which needs padding_mode='zeros', got {conv.padding_mode!r}")
    if rank < 1:
        raise ValueError(f"cp rank must be >= 1, got {rank}")
    weight = _weight64(conv)
    t, s, kh, kw = weight.shape
    tensor = weight.reshape(t, s, kh * kw)
    weights, factors = cp_als(tensor, rank, seed, n_iter=als_iters)
    als_error = float(np.linalg.norm(tensor - cp_reconstruct(weights, factors)))
    info = {"norm_sum_als": rank_one_norm_sum(weights, factors), "error_als": als_error / max(np.linalg.norm(tensor), 1e-300)}
    if epc:
        bound = als_error if delta is None else (float(delta) * float(np.linalg.norm(tensor)) if delta_relative else float(delta))
        weights, factors = epc_correct(tensor, weights, factors, max(bound, als_error), n_iter=epc_iters, penalty_steps=epc_steps)
        info.update({"norm_sum_epc": rank_one_norm_sum(weights, factors), "delta_abs": max(bound, als_error)})
    a, b, c = factors
    a = a * weights[None, :]
    first = _conv(s, rank, 1)
    depthwise = _conv(rank, rank, (kh, kw), like=conv, groups=rank)
    last = _conv(rank, t, 1, bias=_bias(conv))
    first.weight.data.copy_(torch.from_numpy(b.T.copy()).view(rank, s, 1, 1))
    depthwise.weight.data.copy_(torch.from_numpy(c.T.copy()).view(rank, 1, kh, kw))
    last.weight.data.copy_(torch.from_numpy(a.copy()).view(t, rank, 1, 1))
    info["rel_error"] = relative_error(tensor, cp_reconstruct(np.ones(rank), [a, b, c]))
    return nn.Sequential(first, depthwise, last), info
