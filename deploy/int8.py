"""int8 models for the runtimes: the settings, cross-layer equalization, the quantizers and their per-node error.

A model's int8 form is fixed by an :class:`Int8Settings` (calibration method and images, per-channel
weights, ``reduce_range``, the nodes kept in float) and the first ``calibration_images`` training
images. ONNX Runtime quantizes with its static QDQ quantizer (:func:`quantize_onnx`); OpenVINO through
NNCF's post-training quantization (:func:`quantize_openvino`). Both are deterministic for the same model,
settings and images, so the study's accuracy of a quantized variant and the timing phase's are one number.

Why ``reduce_range``: on x86 CPUs without VNNI, uint8 x int8 products go through ``vpmaddubsw``, whose
int16 sums saturate with full-range 8-bit weights; 7-bit weights avoid it (ONNX Runtime's quantization
guide). With VNNI (or AMX) the sums are 32-bit and the full range is safe. :func:`cpu_isa` reads which.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from deploy.machine import cpu_isa

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# The op types whose inputs ONNX Runtime's QDQ quantizer quantizes and whose error accuracy control ranks.
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


class BytesMemo:
    """The last ONNX graphs built, by key, up to ``max_bytes`` in all (the oldest dropped first).

    A study's timing phase builds each model's int8 graphs several times from the same inputs (accuracy control, then
    each int8 runtime): with a cache of 4 graphs, 6 models evicted each other and equalization, export and quantization
    ran twice per model, 20 s of the default study's phase on machine D. Keys hash everything the graph depends on.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._graphs: OrderedDict[str, bytes] = OrderedDict()

    def get(self, key: str, build: Callable[[], bytes]) -> bytes:
        """Return the graph kept under ``key``, else ``build()``'s, kept (whatever ``build`` raises, raised)."""
        if key in self._graphs:
            self._graphs.move_to_end(key)
            return self._graphs[key]
        graph = self._graphs[key] = build()
        while len(self._graphs) > 1 and sum(map(len, self._graphs.values())) > self.max_bytes:
            self._graphs.popitem(last=False)
        return graph


# 256 MB: every int8 graph of a study of small models (Slim-Net's: 2.3 MB float, 0.7 MB int8; ResNet-18's 45 MB float).
_QUANTIZED = BytesMemo(256 * 2**20)


def _check(condition: bool, name: str, expected: str, value) -> None:
    if not condition:
        raise ValueError(f"int8 settings: {name} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class Int8Settings:
    """How a model is quantized to int8: every default written here once.

    ``calibration_method``: how activation ranges come from the calibration images ('minmax', 'entropy',
    'percentile' at ``percentile``); ``calibration_images``: the first N training images calibrate;
    ``per_channel``: one weight scale per output channel (per-tensor collapses depthwise-separable nets);
    ``reduce_range``: 7-bit weights; None chooses it from the CPU (True without VNNI, see the module's
    docstring); ``equalize``: equalize the channel ranges inside chains of linear layers first (see
    :func:`equalize_chains`); ``exclude``: ONNX node names left in float (what accuracy control chose).
    """

    calibration_method: str = "minmax"
    calibration_images: int = 64
    per_channel: bool = True
    reduce_range: bool | None = None
    percentile: float = 99.999
    equalize: bool = True
    exclude: tuple = field(default_factory=tuple)

    def __post_init__(self):
        _check(
            self.calibration_method in CALIBRATION_METHODS,
            "calibration_method",
            f"one of {list(CALIBRATION_METHODS)}",
            self.calibration_method,
        )
        _check(
            isinstance(self.calibration_images, int)
            and not isinstance(self.calibration_images, bool)
            and self.calibration_images >= 1,
            "calibration_images",
            "an integer >= 1",
            self.calibration_images,
        )
        _check(isinstance(self.per_channel, bool), "per_channel", "true or false", self.per_channel)
        _check(
            self.reduce_range is None or isinstance(self.reduce_range, bool),
            "reduce_range",
            "true, false or null (from the CPU)",
            self.reduce_range,
        )
        _check(
            isinstance(self.percentile, (int, float)) and 90 <= self.percentile < 100,
            "percentile",
            "in [90, 100)",
            self.percentile,
        )
        _check(isinstance(self.equalize, bool), "equalize", "true or false", self.equalize)
        _check(
            isinstance(self.exclude, (list, tuple)) and all(isinstance(n, str) for n in self.exclude),
            "exclude",
            "a list of ONNX node names",
            self.exclude,
        )
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @classmethod
    def from_mapping(cls, mapping: dict | None) -> "Int8Settings":
        """Return the settings in ``mapping`` over the defaults.

        Raises:
            ValueError: an unknown key (the known ones listed) or an invalid value (named, with what was expected).
        """
        mapping = dict(mapping or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(mapping) - set(known))
        if unknown:
            raise ValueError(f"int8 settings: unknown keys {unknown}; known: {known}")
        return cls(**mapping)

    def to_dict(self) -> dict:
        """Return the settings as plain values (what a checkpoint stores)."""
        return {**dataclasses.asdict(self), "exclude": list(self.exclude)}

    def effective_reduce_range(self, isa: dict | None = None) -> bool:
        """Return ``reduce_range``, or, when it is None, True on a CPU without VNNI or AMX."""
        if self.reduce_range is not None:
            return self.reduce_range
        isa = cpu_isa() if isa is None else isa
        return not (isa["vnni"] or isa["amx"])

    def describe(self, isa: dict | None = None) -> str:
        """Return the settings in one table cell, e.g.
        ``minmax 64 img, per-channel, reduce_range (auto), equalized, 2 nodes float``."""
        method = f"percentile {self.percentile:g}" if self.calibration_method == "percentile" else self.calibration_method
        reduce = self.effective_reduce_range(isa)
        why = " (auto)" if self.reduce_range is None else ""
        parts = [
            f"{method} {self.calibration_images} img",
            "per-channel" if self.per_channel else "per-tensor",
            ("reduce_range" if reduce else "full range") + why,
        ] + (["equalized"] if self.equalize else [])
        if self.exclude:
            parts.append(f"{len(self.exclude)} node{'s' if len(self.exclude) != 1 else ''} float")
        return ", ".join(parts)


def linear_chains(model) -> list[tuple]:
    """Return the pairs ``(first, second)`` of layers where ``second`` reads ``first``'s output directly, with nothing
    between them: consecutive ``Conv2d``/``Linear`` children of an ``nn.Sequential``, as factorizations build them
    (SVD: in -> R -> out; Tucker-2 and CP: 1x1, core, 1x1). ``second`` is ungrouped or depthwise."""
    from torch import nn

    pairs = []
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.children())
        for first, second in zip(children, children[1:]):
            if not (isinstance(first, (nn.Conv2d, nn.Linear)) and isinstance(second, (nn.Conv2d, nn.Linear))):
                continue
            channels = first.out_channels if isinstance(first, nn.Conv2d) else first.out_features
            groups = getattr(second, "groups", 1)
            inputs = second.in_channels if isinstance(second, nn.Conv2d) else second.in_features
            if inputs == channels and (groups == 1 or groups == channels == getattr(second, "out_channels", -1)):
                pairs.append((first, second))
    return pairs


def equalize_chains(model, images: np.ndarray):
    """Return a copy of ``model`` computing the same function with the channel ranges inside its linear chains
    (:func:`linear_chains`) equalized for int8, and the number of tensors equalized.

    int8 activations have one range per tensor: inside a factorized layer, where nothing normalizes the channels,
    one channel can span 30x another's range (a CP stem of Slim-Net: 9 to 297), and quantization rounds the
    small ones away. Channel r of the tensor between ``first`` and ``second`` is divided by s_r and ``second``
    multiplies it back. m_r is the channel's largest |activation| on ``images``. A depthwise ``second`` quantizes its
    weights per channel, so rescaling them is free: s_r = m_r / max(m), every channel spans the widest range. A dense
    ``second`` mixes the channels in each weight row: s_r = sqrt(m_r / w_r) (w_r: the largest |weight| reading the
    channel), so activation and weight ranges meet at sqrt(m_r w_r): cross-layer equalization (Nagel et al., 2019,
    data-free quantization) with measured activation ranges.
    """
    import copy

    import torch
    from torch import nn

    equalized = copy.deepcopy(model).eval()
    pairs = linear_chains(equalized)
    if not pairs:  # nothing to equalize (Slim-Net, MobileNet-V3-small, a pruned net): no forward pass either
        return equalized, 0
    ranges: dict[int, torch.Tensor] = {}

    def keep_range(module, args, output):
        ranges[id(module)] = output.detach().abs().amax(dim=tuple(i for i in range(output.dim()) if i != 1))

    hooks = [first.register_forward_hook(keep_range) for first, _ in pairs]
    with torch.no_grad():
        equalized(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))
    for hook in hooks:
        hook.remove()
    # Every rescaling leaves the tensors outside its pair as they were, so one pass measures all the ranges.
    for first, second in pairs:
        weight = second.weight.detach()
        depthwise = isinstance(second, nn.Conv2d) and second.groups > 1
        reads = weight.abs().flatten(1).amax(dim=1) if depthwise else weight.abs().transpose(0, 1).flatten(1).amax(dim=1)
        measured = ranges[id(first)].clamp_min(1e-12)
        # A depthwise reader's weights are quantized per channel, so scaling them costs nothing: every channel gets
        # the widest range. A dense reader's rows mix the channels: activation and weight ranges meet halfway.
        scale = measured / measured.max() if depthwise else torch.sqrt(measured / reads.clamp_min(1e-12))
        scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
        with torch.no_grad():
            first.weight.div_(scale.view((-1,) + (1,) * (first.weight.dim() - 1)))
            if first.bias is not None:
                first.bias.div_(scale)
            if depthwise:
                second.weight.mul_(scale.view(-1, 1, 1, 1))
            else:
                second.weight.mul_(scale.view((1, -1) + (1,) * (second.weight.dim() - 2)))
    return equalized, len(pairs)


def _write(folder: str, name: str, content: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as handle:
        handle.write(content)
    return path


def _reader(images: np.ndarray, batch_size: int = 16):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            images32 = np.ascontiguousarray(images, dtype=np.float32)
            self.batches = iter(np.array_split(images32, max(1, -(-len(images32) // batch_size))))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    return Reader()


def calibration_subset(calibration: np.ndarray | None, settings: Int8Settings) -> np.ndarray:
    """Return the first ``settings.calibration_images`` of ``calibration`` (float32 NCHW images).

    Raises:
        ValueError: no calibration images, or fewer than the settings ask for.
    """
    if calibration is None or len(calibration) == 0:
        raise ValueError("int8 quantization needs calibration images (float32 NCHW, from the training split)")
    if len(calibration) < settings.calibration_images:
        raise ValueError(f"int8 settings ask for {settings.calibration_images} calibration images; {len(calibration)} were given")
    return calibration[: settings.calibration_images]


def prepare_onnx(onnx_model: bytes) -> bytes:
    """Return ``onnx_model`` pre-processed for quantization (shape inference, graph optimisation with BatchNorm folded),
    as ONNX Runtime's quantization guide recommends; node names in :attr:`Int8Settings.exclude` refer to this graph."""
    from onnxruntime.quantization import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="slimbench-int8-") as folder:
        prepared = os.path.join(folder, "prepared.onnx")
        quant_pre_process(_write(folder, "fp32.onnx", onnx_model), prepared, skip_symbolic_shape=True)
        with open(prepared, "rb") as handle:
            return handle.read()


def quantize_onnx(
    onnx_model: bytes, calibration: np.ndarray, settings: Int8Settings, isa: dict | None = None, prepared: bool = False
) -> bytes:
    """Return ``onnx_model`` statically quantized to int8 by ONNX Runtime (QDQ; uint8 activations, int8 weights).

    ``calibration`` holds at least ``settings.calibration_images`` float32 NCHW images (the first N are
    used); ``prepared`` says ``onnx_model`` already went through :func:`prepare_onnx`.

    Raises:
        ValueError: too few calibration images.
    """
    images = calibration_subset(calibration, settings)
    reduce_range = settings.effective_reduce_range(isa)
    source = onnx_model if prepared else prepare_onnx(onnx_model)
    # keyed on the prepared graph: accuracy control (which prepares first) and a runtime's build share the result
    digest = hashlib.sha1(source)
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(repr((sorted(settings.to_dict().items()), reduce_range)).encode())
    return _QUANTIZED.get(digest.hexdigest(), lambda: _quantize_static(source, images, settings, reduce_range))


def _quantize_static(source: bytes, images: np.ndarray, settings: Int8Settings, reduce_range: bool) -> bytes:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[settings.calibration_method]
    extra = {"CalibPercentile": settings.percentile} if settings.calibration_method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="slimbench-int8-") as folder:
        int8 = os.path.join(folder, "int8.onnx")
        quantize_static(
            _write(folder, "prepared.onnx", source),
            int8,
            _reader(images),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=settings.per_channel,
            reduce_range=reduce_range,
            calibrate_method=method,
            nodes_to_exclude=list(settings.exclude),
            extra_options=extra,
        )
        with open(int8, "rb") as handle:
            return handle.read()


def weighted_nodes(prepared_model: bytes) -> list[str]:
    """Return the names of the nodes of a prepared ONNX model that int8 quantization quantizes (Conv, Gemm, MatMul), in
    graph order."""
    import onnx

    graph = onnx.load_from_string(prepared_model).graph
    return [node.name for node in graph.node if node.op_type in WEIGHTED_OPS]


def _sqnr_db(reference: list[np.ndarray], noisy: list[np.ndarray]) -> float:
    signal = sum(float(np.sum(np.square(r, dtype=np.float64))) for r in reference)
    noise = sum(float(np.sum(np.square(r.astype(np.float64) - n, dtype=np.float64))) for r, n in zip(reference, noisy))
    return float("inf") if noise == 0 else 10.0 * float(np.log10(max(signal, 1e-30) / noise))


def node_errors(prepared_model: bytes, int8_model: bytes, images: np.ndarray) -> dict[str, float]:
    """Return how much quantization error each quantized node adds: the signal-to-quantization-noise ratio (dB) of the
    input it sees in the int8 model (after quantize-dequantize) minus that of its output, both against the float model
    on ``images`` (higher: worse). Nodes kept in float are not in the result.

    A node's own loss, not the error it inherits: a tensor's SQNR alone is high whenever an outlier channel dominates
    its power, even when quantization wiped out the small channels the next layer reads. Intermediate tensors come
    from ONNX Runtime's ``qdq_loss_debug``.
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as debug

    with tempfile.TemporaryDirectory(prefix="slimbench-int8-debug-") as folder:
        activations = {}
        for name, content in (("float", prepared_model), ("int8", int8_model)):
            augmented = os.path.join(folder, f"{name}_augmented.onnx")
            debug.modify_model_output_intermediate_tensors(_write(folder, f"{name}.onnx", content), augmented)
            activations[name] = debug.collect_activations(augmented, _reader(images))
    floats, int8s = activations["float"], activations["int8"]
    int8_nodes = {node.name: node for node in onnx.load_from_string(int8_model).graph.node}
    float_nodes = list(onnx.load_from_string(prepared_model).graph.node)
    consumers: dict[str, list] = {}
    for node in float_nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    errors = {}
    for node in float_nodes:
        if node.op_type not in WEIGHTED_OPS or node.name not in int8_nodes:
            continue
        seen = int8_nodes[node.name].input[0]  # the input as the int8 node reads it: dequantized when quantized
        if seen == node.input[0]:
            continue  # its input is not quantized: the node runs in float
        # The quantizer folds a Relu after a quantized conv into its output range: the conv then writes the Relu's
        # tensor. Follow single consumers that are not weighted until a tensor both models have.
        output = node.output[0]
        while output not in int8s and len(consumers.get(output, [])) == 1 and consumers[output][0].op_type not in WEIGHTED_OPS:
            output = consumers[output][0].output[0]
        source = node.input[0]
        if source not in floats or seen not in int8s or output not in floats or output not in int8s:
            continue
        errors[node.name] = _sqnr_db(floats[source], int8s[seen]) - _sqnr_db(floats[output], int8s[output])
    return errors


def quantize_openvino(onnx_model: bytes, calibration: np.ndarray, settings: Int8Settings, isa: dict | None = None):
    """Return an OpenVINO model quantized to int8 by NNCF's post-training quantization, as an ``openvino.Model``.

    NNCF chooses its own range estimators (min-max for weights, per-channel); ``calibration_method`` and
    ``per_channel`` are ONNX Runtime's and do not apply here. ``reduce_range`` maps to NNCF's overflow fix
    (7-bit weights in every layer, or none); ``exclude`` names become NNCF's ignored scope.

    Raises:
        ValueError: too few calibration images.
    """
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    images = calibration_subset(calibration, settings)
    with tempfile.TemporaryDirectory(prefix="slimbench-ov-int8-") as folder:
        source = ov.Core().read_model(_write(folder, "model.onnx", onnx_model))
    fix = OverflowFix.ENABLE if settings.effective_reduce_range(isa) else OverflowFix.DISABLE
    dataset = nncf.Dataset([images[i : i + 1] for i in range(len(images))])
    # OpenVINO names an ONNX node's ops after it ('<node>/WithoutBiases' for a Conv's convolution).
    kept = [
        op.get_friendly_name()
        for op in source.get_ops()
        if any(op.get_friendly_name() == name or op.get_friendly_name().startswith(name + "/") for name in settings.exclude)
    ]
    scope = nncf.IgnoredScope(names=kept, validate=False) if kept else None
    return nncf.quantize(
        source,
        dataset,
        subset_size=len(images),
        ignored_scope=scope,
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=fix),
    )
