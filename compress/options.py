"""Options of the compression methods: what each one means, its kind, its valid values and its default.

An :class:`Option` is one row; each method's options are one dict of them (the method table in
``compress/methods.py`` names the dict). :func:`resolve_options` is the one place a method's
options are checked and their defaults filled in: method code reads ``options[name]`` and never
carries a default of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import deploy


@dataclass(frozen=True)
class Option:
    """One option of a method: its meaning, its kind, its valid values and its default.

    ``kind`` is one of 'float', 'int', 'bool', 'str' (with ``choices``), 'runtime' (a runtime of the ``deploy``
    registry, read when checked, or :data:`FASTEST`), 'names' (a shell-style
    pattern or a list of them), 'ints' / 'floats' (a number or a list of them), 'ranks'
    ({layer: rank or [rank_out, rank_in]}) and 'object' (anything, e.g. a calibration batch).
    Numbers must lie in the interval ``low``..``high`` (None: unbounded); ``open`` says which ends
    are excluded: '()', '(]', '[)' or '[]'. ``default`` is the value used when the option is not
    given (None: the option is off, or the method decides, as its ``doc`` says).
    """

    doc: str
    kind: str
    low: float | None = None
    high: float | None = None
    open: str = "[]"
    choices: tuple = ()
    default: Any = None

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
        elif self.kind == "runtime":
            ok = value == FASTEST or (isinstance(value, str) and value in deploy.RUNTIMES)
            expected = f"a runtime of deploy.RUNTIMES ({', '.join(deploy.RUNTIMES)}) or {FASTEST!r}"
        elif self.kind == "names":
            values = [value] if isinstance(value, str) else value
            ok = isinstance(values, (list, tuple)) and all(isinstance(v, str) and v for v in values)
            expected = "a layer-name pattern or a list of them"
        elif self.kind == "ranks":
            ok = isinstance(value, dict) and all(
                isinstance(k, str)
                and (_is_positive_int(v) or (isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_is_positive_int, v))))
                for k, v in value.items()
            )
            expected = "a mapping {layer name: rank >= 1 (or [rank_out, rank_in] for tucker2)}"
        else:
            ok, expected = True, ""
        return None if ok else f"must be {expected}, got {value!r}"


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_options(method: str, known: dict[str, Option], options: dict) -> None:
    """Check option names and values against ``known`` (a method's option table).

    Raises:
        ValueError: an option ``method`` does not take, or a value out of its range (both named).
    """
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{method}: unknown options {unknown}; known: {sorted(known)}")
    for name, value in options.items():
        problem = known[name].problem(value)
        if problem:
            raise ValueError(f"{method}: {name} {problem}")


def resolve_options(method: str, known: dict[str, Option], options: dict) -> dict:
    """Return ``options`` checked against ``known`` with every option not given set to its default.

    A value of None counts as not given. Name patterns and numbers of the list kinds ('names', 'ints',
    'floats') always come back as lists, even when given one value.

    Raises:
        ValueError: as :func:`check_options`.
    """
    given = {k: v for k, v in options.items() if v is not None}
    check_options(method, known, given)
    resolved = {name: given.get(name, option.default) for name, option in known.items()}
    for name, option in known.items():
        if option.kind == "names" and isinstance(resolved[name], str):
            resolved[name] = [resolved[name]]
        elif option.kind in ("ints", "floats") and resolved[name] is not None and not isinstance(resolved[name], (list, tuple)):
            resolved[name] = [resolved[name]]
    return resolved


SELECTORS = ("ratio", "energy", "vbmf", "grad_align", "binary_search")
LATENCY_RUNTIME = "onnxruntime"  # the runtime a latency target is measured in unless one is named
FASTEST = "fastest"  # a runtime option's value: the original model's fastest fp32 runtime here, measured first
# what a latency-target search does when no compression level reaches the target: stop with an error, or keep the level
# measured fastest (a warning in the summary)
UNREACHABLE_CHOICES = ("error", "fastest")
DATA_DRIVEN_SELECTORS = ("grad_align", "binary_search")

FACTORIZATION_OPTIONS = {
    "rank_ratio": Option("fraction of the layer's full rank kept (rank_selection=ratio)", "float", 0, 1, "(]", default=0.5),
    "rank_selection": Option(
        "how per-layer ranks are chosen; grad_align and binary_search need data (compress.rank_search)",
        "str",
        choices=SELECTORS,
        default="ratio",
    ),
    "energy": Option("share of the squared singular spectrum kept (rank_selection=energy)", "float", 0, 1, "(]", default=0.9),
    "ranks": Option("fixed ranks {layer: rank}; overrides the selector", "ranks"),
    "layers": Option("name patterns of the layers to factorize (default: all)", "names"),
    "exclude": Option("name patterns of layers left alone", "names", default=()),
    "kernel_sizes": Option("only convs with these kernel sizes (Linear counts as 1)", "ints", 1, None),
    "include_classifier": Option("factorize the classifier too", "bool", default=False),
    "skip_if_larger": Option("leave a layer whole when its factorized form is not smaller", "bool", default=True),
    "seed": Option("seed of randomised initialisations", "int", 0, None, default=0),
    "search_batches": Option("training batches a data-driven selector fine-tunes candidates on", "int", 1, None, default=4),
    "candidate_ratios": Option("rank ratios grad_align tries per layer", "floats", 0, 1, "(]", default=(0.25, 0.5, 0.75)),
    "max_drop": Option("largest accuracy drop (points) binary_search accepts per layer", "float", 0, None, default=0.5),
    "search_eval_images": Option("validation images binary_search scores candidates on", "int", 1, None, default=128),
    "target_macs": Option("fraction of the model's conv/linear MACs to keep; ranks chosen globally", "float", 0, 1, "(]"),
    "target_params": Option("fraction of the model's parameters to keep; ranks chosen globally", "float", 0, 1, "(]"),
    "target_latency": Option(
        "fraction of the model's latency in `runtime` to keep (MAC budget searched on timings)", "float", 0, 1, "(]"
    ),
    "runtime": Option(
        "a deploy runtime: layers whose factorized form is slower there stay whole; target_latency's runtime "
        f"({LATENCY_RUNTIME} when only target_latency is given; {FASTEST}: the model's fastest fp32 runtime here)",
        "runtime",
    ),
    "latency_batch": Option("batch size target_latency is measured at", "int", 1, None, default=1),
    "if_unreachable": Option(
        "when no compression level reaches target_latency: stop with an error, or keep the level measured fastest "
        "(named under the summary's Warnings)",
        "str",
        choices=UNREACHABLE_CHOICES,
        default="error",
    ),
}
# Options a data-driven selector consumes before the factorization runs (bench.training.pipeline hands them to
# compress.rank_search).
SEARCH_OPTIONS = ("search_batches", "candidate_ratios", "max_drop", "search_eval_images")
CP_OPTIONS = {
    **FACTORIZATION_OPTIONS,
    "als_iters": Option("largest number of ALS sweeps", "int", 1, None, default=500),
    "tol": Option(
        "ALS stops once a sweep lowers the relative error by less than tol times itself", "float", 0, None, "[]", default=1e-8
    ),
}
CP_EPC_OPTIONS = {
    **CP_OPTIONS,
    "delta": Option(
        "EPC error bound, relative to ||W|| (absolute with delta_relative=false); default: the ALS error", "float", 0, None, "(]"
    ),
    "delta_relative": Option("delta is relative to ||W||", "bool", default=True),
    "epc_iters": Option("largest number of EPC polishing sweeps", "int", 1, None, default=100),
    "epc_steps": Option("penalty trials of the EPC path", "int", 1, None, default=12),
}
PRUNE_OPTIONS = {
    "pruning_ratio": Option(
        "fraction of channels removed per layer (uniform) or overall (global)", "float", 0, 1, "()", default=0.5
    ),
    "importance": Option("channel importance", "str", choices=("l1", "l2", "taylor", "bn_scale"), default="l1"),
    "global_pruning": Option("rank channels across layers instead of per layer", "bool", default=False),
    "target_macs": Option("fraction of the original MACs to keep (prunes in small steps until reached)", "float", 0, 1, "(]"),
    "target_params": Option("fraction of the original parameters to keep", "float", 0, 1, "(]"),
    "max_pruning_ratio": Option(
        "largest fraction of one layer's channels removed, and of the whole model's when pruning to a target",
        "float",
        0,
        1,
        "()",
        default=0.9,
    ),
    "round_to": Option(
        "keep channel counts a multiple of this (runtimes' kernels want multiples of 8)", "int", 1, None, default=8
    ),
    "gradient_batch": Option("(images, labels) batch the 'taylor' importance takes gradients on", "object"),
    "exclude": Option("name patterns of layers never pruned", "names", default=()),
    "target_latency": Option(
        "fraction of the model's latency in `runtime` to keep (pruning ratio searched on timings)", "float", 0, 1, "(]"
    ),
    "runtime": Option(
        f"the deploy runtime target_latency is measured in ({FASTEST}: the model's fastest fp32 runtime here)",
        "runtime",
        default=LATENCY_RUNTIME,
    ),
    "latency_batch": FACTORIZATION_OPTIONS["latency_batch"],
    "if_unreachable": FACTORIZATION_OPTIONS["if_unreachable"],
}
SPARSITY_OPTIONS = {
    "amount": Option("fraction of the selected weights set to zero (global magnitude)", "float", 0, 1, "()", default=0.5),
    "layers": FACTORIZATION_OPTIONS["layers"],
    "exclude": FACTORIZATION_OPTIONS["exclude"],
    "include_classifier": FACTORIZATION_OPTIONS["include_classifier"],
}

_INT8 = deploy.Int8Settings()
QUANTIZE_OPTIONS = {
    "calibration_method": Option(
        "how activation ranges are calibrated", "str", choices=deploy.int8.CALIBRATION_METHODS, default=_INT8.calibration_method
    ),
    "calibration_images": Option("the first N training images calibrate", "int", 1, None, default=_INT8.calibration_images),
    "per_channel": Option("one weight scale per output channel", "bool", default=_INT8.per_channel),
    "reduce_range": Option(
        "7-bit weights (default: on a CPU without VNNI, where 8-bit sums saturate)", "bool", default=_INT8.reduce_range
    ),
    "percentile": Option("the percentile of calibration_method=percentile", "float", 90, 100, "[)", default=_INT8.percentile),
    "equalize": Option(
        "equalize channel ranges inside factorized layers first (same function, fewer rounded-away channels)",
        "bool",
        default=_INT8.equalize,
    ),
    "exclude": Option("ONNX node-name patterns left in float (e.g. /conv1/*)", "names", default=()),
    "max_drop": Option(
        "accuracy control: largest validation drop (points) accepted; the nodes with the largest quantization "
        "error stay in float, a group at a time, until it holds (default: off)",
        "float",
        0,
        None,
    ),
    "calibration": Option(
        "float32 NCHW calibration images (the pipeline passes the first calibration_images training images)", "object"
    ),
    "validation": Option("(float32 NCHW images, 0/1 labels) accuracy control measures the drop on", "object"),
}
