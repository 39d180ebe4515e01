"""The method table: every compression method, its entry point, its options and (for factorizations) its row.

Every method takes ``(model, example_input, options)`` with ``options`` resolved against its
option table (``compress.options``), changes ``model`` in place (``compress.apply`` hands it a
copy) and returns a :class:`~compress.report.CompressionReport`. Adding a factorization is one
decomposition function and one row here: ``factorization_method(name, description, options, Factorization(...))``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from compress import factorizations
from compress.factorize import factorize_model
from compress.factorizations import Factorization
from compress.options import (CP_EPC_OPTIONS, CP_OPTIONS, FACTORIZATION_OPTIONS, PRUNE_OPTIONS, QUANTIZE_OPTIONS, SPARSITY_OPTIONS,
                              Option)
from compress.prune import prune_model
from compress.quantize import quantize_model
from compress.report import CompressionReport
from compress.sparsity import sparsify_model


@dataclass(frozen=True)
class Method:
    """A compression method: its name, description, entry point ``run(model, example_input, options)``,
    its option table and, for a factorization, its :class:`Factorization` row."""

    name: str
    description: str
    run: Callable[..., CompressionReport]
    options: dict[str, Option]
    factorization: Factorization | None = None


def factorization_method(name: str, description: str, options: dict[str, Option], row: Factorization) -> Method:
    """Return the method table entry of a factorization: the engine (:func:`compress.factorize.factorize_model`) driven by ``row``."""
    return Method(name, description, lambda model, x, resolved: factorize_model(model, x, name, row, resolved), options, row)


METHODS: dict[str, Method] = {
    "svd": factorization_method("svd", "truncated SVD of Linear and 1x1 conv layers", FACTORIZATION_OPTIONS, factorizations.SVD),
    "tucker2": factorization_method("tucker2", "Tucker-2 of k x k convs: 1x1, k x k core, 1x1", FACTORIZATION_OPTIONS,
                                    factorizations.TUCKER2),
    "cp": factorization_method("cp", "CP (ALS) of k x k convs: 1x1, depthwise k x k, 1x1", CP_OPTIONS, factorizations.CP),
    "cp_epc": factorization_method("cp_epc", "CP with error-preserving correction (CPD-EPC)", CP_EPC_OPTIONS, factorizations.CP_EPC),
    "prune": Method("prune", "structured channel pruning (torch-pruning dependency graph)",
                    lambda model, x, resolved: prune_model(model, x, **resolved), PRUNE_OPTIONS),
    "sparsity": Method("sparsity", "unstructured magnitude sparsity (zeros only, no MAC saving)",
                       lambda model, x, resolved: sparsify_model(model, x, **resolved), SPARSITY_OPTIONS),
    "quantize": Method("quantize", "int8 post-training quantization (ONNX Runtime / NNCF), accuracy control; the last step",
                       lambda model, x, resolved: quantize_model(model, x, **resolved), QUANTIZE_OPTIONS),
}
# Methods that only change how a model is deployed, so they can only end a pipeline.
LAST_STEP_METHODS = ("quantize",)
