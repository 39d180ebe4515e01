"""int8 post-training quantization as a compression step, with accuracy control.

The step fixes how the model is quantized (``deploy.Int8Settings``: calibration method and images,
per-channel weights, ``reduce_range``, the nodes kept in float) and stores it on the model
(``model.quantization``, kept in its checkpoint). The weights stay float32 in the ``nn.Module``; the
int8 runtimes (``onnxruntime_int8``, ``openvino_int8``) quantize them with these settings, so the
model's accuracy is measured in the runtime it ships in.

Accuracy control (``max_drop``): the model is quantized, its validation accuracy compared with
float's, and while the drop exceeds ``max_drop`` the quantized nodes with the largest
loss of signal-to-quantization-noise ratio (``deploy.node_errors``) are left in float, each with the weighted
node that produces its input (the quantizer quantizes that tensor at the producer's output), in groups
that grow with what is already in float, so a handful of rounds covers any model.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging

import numpy as np
import torch
from torch import nn

import deploy
from compress.compression_report import CompressionReport
from compress.options import QUANTIZE_OPTIONS, resolve_options
from models import count_params

_logger = logging.getLogger(__name__)


def mean_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Return the mean per-attribute accuracy (percent) of ``logits`` (N, A) against 0/1 ``labels``; a logit of exactly 0 counts
    as negative (sigmoid 0.5, as ``bench.metrics.binarize``)."""
    return 100.0 * float(np.mean((np.asarray(logits) > 0) == (np.asarray(labels) > 0.5)))


def _session_logits(onnx_model: bytes, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i : i + batch_size]})[0] for i in range(0, len(images), batch_size)])


def weighted_producers(prepared: bytes) -> dict[str, str]:
    """Return ``{weighted node: the weighted node whose output it reads}`` (through ops without weights such as Relu,
    but not through a node with several inputs) for the nodes of a prepared ONNX model that int8 quantizes."""
    import onnx

    nodes = list(onnx.load_from_string(prepared).graph.node)
    producer = {output: node for node in nodes for output in node.output}
    result = {}
    for node in nodes:
        if node.op_type not in deploy.int8.WEIGHTED_OPS:
            continue
        source = producer.get(node.input[0])
        while source is not None and source.op_type not in deploy.int8.WEIGHTED_OPS and len(source.input) == 1:
            source = producer.get(source.input[0])
        if source is not None and source.op_type in deploy.int8.WEIGHTED_OPS:
            result[node.name] = source.name
    return result


def factor_chains(prepared: bytes) -> dict[str, tuple[str, ...]]:
    """Return ``{weighted node: its chain}`` for the chains of a prepared ONNX model: weighted nodes joined output to input
    with nothing between them (no activation), as a factorized layer's factors are (SVD: 2, Tucker-2 and CP: 3), in graph
    order. A node outside any chain is its own chain of one."""
    import onnx

    nodes = list(onnx.load_from_string(prepared).graph.node)
    weighted = [node for node in nodes if node.op_type in deploy.int8.WEIGHTED_OPS]
    producer = {output: node for node in weighted for output in node.output}
    chain_of = {node.name: (node.name,) for node in weighted}
    for node in weighted:  # graph order: a producer's chain is complete when its reader joins it
        source = producer.get(node.input[0])
        if source is not None:
            chain = chain_of[source.name] + (node.name,)
            for name in chain:
                chain_of[name] = chain
    return chain_of


def control_accuracy(
    prepared: bytes,
    settings: deploy.Int8Settings,
    calibration: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    max_drop: float,
) -> tuple[deploy.Int8Settings, list[dict]]:
    """Return ``(settings with the nodes left in float, one row per round)`` so that the int8 model's mean accuracy on
    ``images``/``labels`` is at most ``max_drop`` points below the float model's.

    ``prepared`` is the float model after ``deploy.prepare_onnx``. Each round row holds ``round``,
    ``float_nodes``, ``acc_float``, ``acc_int8`` and ``drop``. The nodes that lose the most go to float each round with
    the weighted node producing their input and with every factor of their factorized layer (:func:`factor_chains`).
    When every quantized node is in float and the
    drop still exceeds ``max_drop`` (it cannot: nothing is quantized then), the last round says so.
    """
    acc_float = mean_accuracy(_session_logits(prepared, images), labels)
    producers, chains = weighted_producers(prepared), factor_chains(prepared)
    rounds, step = [], 1
    while True:
        int8 = deploy.quantize_onnx(prepared, calibration, settings, prepared=True)
        acc_int8 = mean_accuracy(_session_logits(int8, images), labels)
        rounds.append(
            {
                "round": len(rounds),
                "float_nodes": len(settings.exclude),
                "acc_float": acc_float,
                "acc_int8": acc_int8,
                "drop": acc_float - acc_int8,
            }
        )
        _logger.info(
            "accuracy control round %d: %d nodes in float, drop %.3f pt",
            len(rounds) - 1,
            len(settings.exclude),
            acc_float - acc_int8,
        )
        if acc_float - acc_int8 <= max_drop:
            return settings, rounds
        errors = deploy.node_errors(prepared, int8, calibration[: min(len(calibration), 16)])
        worst = sorted((name for name in errors if name not in settings.exclude), key=errors.get, reverse=True)
        if not worst:
            return settings, rounds
        chosen = []
        for name in worst[:step]:
            # The quantizer also quantizes a node's input at its producer's output: the pair goes to float together. A
            # factorized layer goes whole: with part of it in int8, its inner tensors are still quantized at the boundary
            # (the CP stem lost 0.54 pt on test with two of its three factors in float, 0.02 with all three).
            group = chains.get(producers.get(name), ()) + chains.get(name, (name,))
            chosen += [n for n in dict.fromkeys(group) if n not in settings.exclude and n not in chosen]
        settings = dataclasses.replace(settings, exclude=settings.exclude + tuple(chosen))
        step = max(1, len(settings.exclude) // 2)  # the groups grow with what is already in float


def controlled_settings(
    model: nn.Module,
    example: np.ndarray,
    calibration: np.ndarray,
    settings: deploy.Int8Settings,
    validation: tuple,
    max_drop: float,
) -> tuple[deploy.Int8Settings, str, str]:
    """Return ``(settings with the nodes accuracy control leaves in float, a one-line account, a warning)`` for
    ``model``: its int8 form's mean accuracy on ``validation`` ((float32 NCHW images, 0/1 labels)) within ``max_drop``
    points of float's (see :func:`control_accuracy`); the warning is empty unless even every quantizable node in float
    left a larger drop.

    Raises:
        ValueError: too few calibration images.
    """
    images, labels = validation
    images = np.ascontiguousarray(images.numpy() if isinstance(images, torch.Tensor) else images, dtype=np.float32)
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    prepared = deploy.prepare_onnx(deploy.int8_source(model, example, calibration, settings))
    settings, rows = control_accuracy(prepared, settings, calibration, images, labels, float(max_drop))
    last = rows[-1]
    within = last["drop"] <= max_drop
    verdict = "within" if within else "NOT within (every quantizable node is in float)"
    account = (
        f"accuracy control: {len(settings.exclude)} of {len(deploy.weighted_nodes(prepared))} nodes in float after "
        f"{len(rows)} rounds; validation drop {last['drop']:.2f} pt, {verdict} max_drop {max_drop:g}"
    )
    warning = ""
    if not within:
        warning = (
            f"int8 accuracy control: validation drop {last['drop']:.2f} pt, above max_drop {max_drop:g} even with every "
            "quantizable node in float"
        )
    return settings, account, warning


def quantize_model(model: nn.Module, example_input: torch.Tensor, **options) -> CompressionReport:
    """Set up int8 quantization of ``model`` in place: store its :class:`deploy.Int8Settings` as ``model.quantization``.

    Options (``compress.options.QUANTIZE_OPTIONS``, defaults there): ``calibration_method``,
    ``calibration_images``, ``per_channel``, ``reduce_range`` (None: from the CPU), ``percentile``, ``equalize``,
    ``exclude`` (ONNX node-name patterns kept in float), ``max_drop`` (accuracy control on
    ``validation``), ``calibration`` (float32 NCHW images, at least ``calibration_images``) and
    ``validation`` ((images, labels), needed by ``max_drop``). ``qat`` is the pipeline's
    (``bench.variants``): it fine-tunes with fake quantization before this step runs.

    Raises:
        ValueError: an invalid option, no or too few calibration images, ``max_drop`` without
            validation data, or an ``exclude`` pattern that matches no quantizable node.
    """
    options = resolve_options("quantize", QUANTIZE_OPTIONS, options)
    calibration = options["calibration"]
    if calibration is None:
        raise ValueError("quantize: needs calibration images (the study passes the first calibration_images training images)")
    calibration = np.ascontiguousarray(
        calibration.numpy() if isinstance(calibration, torch.Tensor) else calibration, dtype=np.float32
    )
    settings = deploy.Int8Settings(
        calibration_method=options["calibration_method"],
        calibration_images=options["calibration_images"],
        per_channel=options["per_channel"],
        reduce_range=options["reduce_range"],
        percentile=float(options["percentile"]),
        equalize=options["equalize"],
    )
    example = example_input.numpy() if isinstance(example_input, torch.Tensor) else np.asarray(example_input, dtype=np.float32)
    prepared = deploy.prepare_onnx(deploy.int8_source(model, example, calibration, settings))
    nodes = deploy.weighted_nodes(prepared)
    excluded = []
    for pattern in options["exclude"]:
        matches = [name for name in nodes if fnmatch.fnmatchcase(name, pattern)]
        if not matches:
            raise ValueError(f"quantize: exclude pattern {pattern!r} matches no quantizable node; nodes look like {nodes[:3]}")
        excluded += [name for name in matches if name not in excluded]
    settings = dataclasses.replace(settings, exclude=tuple(excluded))
    notes, warnings = [], []
    if options["max_drop"] is not None:
        if options["validation"] is None:
            raise ValueError("quantize: max_drop needs validation data ((images, labels)); the study passes its validation split")
        settings, account, warning = controlled_settings(
            model, example, calibration, settings, options["validation"], float(options["max_drop"])
        )
        notes.append(account)
        warnings += [warning] if warning else []
    model.quantization = settings.to_dict()
    notes.append(f"int8: {settings.describe()}" + (f"; in float: {', '.join(settings.exclude)}" if settings.exclude else ""))
    params = count_params(model)
    report = CompressionReport("quantize", {}, params_before=params, params_after=params, notes=notes, warnings=warnings)
    return report
