"""Data-driven per-layer rank selection: ``grad_align`` (LWALM 5.1.2) and ``binary_search``.

Both walk the selected layers in order, compress one layer at a time at candidate ranks, briefly
fine-tune each candidate on a few training batches, and keep the chosen rank before moving on.
They return ``{layer name: rank}``, which ``compress.apply(..., ranks=...)`` then applies.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

import compress
from compress.layers import classifier_names, select_layers
from compress.options import FACTORIZATION_OPTIONS, resolve_options

_logger = logging.getLogger(__name__)


def _fixed_batches(batches):
    return [(x.detach(), y.detach()) for x, y in batches]


def _brief_finetune(model: nn.Module, batches, lr: float) -> None:
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()
    model.eval()


def classifier_gradient(model: nn.Module, batches) -> torch.Tensor:
    """Return the flattened gradient of the mean BCE loss over ``batches`` w.r.t. the classifier's weights.

    Raises:
        ValueError: the model has no recognisable classifier layer.
    """
    names = sorted(classifier_names(model))
    if not names:
        raise ValueError(f"{type(model).__name__} has no classifier layer to take the reference gradient on")
    weight = model.get_submodule(names[-1]).weight
    model.eval()
    model.zero_grad(set_to_none=True)
    loss = sum(F.binary_cross_entropy_with_logits(model(x), y) for x, y in batches) / len(batches)
    (gradient,) = torch.autograd.grad(loss, weight)
    return gradient.detach().flatten()


def scaled_gradient_distance(reference: torch.Tensor, gradient: torch.Tensor) -> float:
    """Return min over s of ||reference - s * gradient||_2, attained at s = g.g_ref / g.g (LWALM's criterion)."""
    denominator = float(gradient @ gradient)
    if denominator == 0:
        return float(reference.norm())
    scale = float(gradient @ reference) / denominator
    return float((reference - scale * gradient).norm())


def _layers_for(model, method, options):
    entry = compress.get_method(method)
    resolved = resolve_options(method, entry.options, options)
    return [
        name
        for name, module, reason in select_layers(
            model, resolved["layers"], resolved["exclude"], resolved["kernel_sizes"], resolved["include_classifier"]
        )
        if reason is None and entry.factorization.applies_to(module) is None
    ]


def _decomposition_options(method: str, options: dict) -> dict:
    """Return the options that shape one layer's decomposition (not which layers or ranks are chosen)."""
    own = {k for k in compress.get_method(method).options if k not in FACTORIZATION_OPTIONS} | {"seed"}
    return {k: v for k, v in options.items() if k in own}


def grad_align_ranks(
    model: nn.Module,
    method: str,
    example_input: torch.Tensor,
    batches,
    candidate_ratios=(0.25, 0.5, 0.75),
    lr: float = 1e-4,
    **options,
) -> dict:
    """Return ``{layer: rank}`` chosen by gradient alignment (LWALM 5.1.2).

    For each layer in order and each candidate rank (``candidate_ratios`` of the layer's full
    rank), the layer is factorized in the current model, fine-tuned on ``batches`` ((x, y) pairs),
    and scored by the distance between the full model's classifier gradient and the candidate's,
    after optimal scaling; the best candidate is kept before the next layer.
    """
    batches = _fixed_batches(batches)
    reference = classifier_gradient(model, batches)
    current = model
    chosen = {}
    factor_options = _decomposition_options(method, options)
    how = compress.get_method(method).factorization
    for name in _layers_for(model, method, options):
        module = current.get_submodule(name)
        full = how.full_rank(module)
        scored = []
        for ratio in candidate_ratios:
            rank = how.rank_of(module, max(1, int(round(ratio * full))))
            candidate, report = compress.apply(
                current, method, example_input, layers=[name], ranks={name: rank}, skip_if_larger=False, **factor_options
            )
            if not report.compressed():
                continue
            _brief_finetune(candidate, batches, lr)
            scored.append((scaled_gradient_distance(reference, classifier_gradient(candidate, batches)), rank, candidate))
        if scored:
            distance, rank, current = min(scored, key=lambda item: item[0])
            chosen[name] = rank
            _logger.info("grad_align: %s rank %s (distance %.4g)", name, rank, distance)
    return chosen


def binary_search_ranks(
    model: nn.Module,
    method: str,
    example_input: torch.Tensor,
    batches,
    evaluate,
    max_drop: float = 0.5,
    lr: float = 1e-4,
    **options,
) -> dict:
    """Return ``{layer: rank}``: per layer, the smallest rank whose accuracy drop stays <= ``max_drop``.

    ``evaluate(model) -> accuracy in percent`` scores a model (e.g. mean accuracy on a validation
    subset). Each layer's rank is binary-searched in [1, full rank] (about log2(full) trials),
    each trial factorizing that one layer in the current model and fine-tuning it on ``batches``;
    the chosen factorization is kept before the next layer, so drops do not compound unchecked.
    """
    batches = _fixed_batches(batches)
    baseline = float(evaluate(model))
    current = model
    chosen = {}
    factor_options = _decomposition_options(method, options)
    how = compress.get_method(method).factorization
    for name in _layers_for(model, method, options):
        module = current.get_submodule(name)
        low, high = 1, how.full_rank(module)
        best = None
        while low < high:
            middle = (low + high) // 2
            candidate, report = compress.apply(
                current,
                method,
                example_input,
                layers=[name],
                ranks={name: how.rank_of(module, middle)},
                skip_if_larger=False,
                **factor_options,
            )
            _brief_finetune(candidate, batches, lr)
            if baseline - float(evaluate(candidate)) <= max_drop:
                high, best = middle, candidate
            else:
                low = middle + 1
        if best is None:  # only full rank keeps the accuracy: leave the layer whole
            continue
        rank = how.rank_of(module, high)
        chosen[name] = rank
        current = best
        _logger.info("binary_search: %s rank %s", name, rank)
    return chosen


def accuracy_evaluator(images: torch.Tensor, labels: torch.Tensor):
    """Return ``evaluate(model)``: mean per-attribute accuracy (percent) of ``model`` on a fixed batch."""

    def evaluate(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            predictions = (model(images) > 0).float()
        return float(100.0 * (predictions == labels).float().mean(dim=0).mean())

    return evaluate


__all__ = ["accuracy_evaluator", "binary_search_ranks", "classifier_gradient", "grad_align_ranks", "scaled_gradient_distance"]
