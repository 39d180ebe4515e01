"""Unstructured magnitude sparsity: zeros in the weights, shapes unchanged."""

from __future__ import annotations

import torch
from torch import nn

from compress.compression_report import CompressionReport
from compress.layers import kernel_text, layer_macs, record_output_shapes, select_layers
from compress.options import SPARSITY_OPTIONS, resolve_options
from models import count_params


def sparsify_model(model: nn.Module, example_input: torch.Tensor, **options) -> CompressionReport:
    """Zero the ``amount`` fraction of smallest-magnitude weights (global L1, torch.nn.utils.prune), in place.

    The honest cost: shapes do not change, so MACs and latency do not fall; only the zipped file
    shrinks. Rows report non-zero parameters in ``params_after``.

    Raises:
        ValueError: an invalid option, or no layer is selected.
    """
    from torch.nn.utils import prune

    given = dict(options)
    options = resolve_options("sparsity", SPARSITY_OPTIONS, options)
    shapes = record_output_shapes(model, example_input)
    report = CompressionReport("sparsity", given, params_before=count_params(model))
    selected = list(select_layers(model, options["layers"], options["exclude"], None, options["include_classifier"]))
    targets = [(m, "weight") for _, m, r in selected if r is None]
    if not targets:
        raise ValueError("sparsity: no layer selected")
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(options["amount"]))
    for module, _ in targets:
        prune.remove(module, "weight")
    for name, module, reason in selected:
        macs = layer_macs(module, shapes[name]) if name in shapes else 0
        nonzero = int(sum(int(torch.count_nonzero(p)) for p in module.parameters()))
        report.layers.append(
            {
                "layer": name,
                "method": "sparsity",
                "kernel": kernel_text(module),
                "status": "skipped" if reason else "compressed",
                "reason": reason or "zeros only: no MAC saving",
                "rank": "",
                "params_before": count_params(module),
                "params_after": nonzero if not reason else count_params(module),
                "macs_before": macs,
                "macs_after": macs,
                "rel_error": "",
            }
        )
    report.params_after = count_params(model)
    return report
