"""Structured channel pruning through torch-pruning's dependency graph (MetaPruner)."""

from __future__ import annotations

import copy
import fnmatch

import torch
import torch.nn.functional as F
from torch import nn

from compress.compression_report import CompressionReport
from compress.latency_target import missed_target, search_for_latency
from compress.layers import check_patterns, classifier_names, kernel_text, layer_macs, record_output_shapes
from compress.options import FASTEST, PRUNE_OPTIONS, resolve_options
from models import count_params


def _importance(name: str):
    import torch_pruning as tp

    importances = {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "bn_scale": lambda: tp.importance.BNScaleImportance(),
    }
    return importances[name]()


def _where(asked: str, runtime: str) -> str:
    return f"the fastest fp32 runtime ({runtime})" if asked == FASTEST else runtime


def _prune_to_latency(model: nn.Module, example_input: torch.Tensor, options: dict) -> CompressionReport:
    """Prune ``model`` in place to ``target_latency`` of its latency in ``runtime`` (see :func:`prune_model`)."""
    runtime = options["runtime"]
    by_ratio = {**options, "target_latency": None}
    original = copy.deepcopy(model).eval()
    most = float(options["max_pruning_ratio"])

    def build(kept: float) -> nn.Module:
        candidate = copy.deepcopy(original)
        prune_model(candidate, example_input, **{**by_ratio, "pruning_ratio": min(most, 1.0 - kept)})
        return candidate

    kept, _, speedup, runtime, reached = search_for_latency(
        build,
        original,
        runtime,
        example_input,
        float(options["target_latency"]),
        1.0 - most,
        0.98,
        int(options["latency_batch"]),
        if_unreachable=options["if_unreachable"],
    )
    report = prune_model(model, example_input, **{**by_ratio, "pruning_ratio": min(most, 1.0 - kept)})
    report.options = {k: v for k, v in options.items() if k != "gradient_batch"}
    where = _where(options["runtime"], runtime)
    report.notes.append(
        f"target_latency {options['target_latency']:g} in {where}: pruning ratio {1.0 - kept:.3f}, "
        f"measured {speedup:.2f}x faster than the original"
    )
    if not reached:
        report.warnings.append(missed_target(options["target_latency"], where, speedup, f"pruning ratio {1.0 - kept:.3f}"))
    return report


def _conv_linear_rows(model: nn.Module, shapes: dict) -> dict[str, dict]:
    return {
        name: {"kernel": kernel_text(m), "params": count_params(m), "macs": layer_macs(m, shapes[name]) if name in shapes else 0}
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


def _ignored_layers(model: nn.Module, exclude) -> list[nn.Module]:
    """Return the layers torch-pruning must leave whole: the classifier and the layers ``exclude`` patterns name.

    Raises:
        ValueError: an ``exclude`` pattern matches no layer.
    """
    head = classifier_names(model)
    exclude = list(exclude)
    check_patterns(model, exclude, "exclude")
    return [
        m
        for n, m in model.named_modules()
        if n in head or (isinstance(m, (nn.Conv2d, nn.Linear)) and any(fnmatch.fnmatch(n, p) for p in exclude))
    ]


def _check_importance(model: nn.Module, name: str, gradient_batch) -> None:
    if name == "taylor" and gradient_batch is None:
        raise ValueError("prune: importance 'taylor' needs gradient_batch=(images, labels), a batch to take gradients on")
    if name == "bn_scale" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(
            f"prune: importance 'bn_scale' ranks channels by BatchNorm scales, and {type(model).__name__} "
            "has no BatchNorm layer; use 'l1', 'l2' or 'taylor'"
        )


def _run_pruner(model: nn.Module, example_input: torch.Tensor, options: dict) -> None:
    """Prune ``model`` in place with MetaPruner: once at ``pruning_ratio``, or in small steps until ``target_macs`` /
    ``target_params`` is reached (up to ``max_pruning_ratio``).

    Raises:
        ValueError: a target pruning cannot reach.
    """
    import torch_pruning as tp

    macs_start, params_start = tp.utils.count_ops_and_params(model, example_input)
    target_macs, target_params = options["target_macs"], options["target_params"]
    by_target = target_macs is not None or target_params is not None
    steps = 50 if by_target else 1
    most = float(options["max_pruning_ratio"])
    was_training = model.training
    model.eval()  # the dependency graph is traced in eval mode: a training-mode pass would move BatchNorm's running statistics
    pruner = tp.pruner.MetaPruner(
        model,
        example_input,
        importance=_importance(options["importance"]),
        global_pruning=options["global_pruning"],
        pruning_ratio=most if by_target else float(options["pruning_ratio"]),
        iterative_steps=steps,
        ignored_layers=_ignored_layers(model, options["exclude"]),
        max_pruning_ratio=most,
        round_to=options["round_to"],
    )
    reached = not by_target
    for _ in range(steps):
        if options["importance"] == "taylor":
            model.zero_grad()
            images, labels = options["gradient_batch"]
            F.binary_cross_entropy_with_logits(model(images), labels).backward()
        pruner.step()
        if by_target:
            macs, params = tp.utils.count_ops_and_params(model, example_input)
            if (target_macs is None or macs <= target_macs * macs_start) and (
                target_params is None or params <= target_params * params_start
            ):
                reached = True
                break
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if not reached:
        raise ValueError(
            f"prune: could not reach target_macs={target_macs} / target_params={target_params} within max_pruning_ratio={most}"
        )


def prune_model(model: nn.Module, example_input: torch.Tensor, **options) -> CompressionReport:
    """Prune channels of ``model`` in place with torch-pruning's dependency graph (MetaPruner).

    Options (``compress.options.PRUNE_OPTIONS``, defaults there): ``pruning_ratio`` (fraction of
    channels removed), ``importance`` ('l1' | 'l2' | 'taylor' | 'bn_scale'), ``global_pruning``
    (rank channels across layers instead of uniformly per layer), ``target_macs`` /
    ``target_params`` (fraction of the original to keep: pruning proceeds in small steps, up to
    ``max_pruning_ratio`` overall, until reached), ``target_latency`` (fraction of the original's
    latency in ``runtime`` at batch ``latency_batch``: the pruning ratio is searched against real
    timings), ``max_pruning_ratio`` (also the most any one layer loses), ``round_to`` (channel
    counts that are multiples of 8 suit the runtimes' kernels), ``gradient_batch`` ((images, labels)
    batch, required by 'taylor'), ``exclude`` (name patterns of layers never pruned). The
    classifier's outputs are never pruned.

    Raises:
        ValueError: an unknown option or value, 'taylor' without a gradient batch, a pattern that matches
            no layer, a target that pruning cannot reach, or no channel removed.
    """
    given = {k: v for k, v in options.items() if k != "gradient_batch"}
    options = resolve_options("prune", PRUNE_OPTIONS, options)
    if options["target_latency"] is not None:
        return _prune_to_latency(model, example_input, options)
    _check_importance(model, options["importance"], options["gradient_batch"])
    head = classifier_names(model)
    before = _conv_linear_rows(model, record_output_shapes(model, example_input))
    report = CompressionReport("prune", given, params_before=count_params(model))
    _run_pruner(model, example_input, options)
    after = _conv_linear_rows(model, record_output_shapes(model, example_input))
    for name, old in before.items():
        new = after.get(name, old)
        changed = new["kernel"] != old["kernel"]
        report.layers.append(
            {
                "layer": name,
                "method": "prune",
                "kernel": old["kernel"] + (f" -> {new['kernel']}" if changed else ""),
                "status": "compressed" if changed else "skipped",
                "reason": "" if changed else ("classifier kept" if name in head else "no channel removed"),
                "rank": "",
                "params_before": old["params"],
                "params_after": new["params"],
                "macs_before": old["macs"],
                "macs_after": new["macs"],
                "rel_error": "",
            }
        )
    report.params_after = count_params(model)
    if report.params_after == report.params_before:
        raise ValueError(
            f"prune: no channel was removed from {type(model).__name__} (importance {options['importance']!r}, "
            f"ratio {options['pruning_ratio']}); every prunable group may be ignored or too small"
        )
    return report


def pruning_groups(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, tuple[str, ...]]]:
    """Return ``(root layer, member layers)`` of every torch-pruning group of ``model`` rooted at a conv or linear layer
    (the classifier's outputs excluded): layers coupled by a skip addition or a concatenation prune together."""
    import torch_pruning as tp

    names = {module: name for name, module in model.named_modules()}
    head = [m for n, m in model.named_modules() if n in classifier_names(model)]
    graph = tp.DependencyGraph().build_dependency(model.eval(), example_inputs=example_input)
    groups = []
    for group in graph.get_all_groups(ignored_layers=head, root_module_types=[nn.Conv2d, nn.Linear]):
        members = sorted({names[d.target.module] for d, _ in group if isinstance(d.target.module, (nn.Conv2d, nn.Linear))})
        groups.append((names[group[0].dep.target.module], tuple(members)))
    return groups


def prune_group(model: nn.Module, root: str, ratio: float, example_input: torch.Tensor) -> None:
    """Prune, in place, only the group rooted at layer ``root``: ``ratio`` of its channels, lowest L1 magnitude first
    (at least one channel, and never all of them).

    Raises:
        KeyError: ``root`` is not the root of a group (see :func:`pruning_groups`).
    """
    import torch_pruning as tp

    module = model.get_submodule(root)
    graph = tp.DependencyGraph().build_dependency(model.eval(), example_inputs=example_input)
    group = next(
        (g for g in graph.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear]) if g[0].dep.target.module is module), None
    )
    if group is None:
        raise KeyError(f"layer {root!r} roots no pruning group")
    scores = tp.importance.GroupMagnitudeImportance(p=1)(group)
    count = min(len(scores) - 1, max(1, int(round(ratio * len(scores)))))
    group.prune(idxs=torch.argsort(scores)[:count].tolist())
