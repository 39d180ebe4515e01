"""The matrix views of a layer's weight that factorizations work on, the error of an approximation, and the conv
layers a replacement is built of (shared by ``svd``, ``tucker2`` and ``cp``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def weight64(module: nn.Module) -> np.ndarray:
    """Return a layer's weight as a float64 NumPy array (a copy, on the CPU)."""
    return module.weight.detach().cpu().double().numpy()


def unfoldings(weight: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return the matrix views of a weight a rank is chosen on: for a Linear or 1x1 conv, (out x in,);
    for a T x S x kh x kw conv kernel, its three mode unfoldings (T x S*k, S x T*k, k x T*S), k = kh*kw."""
    if weight.ndim == 2 or weight.shape[2:] == (1, 1):
        return (weight.reshape(weight.shape[0], -1),)
    t, s = weight.shape[:2]
    k = weight.shape[2] * weight.shape[3]
    return (
        weight.reshape(t, -1),
        weight.transpose(1, 0, 2, 3).reshape(s, -1),
        weight.reshape(t, s, k).transpose(2, 0, 1).reshape(k, -1),
    )


def bias_copy(module: nn.Module) -> torch.Tensor | None:
    """Return a copy of a layer's bias as float32 (None without one)."""
    return None if module.bias is None else module.bias.detach().clone().float()


def relative_error(original: np.ndarray, approximation: np.ndarray) -> float:
    """Return ||original - approximation||_F / ||original||_F (0 for an all-zero original)."""
    norm = float(np.linalg.norm(original))
    return 0.0 if norm == 0 else float(np.linalg.norm(original - approximation) / norm)


def conv_like(in_ch, out_ch, kernel, like: nn.Conv2d | None = None, groups=1, bias=None) -> nn.Conv2d:
    """Return a Conv2d ``in_ch -> out_ch`` with ``like``'s stride, padding and dilation (1, 0, 1 without one), and
    ``bias`` copied in (no bias when None)."""
    conv = nn.Conv2d(
        in_ch,
        out_ch,
        kernel,
        groups=groups,
        bias=bias is not None,
        stride=like.stride if like is not None else 1,
        padding=like.padding if like is not None else 0,
        dilation=like.dilation if like is not None else 1,
    )
    if bias is not None:
        conv.bias.data.copy_(bias)
    return conv


def truncation_errors(matrix: np.ndarray) -> np.ndarray:
    """Return e[r] = relative Frobenius error of the best rank-r approximation of ``matrix``, r = 0..min(shape)."""
    singular = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
    total = float(np.sum(singular**2))
    if total == 0:
        return np.zeros(len(singular) + 1)
    tail = np.concatenate([np.cumsum((singular**2)[::-1])[::-1], [0.0]])
    return np.sqrt(tail / total)
