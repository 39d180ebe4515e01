"""The factorization engine: replace the selected layers of a model by low-rank chains, in place.

One function serves every factorization: it reads the method's :class:`~compress.factorize.factorization.Factorization`
row for which layers apply, their ranks, the replacement and its error, ``compress.factorize.budget`` for MAC and
parameter budgets and ``compress.latency_target`` for latency targets.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from compress.compression_report import CompressionReport
from compress.factorize.budget import global_ranks, least_budget, rank_ladders
from compress.factorize.factorization import Factorization
from compress.latency_target import missed_target, resolve_runtime, search_for_latency, slower_in_runtime
from compress.layers import kernel_text, layer_macs, record_shapes, select_layers, sequence_macs, set_module
from compress.options import LATENCY_RUNTIME
from models import count_params


def applicable_layers(model: nn.Module, how: Factorization, options: dict, shapes: dict):
    """Yield ``(name, module, reason)`` for every conv/linear layer; ``reason`` is None when ``how`` will factorize it.

    Raises:
        ValueError: a ``layers``/``exclude`` pattern matches no layer.
    """
    for name, module, reason in select_layers(
        model, options["layers"], options["exclude"], options["kernel_sizes"], options["include_classifier"]
    ):
        if name not in shapes:
            reason = reason or "not used in the forward pass"
        yield name, module, reason or how.applies_to(module)


def _candidates(model: nn.Module, how: Factorization, options: dict, input_shapes: dict, shapes: dict) -> list[tuple]:
    return [
        (name, module, input_shapes[name], shapes[name])
        for name, module, reason in applicable_layers(model, how, options, shapes)
        if reason is None
    ]


def _total_macs(model: nn.Module, shapes: dict) -> int:
    return sum(layer_macs(m, shapes[n]) for n, m in model.named_modules() if n in shapes)


def _target_ranks(model: nn.Module, name: str, how: Factorization, options: dict, input_shapes: dict, shapes: dict) -> dict:
    """Return ``{layer: rank}`` meeting ``target_macs`` or ``target_params``
    (see :func:`compress.factorize.budget.global_ranks`)."""
    cost, budget = (
        ("macs", options["target_macs"]) if options["target_macs"] is not None else ("params", options["target_params"])
    )
    total = _total_macs(model, shapes) if cost == "macs" else count_params(model)
    return global_ranks(how, name, _candidates(model, how, options, input_shapes, shapes), total, float(budget), cost)


def factorize_model(
    model: nn.Module, example_input: torch.Tensor, name: str, how: Factorization, options: dict
) -> CompressionReport:
    """Factorize the selected layers of ``model`` in place with the factorization row ``how`` (method ``name``).

    ``options`` are the method's, resolved (every option present, defaults filled in:
    ``compress.options.resolve_options``). Ranks come from, in order of precedence: ``ranks``
    ({layer name: rank}); a budget for the whole model, ``target_macs`` / ``target_params``
    (fractions to keep; per-layer ranks chosen globally by :func:`compress.factorize.budget.global_ranks`,
    other layers left whole); ``target_latency`` (fraction of the original's latency in
    ``runtime``, batch ``latency_batch``: the MAC budget is searched against real timings); else
    the selector (``rank_selection``). With ``skip_if_larger`` a layer whose factorized form would
    not have fewer parameters is left whole; with ``runtime`` set, so is any layer whose factorized
    form runs slower than itself in that runtime (each timed alone on its real input). Skipped
    layers are reported with the reason.

    Raises:
        ValueError: an invalid rank, a pattern that matches no layer, or a target out of reach.
    """
    if options["target_latency"] is not None:
        return _factorize_to_latency(model, example_input, name, how, options)
    input_shapes, shapes = record_shapes(model, example_input)
    report = CompressionReport(name, dict(options), params_before=count_params(model))
    by_target = options["target_macs"] is not None or options["target_params"] is not None
    fixed_ranks = options["ranks"] or (_target_ranks(model, name, how, options, input_shapes, shapes) if by_target else {})
    runtime = resolve_runtime(options["runtime"], model, example_input) if options["runtime"] else None
    for layer, module, reason in list(applicable_layers(model, how, options, shapes)):
        row = {
            "layer": layer,
            "method": name,
            "kernel": kernel_text(module),
            "status": "skipped",
            "reason": reason or "",
            "rank": "",
            "params_before": count_params(module),
            "params_after": count_params(module),
            "rel_error": 0.0,
        }
        row["macs_before"] = row["macs_after"] = layer_macs(module, shapes[layer]) if layer in shapes else 0
        if not reason and by_target and layer not in fixed_ranks:
            reason = "left whole: the budget is met without it"
        if reason:
            row["reason"] = reason
            report.layers.append(row)
            continue
        rank = fixed_ranks.get(layer) or how.select_rank(module, options)
        rank = tuple(rank) if isinstance(rank, list) else rank
        started = time.perf_counter()
        sequence, info = how.decompose(module, rank, options)
        info["decompose_seconds"] = time.perf_counter() - started
        sequence.train(module.training)
        params_after = count_params(sequence)
        row.update(
            {
                "rank": "x".join(map(str, rank)) if isinstance(rank, tuple) else int(rank),
                "params_after": params_after,
                "macs_after": sequence_macs(sequence, input_shapes[layer]),
                **info,
            }
        )
        if options["skip_if_larger"] and params_after >= row["params_before"]:
            row["reason"] = f"factorized form has {params_after} params >= {row['params_before']}"
        elif runtime:
            slower, before_ms, after_ms = slower_in_runtime(module.eval(), sequence.eval(), input_shapes[layer], runtime)
            if slower:
                row["reason"] = f"factorized form is slower in {runtime}: {after_ms:.3f} ms vs {before_ms:.3f} ms"
        if row["reason"]:
            row.update({"params_after": row["params_before"], "macs_after": row["macs_before"]})
            report.layers.append(row)
            continue
        set_module(model, layer, sequence)
        row["status"] = "compressed"
        report.layers.append(row)
        report.factor_groups.append(
            [f"{layer}.{i}" for i, part in enumerate(sequence) if isinstance(part, (nn.Conv2d, nn.Linear))]
        )
    report.params_after = count_params(model)
    return report


def _factorize_to_latency(
    model: nn.Module, example_input: torch.Tensor, name: str, how: Factorization, options: dict
) -> CompressionReport:
    """Factorize ``model`` in place to ``target_latency`` of its latency in ``runtime`` (see :func:`factorize_model`).

    Each selected layer is first timed once in the runtime against its factorization at the
    selector's rank; slower ones are left whole (with the reason). The MAC budget for the others is
    then searched on measured whole-model speed-ups (:func:`compress.latency_target.search_for_latency`).
    """
    original = copy.deepcopy(model).eval()
    runtime = resolve_runtime(options["runtime"] or LATENCY_RUNTIME, original, example_input, int(options["latency_batch"]))
    by_budget = {**options, "target_latency": None, "runtime": None}
    input_shapes, shapes = record_shapes(original, example_input)
    slower = {}
    for layer, module, reason in list(applicable_layers(original, how, by_budget, shapes)):
        if reason is None:
            sequence, _ = how.decompose(module, how.select_rank(module, by_budget), by_budget)
            is_slower, before_ms, after_ms = slower_in_runtime(module.eval(), sequence.eval(), input_shapes[layer], runtime)
            if is_slower:
                slower[layer] = f"factorized form is slower in {runtime}: {after_ms:.3f} ms vs {before_ms:.3f} ms"
    by_budget["exclude"] = list(by_budget["exclude"]) + sorted(slower)
    reports = {}

    def build(fraction: float) -> nn.Module:
        candidate = copy.deepcopy(original)
        reports[fraction] = factorize_model(candidate, example_input, name, how, {**by_budget, "target_macs": fraction})
        return candidate

    ladders = rank_ladders(how, _candidates(original, how, by_budget, input_shapes, shapes), "macs")
    least = least_budget(ladders, _total_macs(original, shapes))
    fraction, best, speedup, runtime, reached = search_for_latency(
        build,
        original,
        runtime,
        example_input,
        float(options["target_latency"]),
        least,
        1.0,
        int(options["latency_batch"]),
        if_unreachable=options["if_unreachable"],
    )
    report = reports[fraction]
    for row in report.layers:
        row["reason"] = slower.get(row["layer"], row["reason"])
    for row in report.compressed():
        set_module(model, row["layer"], best.get_submodule(row["layer"]))
    report.options = dict(options)
    report.notes.append(
        f"target_latency {options['target_latency']:g} in {runtime}: MAC budget {fraction:.3f}, "
        f"measured {speedup:.2f}x faster than the original"
    )
    if not reached:
        report.warnings.append(missed_target(options["target_latency"], runtime, speedup, f"MAC budget {fraction:.3f}"))
    report.params_after = count_params(model)
    return report
