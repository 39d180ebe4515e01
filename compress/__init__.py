"""Compression of trained models: one table of methods with one signature.

    new_model, report = compress.apply(model, "svd", example_input, rank_ratio=0.5)

Methods: ``svd`` (Linear and 1x1 convs), ``tucker2`` and ``cp`` / ``cp_epc`` (k x k convs),
``prune`` (structured channel pruning through torch-pruning) and ``sparsity`` (unstructured
magnitude pruning: zeros only). The input model is never modified; the result is a plain
``nn.Module`` of standard layers (Conv2d/Linear/BatchNorm) that ptflops, the latency timer,
``torch.save``, TorchScript/ONNX export and torch-pruning all see. ``compress.methods.METHODS``
says what each method applies to and which options it takes.

Where things are: ``methods.py`` (the table), ``options.py`` (option tables), ``layers.py`` (selection, MACs),
``factorize/`` (one module per decomposition with its row: ``svd``, ``tucker2``, ``cp`` with EPC; the engine, budgets,
weight-only rank selection and shared algebra), ``prune.py``, ``sparsity.py``, ``quantize.py`` (the int8 step and its
accuracy control), ``latency_target.py`` (targets measured in a runtime), ``penalty.py`` (LWALM's norm term) and
``rank_search.py`` (data-driven rank selection, which runs ``apply``). Inside the package imports run one way
(``tests/test_structure.py`` checks the order it lists).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from compress.compression_report import CompressionReport
from compress.methods import METHODS, Method
from compress.options import check_options, resolve_options
from compress.penalty import norm_penalty


def list_methods(with_descriptions: bool = False):
    """Return the method names (or ``(name, description)`` pairs)."""
    return [(n, m.description) for n, m in METHODS.items()] if with_descriptions else list(METHODS)


def get_method(name: str) -> Method:
    """Return the descriptor of method ``name`` (its options, and its factorization row if it has one).

    Raises:
        KeyError: unknown method (the message lists the known ones).
    """
    if name not in METHODS:
        raise KeyError(f"unknown compression method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def validate_options(method: str, **options) -> None:
    """Check option names and values against the method's row of :data:`compress.methods.METHODS` (its own options;
    the pipeline's, ``Method.pipeline_options``, are the pipeline's to check).

    Raises:
        KeyError: unknown method (the message lists the known ones).
        ValueError: an option the method does not take, or a value out of its range (both named).
    """
    check_options(method, get_method(method).options, options)


def apply(model: nn.Module, method: str, example_input: torch.Tensor, **options) -> tuple[nn.Module, CompressionReport]:
    """Return ``(compressed copy of model, per-layer report)``; ``model`` itself is untouched.

    ``example_input`` is one batch at the model's input size (activation shapes and MACs come
    from it). Options are the method's own (``compress.methods.METHODS[method].options``); those
    not given take their defaults there. ``report.options`` holds the options as given.

    Raises:
        KeyError: unknown method.
        ValueError: an unknown or invalid option (named in the message), or what the method raises.
    """
    entry = get_method(method)
    resolved = resolve_options(method, entry.options, options)
    new_model = copy.deepcopy(model)
    for attribute in ("data_config", "arch"):
        if hasattr(model, attribute):
            setattr(new_model, attribute, copy.deepcopy(getattr(model, attribute)))
    report = entry.run(new_model, example_input, resolved)
    report.options = {k: v for k, v in options.items() if k not in entry.data_options}
    return new_model, report


__all__ = ["CompressionReport", "Method", "apply", "get_method", "list_methods", "norm_penalty", "validate_options"]
