"""The compression methods behind ``compress.apply``: factorizations, structured pruning, sparsity.

Every method takes ``(model, example_input, **options)``, changes ``model`` in place (``apply``
hands it a copy) and returns a :class:`CompressionReport`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from compress import factorize
from compress.layers import (classifier_names, input_shape_of, kernel_text, layer_macs, record_output_shapes,
                             select_layers, sequence_macs, set_module)
from compress.rank import rank_by_ratio, select_rank

_logger = logging.getLogger(__name__)


@dataclass
class CompressionReport:
    """What a compression did: one row per conv/linear layer, plus the factor groups.

    ``layers`` rows hold: ``layer, method, kernel, status ('compressed' | 'skipped'), reason,
    rank, params_before, params_after, macs_before, macs_after, rel_error`` (and method-specific
    keys such as ``norm_sum_als``/``norm_sum_epc``). ``factor_groups`` lists, per factorized
    layer, the names of its new layers (for the norm-constrained fine-tuning).
    """

    method: str
    options: dict
    layers: list[dict] = field(default_factory=list)
    factor_groups: list[list[str]] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0

    def compressed(self) -> list[dict]:
        """Return the rows of the layers that were changed."""
        return [row for row in self.layers if row["status"] == "compressed"]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


FACTORIZATION_OPTIONS = {"rank_ratio", "rank_selection", "energy", "delta", "delta_relative", "layers", "exclude",
                         "kernel_sizes", "include_classifier", "skip_if_larger", "seed", "ranks", "als_iters", "epc_iters",
                         "epc_steps"}


def _applicable(method: str, module: nn.Module) -> str | None:
    """Return why ``method`` cannot factorize ``module``, or None if it can."""
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        return f"grouped/depthwise conv (groups={module.groups})"
    is_pointwise = isinstance(module, nn.Linear) or module.kernel_size == (1, 1)
    if method == "svd" and not is_pointwise:
        return f"{module.kernel_size[0]}x{module.kernel_size[1]} conv: use tucker2 or cp"
    if method in ("tucker2", "cp", "cp_epc") and is_pointwise:
        return "1x1 conv or linear: use svd"
    return None


def _ranks_for(method: str, module: nn.Module, options: dict):
    selection = options.get("rank_selection", "ratio")
    ratio = float(options.get("rank_ratio", 0.5))
    energy = float(options.get("energy", 0.9))
    weight = module.weight.detach().double().numpy()
    if method == "svd":
        matrix = weight.reshape(weight.shape[0], -1)
        return select_rank(matrix, min(matrix.shape), selection, ratio, energy)
    t, s = weight.shape[:2]
    unfold_out = weight.reshape(t, -1)
    unfold_in = weight.transpose(1, 0, 2, 3).reshape(s, -1)
    if method == "tucker2":
        return (select_rank(unfold_out, t, selection, ratio, energy), select_rank(unfold_in, s, selection, ratio, energy))
    full = factorize.cp_full_rank(module)
    if selection == "ratio":
        return rank_by_ratio(full, ratio)
    # A CP rank is at least every multilinear rank: take the largest the selector asks for.
    k = weight.shape[2] * weight.shape[3]
    unfold_k = weight.reshape(t, s, k).transpose(2, 0, 1).reshape(k, -1)
    return min(full, max(select_rank(m, min(m.shape), selection, ratio, energy) for m in (unfold_out, unfold_in, unfold_k)))


def factorize_model(model: nn.Module, example_input: torch.Tensor, method: str, **options) -> CompressionReport:
    """Factorize every selected layer of ``model`` in place with ``method`` ('svd', 'tucker2', 'cp', 'cp_epc').

    ``ranks`` ({layer name: rank}) fixes ranks per layer and overrides the selector. With
    ``skip_if_larger`` (default True) a layer whose factorized form would not have fewer
    parameters is left alone and reported as skipped.

    Raises:
        ValueError: an unknown option or an invalid rank/option value.
    """
    unknown = sorted(set(options) - FACTORIZATION_OPTIONS)
    if unknown:
        raise ValueError(f"{method}: unknown options {unknown}; known: {sorted(FACTORIZATION_OPTIONS)}")
    shapes = record_output_shapes(model, example_input)
    report = CompressionReport(method, dict(options), params_before=_params(model))
    fixed_ranks = options.get("ranks") or {}
    candidates = list(select_layers(model, options.get("layers"), options.get("exclude"), options.get("kernel_sizes"),
                                    bool(options.get("include_classifier", False))))
    for name, module, reason in candidates:
        row = {"layer": name, "method": method, "kernel": kernel_text(module), "status": "skipped", "reason": reason or "",
               "rank": "", "params_before": _params(module), "params_after": _params(module), "rel_error": 0.0}
        if name not in shapes:
            reason = reason or "not used in the forward pass"
        row["macs_before"] = row["macs_after"] = layer_macs(module, shapes[name]) if name in shapes else 0
        reason = reason or _applicable(method, module)
        if reason:
            row["reason"] = reason
            report.layers.append(row)
            continue
        rank = fixed_ranks.get(name) or _ranks_for(method, module, options)
        seed = int(options.get("seed", 0))
        extra = {}
        if method == "svd":
            sequence, error = factorize.svd_sequence(module, int(rank))
        elif method == "tucker2":
            sequence, error = factorize.tucker2_sequence(module, tuple(rank), seed)
        else:
            sequence, extra = factorize.cp_sequence(module, int(rank), seed, epc=method == "cp_epc",
                                                    delta=options.get("delta"),
                                                    delta_relative=bool(options.get("delta_relative", True)),
                                                    **{k: int(options[k]) for k in ("als_iters", "epc_iters", "epc_steps") if k in options})
            error = extra.pop("rel_error")
        sequence.train(module.training)
        params_after = _params(sequence)
        row.update({"rank": "x".join(map(str, rank)) if isinstance(rank, tuple) else int(rank), "rel_error": error,
                    "params_after": params_after, "macs_after": sequence_macs(sequence, input_shape_of(module, shapes[name])), **extra})
        if options.get("skip_if_larger", True) and params_after >= row["params_before"]:
            row.update({"reason": f"factorized form has {params_after} params >= {row['params_before']}",
                        "params_after": row["params_before"], "macs_after": row["macs_before"]})
            report.layers.append(row)
            continue
        set_module(model, name, sequence)
        row["status"] = "compressed"
        report.layers.append(row)
        report.factor_groups.append([f"{name}.{i}" for i, layer in enumerate(sequence) if isinstance(layer, (nn.Conv2d, nn.Linear))])
    report.params_after = _params(model)
    return report


PRUNE_OPTIONS = {"pruning_ratio", "importance", "global_pruning", "target_macs", "target_params", "max_pruning_ratio",
                 "round_to", "calibration", "layers", "exclude"}


def _importance(name: str):
    import torch_pruning as tp

    importances = {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "bn_scale": lambda: tp.importance.BNScaleImportance(),
    }
    if name not in importances:
        raise ValueError(f"prune: importance {name!r} is not one of {sorted(importances)}")
    return importances[name]()


def _conv_linear_rows(model: nn.Module, shapes: dict) -> dict[str, dict]:
    return {name: {"kernel": kernel_text(m), "params": _params(m), "macs": layer_macs(m, shapes[name]) if name in shapes else 0}
            for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def prune_model(model: nn.Module, example_input: torch.Tensor, **options) -> CompressionReport:
    """Prune channels of ``model`` in place with torch-pruning's dependency graph (MetaPruner).

    Options: ``pruning_ratio`` (fraction of channels removed, default 0.5), ``importance``
    ('l1' | 'l2' | 'taylor' | 'bn_scale'), ``global_pruning`` (default False: uniform per layer),
    ``target_macs`` / ``target_params`` (fraction of the original to keep: pruning proceeds in
    small steps until reached, instead of a fixed ratio), ``max_pruning_ratio``, ``round_to``,
    ``calibration`` ((images, labels) batch, required by 'taylor'), ``exclude`` (name patterns
    of layers never pruned). The classifier's outputs are never pruned.

    Raises:
        ValueError: an unknown option or importance, 'taylor' without calibration, or a
            target that pruning cannot reach.
    """
    import fnmatch

    import torch_pruning as tp

    unknown = sorted(set(options) - PRUNE_OPTIONS)
    if unknown:
        raise ValueError(f"prune: unknown options {unknown}; known: {sorted(PRUNE_OPTIONS)}")
    importance_name = options.get("importance", "l1")
    importance = _importance(importance_name)
    calibration = options.get("calibration")
    if importance_name == "taylor" and calibration is None:
        raise ValueError("prune: importance 'taylor' needs calibration=(images, labels), a batch to take gradients on")
    if importance_name == "bn_scale" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(f"prune: importance 'bn_scale' ranks channels by BatchNorm scales, and {type(model).__name__} "
                         "has no BatchNorm layer; use 'l1', 'l2' or 'taylor'")
    head = classifier_names(model)
    exclude = options.get("exclude") or []
    exclude = [exclude] if isinstance(exclude, str) else exclude
    ignored = [m for n, m in model.named_modules() if n in head or (isinstance(m, (nn.Conv2d, nn.Linear)) and any(fnmatch.fnmatch(n, p) for p in exclude))]
    before_shapes = record_output_shapes(model, example_input)
    before = _conv_linear_rows(model, before_shapes)
    report = CompressionReport("prune", {k: v for k, v in options.items() if k != "calibration"}, params_before=_params(model))
    macs_start, params_start = tp.utils.count_ops_and_params(model, example_input)
    target_macs, target_params = options.get("target_macs"), options.get("target_params")
    by_target = target_macs is not None or target_params is not None
    steps = 50 if by_target else 1
    ratio = float(options.get("max_pruning_ratio", 0.9)) if by_target else float(options.get("pruning_ratio", 0.5))
    if not 0 < ratio < 1:
        raise ValueError(f"prune: pruning_ratio must be in (0, 1), got {ratio}")
    was_training = model.training
    model.eval()
    pruner = tp.pruner.MetaPruner(
        model, example_input, importance=importance, global_pruning=bool(options.get("global_pruning", False)),
        pruning_ratio=ratio, iterative_steps=steps, ignored_layers=ignored,
        max_pruning_ratio=float(options.get("max_pruning_ratio", 1.0 if not by_target else 0.95)),
        round_to=options.get("round_to"),
    )
    reached = not by_target
    for _ in range(steps):
        if importance_name == "taylor":
            model.zero_grad()
            images, labels = calibration
            F.binary_cross_entropy_with_logits(model(images), labels).backward()
        pruner.step()
        if by_target:
            macs, params = tp.utils.count_ops_and_params(model, example_input)
            if (target_macs is None or macs <= target_macs * macs_start) and (target_params is None or params <= target_params * params_start):
                reached = True
                break
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if not reached:
        raise ValueError(f"prune: could not reach target_macs={target_macs} / target_params={target_params} "
                         f"within max_pruning_ratio={ratio}")
    after = _conv_linear_rows(model, record_output_shapes(model, example_input))
    for name, old in before.items():
        new = after.get(name, old)
        changed = new["kernel"] != old["kernel"]
        report.layers.append({
            "layer": name, "method": "prune", "kernel": old["kernel"] + (f" -> {new['kernel']}" if changed else ""),
            "status": "compressed" if changed else "skipped",
            "reason": "" if changed else ("classifier kept" if name in head else "no channel removed"),
            "rank": "", "params_before": old["params"], "params_after": new["params"],
            "macs_before": old["macs"], "macs_after": new["macs"], "rel_error": "",
        })
    report.params_after = _params(model)
    if report.params_after == report.params_before:
        raise ValueError(f"prune: no channel was removed from {type(model).__name__} (importance {importance_name!r}, "
                         f"ratio {ratio}); every prunable group may be ignored or too small")
    return report


SPARSITY_OPTIONS = {"amount", "layers", "exclude", "include_classifier"}


def sparsify_model(model: nn.Module, example_input: torch.Tensor, **options) -> CompressionReport:
    """Zero the ``amount`` fraction of smallest-magnitude weights (global L1, torch.nn.utils.prune), in place.

    The honest cost: shapes do not change, so MACs and latency do not fall; only the zipped file
    shrinks. Rows report non-zero parameters in ``params_after``.

    Raises:
        ValueError: unknown option or ``amount`` outside (0, 1).
    """
    from torch.nn.utils import prune

    unknown = sorted(set(options) - SPARSITY_OPTIONS)
    if unknown:
        raise ValueError(f"sparsity: unknown options {unknown}; known: {sorted(SPARSITY_OPTIONS)}")
    amount = float(options.get("amount", 0.5))
    if not 0 < amount < 1:
        raise ValueError(f"sparsity: amount must be in (0, 1), got {amount}")
    shapes = record_output_shapes(model, example_input)
    report = CompressionReport("sparsity", dict(options), params_before=_params(model))
    selected = [(n, m, r) for n, m, r in select_layers(model, options.get("layers"), options.get("exclude"), None,
                                                         bool(options.get("include_classifier", False)))]
    targets = [(m, "weight") for _, m, r in selected if r is None]
    if not targets:
        raise ValueError("sparsity: no layer selected")
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    for module, _ in targets:
        prune.remove(module, "weight")
    for name, module, reason in selected:
        macs = layer_macs(module, shapes[name]) if name in shapes else 0
        nonzero = int(sum(int(torch.count_nonzero(p)) for p in module.parameters()))
        report.layers.append({
            "layer": name, "method": "sparsity", "kernel": kernel_text(module), "status": "skipped" if reason else "compressed",
            "reason": reason or "zeros only: no MAC saving", "rank": "", "params_before": _params(module),
            "params_after": nonzero if not reason else _params(module), "macs_before": macs, "macs_after": macs, "rel_error": "",
        })
    report.params_after = _params(model)
    return report


def norm_penalty(model: nn.Module, factor_groups: list[list[str]], weight: float):
    """Return ``extra_loss(model)`` = weight * sum over factor layers of ||W||_F^2, LWALM's norm constraint.

    Returns None when ``weight`` is 0 or there are no factor layers (no penalty).
    """
    names = [name for group in factor_groups for name in group]
    if weight == 0 or not names:
        return None

    def extra_loss(current: nn.Module) -> torch.Tensor:
        return weight * sum(current.get_submodule(name).weight.pow(2).sum() for name in names)

    return extra_loss
