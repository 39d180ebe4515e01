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
from bench.data import FaceAttributeData
from bench.evaluate import runtime_attribute_accuracy
from bench.progress import null_progress
from compress.layers import classifier_names, layer_macs, record_output_shapes
from compress.prune import prune_group, pruning_groups


@dataclass(frozen=True)
class Unit:
    """What is compressed alone: ``name`` (a layer, or a pruning group's root layer) and its ``members``."""

    name: str
    members: tuple[str, ...]


def pruning_units(model: nn.Module, example: torch.Tensor) -> list[Unit]:
    """Return the torch-pruning groups of ``model`` as units (see :func:`compress.prune.pruning_groups`)."""
    return [Unit(root, members) for root, members in pruning_groups(model, example)]


def layer_units(model: nn.Module, method: str, example: torch.Tensor) -> list[Unit]:
    """Return one unit per layer ``method`` can compress alone (the classifier kept): for a factorization the layers its
    row applies to, for sparsity every conv and linear layer."""
    how = compress.get_method(method).factorization
    shapes = record_output_shapes(model, example)
    return [Unit(name, (name,)) for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear)) and name in shapes and name not in classifier_names(model)
            and (how is None or how.applies_to(module) is None)]


def compress_unit(model: nn.Module, method: str, unit: Unit, ratio: float, example: torch.Tensor) -> nn.Module:
    """Return a copy of ``model`` with only ``unit`` compressed by ``method`` at ``ratio`` (of channels pruned, rank kept,
    or weights zeroed)."""
    if method == "prune":
        pruned = copy.deepcopy(model).eval()
        prune_group(pruned, unit.name, ratio, example)
        return pruned
    options = {"amount": ratio} if method == "sparsity" else {"rank_ratio": ratio, "skip_if_larger": False}
    compressed, _ = compress.apply(model, method, example, layers=[unit.name], **options)
    return compressed


def _conv_linear_cost(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    shapes = record_output_shapes(model, example)
    return (sum(p.numel() for p in model.parameters()),
            sum(layer_macs(m, shapes[n]) for n, m in model.named_modules() if n in shapes))


def _accuracies(model: nn.Module, data: FaceAttributeData, split: str, batch_size: int, example: np.ndarray) -> np.ndarray:
    return runtime_attribute_accuracy(deploy.deploy(model, "onnxruntime", example), data, model.data_config, split, batch_size)


def sensitivity(model: nn.Module, data: FaceAttributeData, method: str, ratio: float, split: str = "val", batch_size: int = 64,
                progress=None) -> tuple[list[dict], list[dict]]:
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
        raise ValueError(f"the model has {outputs} outputs but the data ({data.name}, {data.source}) has {len(data.attr_names)} "
                         "attributes: evaluate it on the data it was trained on (--config or --data-dir)")
    model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()
    input_size = model.data_config["input_size"]
    example_t = torch.zeros(1, *input_size)
    example = np.zeros((1, *input_size), np.float32)
    base = _accuracies(model, data, split, batch_size, example)
    base_params, base_macs = _conv_linear_cost(model, example_t)
    units = pruning_units(model, example_t) if method == "prune" else layer_units(model, method, example_t)
    bar = (progress or null_progress)(total=len(units), desc=f"sensitivity ({method} {ratio:g})")
    unit_rows, attribute_rows = [], []
    for unit in units:
        compressed = compress_unit(model, method, unit, ratio, example_t)
        params, macs = _conv_linear_cost(compressed, example_t)
        accuracy = _accuracies(compressed, data, split, batch_size, example)
        unit_rows.append({"unit": unit.name, "members": "|".join(unit.members), "method": method, "ratio": ratio,
                          "params_removed": base_params - params, "macs_removed": base_macs - macs,
                          "acc_mean": float(accuracy.mean()), "drop": float(base.mean() - accuracy.mean())})
        attribute_rows += [{"unit": unit.name, "attribute": name, "acc": float(accuracy[j]), "drop": float(base[j] - accuracy[j])}
                           for j, name in enumerate(data.attr_names)]
        bar.update(1)
    bar.close()
    return unit_rows, attribute_rows
