"""Speed profiles of zoo models on this machine (``run_bench.py profile``): inference latency in every runtime against
the compute floor, each batch size's runtimes timed interleaved; with ``--train``, the time per image of a training step
in every training set-up the machine supports (``bench.training.setups``) against the fwd+bwd compute floor."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import deploy
import models
from bench.study.costs import count_macs
from bench.study.timing_phase import latency_row
from bench.training.setups import TrainingSetup, native_bf16


@dataclass(frozen=True)
class InferenceProfile:
    """What :func:`inference_profile` measured: the machine (``deploy.peak_gflops``' result), one ``latency.csv``-style
    row per model, runtime and batch size (with ``model`` and ``gmacs``), and ``{model: {runtime: reason}}`` for the
    runtimes that could not be built here."""

    machine: dict
    rows: list[dict]
    skipped: dict[str, dict[str, str]]


def time_runtimes(
    deployed: dict[str, dict[str, deploy.Deployed]],
    input_size,
    batch_sizes,
    probe,
    blocks: int,
    min_iters: int,
    min_seconds: float,
    seed: int = 0,
) -> dict:
    """Time every (model label, runtime) of ``deployed`` ({label: {runtime: Deployed}}) at each batch size.

    All candidates of one batch size are interleaved in one :func:`deploy.compare` (same random
    input for all; ``probe``: one load probe, a tuple of them, or None). Returns ``{(label, runtime, batch): deploy.Timing}``.
    """
    timings = {}
    for batch in batch_sizes:
        x = np.random.default_rng(seed).standard_normal((int(batch), *input_size)).astype(np.float32)
        candidates = {
            (label, runtime): d.timed(x) for label, per_runtime in deployed.items() for runtime, d in per_runtime.items()
        }
        for (label, runtime), timing in deploy.compare(candidates, blocks, min_iters, min_seconds, probe=probe).items():
            timings[(label, runtime, int(batch))] = timing
    return timings


def inference_profile(
    model_names: list[str],
    runtimes,
    batch_sizes: list[int],
    input_size: list[int] | None,
    repeats: int,
    min_iters: int,
    min_seconds: float,
    threads: int | None = None,
) -> InferenceProfile:
    """Return the latency of each of ``model_names`` (untrained weights, fed ``input_size`` = [C, H, W], None: each
    model's own) in every runtime ``runtimes`` names, at each of ``batch_sizes``: ``repeats`` interleaved blocks of at
    least ``min_iters`` calls and ``min_seconds`` per runtime, against the compute floor at this machine's fp32 peak.
    A model's runtimes are timed interleaved with each other (one comparison per model and batch size).

    Raises:
        KeyError: an unknown model or runtime; ValueError: bad model settings;
        deploy.RuntimeParityError: an exact runtime broke parity with eager PyTorch.
    """
    with deploy.torch_threads(threads):
        import torch

        used = torch.get_num_threads()
        machine = deploy.peak_gflops(used)
        probe = deploy.LoadProbe(used)
        rows, skipped = [], {}
        for name in model_names:
            model = models.create_model(name, **({"input_size": list(input_size)} if input_size else {})).eval()
            size = model.data_config["input_size"]
            macs = count_macs(model, size)
            example = np.random.default_rng(0).standard_normal((2, *size)).astype(np.float32)
            calibration = np.random.default_rng(1).standard_normal((16, *size)).astype(np.float32)
            deployed, skipped[name] = deploy.deploy_all(
                model,
                runtimes,
                example,
                used,
                calibration=calibration,
                int8=deploy.Int8Settings(calibration_images=len(calibration)),
            )
            timings = time_runtimes({name: deployed}, size, batch_sizes, probe, repeats, min_iters, min_seconds)
            for batch in batch_sizes:
                for runtime, built in deployed.items():
                    row = latency_row(
                        timings[(name, runtime, batch)], runtime, batch, built, macs, used, machine["peak_gflops"], repeats
                    )
                    rows.append({"model": name, "gmacs": macs / 1e9, **row})
    return InferenceProfile(machine, rows, skipped)


@dataclass(frozen=True)
class TrainingProfile:
    """What :func:`training_profile` measured: the machine's fp32 and bf16 GEMM peaks in torch (GFLOP/s), and one row per
    model and set-up: ``model``, ``setup``, ``batch``, ``ms_per_image`` (each interleaved block's median step, averaged
    over the blocks, per image), its ``lo``/``hi`` interval, ``floor_ms_per_image`` (fwd+bwd: 3 x 2 x MACs at the set-up's peak),
    ``over_floor``, ``data_ms_per_image`` (a batch read and converted as the trainer does) and ``compile_seconds``."""

    machine: dict
    rows: list[dict]


def bf16_peak_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """Return torch's best bf16 GEMM throughput on ``threads`` threads (GFLOP/s; emulated and slow where bf16 is not native)."""
    import torch

    with deploy.torch_threads(threads):
        a, b = torch.randn(size, size, dtype=torch.bfloat16), torch.randn(size, size, dtype=torch.bfloat16)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            tick = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - tick)
    return 2.0 * size**3 / best / 1e9


def training_setups(device: str = "cpu", compiled: bool = False) -> list[TrainingSetup]:
    """Return the training set-ups this machine supports: NCHW and channels_last in fp32, the same in bf16 autocast where
    bf16 is native, and with ``compiled`` channels_last compiled (bf16 where native)."""
    native = native_bf16(device)
    setups = [
        TrainingSetup(channels_last=cl, bf16=bf16) for bf16 in ([False, True] if native else [False]) for cl in (False, True)
    ]
    return setups + ([TrainingSetup(channels_last=True, bf16=native, compiled=True)] if compiled else [])


def _training_step(model_name: str, setup: TrainingSetup, input_size, batch: int):
    """Return ``(step(x), x, seconds of the first step)``: one Adam step of a fresh ``model_name`` in ``setup`` on a fixed
    random batch (the first step, which compiles, is taken here)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = models.create_model(model_name, **({"input_size": list(input_size)} if input_size else {})).train()
    size = model.data_config["input_size"]
    if setup.channels_last:
        model.to(memory_format=torch.channels_last)
    setup = TrainingSetup.for_model(model, setup.channels_last, setup.bf16, setup.compiled)
    setup.apply(model)
    if setup.compiled:
        model.compile()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, *size)
    x = x.contiguous(memory_format=torch.channels_last) if setup.channels_last else x
    with torch.no_grad():
        outputs = model.eval()(x[:1]).shape[1]
    model.train()
    y = (torch.rand(batch, outputs) > 0.5).float()

    def step(inputs):
        with setup.autocast(torch.device("cpu")):
            logits = model(inputs)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    tick = time.perf_counter()
    step(x)
    return step, x, time.perf_counter() - tick


def _data_ms_per_image(size, batch: int) -> float:
    """Return the time per image the trainer spends reading a uint8 batch and turning it into model input."""
    from bench.data.loading import to_model_input

    images = np.random.default_rng(0).integers(0, 255, (batch, size[1], size[2], 3), dtype=np.uint8)
    config = {"input_size": size, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    times = []
    for _ in range(7):
        tick = time.perf_counter()
        to_model_input(np.asarray(images), config, "cpu", True)
        times.append(time.perf_counter() - tick)
    return 1000.0 * float(np.median(times)) / batch


def training_profile(
    model_names: list[str],
    batch: int,
    input_size: list[int] | None,
    blocks: int,
    min_seconds: float,
    threads: int | None = None,
    compiled: bool = False,
) -> TrainingProfile:
    """Return the time per image of one training step (forward, loss, backward, Adam update) of each model in every set-up
    of :func:`training_setups`, the set-ups of one model timed in interleaved blocks (``blocks``, each at least
    ``min_seconds`` per set-up), against the fwd+bwd compute floor at torch's peak in the set-up's precision.

    Raises:
        KeyError: an unknown model; ValueError: bad model settings.
    """
    import torch

    with deploy.torch_threads(threads):
        used = torch.get_num_threads()
        machine = {
            "threads": used,
            "fp32_gflops": deploy.peak_gflops(used)["per_library"]["torch"],
            "bf16_gflops": bf16_peak_gflops(used),
            "native_bf16": native_bf16("cpu"),
        }
        rows = []
        for name in model_names:
            setups = training_setups("cpu", compiled)
            steps = {setup.describe(): _training_step(name, setup, input_size, batch) for setup in setups}
            size = models.create_model(name, **({"input_size": list(input_size)} if input_size else {})).data_config["input_size"]
            macs = count_macs(models.create_model(name, **({"input_size": list(input_size)} if input_size else {})), size)
            timings = deploy.compare(
                {label: (step, x, lambda: None) for label, (step, x, _) in steps.items()}, blocks, 2, min_seconds
            )
            data_ms = _data_ms_per_image(size, batch)
            for setup in setups:
                label, t = setup.describe(), timings[setup.describe()]
                low, high = deploy.bootstrap_mean(t.block_medians)
                peak = machine["bf16_gflops"] if setup.bf16 else machine["fp32_gflops"]
                floor = 3 * 2 * macs / (peak * 1e9) * 1e3
                rows.append(
                    {
                        "model": name,
                        "setup": label,
                        "batch": batch,
                        "ms_per_image": t.median_ms / batch,
                        "lo": low / batch,
                        "hi": high / batch,
                        "floor_ms_per_image": floor,
                        "over_floor": t.median_ms / batch / floor,
                        "data_ms_per_image": data_ms,
                        "compile_seconds": steps[label][2] - t.median_ms / 1000 if setup.compiled else None,
                    }
                )
    return TrainingProfile(machine, rows)
