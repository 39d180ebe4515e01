"""The compression methods behind ``compress.apply``: one descriptor per method.

Every method takes ``(model, example_input, **options)``, changes ``model`` in place (``apply``
hands it a copy) and returns a :class:`CompressionReport`. :data:`METHODS` is the one table of
what each method applies to, which options it takes and their valid values; the factorizations
add a :class:`Factorization` row (full rank, rank selection, how the new layers are built).
Adding a factorization is one decomposition function and one row here.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

import deploy
from compress import factorize
from compress.layers import (check_patterns, classifier_names, kernel_text, layer_macs, per_layer_macs, record_output_shapes, record_shapes,
                             select_layers, sequence_macs, set_module)
from compress.rank import rank_by_ratio, select_rank


@dataclass
class CompressionReport:
    """What a compression did: one row per conv/linear layer, plus the factor groups.

    ``layers`` rows hold: ``layer, method, kernel, status ('compressed' | 'skipped'), reason,
    rank, params_before, params_after, macs_before, macs_after, rel_error`` (and method-specific
    keys such as ``norm_sum_als``/``norm_sum_epc``). ``factor_groups`` lists, per factorized
    layer, the names of its new layers (for the norm-constrained fine-tuning); ``notes`` says
    what was decided beyond the rows (a target met, a bound raised).
    """

    method: str
    options: dict
    layers: list[dict] = field(default_factory=list)
    factor_groups: list[list[str]] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    notes: list[str] = field(default_factory=list)

    def compressed(self) -> list[dict]:
        """Return the rows of the layers that were changed."""
        return [row for row in self.layers if row["status"] == "compressed"]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- options ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One option of a method: its meaning, its kind and its valid values.

    ``kind`` is one of 'float', 'int', 'bool', 'str' (with ``choices``), 'names' (a shell-style
    pattern or a list of them), 'ints' / 'floats' (a number or a list of them), 'ranks'
    ({layer: rank or [rank_out, rank_in]}) and 'object' (anything, e.g. a calibration batch).
    Numbers must lie in the interval ``low``..``high`` (None: unbounded); ``open`` says which ends
    are excluded: '()', '(]', '[)' or '[]'.
    """

    doc: str
    kind: str
    low: float | None = None
    high: float | None = None
    open: str = "[]"
    choices: tuple = ()

    def interval(self) -> str:
        """Return the valid range as text, e.g. '(0, 1]'."""
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{self.open[0]}{low}, {high}{self.open[1]}"

    def _in_range(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.kind in ("int", "ints") and not isinstance(value, int):
            return False
        above = self.low is None or (value > self.low if self.open[0] == "(" else value >= self.low)
        below = self.high is None or (value < self.high if self.open[1] == ")" else value <= self.high)
        return above and below

    def problem(self, value) -> str | None:
        """Return what is wrong with ``value`` for this option, or None if it is valid."""
        if self.kind in ("float", "int"):
            ok = self._in_range(value)
            expected = f"{'an integer ' if self.kind == 'int' else ''}in {self.interval()}"
        elif self.kind in ("floats", "ints"):
            values = value if isinstance(value, (list, tuple)) else [value]
            ok = len(values) > 0 and all(self._in_range(v) for v in values)
            expected = f"{'integers' if self.kind == 'ints' else 'numbers'} in {self.interval()}"
        elif self.kind == "bool":
            ok, expected = isinstance(value, bool), "true or false"
        elif self.kind == "str":
            if value not in self.choices:
                return f"{value!r} is not one of {list(self.choices)}"
            ok, expected = True, ""
        elif self.kind == "names":
            values = [value] if isinstance(value, str) else value
            ok = isinstance(values, (list, tuple)) and all(isinstance(v, str) for v in values)
            expected = "a layer-name pattern or a list of them"
        elif self.kind == "ranks":
            ok = isinstance(value, dict) and all(
                isinstance(k, str) and (_positive_int(v) or (isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_positive_int, v))))
                for k, v in value.items())
            expected = "a mapping {layer name: rank >= 1 (or [rank_out, rank_in] for tucker2)}"
        else:
            ok, expected = True, ""
        return None if ok else f"must be {expected}, got {value!r}"


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


SELECTORS = ("ratio", "energy", "vbmf", "grad_align", "binary_search")
DATA_DRIVEN_SELECTORS = ("grad_align", "binary_search")

FACTORIZATION_OPTIONS = {
    "rank_ratio": Option("fraction of the layer's full rank kept (rank_selection=ratio)", "float", 0, 1, "(]"),
    "rank_selection": Option("how per-layer ranks are chosen; grad_align and binary_search need data (compress.search)",
                             "str", choices=SELECTORS),
    "energy": Option("share of the squared singular spectrum kept (rank_selection=energy)", "float", 0, 1, "(]"),
    "ranks": Option("fixed ranks {layer: rank}; overrides the selector", "ranks"),
    "layers": Option("name patterns of the layers to factorize (default: all)", "names"),
    "exclude": Option("name patterns of layers left alone", "names"),
    "kernel_sizes": Option("only convs with these kernel sizes (Linear counts as 1)", "ints", 1, None),
    "include_classifier": Option("factorize the classifier too", "bool"),
    "skip_if_larger": Option("leave a layer whole when its factorized form is not smaller", "bool"),
    "seed": Option("seed of randomised initialisations", "int", 0, None),
    "search_batches": Option("training batches a data-driven selector fine-tunes candidates on", "int", 1, None),
    "candidate_ratios": Option("rank ratios grad_align tries per layer", "floats", 0, 1, "(]"),
    "max_drop": Option("largest accuracy drop (points) binary_search accepts per layer", "float", 0, None),
    "search_eval_images": Option("validation images binary_search scores candidates on", "int", 1, None),
    "target_macs": Option("fraction of the model's conv/linear MACs to keep; ranks chosen globally", "float", 0, 1, "(]"),
    "target_params": Option("fraction of the model's parameters to keep; ranks chosen globally", "float", 0, 1, "(]"),
    "target_latency": Option("fraction of the model's latency in `runtime` to keep (MAC budget searched on timings)",
                             "float", 0, 1, "(]"),
    "runtime": Option("a deploy runtime: layers whose factorized form is slower there stay whole; target_latency's runtime",
                      "str", choices=tuple(deploy.RUNTIMES)),
    "latency_batch": Option("batch size target_latency is measured at (default 1)", "int", 1, None),
}
CP_OPTIONS = {
    **FACTORIZATION_OPTIONS,
    "als_iters": Option("largest number of ALS sweeps (default 500)", "int", 1, None),
    "tol": Option("ALS stops once a sweep lowers the relative error by less than tol times itself (default 1e-8)",
                  "float", 0, None, "[]"),
}
CP_EPC_OPTIONS = {
    **CP_OPTIONS,
    "delta": Option("EPC error bound, relative to ||W|| (absolute with delta_relative=false); default: the ALS error",
                    "float", 0, None, "(]"),
    "delta_relative": Option("delta is relative to ||W||", "bool"),
    "epc_iters": Option("largest number of EPC polishing sweeps (default 100)", "int", 1, None),
    "epc_steps": Option("penalty trials of the EPC path (default 12)", "int", 1, None),
}
PRUNE_OPTIONS = {
    "pruning_ratio": Option("fraction of channels removed per layer (uniform) or overall (global)", "float", 0, 1, "()"),
    "importance": Option("channel importance", "str", choices=("l1", "l2", "taylor", "bn_scale")),
    "global_pruning": Option("rank channels across layers instead of per layer", "bool"),
    "target_macs": Option("fraction of the original MACs to keep (prunes in small steps until reached)", "float", 0, 1, "(]"),
    "target_params": Option("fraction of the original parameters to keep", "float", 0, 1, "(]"),
    "max_pruning_ratio": Option("largest fraction of one layer's channels removed", "float", 0, 1, "()"),
    "round_to": Option("keep channel counts a multiple of this (default 8: runtimes' kernels want it)", "int", 1, None),
    "calibration": Option("(images, labels) batch the 'taylor' importance takes gradients on", "object"),
    "exclude": Option("name patterns of layers never pruned", "names"),
    "target_latency": Option("fraction of the model's latency in `runtime` to keep (pruning ratio searched on timings)",
                             "float", 0, 1, "(]"),
    "runtime": Option("the deploy runtime target_latency is measured in (default onnxruntime)", "str", choices=tuple(deploy.RUNTIMES)),
    "latency_batch": Option("batch size target_latency is measured at (default 1)", "int", 1, None),
}
SPARSITY_OPTIONS = {
    "amount": Option("fraction of the selected weights set to zero (global magnitude)", "float", 0, 1, "()"),
    "layers": FACTORIZATION_OPTIONS["layers"],
    "exclude": FACTORIZATION_OPTIONS["exclude"],
    "include_classifier": FACTORIZATION_OPTIONS["include_classifier"],
}


# ---- factorizations ----------------------------------------------------------------------------

Rank = Any  # an int, or (rank_out, rank_in) for tucker2


@dataclass(frozen=True)
class Factorization:
    """How one factorization treats a layer.

    ``applies_to(module)`` returns why it cannot factorize ``module`` (None if it can);
    ``full_rank(module)`` is what ``rank_ratio=1`` means; ``rank_of(module, r)`` turns a scalar rank
    r in [1, full_rank] into this method's rank; ``select_rank(module, options)`` picks a rank by
    the weight-only selectors; ``layers(module, rank)`` builds the replacement's structure (no
    weights: its cost); ``decompose(module, rank, options)`` returns ``(nn.Sequential
    replacement, info)`` where ``info`` holds ``rel_error`` and any method-specific columns.
    """

    applies_to: Callable[[nn.Module], str | None]
    full_rank: Callable[[nn.Module], int]
    rank_of: Callable[[nn.Module, int], Rank]
    select_rank: Callable[[nn.Module, dict], Rank]
    layers: Callable[[nn.Module, Rank], nn.Sequential]
    decompose: Callable[[nn.Module, Rank, dict], tuple[nn.Sequential, dict]]


def _ungrouped(module: nn.Module) -> str | None:
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        return f"grouped/depthwise conv (groups={module.groups})"
    return None


def _is_pointwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or module.kernel_size == (1, 1)


def _pointwise_only(module: nn.Module) -> str | None:
    if _ungrouped(module):
        return _ungrouped(module)
    return None if _is_pointwise(module) else f"{module.kernel_size[0]}x{module.kernel_size[1]} conv: use tucker2 or cp"


def _spatial_only(module: nn.Module) -> str | None:
    if _ungrouped(module):
        return _ungrouped(module)
    return "1x1 conv or linear: use svd" if _is_pointwise(module) else None


def _weight64(module: nn.Module):
    return module.weight.detach().cpu().double().numpy()


def _selector(options: dict) -> tuple[str, float, float]:
    selection = options.get("rank_selection", "ratio")
    if selection in DATA_DRIVEN_SELECTORS:
        raise ValueError(f"rank_selection {selection!r} needs data: choose ranks with compress.search "
                         f"(or run it as a study step) and pass them as ranks={{layer: rank}}")
    return selection, float(options.get("rank_ratio", 0.5)), float(options.get("energy", 0.9))


def _svd_rank(module: nn.Module, options: dict) -> int:
    selection, ratio, energy = _selector(options)
    weight = _weight64(module)
    matrix = weight.reshape(weight.shape[0], -1)
    return select_rank(matrix, min(matrix.shape), selection, ratio, energy)


def _tucker2_rank(module: nn.Module, options: dict) -> tuple[int, int]:
    selection, ratio, energy = _selector(options)
    weight = _weight64(module)
    t, s = weight.shape[:2]
    unfold_out = weight.reshape(t, -1)
    unfold_in = weight.transpose(1, 0, 2, 3).reshape(s, -1)
    return (select_rank(unfold_out, t, selection, ratio, energy), select_rank(unfold_in, s, selection, ratio, energy))


def _cp_rank(module: nn.Module, options: dict) -> int:
    selection, ratio, energy = _selector(options)
    full = factorize.cp_full_rank(module)
    if selection == "ratio":
        return rank_by_ratio(full, ratio)
    # A CP rank is at least every multilinear rank: take the largest the selector asks for.
    weight = _weight64(module)
    t, s = weight.shape[:2]
    k = weight.shape[2] * weight.shape[3]
    unfoldings = (weight.reshape(t, -1), weight.transpose(1, 0, 2, 3).reshape(s, -1), weight.reshape(t, s, k).transpose(2, 0, 1).reshape(k, -1))
    return min(full, max(select_rank(m, min(m.shape), selection, ratio, energy) for m in unfoldings))


def _svd_decompose(module: nn.Module, rank: int, options: dict) -> tuple[nn.Sequential, dict]:
    sequence, error = factorize.svd_sequence(module, int(rank))
    return sequence, {"rel_error": error}


def _tucker2_decompose(module: nn.Module, rank: tuple[int, int], options: dict) -> tuple[nn.Sequential, dict]:
    sequence, error = factorize.tucker2_sequence(module, tuple(rank), int(options.get("seed", 0)))
    return sequence, {"rel_error": error}


def _cp_decompose(epc: bool):
    def decompose(module: nn.Module, rank: int, options: dict) -> tuple[nn.Sequential, dict]:
        iterations = {k: int(options[k]) for k in ("als_iters", "epc_iters", "epc_steps") if k in options}
        tolerance = {"tol": float(options["tol"])} if "tol" in options else {}
        return factorize.cp_sequence(module, int(rank), int(options.get("seed", 0)), epc=epc, delta=options.get("delta"),
                                     delta_relative=bool(options.get("delta_relative", True)), **iterations, **tolerance)

    return decompose


def _matrix_full_rank(module: nn.Module) -> int:
    return min(module.weight.shape[0], module.weight[0].numel())


FACTORIZATIONS: dict[str, Factorization] = {
    "svd": Factorization(_pointwise_only, _matrix_full_rank, lambda m, r: r, _svd_rank, factorize.svd_layers, _svd_decompose),
    "tucker2": Factorization(_spatial_only, lambda m: min(m.out_channels, m.in_channels),
                             lambda m, r: (max(1, min(m.out_channels, r)), max(1, min(m.in_channels, r))),
                             _tucker2_rank, factorize.tucker2_layers, _tucker2_decompose),
    "cp": Factorization(_spatial_only, factorize.cp_full_rank, lambda m, r: r, _cp_rank, factorize.cp_layers, _cp_decompose(epc=False)),
    "cp_epc": Factorization(_spatial_only, factorize.cp_full_rank, lambda m, r: r, _cp_rank, factorize.cp_layers,
                            _cp_decompose(epc=True)),
}


def replacement_cost(method: str, module: nn.Module, rank, input_shape) -> tuple[int, int]:
    """Return ``(params, MACs)`` of the layers factorization ``method`` replaces ``module`` with at ``rank``,
    on ``input_shape`` (one example), without decomposing anything (the structure is built on the meta device)."""
    with torch.device("meta"):
        skeleton = FACTORIZATIONS[method].layers(module, rank)
    return _params(skeleton), sum(per_layer_macs(skeleton, (1, *input_shape[1:])))


def _applicable_layers(model: nn.Module, how: Factorization, options: dict, shapes: dict):
    """Yield ``(name, module, reason)`` for every conv/linear layer; ``reason`` is None when ``how`` will factorize it."""
    for name, module, reason in select_layers(model, options.get("layers"), options.get("exclude"), options.get("kernel_sizes"),
                                              bool(options.get("include_classifier", False))):
        if name not in shapes:
            reason = reason or "not used in the forward pass"
        yield name, module, reason or how.applies_to(module)


def _target_ranks(model: nn.Module, method: str, options: dict, input_shapes: dict, shapes: dict) -> dict:
    """Return ``{layer: rank}`` meeting ``target_macs`` or ``target_params`` (see :func:`compress.targets.global_ranks`)."""
    from compress.targets import global_ranks

    cost, budget = ("macs", options["target_macs"]) if options.get("target_macs") is not None else ("params", options["target_params"])
    candidates = [(name, module, input_shapes[name], shapes[name]) for name, module, reason in
                  _applicable_layers(model, FACTORIZATIONS[method], options, shapes) if reason is None]
    total = (sum(layer_macs(m, shapes[n]) for n, m in model.named_modules() if n in shapes) if cost == "macs" else _params(model))
    return global_ranks(method, candidates, total, float(budget), cost)


def factorize_model(model: nn.Module, example_input: torch.Tensor, method: str, **options) -> CompressionReport:
    """Factorize the selected layers of ``model`` in place with the factorization ``method``.

    Ranks come from, in order of precedence: ``ranks`` ({layer name: rank}); a budget for the
    whole model, ``target_macs`` / ``target_params`` (fractions to keep; per-layer ranks chosen
    globally by :func:`compress.targets.global_ranks`, other layers left whole);
    ``target_latency`` (fraction of the original's latency in ``runtime``, batch
    ``latency_batch``: the MAC budget is searched against real timings); else the selector
    (``rank_selection``). With ``skip_if_larger`` (default True) a layer whose factorized form
    would not have fewer parameters is left whole; with ``runtime`` set, so is any layer whose
    factorized form runs slower than itself in that runtime (each timed alone on its real input).
    Skipped layers are reported with the reason.

    Raises:
        KeyError: ``method`` is not a factorization.
        ValueError: an invalid rank or option value, or a target out of reach.
    """
    if options.get("target_latency") is not None:
        return _factorize_to_latency(model, example_input, method, options)
    how = FACTORIZATIONS[method]
    input_shapes, shapes = record_shapes(model, example_input)
    report = CompressionReport(method, dict(options), params_before=_params(model))
    by_target = options.get("target_macs") is not None or options.get("target_params") is not None
    fixed_ranks = options.get("ranks") or (_target_ranks(model, method, options, input_shapes, shapes) if by_target else {})
    runtime = options.get("runtime")
    for name, module, reason in list(_applicable_layers(model, how, options, shapes)):
        row = {"layer": name, "method": method, "kernel": kernel_text(module), "status": "skipped", "reason": reason or "",
               "rank": "", "params_before": _params(module), "params_after": _params(module), "rel_error": 0.0}
        row["macs_before"] = row["macs_after"] = layer_macs(module, shapes[name]) if name in shapes else 0
        if not reason and by_target and name not in fixed_ranks:
            reason = "left whole: the budget is met without it"
        if reason:
            row["reason"] = reason
            report.layers.append(row)
            continue
        rank = fixed_ranks.get(name) or how.select_rank(module, options)
        rank = tuple(rank) if isinstance(rank, list) else rank
        started = time.perf_counter()
        sequence, info = how.decompose(module, rank, options)
        info["decompose_seconds"] = time.perf_counter() - started
        sequence.train(module.training)
        params_after = _params(sequence)
        row.update({"rank": "x".join(map(str, rank)) if isinstance(rank, tuple) else int(rank), "params_after": params_after,
                    "macs_after": sequence_macs(sequence, input_shapes[name]), **info})
        if options.get("skip_if_larger", True) and params_after >= row["params_before"]:
            row["reason"] = f"factorized form has {params_after} params >= {row['params_before']}"
        elif runtime:
            from compress.targets import slower_in_runtime

            slower, before_ms, after_ms = slower_in_runtime(module.eval(), sequence.eval(), input_shapes[name], runtime)
            if slower:
                row["reason"] = f"factorized form is slower in {runtime}: {after_ms:.3f} ms vs {before_ms:.3f} ms"
        if row["reason"]:
            row.update({"params_after": row["params_before"], "macs_after": row["macs_before"]})
            report.layers.append(row)
            continue
        set_module(model, name, sequence)
        row["status"] = "compressed"
        report.layers.append(row)
        report.factor_groups.append([f"{name}.{i}" for i, layer in enumerate(sequence) if isinstance(layer, (nn.Conv2d, nn.Linear))])
    report.params_after = _params(model)
    return report


def _factorize_to_latency(model: nn.Module, example_input: torch.Tensor, method: str, options: dict) -> CompressionReport:
    """Factorize ``model`` in place to ``target_latency`` of its latency in ``runtime`` (see :func:`factorize_model`).

    Each selected layer is first timed once in the runtime against its factorization at the
    selector's rank; slower ones are left whole (with the reason). The MAC budget for the others is
    then searched on measured whole-model speed-ups (:func:`compress.targets.search_for_latency`).
    """
    import copy

    from compress.targets import search_for_latency, slower_in_runtime

    runtime = options.get("runtime", "onnxruntime")
    base = {k: v for k, v in options.items() if k not in ("target_latency", "latency_batch", "runtime")}
    original = copy.deepcopy(model).eval()
    how = FACTORIZATIONS[method]
    input_shapes, shapes = record_shapes(original, example_input)
    slower = {}
    for name, module, reason in list(_applicable_layers(original, how, base, shapes)):
        if reason is None:
            sequence, _ = how.decompose(module, how.select_rank(module, base), base)
            is_slower, before_ms, after_ms = slower_in_runtime(module.eval(), sequence.eval(), input_shapes[name], runtime)
            if is_slower:
                slower[name] = f"factorized form is slower in {runtime}: {after_ms:.3f} ms vs {before_ms:.3f} ms"
    base["exclude"] = list(base.get("exclude") or []) + sorted(slower)
    reports = {}

    def build(fraction: float) -> nn.Module:
        candidate = copy.deepcopy(original)
        reports[fraction] = factorize_model(candidate, example_input, method, **{**base, "target_macs": fraction})
        return candidate

    least = _least_mac_fraction(original, example_input, method, base)
    fraction, best, speedup = search_for_latency(build, original, runtime, example_input, float(options["target_latency"]),
                                                 least, 1.0, int(options.get("latency_batch", 1)))
    report = reports[fraction]
    for row in report.layers:
        row["reason"] = slower.get(row["layer"], row["reason"])
    for row in report.compressed():
        set_module(model, row["layer"], best.get_submodule(row["layer"]))
    report.options = dict(options)
    report.notes.append(f"target_latency {options['target_latency']:g} in {runtime}: MAC budget {fraction:.3f}, "
                        f"measured {speedup:.2f}x faster than the original")
    report.params_after = _params(model)
    return report


def _least_mac_fraction(model: nn.Module, example_input: torch.Tensor, method: str, options: dict) -> float:
    """Return the smallest fraction of the model's conv/linear MACs factorizing its selected layers can reach."""
    from compress.targets import least_budget, rank_ladders

    input_shapes, shapes = record_shapes(model, example_input)
    total = sum(layer_macs(m, shapes[n]) for n, m in model.named_modules() if n in shapes)
    candidates = [(name, module, input_shapes[name], shapes[name]) for name, module, reason in
                  _applicable_layers(model, FACTORIZATIONS[method], options, shapes) if reason is None]
    return least_budget(rank_ladders(method, candidates, "macs"), total)


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


def _prune_to_latency(model: nn.Module, example_input: torch.Tensor, options: dict) -> CompressionReport:
    """Prune ``model`` in place to ``target_latency`` of its latency in ``runtime`` (see :func:`prune_model`)."""
    import copy

    from compress.targets import search_for_latency

    runtime = options.get("runtime", "onnxruntime")
    base = {k: v for k, v in options.items() if k not in ("target_latency", "runtime", "latency_batch", "pruning_ratio")}
    original = copy.deepcopy(model).eval()
    most = float(options.get("max_pruning_ratio", 0.9))

    def build(kept: float) -> nn.Module:
        candidate = copy.deepcopy(original)
        prune_model(candidate, example_input, **base, pruning_ratio=min(most, 1.0 - kept))
        return candidate

    kept, _, speedup = search_for_latency(build, original, runtime, example_input, float(options["target_latency"]),
                                          1.0 - most, 0.98, int(options.get("latency_batch", 1)))
    report = prune_model(model, example_input, **base, pruning_ratio=min(most, 1.0 - kept))
    report.options = {k: v for k, v in options.items() if k != "calibration"}
    report.notes.append(f"target_latency {options['target_latency']:g} in {runtime}: pruning ratio {1.0 - kept:.3f}, "
                        f"measured {speedup:.2f}x faster than the original")
    return report


def _conv_linear_rows(model: nn.Module, shapes: dict) -> dict[str, dict]:
    return {name: {"kernel": kernel_text(m), "params": _params(m), "macs": layer_macs(m, shapes[name]) if name in shapes else 0}
            for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def prune_model(model: nn.Module, example_input: torch.Tensor, **options) -> CompressionReport:
    """Prune channels of ``model`` in place with torch-pruning's dependency graph (MetaPruner).

    Options: ``pruning_ratio`` (fraction of channels removed, default 0.5), ``importance``
    ('l1' | 'l2' | 'taylor' | 'bn_scale'), ``global_pruning`` (default False: uniform per layer),
    ``target_macs`` / ``target_params`` (fraction of the original to keep: pruning proceeds in
    small steps until reached, instead of a fixed ratio), ``target_latency`` (fraction of the
    original's latency in ``runtime``, default onnxruntime, at batch ``latency_batch``: the
    pruning ratio is searched against real timings), ``max_pruning_ratio``, ``round_to`` (default
    8: channel counts that are multiples of 8 suit the runtimes' kernels), ``calibration``
    ((images, labels) batch, required by 'taylor'), ``exclude`` (name patterns of layers never
    pruned). The classifier's outputs are never pruned.

    Raises:
        ValueError: an unknown option or importance, 'taylor' without calibration, or a
            target that pruning cannot reach.
    """
    import fnmatch

    import torch_pruning as tp

    if options.get("target_latency") is not None:
        return _prune_to_latency(model, example_input, options)
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
    check_patterns(model, exclude, "exclude")
    ignored = [m for n, m in model.named_modules() if n in head or (isinstance(m, (nn.Conv2d, nn.Linear)) and any(fnmatch.fnmatch(n, p) for p in exclude))]
    before_shapes = record_output_shapes(model, example_input)
    before = _conv_linear_rows(model, before_shapes)
    report = CompressionReport("prune", {k: v for k, v in options.items() if k != "calibration"}, params_before=_params(model))
    macs_start, params_start = tp.utils.count_ops_and_params(model, example_input)
    target_macs, target_params = options.get("target_macs"), options.get("target_params")
    by_target = target_macs is not None or target_params is not None
    steps = 50 if by_target else 1
    ratio = float(options.get("max_pruning_ratio", 0.9)) if by_target else float(options.get("pruning_ratio", 0.5))
    was_training = model.training
    model.eval()
    pruner = tp.pruner.MetaPruner(
        model, example_input, importance=importance, global_pruning=bool(options.get("global_pruning", False)),
        pruning_ratio=ratio, iterative_steps=steps, ignored_layers=ignored,
        max_pruning_ratio=float(options.get("max_pruning_ratio", 1.0 if not by_target else 0.95)),
        round_to=int(options.get("round_to", 8)),
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



def sparsify_model(model: nn.Module, example_input: torch.Tensor, **options) -> CompressionReport:
    """Zero the ``amount`` fraction of smallest-magnitude weights (global L1, torch.nn.utils.prune), in place.

    The honest cost: shapes do not change, so MACs and latency do not fall; only the zipped file
    shrinks. Rows report non-zero parameters in ``params_after``.

    Raises:
        ValueError: no layer is selected.
    """
    from torch.nn.utils import prune

    amount = float(options.get("amount", 0.5))
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


# ---- the table ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    """A compression method: its entry point, description, options and (for factorizations) its row."""

    name: str
    description: str
    run: Callable[..., CompressionReport]
    options: dict[str, Option]
    factorization: Factorization | None = None


def _factorization_method(name: str, description: str, options: dict[str, Option]) -> Method:
    return Method(name, description, lambda model, x, **o: factorize_model(model, x, name, **o), options, FACTORIZATIONS[name])


METHODS: dict[str, Method] = {
    "svd": _factorization_method("svd", "truncated SVD of Linear and 1x1 conv layers", FACTORIZATION_OPTIONS),
    "tucker2": _factorization_method("tucker2", "Tucker-2 of k x k convs: 1x1, k x k core, 1x1", FACTORIZATION_OPTIONS),
    "cp": _factorization_method("cp", "CP (ALS) of k x k convs: 1x1, depthwise k x k, 1x1", CP_OPTIONS),
    "cp_epc": _factorization_method("cp_epc", "CP with error-preserving correction (CPD-EPC)", CP_EPC_OPTIONS),
    "prune": Method("prune", "structured channel pruning (torch-pruning dependency graph)", prune_model, PRUNE_OPTIONS),
    "sparsity": Method("sparsity", "unstructured magnitude sparsity (zeros only, no MAC saving)", sparsify_model, SPARSITY_OPTIONS),
}


def validate_options(method: str, **options) -> None:
    """Check option names and values against the method's row of :data:`METHODS`.

    Raises:
        KeyError: unknown method (the message lists the known ones).
        ValueError: an option the method does not take, or a value out of its range (both named).
    """
    if method not in METHODS:
        raise KeyError(f"unknown compression method {method!r}; known: {', '.join(METHODS)}")
    known = METHODS[method].options
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{method}: unknown options {unknown}; known: {sorted(known)}")
    for name, value in options.items():
        problem = known[name].problem(value)
        if problem:
            raise ValueError(f"{method}: {name} {problem}")
