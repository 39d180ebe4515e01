"""Speed profiles of zoo models on this machine (``run_bench.py profile``): inference latency in every runtime against
the compute floor, each batch size's runtimes timed interleaved."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import deploy
import models
from bench.study.costs import count_macs
from bench.study.timing_phase import latency_row


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
