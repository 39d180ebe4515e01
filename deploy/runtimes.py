"""The runtimes a trained model is deployed with: one registry, one signature.

Each entry turns an ``nn.Module`` into a :class:`Deployed` callable on a float32 NCHW batch::

    deployed = deploy.deploy(model, "onnxruntime", example)   # parity with eager checked here
    logits = deployed(images)                                   # numpy in, numpy out

A runtime is one ``build(model, example, threads, device, calibration, int8) -> Deployed`` function and
one :data:`RUNTIMES` entry (its description, the packages it needs, its parity tolerance). Every
build is checked against eager PyTorch on the example batch: the largest absolute logit
difference is kept in ``Deployed.max_abs_diff``, and a runtime beyond its tolerance raises
:class:`RuntimeParityError` instead of producing numbers nobody should trust.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from deploy.int8 import BytesMemo, Int8Settings, calibration_subset, equalize_chains, quantize_onnx, quantize_openvino


class RuntimeUnavailable(RuntimeError):
    """A runtime cannot be used here (a package is missing, or no GPU for a GPU runtime); the message says why."""


class RuntimeParityError(RuntimeError):
    """A runtime's outputs differ from eager PyTorch's by more than its stated tolerance."""


@dataclass
class Deployed:
    """A model in one runtime: ``prepare`` turns a float32 NCHW numpy batch into the runtime's input
    (done once, outside any timing), ``run`` computes the logits, ``sync`` waits for a GPU to finish.

    Calling it (``deployed(x)``) prepares, runs and returns float32 numpy logits.
    """

    runtime: str
    prepare: Callable[[np.ndarray], Any]
    run: Callable[[Any], Any]
    device: str = "cpu"
    sync: Callable[[], None] = lambda: None
    max_abs_diff: float = float("nan")
    int8_settings: str = ""
    # what a deployer ships: (kind, payload) for deploy.footprint.save_artifact: ("onnx", bytes), ("openvino",
    # openvino.Model), ("torchscript", frozen module) or ("checkpoint", {"channels_last": bool}) for eager PyTorch
    artifact: tuple = ("", None)

    def timed(self, x: np.ndarray) -> tuple[Callable[[Any], Any], Any, Callable[[], None]]:
        """Return ``(run, prepared input, sync)`` for ``x``: what :func:`deploy.compare` and :class:`deploy.Interleaved` time."""
        return self.run, self.prepare(np.ascontiguousarray(x, dtype=np.float32)), self.sync

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.run(self.prepare(np.ascontiguousarray(x, dtype=np.float32)))
        if isinstance(out, torch.Tensor):
            out = out.detach().float().cpu().numpy()
        return np.asarray(out, dtype=np.float32)


# ---- helpers -----------------------------------------------------------------------------------


def _eval_copy(model: nn.Module, device: str) -> nn.Module:
    return copy.deepcopy(model).to(device).to(memory_format=torch.contiguous_format).eval()


def _torch_sync(device: str) -> Callable[[], None]:
    if torch.device(device).type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def model_key(model: nn.Module, example: np.ndarray, extra: bytes = b"") -> str:
    """Return a hash of everything an export of ``model`` for inputs shaped like ``example`` depends on: its structure (its
    repr: layers, kernels, strides, activations), its weights and buffers, the input shape but its batch size, and
    ``extra``. The batch dimension is exported dynamic and one graph serves every batch size, so an export traced at
    batch 2 is the one traced at batch 1 (byte for byte for Slim-Net and MobileNet-V3-small): a search's quantized trial
    exported and equalized its int8 source twice, once per example batch (its int8 build after the quantize step: 1.3 s
    before, 0.2 s after, for a pruned + SVD Slim-Net on machine D)."""
    digest = hashlib.sha1(f"{type(model).__name__}|{model!r}|{np.shape(example)[1:]}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(extra)
    return digest.hexdigest()


# A timing phase exports each model for ONNX Runtime, OpenVINO and the per-layer profiles: 1.2 s each of Slim-Net's on
# machine D. The equalized int8 sources are kept by the key of the model they come from: accuracy control and each int8
# runtime of a model start from the same one (1.4 s of Slim-Net's).
_EXPORTS = BytesMemo(256 * 2**20)
_SOURCES = BytesMemo(256 * 2**20)


def export_onnx(model: nn.Module, example: np.ndarray) -> bytes:
    """Return ``model`` exported to ONNX (opset 17, dynamic batch dimension) as bytes (the same model, weights and input
    shape give the graph exported last time).

    TorchScript-based exporter: it takes a fraction of a second where the dynamo exporter takes
    seconds, which matters when every layer of a model is exported on its own.
    """
    return _EXPORTS.get(model_key(model, example), lambda: _export(model, example))


def _export(model: nn.Module, example: np.ndarray) -> bytes:
    probe = _eval_copy(model, "cpu")
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice; the export itself is checked by parity
        torch.onnx.export(
            probe,
            (torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32)),),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return buffer.getvalue()


def ort_options(threads: int | None):
    """Return the ONNX Runtime session options every session here runs with (``threads`` intra-op threads, no spinning)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    # Idle intra-op workers spin by default, on the cores the next model needs: two sessions interleaved then ran
    # 2.5x slower each than alone, with per-block ratios from 0.13 to 1.28 (README, "Measured figures"). Off, models
    # timed together run as fast as alone. (A process serving one model may turn it back on; it then runs faster.)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _ort_session(onnx_model: bytes, threads: int | None, device: str):
    import onnxruntime as ort

    options = ort_options(threads)
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeUnavailable("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider"] + providers
    return ort.InferenceSession(onnx_model, options, providers=providers)


def _ort_deployed(name: str, session, device: str) -> Deployed:
    input_name = session.get_inputs()[0].name
    return Deployed(name, prepare=lambda x: x, run=lambda x: session.run(None, {input_name: x})[0], device=device)


# ---- the runtimes ------------------------------------------------------------------------------


def build_eager(model, example, threads=None, device="cpu", calibration=None, int8=None) -> Deployed:
    """Return eager PyTorch (eval, inference mode, NCHW): the reference every other runtime is checked against."""
    probe = _eval_copy(model, device)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return probe(x)

    return Deployed(
        "eager",
        prepare=lambda x: torch.from_numpy(x).to(device),
        run=run,
        device=device,
        sync=_torch_sync(device),
        artifact=("checkpoint", {"channels_last": False}),
    )


def build_eager_cl(model, example, threads=None, device="cpu", calibration=None, int8=None) -> Deployed:
    """Return eager PyTorch with model and input in the channels_last memory format."""
    probe = _eval_copy(model, device).to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return probe(x)

    return Deployed(
        "eager_cl",
        prepare=lambda x: torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last),
        run=run,
        device=device,
        sync=_torch_sync(device),
        artifact=("checkpoint", {"channels_last": True}),
    )


def build_torchscript(model, example, threads=None, device="cpu", calibration=None, int8=None) -> Deployed:
    """Return the traced and frozen TorchScript module (freezing folds BatchNorm into the convs)."""
    probe = _eval_copy(model, device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        frozen = torch.jit.freeze(torch.jit.trace(probe, torch.from_numpy(example).to(device)))

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return frozen(x)

    return Deployed(
        "torchscript",
        prepare=lambda x: torch.from_numpy(x).to(device),
        run=run,
        device=device,
        sync=_torch_sync(device),
        artifact=("torchscript", frozen),
    )


def build_onnxruntime(model, example, threads=None, device="cpu", calibration=None, int8=None) -> Deployed:
    """Return an ONNX Runtime session (fp32; CPU execution provider, CUDA's on a GPU device)."""
    onnx_model = export_onnx(model, example)
    deployed = _ort_deployed("onnxruntime", _ort_session(onnx_model, threads, device), device)
    deployed.artifact = ("onnx", onnx_model)
    return deployed


def int8_settings(model: nn.Module, default: Int8Settings | None = None) -> Int8Settings:
    """Return the int8 settings a model is quantized with: its own (``model.quantization``, set by the ``quantize``
    compression step and kept in its checkpoint), else ``default``, else :class:`Int8Settings`' defaults.

    Raises:
        ValueError: the model's own settings are invalid (named).
    """
    own = getattr(model, "quantization", None)
    return Int8Settings.from_mapping(own) if own else (default or Int8Settings())


def int8_source(model: nn.Module, example: np.ndarray, calibration: np.ndarray, settings: Int8Settings) -> bytes:
    """Return the float ONNX graph int8 quantization starts from: ``model`` with its linear chains equalized on the
    calibration images when ``settings.equalize`` (same function, see :func:`deploy.int8.equalize_chains`), exported
    (the same model, weights, images and settings give the graph built last time).

    Raises:
        ValueError: no calibration images, or fewer than ``settings.calibration_images``.
    """
    images = calibration_subset(calibration, settings)
    if not settings.equalize:
        return export_onnx(model, example)  # the model's own export, kept by export_onnx
    return _SOURCES.get(
        model_key(model, example, b"equalized" + np.ascontiguousarray(images).tobytes()),
        lambda: export_onnx(equalize_chains(model, images)[0], example),
    )


def build_onnxruntime_int8(model, example, threads=None, device="cpu", calibration=None, int8=None) -> Deployed:
    """Return an ONNX Runtime session of the statically int8-quantized model (see :func:`deploy.int8.quantize_onnx`)."""
    settings = int8_settings(model, int8)
    quantized = quantize_onnx(int8_source(model, example, calibration, settings), calibration, settings)
    deployed = _ort_deployed("onnxruntime_int8", _ort_session(quantized, threads, device), device)
    deployed.int8_settings = settings.describe()
    deployed.artifact = ("onnx", quantized)
    return deployed


def openvino_config(threads: int | None) -> dict:
    """Return the OpenVINO CPU plugin configuration every compiled model here runs with (``threads``, latency hint, fp32)."""
    return {
        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }


def _openvino_deployed(name: str, source, threads: int | None, device: str) -> Deployed:
    """Return a Deployed running ``source`` (an ``openvino.Model``) on the CPU plugin, compiled once per batch shape."""
    import openvino as ov

    core = ov.Core()
    config = openvino_config(threads)
    compiled: dict[tuple, Any] = {}

    def run(x: np.ndarray) -> np.ndarray:
        if x.shape not in compiled:  # static shapes run faster than a dynamic batch dimension
            shaped = source.clone()
            shaped.reshape({shaped.inputs[0]: list(x.shape)})
            compiled[x.shape] = core.compile_model(shaped, "CPU", config).create_infer_request()
        request = compiled[x.shape]
        # zero-copy: the plugin reads the caller's array instead of first copying it (0.47 MB an image) into its own
        # input tensor, a cost a deployer would not pay and one that weighs most on the smallest models at batch 1
        request.infer({0: x}, share_inputs=True)
        return request.get_output_tensor(0).data.copy()

    return Deployed(name, prepare=lambda x: x, run=run, device=device, artifact=("openvino", source))


def build_openvino(model, example, threads=None, device="cpu", calibration=None, int8=None) -> Deployed:
    """Return OpenVINO's CPU plugin at fp32 precision, compiled once per batch size (static shapes run faster)."""
    import openvino as ov

    if torch.device(device).type != "cpu":
        raise RuntimeUnavailable("the openvino runtime here runs on the CPU only")
    with tempfile.TemporaryDirectory(prefix="slimbench-ov-") as folder:
        path = os.path.join(folder, "model.onnx")
        with open(path, "wb") as handle:
            handle.write(export_onnx(model, example))
        source = ov.Core().read_model(path)
    return _openvino_deployed("openvino", source, threads, device)


def build_openvino_int8(model, example, threads=None, device="cpu", calibration=None, int8=None) -> Deployed:
    """Return OpenVINO's CPU plugin running the model quantized to int8 by NNCF (see :func:`deploy.int8.quantize_openvino`)."""
    if torch.device(device).type != "cpu":
        raise RuntimeUnavailable("the openvino_int8 runtime here runs on the CPU only")
    settings = int8_settings(model, int8)
    deployed = _openvino_deployed(
        "openvino_int8",
        quantize_openvino(int8_source(model, example, calibration, settings), calibration, settings),
        threads,
        device,
    )
    deployed.int8_settings = settings.describe() + ", NNCF ranges"
    return deployed


@dataclass(frozen=True)
class RuntimeEntry:
    """A registered runtime: its build function, what it is, the packages it needs, its parity tolerance (largest
    |logit - eager logit| allowed, times max(1, largest |eager logit|); None: no parity gate) and, for an int8 runtime,
    the fp32 runtime it quantizes (``quantizes``: its float twin). A runtime without one is ``exact``: it keeps fp32
    arithmetic, so its accuracy is the eager model's; an int8 runtime's accuracy is measured in it."""

    name: str
    build: Callable[..., Deployed]
    description: str
    requires: tuple[str, ...] = ()
    tolerance: float | None = 1e-3
    quantizes: str | None = None

    @property
    def exact(self) -> bool:
        """Whether the runtime keeps fp32 arithmetic (it quantizes nothing)."""
        return self.quantizes is None


RUNTIMES: dict[str, RuntimeEntry] = {
    "eager": RuntimeEntry("eager", build_eager, "eager PyTorch, NCHW"),
    "eager_cl": RuntimeEntry("eager_cl", build_eager_cl, "eager PyTorch, channels_last"),
    "torchscript": RuntimeEntry("torchscript", build_torchscript, "TorchScript, traced and frozen (BatchNorm folded)"),
    "onnxruntime": RuntimeEntry(
        "onnxruntime", build_onnxruntime, "ONNX Runtime fp32 (CPU / CUDA provider)", ("onnx", "onnxruntime")
    ),
    "onnxruntime_int8": RuntimeEntry(
        "onnxruntime_int8",
        build_onnxruntime_int8,
        "ONNX Runtime int8, static post-training quantization (QDQ) with the model's int8 settings",
        ("onnx", "onnxruntime"),
        tolerance=None,
        quantizes="onnxruntime",
    ),
    "openvino": RuntimeEntry("openvino", build_openvino, "OpenVINO CPU plugin, fp32", ("onnx", "openvino")),
    "openvino_int8": RuntimeEntry(
        "openvino_int8",
        build_openvino_int8,
        "OpenVINO CPU plugin, int8 by NNCF post-training quantization",
        ("onnx", "openvino", "nncf"),
        tolerance=None,
        quantizes="openvino",
    ),
}


def int8_twin(runtime: str) -> str | None:
    """Return the int8 runtime that quantizes the fp32 ``runtime`` (None when it has none).

    Raises:
        KeyError: unknown runtime.
    """
    unavailable_reason(runtime)
    return next((name for name, entry in RUNTIMES.items() if entry.quantizes == runtime), None)


def float_twin(runtime: str) -> str:
    """Return the fp32 runtime of ``runtime``: itself when it is exact, else the runtime it quantizes.

    Raises:
        KeyError: unknown runtime.
    """
    unavailable_reason(runtime)
    return RUNTIMES[runtime].quantizes or runtime


def list_runtimes(available_only: bool = False) -> list[str]:
    """Return the registered runtime names (only those usable here with ``available_only``)."""
    return [name for name in RUNTIMES if not available_only or unavailable_reason(name) is None]


def unavailable_reason(name: str) -> str | None:
    """Return why runtime ``name`` cannot run here (a missing package), or None if it can.

    Raises:
        KeyError: unknown runtime (the message lists the known ones).
    """
    if name not in RUNTIMES:
        raise KeyError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}")
    missing = [package for package in RUNTIMES[name].requires if importlib.util.find_spec(package) is None]
    return f"{name} needs the package(s) {missing} (pip install {' '.join(missing)})" if missing else None


def resolve_runtimes(runtimes) -> list[str]:
    """Return the runtime names a ``runtimes`` setting asks for: ``'all'`` (or None) means every registered one.

    Raises:
        KeyError: an unknown runtime name (the message lists the known ones).
    """
    if runtimes in (None, "all", ["all"]):
        return list_runtimes()
    names = [runtimes] if isinstance(runtimes, str) else list(runtimes)
    for name in names:
        unavailable_reason(name)  # raises KeyError for an unknown name
    return names


def deploy_all(
    model: nn.Module,
    runtimes,
    example: np.ndarray,
    threads: int | None = None,
    device: str = "cpu",
    calibration: np.ndarray | None = None,
    int8: Int8Settings | None = None,
) -> tuple[dict[str, Deployed], dict[str, str]]:
    """Return ``(deployed per runtime, why each skipped runtime was skipped)`` for the runtimes ``runtimes`` names
    (see :func:`resolve_runtimes`).

    A runtime whose package is missing (or that cannot use ``device``) is skipped with its reason; a quantized model
    (``model.quantization``) is built in the int8 runtimes only. ``int8`` is the int8 settings of a model without its own.

    Raises:
        KeyError: an unknown runtime.
        RuntimeParityError: an exact (fp32) runtime's logits differ from eager's beyond its tolerance: a conversion bug,
            so nothing it measured could be trusted.
    """
    built, skipped = {}, {}
    names = resolve_runtimes(runtimes)
    if getattr(model, "quantization", None):  # a quantized model's figures are its int8 runtimes'
        skipped.update({name: "a quantized model runs in the int8 runtimes only" for name in names if RUNTIMES[name].exact})
        names = [name for name in names if not RUNTIMES[name].exact]
    for name in names:
        try:
            built[name] = deploy(model, name, example, threads=threads, device=device, calibration=calibration, int8=int8)
        except RuntimeUnavailable as exc:
            skipped[name] = str(exc)
        except RuntimeParityError as exc:
            if RUNTIMES[name].exact:
                raise
            skipped[name] = str(exc)
    return built, skipped


def max_abs_difference(deployed: Deployed, reference: np.ndarray, x: np.ndarray) -> float:
    """Return the largest absolute difference between ``deployed(x)`` and the ``reference`` logits."""
    return float(np.max(np.abs(deployed(x) - reference))) if reference.size else 0.0


def deploy(
    model: nn.Module,
    runtime: str,
    example: np.ndarray | torch.Tensor,
    threads: int | None = None,
    device: str = "cpu",
    calibration: np.ndarray | None = None,
    int8: Int8Settings | None = None,
) -> Deployed:
    """Return ``model`` built for ``runtime``, with its parity against eager PyTorch on ``example`` checked.

    ``example`` is a float32 NCHW batch at the model's input size (real images give a sharper
    parity check than noise); ``calibration`` images are needed by the int8 runtimes, ``int8`` is their
    settings for a model without its own (see :func:`int8_settings`). The caller's model is not modified.
    An int8 runtime has no parity gate (its logits are meant to differ; its accuracy is measured in
    it): ``max_abs_diff`` says how far they are.

    Raises:
        KeyError: unknown runtime.
        RuntimeUnavailable: a package the runtime needs is missing, or it cannot use ``device``.
        RuntimeParityError: the runtime's logits differ from eager's beyond its tolerance.
        ValueError: int8 without calibration images.
    """
    reason = unavailable_reason(runtime)
    if reason:
        raise RuntimeUnavailable(reason)
    example = np.ascontiguousarray(
        example.detach().cpu().numpy() if isinstance(example, torch.Tensor) else example, dtype=np.float32
    )
    entry = RUNTIMES[runtime]
    deployed = entry.build(model, example, threads=threads, device=device, calibration=calibration, int8=int8)
    reference = build_eager(model, example, device=device)(example)
    deployed.max_abs_diff = max_abs_difference(deployed, reference, example)
    if entry.tolerance is None:
        return deployed
    allowed = entry.tolerance * max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0)
    if not deployed.max_abs_diff <= allowed:  # NaN fails too
        raise RuntimeParityError(
            f"{runtime}: logits differ from eager PyTorch by up to {deployed.max_abs_diff:.3g} on the example batch, "
            f"beyond the tolerance {allowed:.3g} ({entry.tolerance:g} x max(1, max |logit|)); its timings and accuracy "
            f"would not describe this model"
        )
    return deployed
