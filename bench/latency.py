"""The timing phase of a study: every model of every cell timed together, in one fresh process.

After every cell has trained, been compressed and been evaluated, the saved models of **all cells**
are loaded in a new process (nothing left over from training in its allocator, threads or caches),
built in every runtime, and timed per runtime and batch size in interleaved blocks in which every
model runs once, in a rotating order. Every latency, speed-up, realization, floor ratio and ratio to
the study's reference model comes from those blocks, with a 95 % bootstrap interval over blocks;
blocks are added (within ``profile.max_seconds``) until each ratio to the reference model and each
speed-up over a base is known to ``profile.ratio_tolerance_pct``. The result is one file,
``results/<study>/timing.json``, which :func:`bench.schema.write_tables` joins into the tables.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from bench.schema import LATENCY_COLUMNS, MAJORITY, TIMING_FILE, TIMING_VERSION, make_row, study_dir, write_text_atomic
from bench.settings import ProfileSettings

_logger = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One model of the timing phase: its cell's hash (``key``), identity columns, saved model, base cell and counts."""

    key: str
    identity: dict
    model_path: str
    base: str | None
    macs: int
    params: int
    acc_mean: float | None
    eval_batch_size: int
    cuda: bool


def timing_candidates(records: list[dict], checkpoints: str) -> list[Candidate]:
    """Return the candidates of a study's timing phase: every model cell's saved final model.

    Raises:
        FileNotFoundError: a cell's saved model is missing (rerun the study with --force for it).
    """
    candidates = []
    for record in records:
        cell, row = record["cell"], record["row"]
        if cell["model"] == MAJORITY:
            continue
        path = os.path.join(checkpoints, row["config_hash"], "model.pt")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the saved model of cell {cell['model']} {cell.get('variant', '')} seed {cell['seed']} is "
                                    f"missing ({path}); rerun the study with --force to recompute that cell")
        device = str(cell.get("train", {}).get("device", "auto"))
        candidates.append(Candidate(row["config_hash"], {k: row[k] for k in ("study", "model", "variant", "seed", "config_hash")},
                                    path, cell.get("base_hash"), int(row["macs"]), int(row["params"]),
                                    float(row["acc_mean"]) if row.get("acc_mean") not in (None, "") else None,
                                    int(cell.get("train", {}).get("eval_batch_size", 64)), device.startswith("cuda")))
    return candidates


def reference_key(candidates: list[Candidate], reference_model: str | None) -> str | None:
    """Return the hash of the study's reference cell: the uncompressed cell of ``reference_model`` (the study's
    first model unless the config names one) with the lowest seed, or None when the study has no such cell."""
    matches = [c for c in candidates if c.identity["model"] == reference_model and not c.base]
    return min(matches, key=lambda c: c.identity["seed"]).key if matches else None


def _ratio_columns(prefix: str, numerator, denominator) -> dict:
    import deploy

    value, low, high = deploy.bootstrap_ratio(numerator, denominator)
    return {prefix: value, f"{prefix}_lo": low, f"{prefix}_hi": high}


def _within(numerator, denominator, tolerance: float) -> tuple[bool, float]:
    import deploy

    value, low, high = deploy.bootstrap_ratio(numerator, denominator)
    half = (high - low) / 2 / value
    return half <= tolerance, half


def _blocks(row: dict) -> list[float]:
    return [float(v) for v in row["block_medians_ms"].split("|")]


def row_ratio(numerator: dict | None, denominator: dict | None) -> tuple[float, float, float] | None:
    """Return ``(ratio, low, high)`` of two latency rows of one timing phase: median over median of their block medians
    with the 95 % bootstrap interval, paired over blocks when both come from one runtime's comparison (same runtime and
    device), resampled apart when they do not; None when either row is missing."""
    import deploy

    if numerator is None or denominator is None:
        return None
    paired = numerator["runtime"] == denominator["runtime"] and numerator["device"] == denominator["device"]
    return deploy.bootstrap_ratio(_blocks(numerator), _blocks(denominator), paired=paired)


def _best_vs_best(numerator: dict | None, denominator: dict | None, prefix: str) -> dict:
    """Return ``{prefix, prefix_lo, prefix_hi}``: the ratio of two summary latencies (each a model's fastest exact runtime),
    as :func:`row_ratio`."""
    ratio = row_ratio(numerator, denominator)
    if ratio is None:
        return {}
    value, low, high = ratio
    return {prefix: value, f"{prefix}_lo": low, f"{prefix}_hi": high}


def _summary_ratios(candidate: Candidate, rows_of: dict, reference: str | None, by_key: dict, batch_n: int,
                    quantized: set) -> dict:
    """Return the result row's ratios, each between the two latencies the summary shows (fastest exact runtime against
    fastest exact runtime), so that dividing the summary's columns gives the summary's ratios: ``ref_ratio_*`` (this
    model over the reference model) and ``speedup_*`` / ``realization_*`` (the base over this variant)."""
    from bench.profile import best_runtime

    columns = {}
    for suffix, batch in (("b1", 1), ("bN", batch_n)):
        mine = best_runtime(rows_of[candidate.key], batch, exact=candidate.key not in quantized)
        if reference in rows_of:
            columns.update(_best_vs_best(mine, best_runtime(rows_of[reference], batch), f"ref_ratio_{suffix}"))
        if candidate.base in rows_of:
            speedup = _best_vs_best(best_runtime(rows_of[candidate.base], batch), mine, f"speedup_{suffix}")
            columns.update(speedup)
            reduction = by_key[candidate.base].macs / candidate.macs if candidate.macs else None
            if speedup and reduction:
                columns.update({key.replace("speedup", "realization"): value / reduction for key, value in speedup.items()})
    return columns


def _probe_runtime(runtime: str) -> str:
    import deploy

    return runtime if deploy.RUNTIMES[runtime].exact else "onnxruntime"


def _int8_slowdown_note(model, rows: list[dict], calibration: np.ndarray, x: np.ndarray, settings, threads: int) -> str | None:
    """Return why a float model runs slower in ONNX Runtime int8 than in fp32 at batch 1 (where the profiler sees the time
    go), or None when it does not. ``settings`` and ``calibration`` are those its int8 runtimes were built with; ``x``
    is one input image."""
    import deploy

    at_b1 = {r["runtime"]: r for r in rows if r["batch"] == 1 and r["device"] == "cpu"}
    if getattr(model, "quantization", None) or not {"onnxruntime", "onnxruntime_int8"} <= set(at_b1):
        return None
    ratio = at_b1["onnxruntime_int8"]["median_ms"] / at_b1["onnxruntime"]["median_ms"]
    if ratio <= 1.0:
        return None
    prepared = deploy.prepare_onnx(deploy.int8_source(model, x, calibration, settings))
    int8 = deploy.quantize_onnx(prepared, calibration, settings, prepared=True)
    fp32_parts, int8_parts = deploy.op_time_breakdown(prepared, x, threads), deploy.op_time_breakdown(int8, x, threads)
    return (f"int8 runs {ratio:.2f}x slower than fp32 in ONNX Runtime at batch 1 on this {deploy.isa_text()} CPU; kernel times: "
            f"convolutions {int8_parts['conv']:.2f} ms in int8 vs {fp32_parts['conv']:.2f} ms in fp32, "
            f"{int8_parts['qdq']:.2f} ms quantizing and dequantizing around {int8_parts['float_nodes']} nodes left in float "
            f"(no int8 kernel), other ops {int8_parts['other'] + int8_parts['layout']:.2f} vs "
            f"{fp32_parts['other'] + fp32_parts['layout']:.2f} ms")


def _sure(timer, pairs: list[tuple[str, str]], tolerance: float) -> bool:
    medians = timer.timings()
    return all(_within(medians[a].block_medians, medians[b].block_medians, tolerance)[0] for a, b in pairs)


def add_blocks_until_sure(timers: list, pairs_of: list[list[tuple[str, str]]], min_blocks: int, max_blocks: int,
                          tolerance: float, deadline: float, clock=time.perf_counter) -> list[int]:
    """Add interleaved blocks to the timers of a timing phase (one ``deploy.Interleaved`` per runtime, batch size and
    device) and return the number of blocks each ended with.

    Every timer first gets ``min_blocks``, whatever the time. Then, in rounds, every timer whose ratios (``pairs_of[i]``:
    (numerator, denominator) names) are not yet all known to ``tolerance`` (half-width of the 95 % interval, relative)
    gets one more block, while it has fewer than ``max_blocks`` and its mean block time so far still fits before
    ``deadline`` (a ``clock()`` time). So every unsure group gets as many blocks as the others and its share of the
    budget is in proportion to what its block costs: splitting the time equally left the batch-8 groups, whose blocks
    cost several times a batch-1 block, with a third of the blocks and ratios twice as wide. The rounds also spread each
    group's blocks over the whole phase, so a slow spell of the machine lands in a few blocks of every group rather
    than in all the blocks of one.
    """
    spent = [0.0] * len(timers)

    def add(index: int) -> None:
        start = clock()
        timers[index].add_block()
        spent[index] += clock() - start

    for _ in range(min_blocks):
        for index in range(len(timers)):
            add(index)
    while True:
        added = False
        for index, timer in enumerate(timers):
            count = len(timer.block_busy)
            if count >= max_blocks or not pairs_of[index] or _sure(timer, pairs_of[index], tolerance):
                continue
            if clock() + spent[index] / max(count, 1) > deadline:
                continue
            add(index)
            added = True
        if not added:
            return [len(timer.block_busy) for timer in timers]


def time_candidates(candidates: list[Candidate], data, settings: ProfileSettings, reference: str | None) -> dict:
    """Return the timing phase's result (the content of ``timing.json``) for ``candidates`` timed in this process.

    Keys: ``cells`` (the hashes timed), ``reference``, ``machine`` (fp32 peak, best of three tries, and the
    probes' best times), ``latency`` (rows of ``bench.schema.LATENCY_COLUMNS``), ``columns`` ({hash: result
    columns}), ``skipped`` ({hash: {runtime: reason}}), ``unresolved`` (ratios not known to the tolerance,
    in words), ``seconds``, ``seconds_by_part`` (where they went) and the settings.

    Raises:
        deploy.RuntimeParityError: an exact runtime broke parity with eager PyTorch.
    """
    import torch

    import deploy
    import models
    from bench.evaluate import model_inputs, runtime_accuracy
    from bench.profile import build_runtimes, latency_row, resolve_runtimes, summary_latency_columns
    from compress.quantize import controlled_settings

    started = time.perf_counter()
    parts, mark = {}, started

    def lap(part: str) -> None:  # the phase's time by part, so a reader sees what the phase pays for
        nonlocal mark
        now = time.perf_counter()
        parts[part] = parts.get(part, 0.0) + now - mark
        mark = now

    deploy.steady_allocator()
    threads = int(settings.threads or torch.get_num_threads())
    tolerance = settings.ratio_tolerance_pct / 100.0
    with deploy.torch_threads(threads):
        peaks = [deploy.peak_gflops(threads) for _ in range(settings.peak_tries)]
        machine = max(peaks, key=lambda p: p["peak_gflops"])
        machine["tries"] = [round(p["peak_gflops"], 1) for p in peaks]
        machine["cpu_isa"] = deploy.isa_text()
        gemm_probe = deploy.LoadProbe(threads, calibration_rounds=10)
        machine["gemm_probe_ms"] = gemm_probe.best_ms
        lap("peak and probes")
        loaded = {c.key: models.load_model(c.model_path).eval() for c in candidates}
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and any(c.cuda for c in candidates) else [])
        deployed, skipped, columns = {}, {c.key: {} for c in candidates}, {c.key: {} for c in candidates}
        int8_default = settings.int8_settings()
        quantized = {c.key for c in candidates if getattr(loaded[c.key], "quantization", None)}
        wants_int8 = any(not deploy.RUNTIMES[r].exact for r in resolve_runtimes(settings.runtimes))
        int8_of, calibration_of, example_of = {}, {}, {}
        val = np.sort(data.splits["val"])
        for c in candidates:
            model = loaded[c.key]
            int8_of[c.key] = deploy.int8_settings(model, int8_default)
            example_of[c.key] = model_inputs(data, "val", 2, model.data_config)
            # accuracy control keeps calibration_images: one calibration batch serves it and every int8 build
            calibration_of[c.key] = model_inputs(data, "train", int8_of[c.key].calibration_images, model.data_config)
            if c.key not in quantized and wants_int8 and settings.int8_max_drop is not None:
                int8_of[c.key], account = controlled_settings(
                    model, example_of[c.key], calibration_of[c.key], int8_of[c.key],
                    (model_inputs(data, "val", len(val), model.data_config), data.labels[val]), settings.int8_max_drop)
                columns[c.key]["int8_settings"] = f"{int8_of[c.key].describe()} ({account})"
        lap("loading and int8 accuracy control")
        for device in devices:
            for c in candidates:
                built, why = build_runtimes(loaded[c.key], settings.runtimes, example_of[c.key], threads, device, calibration_of[c.key],
                                            int8_of[c.key])
                for runtime, d in built.items():
                    deployed[(c.key, runtime, device)] = d
                skipped[c.key].update({(runtime if device == "cpu" else f"{runtime}@{device}"): reason for runtime, reason in why.items()})
        lap("building the runtimes")
        for c in candidates:
            # A float model's int8 accuracy is its drop; a quantized model's own accuracy is already its int8 one.
            fp32 = None if c.key in quantized else c.acc_mean
            for runtime, prefix in (("onnxruntime_int8", "int8"), ("openvino_int8", "ov_int8")):
                int8 = deployed.get((c.key, runtime, "cpu"))
                if int8 is not None:
                    accuracy = runtime_accuracy(int8, data, loaded[c.key].data_config, "test", c.eval_batch_size)
                    columns[c.key].update({f"acc_mean_{prefix}": accuracy,
                                           f"acc_{prefix}_delta": accuracy - fp32 if fp32 is not None else None})
        lap("int8 test accuracy")
        batches = [1, settings.batch_n] if settings.batch_n != 1 else [1]
        groups = [(runtime, batch, device) for device in devices for batch in batches for runtime in resolve_runtimes(settings.runtimes)
                  if any((c.key, runtime, device) in deployed for c in candidates)]
        deadline = time.perf_counter() + settings.max_seconds  # the blocks' budget; building runtimes is not in it
        rows, unresolved, memory_probes = [], [], {}
        by_key = {c.key: c for c in candidates}
        group_members, group_timers, group_pairs = [], [], []
        for runtime, batch, device in groups:
            members = [c for c in candidates if (c.key, runtime, device) in deployed]
            group_members.append(members)
            inputs = {}
            for c in members:
                size = tuple(loaded[c.key].data_config["input_size"])
                inputs[c.key] = np.random.default_rng(0).standard_normal((batch, *size)).astype(np.float32)
            timed = {c.key: (deployed[(c.key, runtime, device)].run, deployed[(c.key, runtime, device)].prepare(inputs[c.key]),
                             deployed[(c.key, runtime, device)].sync) for c in members}
            probe_runtime = _probe_runtime(runtime) if device == "cpu" else "eager"
            if (probe_runtime, device) not in memory_probes:  # one probe per runtime, its best time kept across batch sizes
                probe_x = np.random.default_rng(1).standard_normal((1, 32, 56, 56)).astype(np.float32)
                probe_model = deploy.deploy(deploy.memory_probe_module(), probe_runtime, probe_x, threads=threads, device=device)
                memory_probes[(probe_runtime, device)] = deploy.MemoryProbe(probe_model.run, probe_model.prepare(probe_x))
            group_timers.append(deploy.Interleaved(timed, settings.min_iters, settings.min_seconds,
                                                   probes=(gemm_probe, memory_probes[(probe_runtime, device)]),
                                                   busy_ratio=settings.busy_ratio))
            pairs = [(c.key, reference) for c in members if reference in timed and c.key != reference]
            group_pairs.append(pairs + [(c.key, c.base) for c in members if c.base in timed and c.base != reference])
        lap("warm-up")
        add_blocks_until_sure(group_timers, group_pairs, settings.blocks, settings.max_blocks, tolerance, deadline)
        lap("blocks")
        for (runtime, batch, device), members, timer, pairs in zip(groups, group_members, group_timers, group_pairs):
            timed = timer.candidates
            timings = timer.timings()
            wide = []
            for a, b in pairs:
                ok, half = _within(timings[a].block_medians, timings[b].block_medians, tolerance)
                if not ok:
                    names = " / ".join(f"{by_key[k].identity['model']}" + (f" [{by_key[k].identity['variant']}]" if by_key[k].identity["variant"] else "")
                                       for k in (a, b))
                    wide.append((half, names))
            if wide:
                widest = sorted(wide, reverse=True)
                unresolved.append(f"{runtime}, batch {batch}{'' if device == 'cpu' else ' on ' + device}: {len(wide)} of {len(pairs)} ratios "
                                  f"after {len(timer.block_busy)} blocks; " + ", ".join(f"{names} +-{100 * half:.1f} %" for half, names in widest))
            for c in members:
                t = timings[c.key]
                built = deployed[(c.key, runtime, device)]
                row = latency_row(t, runtime, batch, built, c.macs, threads, machine["peak_gflops"], len(t.block_medians))
                low, high = deploy.bootstrap_median(t.block_medians)
                row.update({"median_lo": low, "median_hi": high, "memory_load_ratio": max(load.get("memory", 1.0) for load in timer.block_load),
                            "blocks_total": len(timer.block_busy), "block_medians_ms": "|".join(f"{m:.9g}" for m in t.block_medians)})
                if row["floor_ms"]:
                    row.update({"floor_ratio_lo": low / row["floor_ms"], "floor_ratio_hi": high / row["floor_ms"]})
                if reference in timed:
                    row.update(_ratio_columns("ref_ratio", t.block_medians, timings[reference].block_medians))
                if c.base in timed:
                    base = by_key[c.base]
                    row.update({"base_median_ms": timings[c.base].median_ms,
                                **_ratio_columns("speedup", timings[c.base].block_medians, t.block_medians),
                                "mac_reduction": base.macs / c.macs if c.macs else None,
                                "param_reduction": base.params / c.params if c.params else None})
                    if row["mac_reduction"]:
                        row.update({k.replace("speedup", "realization"): v / row["mac_reduction"]
                                    for k, v in row.items() if k.startswith("speedup")})
                rows.append(make_row(LATENCY_COLUMNS, {**c.identity, **row}))
        rows_of = {c.key: [r for r in rows if r["config_hash"] == c.key] for c in candidates}
        for c in candidates:
            note = _int8_slowdown_note(loaded[c.key], rows_of[c.key], calibration_of[c.key], example_of[c.key][:1], int8_of[c.key],
                                       threads)
            if note:
                columns[c.key]["int8_note"] = note
        lap("int8 slowdown profiles")
        for c in candidates:
            columns[c.key].update({**summary_latency_columns(rows_of[c.key], settings.batch_n, exact=c.key not in quantized),
                                   "threads": threads, "peak_gflops": machine["peak_gflops"], "peak_library": machine["peak_library"],
                                   "cpu_isa": machine["cpu_isa"]})
            columns[c.key].update(_summary_ratios(c, rows_of, reference, by_key, settings.batch_n, quantized))
    return {"version": TIMING_VERSION, "cells": sorted(c.key for c in candidates), "reference": reference, "machine": machine,
            "settings": settings.to_dict(), "latency": rows, "columns": columns, "skipped": skipped, "unresolved": unresolved,
            "seconds": time.perf_counter() - started, "seconds_by_part": {k: round(v, 1) for k, v in parts.items()}, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")}


class TimingPhaseError(RuntimeError):
    """The timing phase's process failed (the message carries its error, in one line)."""


def run_timing_phase(results_dir: str, study: str, records: list[dict], data_settings: dict, settings: ProfileSettings,
                     reference_model: str | None) -> dict:
    """Time every model cell of ``records`` together in a fresh process and write ``timing.json``; return its content.

    The child is a new interpreter (``python -m bench.latency``), so it starts from nothing: no
    allocator state, thread pools or caches left by training, and no re-import of the caller's
    script. It loads the data (``data_settings``, from the decode cache) for parity examples, int8
    calibration and int8 accuracy, and writes ``timing.json`` itself.

    Raises:
        FileNotFoundError: a cell's saved model is missing.
        TimingPhaseError: the child failed (a runtime's parity error, for one; its message is kept).
    """
    import subprocess
    import sys
    import tempfile

    folder = study_dir(results_dir, study)
    candidates = timing_candidates(records, os.path.join(folder, "checkpoints"))
    job = {"candidates": [asdict(c) for c in candidates], "data": data_settings, "settings": settings.to_dict(),
           "reference": reference_key(candidates, reference_model), "output": os.path.abspath(os.path.join(folder, TIMING_FILE))}
    with tempfile.TemporaryDirectory() as work:
        job_path, error_path = os.path.join(work, "job.json"), os.path.join(work, "error.txt")
        with open(job_path, "w", encoding="utf-8") as handle:
            json.dump({**job, "error": error_path}, handle, default=_json_default)
        done = subprocess.run([sys.executable, "-m", "bench.latency", job_path], capture_output=True, text=True)
        if done.returncode != 0:
            message = open(error_path, encoding="utf-8").read() if os.path.isfile(error_path) else (done.stderr.strip().splitlines() or ["?"])[-1]
            raise TimingPhaseError(f"the timing phase failed: {message}")
    with open(job["output"], encoding="utf-8") as handle:
        return json.load(handle)


def _run_job(job_path: str) -> int:
    from bench.data import load_data

    with open(job_path, encoding="utf-8") as handle:
        job = json.load(handle)
    try:
        result = time_candidates([Candidate(**c) for c in job["candidates"]], load_data(job["data"]), ProfileSettings(**job["settings"]),
                                 job["reference"])
        write_text_atomic(job["output"], json.dumps(result, indent=1, default=_json_default))
    except Exception as exc:  # the parent reports it in one line
        with open(job["error"], "w", encoding="utf-8") as handle:
            handle.write(f"{type(exc).__name__}: {exc}".replace("\n", " "))
        if os.environ.get("SLIMBENCH_TRACEBACK"):
            raise
        return 3
    return 0


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    return str(value)


if __name__ == "__main__":
    import sys

    sys.stdout.flush()
    os._exit(_run_job(sys.argv[1]))  # no interpreter teardown (seconds of runtime destructors): the result is on disk
