"""The method table: every compression method, its entry point, its options and what a study may do with it.

Every method takes ``(model, example_input, options)`` with ``options`` resolved against its
option table (``compress.options``), changes ``model`` in place (``compress.apply`` hands it a
copy) and returns a :class:`~compress.compression_report.CompressionReport`. Its row also says what
the rest of the harness may do with it, so nothing outside this table checks a method by name:
which option says how far a step goes (``amount``: short names and sensitivity set it), what
sensitivity analysis compresses alone (``units``), whether it can only end a pipeline
(``last_step``), which options a study fills from its data (``data_options``) and which the
pipeline handles itself (``pipeline_options``). Adding a factorization is one module under
``compress/factorize/`` (its decomposition and its :class:`Factorization` row) and one row here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from compress.compression_report import CompressionReport
from compress.factorize.cp import CP, CP_EPC
from compress.factorize.engine import factorize_model
from compress.factorize.factorization import Factorization
from compress.factorize.svd import SVD
from compress.factorize.tucker2 import TUCKER2
from compress.options import (
    CP_EPC_OPTIONS,
    CP_OPTIONS,
    FACTORIZATION_OPTIONS,
    PRUNE_OPTIONS,
    QUANTIZE_OPTIONS,
    SPARSITY_OPTIONS,
    Option,
)
from compress.prune import prune_model
from compress.quantize import quantize_model
from compress.sparsity import sparsify_model

UNIT_KINDS = ("layers", "groups")


@dataclass(frozen=True, kw_only=True)
class Method:
    """A compression method: its name, description, entry point ``run(model, example_input, options)``, its option
    table and, for a factorization, its :class:`Factorization` row; then what a study may do with it:

    ``amount``: the option that says how far a step goes (a short name shows it; sensitivity sets it to the ratio
    analysed); ``units``: what sensitivity analysis compresses alone, ``'layers'`` (each layer the method applies to)
    or ``'groups'`` (each torch-pruning group: layers coupled by a skip or a concatenation), None when it cannot be
    analysed so; ``alone``: options added when one unit is compressed alone; ``last_step``: it only sets how the
    finished model is deployed, so it can only end a pipeline; ``data_options``: options a study fills from its data
    (``bench.training.pipeline`` provides each by name); ``pipeline_options``: options the pipeline applies itself
    (the method never sees them); ``short_name(step)``: a step's name in tables when method, layers and amount do not
    say it.
    """

    name: str
    description: str
    run: Callable[..., CompressionReport]
    options: dict[str, Option]
    factorization: Factorization | None = None
    amount: str | None = None
    units: str | None = None
    alone: dict = field(default_factory=dict)
    last_step: bool = False
    data_options: tuple[str, ...] = ()
    pipeline_options: dict[str, Option] = field(default_factory=dict)
    short_name: Callable[[dict], str] | None = None

    def __post_init__(self):
        if self.units not in (None, *UNIT_KINDS):
            raise ValueError(f"method {self.name}: units must be one of {UNIT_KINDS} or None, got {self.units!r}")
        for name in (self.amount, *self.data_options, *self.alone):
            if name is not None and name not in self.options:
                raise ValueError(f"method {self.name}: {name!r} is not one of its options {sorted(self.options)}")


def factorization_method(name: str, description: str, options: dict[str, Option], row: Factorization) -> Method:
    """Return the method table entry of a factorization: the engine (:func:`compress.factorize.engine.factorize_model`)
    driven by ``row``; sensitivity factorizes one layer at a time, at any rank (a factorized form that is not smaller
    is still analysed)."""
    return Method(
        name=name,
        description=description,
        run=lambda model, x, resolved: factorize_model(model, x, name, row, resolved),
        options=options,
        factorization=row,
        amount="rank_ratio",
        units="layers",
        alone={"skip_if_larger": False},
    )


def _int8_name(step: dict) -> str:
    return " ".join(
        ["int8"]
        + (["qat"] if step.get("qat") else [])
        + ([step["calibration_method"]] if "calibration_method" in step else [])
        + ([f"drop {step['max_drop']:g}"] if step.get("max_drop") is not None else [])
    )


METHODS: dict[str, Method] = {
    "svd": factorization_method("svd", "truncated SVD of Linear and 1x1 conv layers", FACTORIZATION_OPTIONS, SVD),
    "tucker2": factorization_method("tucker2", "Tucker-2 of k x k convs: 1x1, k x k core, 1x1", FACTORIZATION_OPTIONS, TUCKER2),
    "cp": factorization_method("cp", "CP (ALS) of k x k convs: 1x1, depthwise k x k, 1x1", CP_OPTIONS, CP),
    "cp_epc": factorization_method("cp_epc", "CP with error-preserving correction (CPD-EPC)", CP_EPC_OPTIONS, CP_EPC),
    "prune": Method(
        name="prune",
        description="structured channel pruning (torch-pruning dependency graph)",
        run=lambda model, x, resolved: prune_model(model, x, **resolved),
        options=PRUNE_OPTIONS,
        amount="pruning_ratio",
        units="groups",
        data_options=("gradient_batch",),
        pipeline_options={"iterations": Option("prune in N equal steps with a fine-tune after each", "int", 1, None, default=1)},
    ),
    "sparsity": Method(
        name="sparsity",
        description="unstructured magnitude sparsity (zeros only, no MAC saving)",
        run=lambda model, x, resolved: sparsify_model(model, x, **resolved),
        options=SPARSITY_OPTIONS,
        amount="amount",
        units="layers",
    ),
    "quantize": Method(
        name="quantize",
        description="int8 post-training quantization (ONNX Runtime / NNCF), accuracy control; the last step",
        run=lambda model, x, resolved: quantize_model(model, x, **resolved),
        options=QUANTIZE_OPTIONS,
        last_step=True,
        data_options=("calibration", "validation"),
        short_name=_int8_name,
        pipeline_options={
            "qat": Option("quantization-aware fine-tuning (NNCF fake quantization) before calibration", "bool", default=False)
        },
    ),
}
