"""The timing phase of a study: every model of every cell timed together, in one fresh process.

After every cell has trained, been compressed and been evaluated, the saved models of **all cells**
are loaded in a new process (nothing left over from training in its allocator, threads or caches),
built in every runtime, and timed per runtime and batch size in interleaved blocks in which every
model runs once, in a rotating order. Every latency, speed-up, realization, floor ratio and ratio to
the study's reference model comes from those blocks, with a 95 % bootstrap interval over blocks;
blocks are added (within ``timing.max_seconds``) until each ratio to the reference model and each
speed-up over a base is known to ``timing.ratio_tolerance_pct``. The result is one file,
``results/<study>/timing.json``, which :func:`bench.store.records.write_tables` joins into the tables.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

import deploy
from bench.settings import TimingSettings, TrainSettings
from bench.store.files import write_json_atomic
from bench.store.records import TIMING_FILE, TIMING_VERSION, study_dir
from bench.store.schema import LATENCY_COLUMNS, MAJORITY, make_row
from bench.study.layer_profiles import layer_rows, model_roofline
from deploy import roofline

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

    @property
    def label(self) -> str:
        """Return the model's name with its variant in brackets, as warnings name it."""
        variant = self.identity["variant"]
        return self.identity["model"] + (f" [{variant}]" if variant else "")


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
            raise FileNotFoundError(
                f"the saved model of cell {cell['model']} {cell.get('variant', '')} seed {cell['seed']} is "
                f"missing ({path}); rerun the study with --force to recompute that cell"
            )
        train = TrainSettings.from_mapping(cell["train"])
        candidates.append(
            Candidate(
                row["config_hash"],
                {k: row[k] for k in ("study", "model", "variant", "seed", "config_hash")},
                path,
                cell.get("base_hash"),
                int(row["macs"]),
                int(row["params"]),
                float(row["acc_mean"]) if row.get("acc_mean") not in (None, "") else None,
                train.eval_batch_size,
                train.device.startswith("cuda"),
            )
        )
    return candidates


def reference_key(candidates: list[Candidate], reference_model: str | None) -> str | None:
    """Return the hash of the study's reference cell: the uncompressed cell of ``reference_model`` (the study's
    first model unless the config names one) with the lowest seed, or None when the study has no such cell."""
    matches = [c for c in candidates if c.identity["model"] == reference_model and not c.base]
    return min(matches, key=lambda c: c.identity["seed"]).key if matches else None


# ---- rows and ratios -------------------------------------------------------------------------------------------------


def _ratio_columns(prefix: str, ratio: tuple[float, float, float] | None) -> dict:
    if ratio is None:
        return {}
    value, low, high = ratio
    return {prefix: value, f"{prefix}_lo": low, f"{prefix}_hi": high}


def _within(numerator, denominator, tolerance: float, paired: bool = True) -> tuple[bool, float]:
    value, low, high = deploy.bootstrap_ratio(numerator, denominator, paired=paired)
    half = (high - low) / 2 / value
    return half <= tolerance, half


def _blocks(row: dict) -> list[float]:
    return [float(v) for v in row["block_medians_ms"].split("|")]


def row_ratio(numerator: dict | None, denominator: dict | None) -> tuple[float, float, float] | None:
    """Return ``(ratio, low, high)`` of two latency rows of one timing phase: mean over mean of their block medians
    with the 95 % bootstrap interval, paired over blocks when both come from one runtime's comparison (same runtime and
    device), resampled apart when they do not; None when either row is missing."""
    if numerator is None or denominator is None:
        return None
    paired = numerator["runtime"] == denominator["runtime"] and numerator["device"] == denominator["device"]
    return deploy.bootstrap_ratio(_blocks(numerator), _blocks(denominator), paired=paired)


def latency_row(
    timing: deploy.Timing,
    runtime: str,
    batch: int,
    deployed: deploy.Deployed,
    macs: int,
    threads: int,
    peak: float | None,
    blocks: int,
) -> dict:
    """Return one ``latency.csv`` row (see ``bench.store.schema.LATENCY_COLUMNS``) for a timed model in one runtime."""
    floor = deploy.floor_ms(macs, batch, peak) if peak and deployed.device == "cpu" and macs else None
    return {
        "runtime": runtime,
        "exact": deploy.RUNTIMES[runtime].exact,
        "device": deployed.device,
        "batch": batch,
        "threads": threads,
        "median_ms": timing.median_ms,
        "p10_ms": timing.p10_ms,
        "p90_ms": timing.p90_ms,
        "iqr_ms": timing.iqr_ms,
        "iterations": timing.iterations,
        "blocks": blocks,
        "spread_pct": timing.spread_pct,
        "load_ratio": timing.load_ratio,
        "busy": timing.busy,
        "retimed": timing.retimed,
        "macs": macs,
        "floor_ms": floor,
        "floor_ratio": timing.median_ms / floor if floor else None,
        "peak_gflops": peak,
        "max_abs_diff": deployed.max_abs_diff,
        "int8_settings": deployed.int8_settings,
        "cpu_isa": deploy.isa_text(),
    }


def best_runtime(rows: list[dict], batch: int, device: str = "cpu", exact: bool = True) -> dict | None:
    """Return the fastest latency row at ``batch`` on ``device`` of an exact (fp32) runtime, or with ``exact=False`` of an
    int8 runtime, or None."""
    candidates = [
        r for r in rows if r["batch"] == batch and r["device"] == device and deploy.RUNTIMES[r["runtime"]].exact == exact
    ]
    return min(candidates, key=lambda r: r["median_ms"]) if candidates else None


def summary_latency_columns(rows: list[dict], batch_n: int, exact: bool = True) -> dict:
    """Return the result-row latency columns of one model: its fastest exact runtime (``exact=False``, a quantized model:
    its fastest int8 runtime) at batch 1 and batch N (name, median with its interval, ratio to the floor), the same of its
    fastest int8 runtime (``*_int8_*``, with the accuracy measured in the batch-1 one and its change from fp32), and the
    best GPU medians."""
    columns = {"batch_n": batch_n}
    for suffix, batch in (("b1", 1), ("bN", batch_n)):
        best = best_runtime(rows, batch, exact=exact)
        if best:
            columns.update(
                {
                    f"runtime_{suffix}": best["runtime"],
                    f"latency_{suffix}_ms": best["median_ms"],
                    f"latency_{suffix}_lo": best.get("median_lo"),
                    f"latency_{suffix}_hi": best.get("median_hi"),
                    f"floor_ratio_{suffix}": best.get("floor_ratio"),
                    f"roofline_ratio_{suffix}": best.get("roofline_ratio"),
                    f"peak_mb_{suffix}": best.get("peak_mb"),
                }
            )
        int8 = best_runtime(rows, batch, exact=False)
        if int8:
            columns.update(
                {
                    f"runtime_int8_{suffix}": int8["runtime"],
                    f"latency_int8_{suffix}_ms": int8["median_ms"],
                    f"latency_int8_{suffix}_lo": int8.get("median_lo"),
                    f"latency_int8_{suffix}_hi": int8.get("median_hi"),
                }
            )
            if suffix == "b1":
                columns.update({"acc_mean_int8": int8.get("acc_mean"), "acc_int8_delta": int8.get("acc_delta")})
        if best and suffix == "b1":
            columns["cold_ms_b1"] = best.get("cold_ms")
        gpu = best_runtime(rows, batch, "cuda")
        if gpu:
            columns[f"gpu_{suffix}_ms"] = gpu["median_ms"]
    return columns


def summary_ratio_columns(
    candidate: Candidate, rows_of: dict, reference: str | None, by_key: dict, batch_n: int, quantized: set
) -> dict:
    """Return the result row's ratios, each between two latencies the summary shows, so that dividing the summary's
    columns gives the summary's ratios: ``ref_ratio_*`` (this model over the reference model, fastest exact runtime
    against fastest exact runtime), ``ref_ratio_int8_*`` (this model's fastest int8 runtime over the reference's fastest
    exact one) and ``speedup_*`` / ``realization_*`` (the base over this variant)."""
    columns = {}
    for suffix, batch in (("b1", 1), ("bN", batch_n)):
        mine = best_runtime(rows_of[candidate.key], batch, exact=candidate.key not in quantized)
        if reference in rows_of:
            reference_row = best_runtime(rows_of[reference], batch)
            columns.update(_ratio_columns(f"ref_ratio_{suffix}", row_ratio(mine, reference_row)))
            columns.update(
                _ratio_columns(
                    f"ref_ratio_int8_{suffix}", row_ratio(best_runtime(rows_of[candidate.key], batch, exact=False), reference_row)
                )
            )
        if candidate.base in rows_of:
            speedup = _ratio_columns(f"speedup_{suffix}", row_ratio(best_runtime(rows_of[candidate.base], batch), mine))
            columns.update(speedup)
            reduction = by_key[candidate.base].macs / candidate.macs if candidate.macs else None
            if speedup and reduction:
                columns.update({key.replace("speedup", "realization"): value / reduction for key, value in speedup.items()})
    return columns


def _int8_slowdown_note(model, rows: list[dict], calibration: np.ndarray, x: np.ndarray, settings, threads: int) -> str | None:
    """Return why a float model runs slower in ONNX Runtime int8 than in fp32 at batch 1 (where ONNX Runtime's profiler sees
    the time go), or None when it does not. ``settings`` and ``calibration`` are those its int8 runtimes were built with;
    ``x`` is one input image."""
    int8_runtime = deploy.int8_twin("onnxruntime")
    at_b1 = {r["runtime"]: r for r in rows if r["batch"] == 1 and r["device"] == "cpu"}
    if getattr(model, "quantization", None) or not {"onnxruntime", int8_runtime} <= set(at_b1):
        return None
    ratio = at_b1[int8_runtime]["median_ms"] / at_b1["onnxruntime"]["median_ms"]
    if ratio <= 1.0:
        return None
    prepared = deploy.prepare_onnx(deploy.int8_source(model, x, calibration, settings))
    int8 = deploy.quantize_onnx(prepared, calibration, settings, prepared=True)
    fp32_parts, int8_parts = deploy.op_time_breakdown(prepared, x, threads), deploy.op_time_breakdown(int8, x, threads)
    return (
        f"int8 runs {ratio:.2f}x slower than fp32 in ONNX Runtime at batch 1 on this {deploy.isa_text()} CPU; kernel times: "
        f"convolutions {int8_parts['conv']:.2f} ms in int8 vs {fp32_parts['conv']:.2f} ms in fp32, "
        f"{int8_parts['qdq']:.2f} ms quantizing and dequantizing around {int8_parts['float_nodes']} nodes left in float "
        f"(no int8 kernel), other ops {int8_parts['other'] + int8_parts['layout']:.2f} vs "
        f"{fp32_parts['other'] + fp32_parts['layout']:.2f} ms"
    )


# ---- blocks ------------------------------------------------------------------------------------------------------------


def _sure(timer, pairs: list[tuple[str, str]], tolerance: float) -> bool:
    medians = timer.timings()
    return all(_within(medians[a].block_medians, medians[b].block_medians, tolerance)[0] for a, b in pairs)


def _fastest_group(groups: list, medians: list[dict], indices: list[int], key: str, exact: bool) -> int | None:
    found = [i for i in indices if key in medians[i] and deploy.RUNTIMES[groups[i].runtime].exact == exact]
    return min(found, key=lambda i: medians[i][key].median_ms) if found else None


def unsure_between_groups(groups: list, reference: str | None, quantized: set[str], tolerance: float) -> dict[int, str]:
    """Return ``{group index: why}`` for the groups in which a summary ratio spanning two groups is not yet known to
    ``tolerance``: each model's fastest exact group (a quantized model's fastest int8 one) and its fastest int8 group
    against the reference's fastest exact group (the reference's own int8 group included), per batch size and device,
    "fastest" by the block medians so far. Those ratios are resampled apart (``row_ratio``), so only more blocks in both
    groups narrow them."""
    medians = [g.timer.timings() for g in groups]
    names = {c.key: c.label for g in groups for c in g.members}
    unsure = {}
    for batch, device in sorted({(g.batch, g.device) for g in groups}):
        here = [i for i, g in enumerate(groups) if (g.batch, g.device) == (batch, device)]
        base = _fastest_group(groups, medians, here, reference, True) if reference else None
        if base is None:
            continue
        for key in sorted({key for i in here for key in medians[i]}):  # the reference too: its int8 over its fp32
            mine_exact = _fastest_group(groups, medians, here, key, key not in quantized)
            for mine in sorted({mine_exact, _fastest_group(groups, medians, here, key, False)} - {None, base}):
                ours, theirs = medians[mine][key].block_medians, medians[base][reference].block_medians
                ok, half = _within(ours, theirs, tolerance, paired=False)
                if not ok:
                    why = (
                        f"{groups[mine].runtime} / {groups[base].runtime}, batch {batch}: "
                        f"{names[key]} / {names[reference]} +-{100 * half:.1f} %"
                    )
                    unsure.setdefault(mine, why)
                    unsure.setdefault(base, why)
    return unsure


def add_blocks_until_sure(
    timers: list,
    pairs_of: list[list[tuple[str, str]]],
    min_blocks: int,
    max_blocks: int,
    tolerance: float,
    deadline: float,
    clock=time.perf_counter,
    unsure_elsewhere: Callable[[], set[int]] | None = None,
) -> list[int]:
    """Add interleaved blocks to the timers of a timing phase (one ``deploy.Interleaved`` per runtime, batch size and
    device) and return the number of blocks each ended with.

    Every timer first gets ``min_blocks``, whatever the time. Then, in rounds, every timer whose ratios (``pairs_of[i]``:
    (numerator, denominator) names) are not yet all known to ``tolerance`` (half-width of the 95 % interval, relative)
    gets one more block, while it has fewer than ``max_blocks`` and its mean block time so far still fits before
    ``deadline`` (a ``clock()`` time). So every unsure group gets as many blocks as the others and its share of the
    budget is in proportion to what its block costs: splitting the time equally left the batch-8 groups, whose blocks
    cost several times a batch-1 block, with a third of the blocks and ratios twice as wide. The rounds also spread each
    group's blocks over the whole phase, so a slow spell of the machine lands in a few blocks of every group rather
    than in all the blocks of one. ``unsure_elsewhere()`` (called once a round) names more timers that need a block
    although their own ratios are sure: those of a ratio between two timers (:func:`unsure_between_groups`).
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
        elsewhere = unsure_elsewhere() if unsure_elsewhere else set()
        for index, timer in enumerate(timers):
            count = len(timer.block_busy)
            sure = not pairs_of[index] or _sure(timer, pairs_of[index], tolerance)
            if count >= max_blocks or (sure and index not in elsewhere):
                continue
            if clock() + spent[index] / max(count, 1) > deadline:
                continue
            add(index)
            added = True
        if not added:
            return [len(timer.block_busy) for timer in timers]


# ---- the phase ---------------------------------------------------------------------------------------------------------


@dataclass
class Group:
    """The models timed together in one runtime, batch size and device: their timer and the ratios it must pin down."""

    runtime: str
    batch: int
    device: str
    members: list[Candidate]
    timer: deploy.Interleaved
    pairs: list[tuple[str, str]]


@dataclass
class TimingPhase:
    """The state of one timing phase, built up part by part (:func:`time_candidates` runs the parts in order)."""

    candidates: list[Candidate]
    data: object
    settings: TimingSettings
    reference: str | None
    threads: int
    machine: dict = field(default_factory=dict)
    loaded: dict = field(default_factory=dict)
    int8_of: dict = field(default_factory=dict)
    calibration_of: dict = field(default_factory=dict)
    example_of: dict = field(default_factory=dict)
    deployed: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    columns: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    layer_rows: list[dict] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    gemm_probe: deploy.LoadProbe | None = None

    @property
    def quantized(self) -> set[str]:
        """Return the keys of the models a quantize step set up (they run in the int8 runtimes only)."""
        return {key for key, model in self.loaded.items() if getattr(model, "quantization", None)}

    def measure_machine(self) -> None:
        """Measure the fp32 peak and the bandwidth of each memory level (best of ``peak_tries``) and the GEMM load probe's
        best time."""
        peaks = [deploy.peak_gflops(self.threads) for _ in range(self.settings.peak_tries)]
        self.machine = max(peaks, key=lambda p: p["peak_gflops"])
        self.machine.update({"tries": [round(p["peak_gflops"], 1) for p in peaks], "cpu_isa": deploy.isa_text()})
        if self.profiled_runtimes():
            self.machine["bandwidth"] = roofline.bandwidth_levels(self.threads, tries=self.settings.peak_tries)
        self.gemm_probe = deploy.LoadProbe(self.threads, calibration_rounds=10)
        self.machine["gemm_probe_ms"] = self.gemm_probe.best_ms

    def load(self) -> None:
        """Load every saved model with its int8 settings, calibration images and parity example (accuracy control of the
        float models' int8 forms runs here when ``int8_max_drop`` is set)."""
        import models
        from bench.training.evaluate import model_inputs
        from compress.quantize import controlled_settings

        int8_default = self.settings.int8_settings()
        wants_int8 = any(not deploy.RUNTIMES[r].exact for r in deploy.resolve_runtimes(self.settings.runtimes))
        val = np.sort(self.data.splits["val"])
        for c in self.candidates:
            model = self.loaded[c.key] = models.load_model(c.model_path).eval()
            self.columns[c.key], self.skipped[c.key] = {}, {}
            self.int8_of[c.key] = deploy.int8_settings(model, int8_default)
            self.example_of[c.key] = model_inputs(self.data, "val", 2, model.data_config)
            # accuracy control keeps calibration_images: one calibration batch serves it and every int8 build
            self.calibration_of[c.key] = model_inputs(
                self.data, "train", self.int8_of[c.key].calibration_images, model.data_config
            )
            if not getattr(model, "quantization", None) and wants_int8 and self.settings.int8_max_drop is not None:
                validation = (model_inputs(self.data, "val", len(val), model.data_config), self.data.labels[val])
                self.int8_of[c.key], account, _ = controlled_settings(
                    model,
                    self.example_of[c.key],
                    self.calibration_of[c.key],
                    self.int8_of[c.key],
                    validation,
                    self.settings.int8_max_drop,
                )
                self.columns[c.key]["int8_settings"] = f"{self.int8_of[c.key].describe()} ({account})"

    def devices(self) -> list[str]:
        """Return the devices timed: the CPU, and CUDA when a cell trained there and a GPU is here."""
        import torch

        return ["cpu"] + (["cuda"] if torch.cuda.is_available() and any(c.cuda for c in self.candidates) else [])

    def build(self) -> None:
        """Build every model in every runtime of ``settings.runtimes`` on every device (parity checked for fp32 ones)."""
        for device in self.devices():
            for c in self.candidates:
                built, why = deploy.deploy_all(
                    self.loaded[c.key],
                    self.settings.runtimes,
                    self.example_of[c.key],
                    self.threads,
                    device,
                    self.calibration_of[c.key],
                    self.int8_of[c.key],
                )
                self.deployed.update({(c.key, runtime, device): d for runtime, d in built.items()})
                self.skipped[c.key].update(
                    {(runtime if device == "cpu" else f"{runtime}@{device}"): reason for runtime, reason in why.items()}
                )

    def measure_accuracy(self) -> None:
        """Measure every model's test accuracy in each int8 runtime it was built in (a model's fp32 accuracy is its cell's)."""
        from bench.training.evaluate import runtime_accuracy

        for c in self.candidates:
            for runtime, entry in deploy.RUNTIMES.items():
                built = self.deployed.get((c.key, runtime, "cpu"))
                if built is not None and not entry.exact:
                    self.accuracy[(c.key, runtime)] = runtime_accuracy(
                        built, self.data, self.loaded[c.key].data_config, "test", c.eval_batch_size
                    )

    def _group(self, runtime: str, batch: int, device: str, memory_probes: dict) -> Group:
        members = [c for c in self.candidates if (c.key, runtime, device) in self.deployed]
        timed = {}
        for c in members:
            size = tuple(self.loaded[c.key].data_config["input_size"])
            timed[c.key] = self.deployed[(c.key, runtime, device)].timed(
                np.random.default_rng(0).standard_normal((batch, *size)).astype(np.float32)
            )
        probe_runtime = deploy.float_twin(runtime) if device == "cpu" else "eager"
        if (probe_runtime, device) not in memory_probes:  # one probe per runtime, its best time kept across batch sizes
            probe_x = np.random.default_rng(1).standard_normal((1, 32, 56, 56)).astype(np.float32)
            probe_model = deploy.deploy(deploy.memory_probe_module(), probe_runtime, probe_x, threads=self.threads, device=device)
            memory_probes[(probe_runtime, device)] = deploy.MemoryProbe(probe_model.run, probe_model.prepare(probe_x))
        timer = deploy.Interleaved(
            timed,
            self.settings.min_iters,
            self.settings.min_seconds,
            probes=(self.gemm_probe, memory_probes[(probe_runtime, device)]),
            busy_ratio=self.settings.busy_ratio,
            interleave=self.settings.interleave,
        )
        pairs = [(c.key, self.reference) for c in members if self.reference in timed and c.key != self.reference]
        pairs += [(c.key, c.base) for c in members if c.base in timed and c.base != self.reference]
        return Group(runtime, batch, device, members, timer, pairs)

    def warm_up(self) -> None:
        """Set up one interleaved timer per runtime, batch size and device (its first calls are its warm-up)."""
        batches = [1, self.settings.batch_n] if self.settings.batch_n != 1 else [1]
        memory_probes = {}
        for device in self.devices():
            for batch in batches:
                for runtime in deploy.resolve_runtimes(self.settings.runtimes):
                    if any((c.key, runtime, device) in self.deployed for c in self.candidates):
                        self.groups.append(self._group(runtime, batch, device, memory_probes))

    def run_blocks(self, deadline: float) -> None:
        """Add blocks to every group until its ratios are sure, ``max_blocks`` or ``deadline`` (:func:`add_blocks_until_sure`)."""
        tolerance = self.settings.ratio_tolerance_pct / 100.0
        add_blocks_until_sure(
            [g.timer for g in self.groups],
            [g.pairs for g in self.groups],
            self.settings.blocks,
            self.settings.max_blocks,
            tolerance,
            deadline,
            unsure_elsewhere=lambda: set(unsure_between_groups(self.groups, self.reference, self.quantized, tolerance)),
        )

    def _unresolved(self, group: Group, timings: dict) -> str | None:
        by_key = {c.key: c for c in self.candidates}
        wide = []
        for a, b in group.pairs:
            ok, half = _within(timings[a].block_medians, timings[b].block_medians, self.settings.ratio_tolerance_pct / 100.0)
            if not ok:
                wide.append((half, " / ".join(by_key[k].label for k in (a, b))))
        if not wide:
            return None
        return (
            f"{group.runtime}, batch {group.batch}{'' if group.device == 'cpu' else ' on ' + group.device}: {len(wide)} of "
            f"{len(group.pairs)} ratios after {len(group.timer.block_busy)} blocks; "
            + ", ".join(f"{names} +-{100 * half:.1f} %" for half, names in sorted(wide, reverse=True))
        )

    def _row(self, group: Group, c: Candidate, timings: dict) -> dict:
        by_key = {x.key: x for x in self.candidates}
        t, built = timings[c.key], self.deployed[(c.key, group.runtime, group.device)]
        row = latency_row(
            t, group.runtime, group.batch, built, c.macs, self.threads, self.machine["peak_gflops"], len(t.block_medians)
        )
        low, high = deploy.bootstrap_mean(t.block_medians)
        row.update(
            {
                "median_lo": low,
                "median_hi": high,
                "memory_load_ratio": max(load.get("memory", 1.0) for load in group.timer.block_load),
                "blocks_total": len(group.timer.block_busy),
                "block_medians_ms": "|".join(f"{m:.9g}" for m in t.block_medians),
            }
        )
        row.update(self._accuracy_columns(c, group.runtime))
        if row["floor_ms"]:
            row.update({"floor_ratio_lo": low / row["floor_ms"], "floor_ratio_hi": high / row["floor_ms"]})
        if self.reference in timings:
            row.update(
                _ratio_columns("ref_ratio", deploy.bootstrap_ratio(t.block_medians, timings[self.reference].block_medians))
            )
        if c.base in timings:
            base = by_key[c.base]
            row.update(
                {
                    "base_hash": c.base,
                    "base_median_ms": timings[c.base].median_ms,
                    **_ratio_columns("speedup", deploy.bootstrap_ratio(timings[c.base].block_medians, t.block_medians)),
                    "mac_reduction": base.macs / c.macs if c.macs else None,
                    "param_reduction": base.params / c.params if c.params else None,
                }
            )
            if row["mac_reduction"]:
                row.update(
                    {
                        k.replace("speedup", "realization"): v / row["mac_reduction"]
                        for k, v in row.items()
                        if k.startswith("speedup")
                    }
                )
        return make_row(LATENCY_COLUMNS, {**c.identity, **row})

    def _accuracy_columns(self, c: Candidate, runtime: str) -> dict:
        """Return ``acc_mean`` (the model's test accuracy as it runs in ``runtime``) and ``acc_delta`` (its change from
        fp32, for a float model's int8 form)."""
        if deploy.RUNTIMES[runtime].exact:
            return {"acc_mean": c.acc_mean}
        accuracy = self.accuracy.get((c.key, runtime))
        float_model = c.key not in self.quantized and c.acc_mean is not None and accuracy is not None
        return {"acc_mean": accuracy, "acc_delta": accuracy - c.acc_mean if float_model else None}

    def collect_rows(self) -> None:
        """Turn every group's blocks into latency rows (and the ratios still wider than the tolerance into lines)."""
        for group in self.groups:
            timings = group.timer.timings()
            line = self._unresolved(group, timings)
            if line:
                self.unresolved.append(line)
            self.rows += [self._row(group, c, timings) for c in group.members]
        between = unsure_between_groups(self.groups, self.reference, self.quantized, self.settings.ratio_tolerance_pct / 100.0)
        self.unresolved += [f"between runtimes, {why}" for why in dict.fromkeys(between.values())]

    def profiled_runtimes(self) -> list[str]:
        """Return the timed runtimes whose profiler times every layer (``timing.profile_runtimes``)."""
        return [r for r in self.settings.profile_runtimes if r in deploy.resolve_runtimes(self.settings.runtimes)]

    def profile_layers(self) -> None:
        """Time every layer of every model in each profiled runtime at batch 1 and batch N against its roofline
        (``bench.study.layer_profiles``), and give each latency row its model's roofline floor."""
        batches = [1, self.settings.batch_n] if self.settings.batch_n != 1 else [1]
        for c in self.candidates:
            runtimes = [r for r in self.profiled_runtimes() if (c.key, r, "cpu") in self.deployed]
            onnx_model = deploy.export_onnx(self.loaded[c.key], self.example_of[c.key]) if runtimes else None
            for runtime in runtimes:
                for batch in batches:
                    self.layer_rows += layer_rows(
                        c.identity,
                        onnx_model,
                        self.example_of[c.key],
                        runtime,
                        batch,
                        self.threads,
                        self.machine,
                        self.settings.profile_runs,
                    )
        totals = model_roofline(self.layer_rows)
        for row in self.rows:
            total = totals.get((row["config_hash"], row["runtime"], int(row["batch"])))
            if total and total["roofline_ms"] > 0:
                roofline_ms = total["roofline_ms"]
                row.update(
                    {
                        "roofline_ms": roofline_ms,
                        "roofline_ratio": row["median_ms"] / roofline_ms,
                        "roofline_ratio_lo": row["median_lo"] / roofline_ms,
                        "roofline_ratio_hi": row["median_hi"] / roofline_ms,
                        "profiled_ms": total["profiled_ms"],
                    }
                )

    def measure_footprints(self) -> None:
        """Measure every model's peak memory (batch 1 and N) and cold start in every runtime it was timed in, each in
        ``footprint_repeats`` fresh processes running the file the runtime ships (``deploy.footprint``)."""
        import tempfile

        from deploy.footprint import measure_footprint, save_artifact

        if not self.settings.footprint:
            return
        batches = [1, self.settings.batch_n] if self.settings.batch_n != 1 else [1]
        by_row = {(r["config_hash"], r["runtime"], int(r["batch"])): r for r in self.rows if r["device"] == "cpu"}
        with tempfile.TemporaryDirectory(prefix="slimbench-footprint-") as folder:
            for c in self.candidates:
                size = tuple(self.loaded[c.key].data_config["input_size"])
                for runtime in deploy.resolve_runtimes(self.settings.runtimes):
                    built = self.deployed.get((c.key, runtime, "cpu"))
                    if built is None:
                        continue
                    kind, path, settings = save_artifact(built, folder, f"{c.key}-{runtime}", c.model_path, "models:load_model")
                    for batch in batches:
                        found = measure_footprint(
                            kind, path, (batch, *size), self.threads, settings, repeats=self.settings.footprint_repeats
                        )
                        row = by_row.get((c.key, runtime, batch))
                        if row is not None:
                            row.update({k: v for k, v in found.items() if k in LATENCY_COLUMNS})
                            row["footprint_repeats"] = found["repeats"]

    def explain_int8(self) -> None:
        """Add ``int8_note`` to every float model that runs slower in ONNX Runtime int8 than in fp32 at batch 1."""
        for c in self.candidates:
            rows = [r for r in self.rows if r["config_hash"] == c.key]
            note = _int8_slowdown_note(
                self.loaded[c.key],
                rows,
                self.calibration_of[c.key],
                self.example_of[c.key][:1],
                self.int8_of[c.key],
                self.threads,
            )
            if note:
                self.columns[c.key]["int8_note"] = note

    def summarize(self) -> None:
        """Add every model's result-row columns: its summary latencies and ratios, the threads and the machine."""
        rows_of = {c.key: [r for r in self.rows if r["config_hash"] == c.key] for c in self.candidates}
        by_key = {c.key: c for c in self.candidates}
        for c in self.candidates:
            self.columns[c.key].update(
                {
                    **summary_latency_columns(rows_of[c.key], self.settings.batch_n, exact=c.key not in self.quantized),
                    "threads": self.threads,
                    "peak_gflops": self.machine["peak_gflops"],
                    "peak_library": self.machine["peak_library"],
                    "cpu_isa": self.machine["cpu_isa"],
                }
            )
            self.columns[c.key].update(
                summary_ratio_columns(c, rows_of, self.reference, by_key, self.settings.batch_n, self.quantized)
            )


def time_candidates(candidates: list[Candidate], data, settings: TimingSettings, reference: str | None) -> dict:
    """Return the timing phase's result (the content of ``timing.json``) for ``candidates`` timed in this process.

    Keys: ``cells`` (the hashes timed), ``reference``, ``machine`` (fp32 peak, best of ``peak_tries``, the bandwidth
    of each memory level and the probes' best times), ``latency`` (rows of ``bench.store.schema.LATENCY_COLUMNS``, with
    the roofline and, with ``timing.footprint``, peak memory and cold start), ``layers`` (per-layer profiles,
    ``LAYER_COLUMNS``), ``int8`` ({hash: the deploy.Int8Settings its int8 runtimes used}), ``columns`` ({hash: result
    columns}), ``skipped`` ({hash: {runtime: reason}}), ``unresolved`` (ratios not known to the tolerance, in words),
    ``seconds``, ``seconds_by_part`` (where they went) and the settings.

    Raises:
        deploy.RuntimeParityError: an exact runtime broke parity with eager PyTorch.
    """
    import torch

    started = mark = time.perf_counter()
    parts = {}
    deploy.steady_allocator()
    threads = int(settings.threads or torch.get_num_threads())
    phase = TimingPhase(candidates, data, settings, reference, threads)
    with deploy.torch_threads(threads):
        # the phase's time by part, so a reader sees what the phase pays for; the blocks' budget is max_seconds
        for part, run in (
            ("peak and probes", phase.measure_machine),
            ("loading and int8 accuracy control", phase.load),
            ("building the runtimes", phase.build),
            ("int8 test accuracy", phase.measure_accuracy),
            ("warm-up", phase.warm_up),
            ("blocks", lambda: phase.run_blocks(time.perf_counter() + settings.max_seconds)),
            ("latency rows", phase.collect_rows),
            ("per-layer profiles", phase.profile_layers),
            ("peak memory and cold start", phase.measure_footprints),
            ("int8 slowdown profiles", phase.explain_int8),
            ("summary", phase.summarize),
        ):
            run()
            now = time.perf_counter()
            parts[part], mark = round(now - mark, 1), now
    return {
        "version": TIMING_VERSION,
        "cells": sorted(c.key for c in candidates),
        "reference": reference,
        "machine": phase.machine,
        "settings": settings.to_dict(),
        "latency": phase.rows,
        "layers": phase.layer_rows,
        # the int8 settings each model's int8 runtimes were built with (accuracy control's float nodes included):
        # what `run_bench.py export` rebuilds them with
        "int8": {key: asdict(settings) for key, settings in phase.int8_of.items()},
        "columns": phase.columns,
        "skipped": phase.skipped,
        "unresolved": phase.unresolved,
        "seconds": time.perf_counter() - started,
        "seconds_by_part": parts,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


# ---- the phase's own process -------------------------------------------------------------------------------------------


class TimingPhaseError(RuntimeError):
    """The timing phase's process failed (the message carries its error, in one line)."""


def run_timing_phase(
    results_dir: str, study: str, records: list[dict], data_settings: dict, settings: TimingSettings, reference_model: str | None
) -> dict:
    """Time every model cell of ``records`` together in a fresh process and write ``timing.json``; return its content.

    The child is a new interpreter (``python -m bench.study.timing_phase``), so it starts from nothing: no
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
    job = {
        "candidates": [asdict(c) for c in candidates],
        "data": data_settings,
        "settings": settings.to_dict(),
        "reference": reference_key(candidates, reference_model),
        "output": os.path.abspath(os.path.join(folder, TIMING_FILE)),
    }
    with tempfile.TemporaryDirectory() as work:
        job_path, error_path = os.path.join(work, "job.json"), os.path.join(work, "error.txt")
        write_json_atomic(job_path, {**job, "error": error_path}, indent=None)
        done = subprocess.run([sys.executable, "-m", "bench.study.timing_phase", job_path], capture_output=True, text=True)
        if done.returncode != 0:
            if os.path.isfile(error_path):
                message = open(error_path, encoding="utf-8").read()
            else:
                import signal

                how = (
                    f"killed by signal {-done.returncode} ({signal.Signals(-done.returncode).name})"
                    if done.returncode < 0
                    else f"exit code {done.returncode}"
                )
                last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
                message = (
                    f"its process ended with {how} ({last}); every cell is saved: rerun the same command (or add "
                    "--retime) to time the study again"
                )
            raise TimingPhaseError(f"the timing phase failed: {message}")
    with open(job["output"], encoding="utf-8") as handle:
        return json.load(handle)


def _run_job(job_path: str) -> int:
    from bench.data.loading import load_data

    with open(job_path, encoding="utf-8") as handle:
        job = json.load(handle)
    try:
        result = time_candidates(
            [Candidate(**c) for c in job["candidates"]],
            load_data(job["data"]),
            TimingSettings(**job["settings"]),
            job["reference"],
        )
        write_json_atomic(job["output"], result)
    except Exception as exc:  # the parent reports it in one line
        with open(job["error"], "w", encoding="utf-8") as handle:
            handle.write(f"{type(exc).__name__}: {exc}".replace("\n", " "))
        if os.environ.get("SLIMBENCH_TRACEBACK"):
            raise
        return 3
    return 0


if __name__ == "__main__":
    import sys

    sys.stdout.flush()
    os._exit(_run_job(sys.argv[1]))  # no interpreter teardown (seconds of runtime destructors): the result is on disk
