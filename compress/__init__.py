"""Compression of trained models: one registry of methods with one signature.

    new_model, report = compress.apply(model, "svd", example_input, rank_ratio=0.5)

Methods: ``svd`` (Linear and 1x1 convs), ``tucker2`` and ``cp`` / ``cp_epc`` (k x k convs),
``prune`` (structured channel pruning through torch-pruning) and ``sparsity`` (unstructured
magnitude pruning: zeros only). The input model is never modified; the result is a plain
``nn.Module`` of standard layers (Conv2d/Linear/BatchNorm) that ptflops, the latency timer,
``torch.save``, TorchScript/ONNX export and torch-pruning all see.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from compress.methods import CompressionReport, factorize_model, norm_penalty, prune_model, sparsify_model

_METHODS: dict[str, tuple[Callable, str]] = {
    "svd": (lambda m, x, **o: factorize_model(m, x, "svd", **o), "truncated SVD of Linear and 1x1 conv layers"),
    "tucker2": (lambda m, x, **o: factorize_model(m, x, "tucker2", **o), "Tucker-2 of k x k convs: 1x1, k x k core, 1x1"),
    "cp": (lambda m, x, **o: factorize_model(m, x, "cp", **o), "CP (ALS) of k x k convs: 1x1, depthwise k x k, 1x1"),
    "cp_epc": (lambda m, x, **o: factorize_model(m, x, "cp_epc", **o), "CP with error-preserving correction (CPD-EPC)"),
    "prune": (prune_model, "structured channel pruning (torch-pruning dependency graph)"),
    "sparsity": (sparsify_model, "unstructured magnitude sparsity (zeros only, no MAC saving)"),
}


def list_methods(with_descriptions: bool = False):
    """Return the method names (or ``(name, description)`` pairs)."""
    return [(n, d) for n, (_, d) in _METHODS.items()] if with_descriptions else list(_METHODS)


def apply(model: nn.Module, method: str, example_input: torch.Tensor, **options) -> tuple[nn.Module, CompressionReport]:
    """Return ``(compressed copy of model, per-layer report)``; ``model`` itself is untouched.

    ``example_input`` is one batch at the model's input size (activation shapes and MACs come
    from it). Options are the method's own (see each method); the factorizations share
    ``rank_ratio``, ``rank_selection``, ``energy``, ``delta``, ``layers``, ``exclude``,
    ``kernel_sizes``, ``ranks``.

    Raises:
        KeyError: unknown method.
        ValueError: an unknown or invalid option (named in the message).
    """
    if method not in _METHODS:
        raise KeyError(f"unknown compression method {method!r}; known: {', '.join(_METHODS)}")
    new_model = copy.deepcopy(model)
    for attribute in ("data_config", "arch"):
        if hasattr(model, attribute):
            setattr(new_model, attribute, copy.deepcopy(getattr(model, attribute)))
    report = _METHODS[method][0](new_model, example_input, **options)
    return new_model, report


__all__ = ["CompressionReport", "apply", "list_methods", "norm_penalty"]
