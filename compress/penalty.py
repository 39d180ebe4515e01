"""LWALM's factor-norm constraint as an extra fine-tuning loss."""

from __future__ import annotations

from torch import nn


def norm_penalty(model: nn.Module, factor_groups: list[list[str]], weight: float):
    """Return ``extra_loss(model)`` = weight * sum over factor layers of ||W||_F^2, LWALM's norm constraint.

    Returns None when ``weight`` is 0 or there are no factor layers (no penalty).
    """
    names = [name for group in factor_groups for name in group]
    if weight == 0 or not names:
        return None

    def extra_loss(current: nn.Module):
        return weight * sum(current.get_submodule(name).weight.pow(2).sum() for name in names)

    return extra_loss
