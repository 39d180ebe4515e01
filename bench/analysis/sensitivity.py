"""Sensitivity analysis (Distiller-style): how much accuracy each layer, or each coupled group, costs.

For a trained model, every unit is compressed alone at one ratio and the model is evaluated on
a split: the drop in mean accuracy and in each attribute's accuracy is the unit's sensitivity.
A unit is one layer for a factorization (``rank_ratio`` of its full rank) and one torch-pruning
group for pruning (``ratio`` of its root's output channels, lowest L1 magnitude first): layers
coupled by a skip addition or a concatenation prune together, so they are analysed together.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import compress
import deploy
from bench.data.loading import FaceAttributeData
from bench.progress import null_progress
from bench.training.evaluate import runtime_attribute_accuracy
from compress.layers import classifier_names, layer_macs, record_output_shapes
from compress.prune import prune_group, pruning_groups
from models import count_params


@dataclass(frozen=True)
class Unit:
    """What is compressed alone: ``name`` (a layer, or a pruning group's root layer) and its ``members``."""

    name: str
    members: tuple[str, ...]


def units_of(model: nn.Module, method: str, example: torch.Tensor) -> list[Unit]:
    """Return what sensitivity compresses alone for ``method``, as its row of the method table says (``Method.units``):
    each torch-pruning group (``'groups'``: layers coupled by a skip addition or a concatenation, see
    :func:`compress.prune.pruning_groups`), or each conv and linear layer the method applies to (``'layers'``; for a
    factorization the layers its row accepts), the classifier kept.

    Raises:
        KeyError: unknown method; ValueError: a method its row says cannot be analysed so.
    """
    row = compress.get_method(method)
    if row.units == "groups":
        return [Unit(root, members) for root, members in pruning_groups(model, example)]
    if row.units != "layers":
        raise ValueError(
            f"sensitivity: {method} compresses no layer or group alone (it is not analysable one unit at a time); "
            f"analysable: {', '.join(n for n in compress.list_methods() if compress.get_method(n).units)}"
        )
    how = row.factorization
    shapes = record_output_shapes(model, example)
    return [
        Unit(name, (name,))
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
        and name in shapes
        and name not in classifier_names(model)
        and (how is None or how.applies_to(module) is None)
    ]


def compress_unit(model: nn.Module, method: str, unit: Unit, ratio: float, example: torch.Tensor) -> nn.Module:
    """Return a copy of ``model`` with only ``unit`` compressed by ``method`` at ``ratio`` (its row's ``amount``: channels
    pruned, rank kept, or weights zeroed); a group is pruned by its root's channels, lowest L1 magnitude first."""
    row = compress.get_method(method)
    if row.units == "groups":
        pruned = copy.deepcopy(model).eval()
        prune_group(pruned, unit.name, ratio, example)
        return pruned
    compressed, _ = compress.apply(model, method, example, layers=[unit.name], **{row.amount: ratio, **row.alone})
    return compressed


def _conv_linear_cost(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    shapes = record_output_shapes(model, example)
    return (count_params(model), sum(layer_macs(m, shapes[n]) for n, m in model.named_modules() if n in shapes))


def _accuracies(model: nn.Module, data: FaceAttributeData, split: str, batch_size: int, example: np.ndarray) -> np.ndarray:
    return runtime_attribute_accuracy(deploy.deploy(model, "onnxruntime", example), data, model.data_config, split, batch_size)


def sensitivity(
    model: nn.Module, data: FaceAttributeData, method: str, ratio: float, split: str = "val", batch_size: int = 64, progress=None
) -> tuple[list[dict], list[dict]]:
    """Return ``(unit rows, attribute rows)`` of compressing each unit of ``model`` alone at ``ratio``.

    Unit rows: ``unit, members, method, ratio, params_removed, macs_removed, acc_mean, drop`` (points
    of mean accuracy lost on ``split``). Attribute rows: ``unit, attribute, acc, drop``. Models are
    evaluated in ONNX Runtime (fp32, parity-checked against eager).

    Raises:
        KeyError: unknown method (the message lists the known ones).
        ValueError: an empty ``split``, or a ratio out of (0, 1).
    """
    if len(data.splits[split]) == 0:
        raise ValueError(f"sensitivity needs images in the {split} split of {data.name!r}; it is empty")
    if not 0 < ratio < 1:
        raise ValueError(f"sensitivity ratio must be in (0, 1), got {ratio}")
    with torch.no_grad():
        outputs = copy.deepcopy(model).eval()(torch.zeros(1, *model.data_config["input_size"])).shape[1]
    if outputs != len(data.attr_names):
        raise ValueError(
            f"the model has {outputs} outputs but the data ({data.name}, {data.source}) has {len(data.attr_names)} "
            "attributes: evaluate it on the data it was trained on (--config or --data-dir)"
        )
    model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()
    input_size = model.data_config["input_size"]
    example_t = torch.zeros(1, *input_size)
    example = np.zeros((1, *input_size), np.float32)
    base = _accuracies(model, data, split, batch_size, example)
    base_params, base_macs = _conv_linear_cost(model, example_t)
    units = units_of(model, method, example_t)
    bar = (progress or null_progress)(total=len(units), desc=f"sensitivity ({method} {ratio:g})")
    unit_rows, attribute_rows = [], []
    for unit in units:
        compressed = compress_unit(model, method, unit, ratio, example_t)
        params, macs = _conv_linear_cost(compressed, example_t)
        accuracy = _accuracies(compressed, data, split, batch_size, example)
        unit_rows.append(
            {
                "unit": unit.name,
                "members": "|".join(unit.members),
                "method": method,
                "ratio": ratio,
                "params_removed": base_params - params,
                "macs_removed": base_macs - macs,
                "acc_mean": float(accuracy.mean()),
                "drop": float(base.mean() - accuracy.mean()),
            }
        )
        attribute_rows += [
            {"unit": unit.name, "attribute": name, "acc": float(accuracy[j]), "drop": float(base[j] - accuracy[j])}
            for j, name in enumerate(data.attr_names)
        ]
        bar.update(1)
    bar.close()
    return unit_rows, attribute_rows


def run_sensitivity(
    checkpoint: str,
    data_settings: dict,
    method: str,
    ratio: float,
    split: str,
    results_folder: str,
    reports_folder: str,
    plots: bool = True,
    progress=None,
) -> tuple[str, dict[str, str]]:
    """Analyse the model saved at ``checkpoint`` on the data ``data_settings`` names (:func:`sensitivity`), write its unit
    and attribute tables under ``results_folder`` and its report under ``reports_folder``; return ``(name, written)``:
    the files' stem (named by checkpoint, method and ratio, so a second checkpoint's analysis never replaces the first's)
    and ``{artefact: path}`` of the report.

    Raises:
        as ``models.load_model``, ``bench.data.load_data`` and :func:`sensitivity`.
    """
    import os

    import pandas as pd

    import models
    from bench.data.loading import load_data
    from bench.report.render import render_sensitivity
    from bench.store.records import write_csv_atomic
    from bench.store.schema import SENSITIVITY_ATTRIBUTE_COLUMNS, SENSITIVITY_COLUMNS

    model = models.load_model(checkpoint)
    data = load_data(data_settings, progress)
    units, attributes = sensitivity(model, data, method, ratio, split, progress=progress)
    checkpoint = os.path.abspath(checkpoint)
    provenance = {"checkpoint": checkpoint, "data": f"{data.name} {data.fingerprint}"}
    units = [{**row, **provenance} for row in units]
    attributes = [{**row, **provenance} for row in attributes]
    tag = f"{os.path.basename(os.path.dirname(checkpoint))}-{os.path.splitext(os.path.basename(checkpoint))[0]}"
    name = f"sensitivity_{tag}_{method}_{ratio:g}"
    write_csv_atomic(os.path.join(results_folder, f"{name}.csv"), SENSITIVITY_COLUMNS, units)
    write_csv_atomic(os.path.join(results_folder, f"{name}_attributes.csv"), SENSITIVITY_ATTRIBUTE_COLUMNS, attributes)
    return name, render_sensitivity(pd.DataFrame(units), pd.DataFrame(attributes), reports_folder, name, plots=plots)
