"""Cost profile of a model: parameters, MACs, bytes on disk and measured latency."""
from __future__ import annotations

import copy
import io
import time
import zlib

import numpy as np
import torch
from torch import nn

from bench.train import resolve_device, torch_threads


def count_params(model: nn.Module) -> int:
    """Return the number of parameters of ``model`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size) -> int:
    """Return multiply-accumulates of one forward pass at ``input_size`` (C, H, W), batch 1.

    Counted by ptflops' aten backend (which sees every aten op, not only known module types).
    Many papers print this number as "FLOPs"; it is MACs.

    Raises:
        RuntimeError: ptflops could not count the model.
    """
    from ptflops import get_model_complexity_info

    probe = copy.deepcopy(model).cpu().eval()
    macs, _ = get_model_complexity_info(
        probe, tuple(input_size), as_strings=False, print_per_layer_stat=False, backend="aten", verbose=False
    )
    if macs is None:
        raise RuntimeError(f"ptflops could not count the MACs of {type(model).__name__}")
    return int(macs)


def disk_bytes(model: nn.Module) -> tuple[int, int]:
    """Return (bytes of ``torch.save(state_dict)``, bytes of the same file deflate-compressed, level 9)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    raw = buffer.getvalue()
    return len(raw), len(zlib.compress(raw, 9))


def measure_latency(
    model: nn.Module,
    input_size,
    batch_size: int = 1,
    device: str = "cpu",
    min_iters: int = 50,
    min_seconds: float = 2.0,
    warmup: int = 5,
    channels_last: bool = False,
) -> dict[str, float]:
    """Time forward passes of ``model`` (eval + inference mode) on random input.

    After ``warmup`` passes, passes are timed one by one until both ``min_iters`` passes and
    ``min_seconds`` have been spent. On CUDA each pass is timed with CUDA events after a
    synchronisation. The model is copied, so the caller's model is untouched.

    Returns:
        ``{'median_ms', 'p90_ms', 'min_ms', 'iters'}`` for one batch of ``batch_size``.
    """
    device = torch.device(device)
    probe = copy.deepcopy(model).to(device).eval()
    x = torch.randn(batch_size, *input_size, device=device)
    if channels_last:
        probe = probe.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            probe(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        while len(times) < min_iters or time.perf_counter() - started < min_seconds:
            if device.type == "cuda":
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                probe(x)
                end.record()
                torch.cuda.synchronize(device)
                times.append(begin.elapsed_time(end))
            else:
                tick = time.perf_counter()
                probe(x)
                times.append(1000.0 * (time.perf_counter() - tick))
    values = np.asarray(times)
    return {
        "median_ms": float(np.median(values)),
        "p90_ms": float(np.percentile(values, 90)),
        "min_ms": float(values.min()),
        "iters": int(len(values)),
    }


def latency_spread(model: nn.Module, input_size, batch_sizes=(1, 32), repeats: int = 5, channels_last: bool = False,
                   **timing) -> list[dict]:
    """Rerun :func:`measure_latency` ``repeats`` times per batch size; return one row per batch size.

    Rows hold ``batch``, ``medians_ms`` (the median of each rerun), ``median_ms`` (their median),
    ``spread_pct`` ((max - min) / median of the rerun medians, in percent).
    """
    rows = []
    for batch in batch_sizes:
        medians = [measure_latency(model, input_size, batch, channels_last=channels_last, **timing)["median_ms"]
                   for _ in range(repeats)]
        middle = float(np.median(medians))
        rows.append({"batch": batch, "medians_ms": medians, "median_ms": middle,
                     "spread_pct": 100.0 * (max(medians) - min(medians)) / middle})
    return rows


def profile_model(model, input_size, profile: dict, device: str = "auto") -> dict:
    """Return the cost columns: params, macs, disk bytes and latency (per ``profile`` settings).

    CPU latency is measured in PyTorch's default (contiguous, NCHW) memory format and, unless
    ``channels_last_latency`` is false, in channels_last too (``cpu_*_cl_ms``). GPU columns stay
    None (empty in the CSV) when CUDA is absent.
    """
    row = {"params": count_params(model), "macs": count_macs(model, input_size)}
    row["disk_bytes"], row["disk_bytes_zip"] = disk_bytes(model)
    if not profile.get("latency", True):
        return row
    batch_n = int(profile.get("batch_n", 32))
    timing = {"min_iters": int(profile.get("min_iters", 50)), "min_seconds": float(profile.get("min_seconds", 2.0))}
    with torch_threads(profile.get("threads")):
        b1 = measure_latency(model, input_size, 1, "cpu", **timing)
        bn = measure_latency(model, input_size, batch_n, "cpu", **timing)
        row.update({"cpu_b1_ms": b1["median_ms"], "cpu_b1_p90_ms": b1["p90_ms"], "cpu_bN_ms": bn["median_ms"],
                    "cpu_bN_p90_ms": bn["p90_ms"], "batch_n": batch_n})
        if profile.get("channels_last_latency", True):
            # The memory format can change the CPU ranking (e.g. factorized stems), so both are shown.
            row["cpu_b1_cl_ms"] = measure_latency(model, input_size, 1, "cpu", channels_last=True, **timing)["median_ms"]
            row["cpu_bN_cl_ms"] = measure_latency(model, input_size, batch_n, "cpu", channels_last=True, **timing)["median_ms"]
        row["threads"] = torch.get_num_threads()
    if torch.cuda.is_available() and resolve_device(device).type == "cuda":
        row["gpu_b1_ms"] = measure_latency(model, input_size, 1, "cuda", **timing)["median_ms"]
        row["gpu_bN_ms"] = measure_latency(model, input_size, batch_n, "cuda", **timing)["median_ms"]
    return row
