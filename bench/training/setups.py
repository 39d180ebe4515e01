"""How a training step runs on this machine: memory format, precision and compilation (a training set-up).

The trainer runs ``channels_last`` when asked (``train.channels_last``), in bf16 autocast when ``train.precision`` is
``bf16``, or for ``auto`` when the device has native bf16 arithmetic (a CPU with AVX512_BF16 or AMX, or a GPU that has it;
elsewhere bf16 is emulated and slower than fp32) and bf16 measures faster for this model (:func:`measured_setup`: on an
AVX512_BF16 CPU Slim-Net trains 1.55x faster in bf16, MobileNet-V3-small 1.6x slower), and compiled with
``torch.compile`` when ``train.compile`` is set.
Every result row records the set-up it trained in (``train_setup``). ``run_bench.py profile --train`` measures every
set-up the machine supports against the fwd+bwd compute floor, so the choice is made on numbers.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import deploy
from bench.store.files import write_json_atomic

_logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device | str) -> bool:
    """Return whether ``device`` computes in bf16 natively: a CPU with AVX512_BF16 or AMX, or a CUDA GPU that supports it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    isa = deploy.cpu_isa()
    return device.type == "cpu" and (isa["bf16"] or isa["amx"])


def slow_bf16_layers(model: nn.Module) -> tuple[str, ...]:
    """Return the names of ``model``'s depthwise convolutions with kernels larger than 3x3, which a bf16 set-up keeps in
    fp32: on machine D (AVX512_BF16, oneDNN in torch 2.14) a 7x7 stride-2 depthwise conv on 37 channels (a CP stem's
    middle factor) trains 3.2x slower in bf16 than in fp32 (813 vs 253 ms forward+backward at batch 32, 218x178), which
    made a CP-stem Slim-Net train slower in bf16 than in fp32 while the 3x3 depthwise convs of Slim-Net gain."""
    return tuple(
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
        and module.groups > 1
        and module.groups == module.in_channels
        and module.kernel_size[0] * module.kernel_size[1] > 9
    )


def expanding_chains(model: nn.Module) -> tuple[str, ...]:
    """Return the names of ``model``'s ``nn.Sequential`` modules that start with a bias-free 1x1 convolution expanding its
    channels (stride 1, no padding) and feeding a convolution that is dense or depthwise on those channels: a CP or
    CPD-EPC factorized stem (a Tucker-2 stem's first factor keeps at most its 3 input channels). A training set-up
    computes the two as one convolution (:func:`merged_forward`): the same function of the same parameters, without the
    expanded tensor at the input's resolution (for the default's CP stem, 3 -> 37 channels at 218x178 before a 7x7
    stride-2 depthwise conv). Machine D, ``python run_bench.py`` (the default study): the CP stem fine-tuned in 26 s
    instead of 43 s, the CPD-EPC stem in 28 s instead of 38 s.

    A model with NNCF's fake quantization has none: its quantizers hook each convolution as traced.
    """
    if any(type(module).__module__.split(".")[0] == "nncf" for module in model.modules()):
        return ()
    return tuple(name for name, module in model.named_modules() if _expanding_chain(module))


def _expanding_chain(module: nn.Module) -> bool:
    if type(module) is not nn.Sequential or len(module) < 2:
        return False
    pointwise, conv = module[0], module[1]
    if type(pointwise) is not nn.Conv2d or type(conv) is not nn.Conv2d:
        return False
    if any(m._forward_hooks or m._forward_pre_hooks for m in (module, pointwise, conv)):
        return False
    plain_pointwise = (
        pointwise.kernel_size == (1, 1)
        and pointwise.stride == (1, 1)
        and pointwise.padding == (0, 0)
        and pointwise.groups == 1
        and pointwise.bias is None  # zero-padding its output equals zero-padding its input only without a bias
        and pointwise.padding_mode == "zeros"
    )
    depthwise = conv.groups == conv.in_channels == conv.out_channels
    return (
        plain_pointwise
        and pointwise.out_channels > pointwise.in_channels
        and conv.in_channels == pointwise.out_channels
        and conv.padding_mode == "zeros"
        and (conv.groups == 1 or depthwise)
    )


def merged_forward(chain: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Return ``chain(x)`` for an :func:`expanding_chains` chain, its first two convolutions computed as one whose weight
    is their product (gradients reach both factors through it)."""
    pointwise, conv = chain[0], chain[1]
    factor = pointwise.weight[:, :, 0, 0]  # (expanded, in)
    if conv.groups == 1:
        weight = torch.einsum("ojhw,jc->ochw", conv.weight, factor)
    else:
        weight = conv.weight * factor[:, :, None, None]
    out = F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation)
    for layer in list(chain)[2:]:
        out = layer(out)
    return out


class _ForwardOverride:
    """``module.forward`` replaced on the instance until ``remove()`` (a handle like a hook's)."""

    def __init__(self, module: nn.Module, forward):
        self.module = module
        module.forward = forward

    def remove(self) -> None:
        self.module.__dict__.pop("forward", None)


@dataclass(frozen=True)
class TrainingSetup:
    """How training steps run: ``channels_last`` memory format, ``bf16`` autocast (else fp32) with the layers named in
    ``fp32_layers`` kept in fp32 (:func:`slow_bf16_layers`), ``compiled`` by torch.compile, the chains named in
    ``merged_chains`` computed with their first two convolutions as one (:func:`expanding_chains`)."""

    channels_last: bool
    bf16: bool
    compiled: bool = False
    fp32_layers: tuple[str, ...] = ()
    merged_chains: tuple[str, ...] = ()

    @classmethod
    def for_model(cls, model: nn.Module, channels_last: bool, bf16: bool, compiled: bool = False) -> TrainingSetup:
        """Return the set-up of ``model``: its expanding chains merged, and in bf16 its slow layers in fp32 but for the
        convs a merged chain no longer runs on their own (each chain's second; the layers after it still run)."""
        merged = expanding_chains(model)
        bypassed = {f"{chain}.1" if chain else "1" for chain in merged}
        slow = tuple(name for name in slow_bf16_layers(model) if name not in bypassed)
        return cls(channels_last, bf16, compiled, slow if bf16 else (), merged)

    def describe(self) -> str:
        """Return the set-up in a few words, e.g. ``channels_last, bf16 autocast`` (the ``train_setup`` column)."""
        precision = "fp32"
        if self.bf16:
            kept = len(self.fp32_layers)
            precision = "bf16 autocast" + (f" ({kept} large-kernel depthwise conv{'s' * (kept > 1)} in fp32)" if kept else "")
        parts = ["channels_last" if self.channels_last else "NCHW", precision]
        if self.merged_chains:
            count = len(self.merged_chains)
            parts.append(f"{count} expanding 1x1 conv{'s' * (count > 1)} merged into the next")
        return ", ".join(parts + (["torch.compile"] if self.compiled else []))

    def autocast(self, device: torch.device):
        """Return the context a training step's forward pass and loss run in (bf16 autocast, or nothing)."""
        return torch.autocast(device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def apply(self, model: nn.Module) -> list:
        """Make ``model``'s ``merged_chains`` run merged (:func:`merged_forward`) and its ``fp32_layers`` in fp32 inside the
        bf16 autocast (their inputs cast to fp32, autocast off for their forward); return the handles, whose ``remove()``
        undoes it.

        Raises:
            KeyError: a layer name that is not a module of ``model``.
        """
        modules = dict(model.named_modules())
        handles = [
            _ForwardOverride(modules[name], functools.partial(merged_forward, modules[name])) for name in self.merged_chains
        ]
        for name in self.fp32_layers if self.bf16 else ():
            region = _Fp32Region()
            handles.append(modules[name].register_forward_pre_hook(region.enter))
            handles.append(modules[name].register_forward_hook(region.leave))
        return handles


class _Fp32Region:
    """A module's forward out of autocast: entered by its forward pre-hook, left by its forward hook."""

    def __init__(self):
        self.contexts = []

    def enter(self, module, args):
        if not torch.is_autocast_enabled(args[0].device.type):
            self.contexts.append(None)
            return None
        context = torch.autocast(args[0].device.type, enabled=False)
        context.__enter__()
        self.contexts.append(context)
        return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def leave(self, module, args, output):
        context = self.contexts.pop()
        if context is not None:
            context.__exit__(None, None, None)


def training_setup(
    model: nn.Module, batch: int, channels_last: bool, precision: str, compiled: bool, device, cache_dir: str | None = None
) -> TrainingSetup:
    """Return the set-up a training run of ``model`` at ``batch`` uses on ``device``: ``precision`` 'bf16' or 'fp32' as
    asked, or 'auto': bf16 where it is native and measures faster for this model (:func:`measured_setup`).

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision: expected one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return measured_setup(model, batch, channels_last, compiled, device, cache_dir)
    return TrainingSetup.for_model(model, channels_last, precision == "bf16", compiled)


# bf16 is chosen only when it is at least this much faster than fp32: a closer race could flip between runs on timing noise,
# and with it a study's numbers (MobileNet-V3-small trains 1.6x slower in bf16 on an AVX512_BF16 CPU; Slim-Net 1.55x faster).
BF16_MARGIN = 1.1
# A first round of timings this far apart either way decides; a second round is timed only for a closer race (machine D:
# Slim-Net 1.5x faster in bf16, MobileNet-V3-small 1.6x slower: their second rounds, about 5 s of the 10-14 s the probe
# took in an empty-cache study under py-spy, are no longer timed).
DECISIVE_RATIO = 1.3


def _setup_key(model: nn.Module, batch: int, channels_last: bool, device: torch.device) -> str:
    from models import describe_structure

    # Keyed on the base architecture (what create_model built), not on a compressed copy's structure: every variant of
    # a base trains in its base's set-up (their slow large-kernel depthwise factors stay fp32 anyway), so a search does
    # not spend 5-9 s measuring each trial's architecture for a fine-tune that takes less (machine D: 11 keys, 20 trials)
    arch = getattr(model, "arch", None)
    signature = json.dumps(
        [arch, list(model.data_config["input_size"])] if arch else [describe_structure(model)], sort_keys=True, default=str
    )
    # v3: bf16 keeps slow_bf16_layers in fp32; decisions per base architecture (earlier decisions are not reused)
    machine = f"v3|{torch.__version__}|{deploy.isa_text()}|{torch.get_num_threads()}|{device}"
    return hashlib.sha1(f"{signature}|{batch}|{channels_last}|{machine}".encode()).hexdigest()[:16]


def _step_seconds(model: nn.Module, setup: TrainingSetup, batch: int, device: torch.device, steps: int = 3) -> float:
    """Return the median time of ``steps`` training steps of a copy of ``model`` in ``setup`` on a random batch (after one
    untimed step)."""
    import torch.nn.functional as F

    probe = copy.deepcopy(model).to(device)
    if setup.channels_last:
        probe.to(memory_format=torch.channels_last)
    setup.apply(probe)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-6)
    x = torch.randn(batch, *model.data_config["input_size"], device=device)
    x = x.contiguous(memory_format=torch.channels_last) if setup.channels_last else x
    with torch.no_grad():
        target = torch.zeros(batch, probe.eval()(x[:1]).shape[1], device=device)
    probe.train()
    times = []
    for _ in range(steps + 1):
        tick = time.perf_counter()
        with setup.autocast(device):
            loss = F.binary_cross_entropy_with_logits(probe(x).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tick)
    return float(sorted(times[1:])[len(times[1:]) // 2])


def measured_setup(
    model: nn.Module, batch: int, channels_last: bool, compiled: bool, device, cache_dir: str | None = None
) -> TrainingSetup:
    """Return the faster of fp32 and bf16 autocast for training ``model`` at ``batch`` on ``device`` (bf16 only where it is
    native, and only when :data:`BF16_MARGIN` faster), timed on a copy of the model in alternating rounds of steps (a
    second round only when the first is closer than :data:`DECISIVE_RATIO`), the decision
    kept in ``<cache_dir>/training_setups.json`` for this architecture, batch and machine so a rerun trains alike."""
    device = torch.device(device)
    if not native_bf16(device):
        return TrainingSetup.for_model(model, channels_last, False, compiled)
    key = _setup_key(model, batch, channels_last, device)
    path = os.path.join(cache_dir, "training_setups.json") if cache_dir else None
    known = {}
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            known = json.load(handle)
    if key not in known:
        fp32, bf16 = TrainingSetup.for_model(model, channels_last, False), TrainingSetup.for_model(model, channels_last, True)
        seconds = {"fp32": [], "bf16": []}
        for _ in range(2):  # alternating rounds: a slow spell of the machine falls on both
            seconds["fp32"].append(_step_seconds(model, fp32, batch, device))
            seconds["bf16"].append(_step_seconds(model, bf16, batch, device))
            if not 1 / DECISIVE_RATIO < min(seconds["fp32"]) / min(seconds["bf16"]) < DECISIVE_RATIO:
                break
        known[key] = "bf16" if min(seconds["fp32"]) >= BF16_MARGIN * min(seconds["bf16"]) else "fp32"
        _logger.info("training set-up for %s: %s (step seconds %s)", getattr(model, "arch", {}), known[key], seconds)
        if path:
            write_json_atomic(path, known)
    return TrainingSetup.for_model(model, channels_last, known[key] == "bf16", compiled)
