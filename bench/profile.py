"""Cost profile of a model: parameters, MACs, bytes on disk, and latency in every deployment runtime.

Latency comes from ``deploy``: each model is built in each runtime (parity with eager checked),
and all (model, runtime) candidates of one batch size are timed interleaved, so a compressed
model and its base are compared within one run, in the same runtime, as a ratio.
"""
from __future__ import annotations

import copy
import io
import zlib

import numpy as np
import torch
from torch import nn

import deploy

EXACT_RUNTIMES = tuple(name for name, entry in deploy.RUNTIMES.items() if entry.exact)


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


def resolve_runtimes(runtimes) -> list[str]:
    """Return the runtime names a ``runtimes`` setting asks for: ``'all'`` (or None) means every registered one.

    Raises:
        KeyError: an unknown runtime name (the message lists the known ones).
    """
    if runtimes in (None, "all", ["all"]):
        return deploy.list_runtimes()
    names = [runtimes] if isinstance(runtimes, str) else list(runtimes)
    for name in names:
        deploy.unavailable_reason(name)  # raises KeyError for an unknown name
    return names


def build_runtimes(model: nn.Module, runtimes, example: np.ndarray, threads: int | None = None, device: str = "cpu",
                   calibration: np.ndarray | None = None, int8: deploy.Int8Settings | None = None
                   ) -> tuple[dict[str, deploy.Deployed], dict[str, str]]:
    """Return ``(deployed per runtime, why each skipped runtime was skipped)``.

    A runtime whose package is missing (or that cannot use ``device``) is skipped with its reason; a
    quantized model (``model.quantization``) is built in the int8 runtimes only. ``int8`` is the int8
    settings of a model without its own.

    Raises:
        deploy.RuntimeParityError: an exact (fp32) runtime's logits differ from eager's beyond its
            tolerance: a conversion bug, so nothing it measured could be trusted.
    """
    built, skipped = {}, {}
    names = resolve_runtimes(runtimes)
    if getattr(model, "quantization", None):  # a quantized model's figures are its int8 runtimes'
        skipped.update({name: "a quantized model runs in the int8 runtimes only" for name in names if deploy.RUNTIMES[name].exact})
        names = [name for name in names if not deploy.RUNTIMES[name].exact]
    for name in names:
        try:
            built[name] = deploy.deploy(model, name, example, threads=threads, device=device, calibration=calibration, int8=int8)
        except deploy.RuntimeUnavailable as exc:
            skipped[name] = str(exc)
        except deploy.RuntimeParityError as exc:
            if deploy.RUNTIMES[name].exact:
                raise
            skipped[name] = str(exc)
    return built, skipped


def time_runtimes(deployed: dict[str, dict[str, deploy.Deployed]], input_size, batch_sizes, probe=None,
                  blocks: int = 5, min_iters: int = 3, min_seconds: float = 0.1, seed: int = 0) -> dict:
    """Time every (model label, runtime) of ``deployed`` ({label: {runtime: Deployed}}) at each batch size.

    All candidates of one batch size are interleaved in one :func:`deploy.compare` (same random
    input for all; ``probe``: one load probe, a tuple of them, or None). Returns ``{(label, runtime, batch): deploy.Timing}``.
    """
    timings = {}
    for batch in batch_sizes:
        x = np.random.default_rng(seed).standard_normal((int(batch), *input_size)).astype(np.float32)
        candidates = {(label, runtime): (d.run, d.prepare(x), d.sync) for label, per_runtime in deployed.items()
                      for runtime, d in per_runtime.items()}
        for (label, runtime), timing in deploy.compare(candidates, blocks, min_iters, min_seconds, probe=probe).items():
            timings[(label, runtime, int(batch))] = timing
    return timings


def latency_row(timing: deploy.Timing, runtime: str, batch: int, deployed: deploy.Deployed, macs: int, threads: int,
                peak: float | None, blocks: int) -> dict:
    """Return one ``latency.csv`` row (see ``bench.schema.LATENCY_COLUMNS``) for a timed model in one runtime."""
    floor = deploy.floor_ms(macs, batch, peak) if peak and deployed.device == "cpu" and macs else None
    return {
        "runtime": runtime, "exact": deploy.RUNTIMES[runtime].exact, "device": deployed.device, "batch": batch, "threads": threads,
        "median_ms": timing.median_ms, "p10_ms": timing.p10_ms, "p90_ms": timing.p90_ms, "iqr_ms": timing.iqr_ms,
        "iterations": timing.iterations, "blocks": blocks, "spread_pct": timing.spread_pct, "load_ratio": timing.load_ratio,
        "busy": timing.busy, "retimed": timing.retimed, "macs": macs, "floor_ms": floor,
        "floor_ratio": timing.median_ms / floor if floor else None, "peak_gflops": peak, "max_abs_diff": deployed.max_abs_diff,
        "int8_settings": deployed.int8_settings, "cpu_isa": deploy.isa_text(),
    }


def best_runtime(rows: list[dict], batch: int, device: str = "cpu", exact: bool = True) -> dict | None:
    """Return the fastest latency row at ``batch`` on ``device`` of an exact (fp32) runtime, or with ``exact=False`` of an
    int8 runtime (a quantized model runs in those only), or None."""
    candidates = [r for r in rows if r["batch"] == batch and r["device"] == device and (r["runtime"] in EXACT_RUNTIMES) == exact]
    return min(candidates, key=lambda r: r["median_ms"]) if candidates else None


def cost_columns(model: nn.Module, input_size) -> dict:
    """Return a model's counted costs for its result row: ``params``, ``macs``, ``disk_bytes``, ``disk_bytes_zip``.

    Raises:
        RuntimeError: ptflops could not count the model.
    """
    raw, zipped = disk_bytes(model)
    return {"params": count_params(model), "macs": count_macs(model, input_size), "disk_bytes": raw, "disk_bytes_zip": zipped}


def summary_latency_columns(rows: list[dict], batch_n: int, exact: bool = True) -> dict:
    """Return the result-row latency columns: the best exact runtime (``exact=False``, a quantized model: the best int8
    runtime) at batch 1 and batch N (name, median with its interval, ratio to the floor, ratio to the study's reference
    model and speed-up / realization over the base, each with its interval, when measured), the int8 runtime's batch-1
    median, and the best GPU medians."""
    columns = {"batch_n": batch_n}
    for suffix, batch in (("b1", 1), ("bN", batch_n)):
        best = best_runtime(rows, batch, exact=exact)
        if best:
            columns.update({f"runtime_{suffix}": best["runtime"], f"latency_{suffix}_ms": best["median_ms"],
                            f"latency_{suffix}_lo": best.get("median_lo"), f"latency_{suffix}_hi": best.get("median_hi"),
                            f"floor_ratio_{suffix}": best.get("floor_ratio")})
            for name in ("speedup", "realization", "ref_ratio"):
                columns.update({f"{name}_{suffix}{end}": best.get(f"{name}{end}") for end in ("", "_lo", "_hi")})
        gpu = best_runtime(rows, batch, "cuda")
        if gpu:
            columns[f"gpu_{suffix}_ms"] = gpu["median_ms"]
    int8 = [r for r in rows if r["runtime"] == "onnxruntime_int8" and r["batch"] == 1 and r["device"] == "cpu"]
    if int8:
        columns["int8_b1_ms"] = int8[0]["median_ms"]
    return columns
