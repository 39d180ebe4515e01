"""The one result schema: the columns of every table a study writes, a row with exactly them, and the hashes that
name a cell (its config) and an experiment (its config without the seed).

Every writer (the study runner) and reader (reports, tests) uses these columns; ``bench.store.records`` keeps the
records and tables on disk. It imports neither torch nor the models, so reports render from results alone. Rates
are in percent; an empty cell means "not measured" (e.g. GPU latency on a machine without a GPU), never zero.
"""

from __future__ import annotations

import hashlib
import json
import logging

_logger = logging.getLogger(__name__)

MAJORITY = "majority"  # the model name of the majority-class predictor's row
# part of every cell hash: bump when a change alters what a cell computes (4: bf16 training set-ups, the teacher's
# outputs computed once, a quantized model's disk size its int8 file's)
RECORD_VERSION = 4
RESULT_COLUMNS = (
    # identity and config
    # compression: the variant's full pipeline; compression_notes: what its steps decided beyond their options (a target met,
    # the nodes int8 accuracy control left in float); compression_warnings: what they could not do as asked (a latency
    # target out of reach, an int8 drop above max_drop), '; '-separated (none contains '; '), each a line under the
    # summary's Warnings
    "study",
    "model",
    "variant",
    "compression",
    "compression_notes",
    "compression_warnings",
    "seed",
    "dataset",
    "input_size",
    "epochs",
    "batch_size",
    "lr",
    "n_train",
    "n_val",
    "n_test",
    # cost; latency: the fastest exact (fp32) runtime at batch 1 and batch N (all runtimes are in latency.csv), from the
    # study's one timing phase; *_lo / *_hi: 95 % bootstrap interval over timing blocks; ref_ratio: this latency over the
    # reference model's summary latency; speedup: the base's summary latency over this one (both fastest exact runtimes,
    # so the columns divide into the ratios; paired over blocks when the two runtimes are one, latency.csv has each runtime's)
    "params",
    "nonzero_params",
    "macs",
    "disk_bytes",
    "disk_bytes_zip",
    "runtime_b1",
    "latency_b1_ms",
    "latency_b1_lo",
    "latency_b1_hi",
    "floor_ratio_b1",
    "roofline_ratio_b1",
    "peak_mb_b1",
    "cold_ms_b1",
    "ref_ratio_b1",
    "ref_ratio_b1_lo",
    "ref_ratio_b1_hi",
    "speedup_b1",
    "speedup_b1_lo",
    "speedup_b1_hi",
    "realization_b1",
    "realization_b1_lo",
    "realization_b1_hi",
    "runtime_bN",
    "latency_bN_ms",
    "latency_bN_lo",
    "latency_bN_hi",
    "floor_ratio_bN",
    "roofline_ratio_bN",
    "peak_mb_bN",
    "ref_ratio_bN",
    "ref_ratio_bN_lo",
    "ref_ratio_bN_hi",
    "speedup_bN",
    "speedup_bN_lo",
    "speedup_bN_hi",
    "realization_bN",
    "realization_bN_lo",
    "realization_bN_hi",
    "batch_n",
    # int8: the fastest int8 runtime at batch 1 and batch N (named; latency.csv has every int8 runtime with the accuracy
    # measured in it); ref_ratio_int8: that latency over the reference model's fastest exact one
    "runtime_int8_b1",
    "latency_int8_b1_ms",
    "latency_int8_b1_lo",
    "latency_int8_b1_hi",
    "ref_ratio_int8_b1",
    "ref_ratio_int8_b1_lo",
    "ref_ratio_int8_b1_hi",
    "runtime_int8_bN",
    "latency_int8_bN_ms",
    "latency_int8_bN_lo",
    "latency_int8_bN_hi",
    "ref_ratio_int8_bN",
    "ref_ratio_int8_bN_lo",
    "ref_ratio_int8_bN_hi",
    "gpu_b1_ms",
    "gpu_bN_ms",
    # quality (percent); *_lo / *_hi: 95 % bootstrap interval over test images
    "acc_mean",
    "acc_mean_lo",
    "acc_mean_hi",
    "acc_majority",
    "mA",
    "mA_lo",
    "mA_hi",
    "inst_acc",
    "inst_precision",
    "inst_recall",
    "inst_f1",
    "precision",
    "recall",
    "f1",
    "f1_lo",
    "f1_hi",
    "hamming_loss",
    "hamming_score",
    "ece",
    "ece_ts",
    "temperature",
    "acc_mean_tuned",
    "f1_tuned",
    "ppp",
    "acc_mean_nofinetune",
    # acc_mean_val: mean accuracy on the validation split (what a search ranks candidates by; the test split stays unseen)
    "acc_mean_val",
    # int8: test accuracy in the fastest int8 runtime at batch 1 (runtime_int8_b1), and its change from fp32 (a float model's;
    # empty for a quantized variant, whose acc_mean is already its ONNX Runtime int8 accuracy); int8_settings: a quantized
    # variant's quantization (latency.csv has each int8 row's)
    # int8_note: where the time goes when int8 runs slower than fp32 in ONNX Runtime at batch 1 (its profiler's kernel times)
    "acc_mean_int8",
    "acc_int8_delta",
    "int8_settings",
    "int8_note",
    # training; train_setup: how its steps ran (bench.training.setups: memory format, precision, compilation, merged
    # chains; a variant's fine-tune after '; fine-tune: ' where it ran otherwise); diverged: why
    # the training looks diverged ('' when it does not, see bench.training.train.divergence_reason)
    "train_setup",
    "train_seconds",
    "finetune_seconds",
    "best_epoch",
    "diverged",
    # environment
    # cpu_isa: the vector instruction sets int8 speed depends on (AVX2, AVX-512, VNNI, AMX)
    "torch_version",
    "timm_version",
    "onnxruntime_version",
    "openvino_version",
    "cpu_name",
    "cpu_isa",
    "threads",
    "peak_gflops",
    "peak_library",
    "device",
    "git_commit",
    "timestamp",
    "config_hash",
    "group_hash",
)

PER_ATTRIBUTE_COLUMNS = (
    "study",
    "model",
    "variant",
    "seed",
    "config_hash",
    "attribute",
    "positive_rate",
    "acc",
    "acc_majority",
    "balanced_acc",
    "precision",
    "recall",
    "f1",
    "threshold_tuned",
    "acc_tuned",
    "f1_tuned",
)

# One row per model variant, runtime, device and batch size, all from the study's one timing phase; `exact`
# runtimes keep fp32 arithmetic (int8 does not). Every model of the study ran in the same interleaved blocks of a
# runtime and batch: median_ms is the mean of its block medians, each block's median call (blocks: those used,
# blocks_total: those timed; the mean, so a ratio of two rows' figures over the same blocks cancels what a machine phase
# did to both: deploy.timing), median_lo/hi its 95 % bootstrap interval over blocks; ref_ratio = median_ms / the
# reference model's median_ms,
# speedup = base_median_ms / median_ms, realization = speedup / mac_reduction, each with its interval (paired
# bootstrap over blocks); acc_mean: the model's test accuracy as it runs in this runtime (exact runtimes: its fp32
# accuracy; int8 runtimes: measured in them), acc_delta: an int8 row's change from fp32; int8_settings: how an int8 row's
# model was quantized; cpu_isa: AVX2 / AVX-512 / VNNI / AMX. load_ratio / memory_load_ratio: the worst GEMM / memory-bound
# probe ratio over the blocks;
# block_medians_ms: the medians of the blocks used, '|'-separated, for anyone who wants to redo the statistics.
LATENCY_COLUMNS = (
    "study",
    "model",
    "variant",
    "seed",
    "config_hash",
    "runtime",
    "exact",
    "device",
    "batch",
    "threads",
    "median_ms",
    "median_lo",
    "median_hi",
    "p10_ms",
    "p90_ms",
    "iqr_ms",
    "iterations",
    "blocks",
    "blocks_total",
    "spread_pct",
    "load_ratio",
    "memory_load_ratio",
    "busy",
    "retimed",
    "macs",
    "floor_ms",
    "floor_ratio",
    "floor_ratio_lo",
    "floor_ratio_hi",
    # the sum of the model's per-layer roofline floors (layers.csv, kind profiled) and median / it; profiled_ms: the
    # sum of its nodes' profiled times (a little under median_ms: no call overhead)
    "roofline_ms",
    "roofline_ratio",
    "roofline_ratio_lo",
    "roofline_ratio_hi",
    "profiled_ms",
    # the footprint (timing.footprint; deploy.footprint): medians over footprint_repeats fresh processes, *_spread the
    # largest minus the smallest; import_mb: the process after importing the runtime; peak_mb: after loading the model
    # and running it; model_mb: peak - import; cold_ms: load_ms (read and compile; compile_ms the compiling) + first_ms
    "import_mb",
    "peak_mb",
    "peak_mb_spread",
    "model_mb",
    "model_mb_spread",
    "load_ms",
    "compile_ms",
    "first_ms",
    "cold_ms",
    "cold_ms_spread",
    "memory_settings",
    "footprint_repeats",
    "peak_gflops",
    "ref_ratio",
    "ref_ratio_lo",
    "ref_ratio_hi",
    "base_hash",
    "base_median_ms",
    "speedup",
    "speedup_lo",
    "speedup_hi",
    "mac_reduction",
    "param_reduction",
    "realization",
    "realization_lo",
    "realization_hi",
    "acc_mean",
    "acc_delta",
    "max_abs_diff",
    "int8_settings",
    "cpu_isa",
    "block_medians_ms",
)

# Two kinds of rows. kind "replaced": a compressed layer and its replacement, each built and timed alone
# (bench.study.layer_speedup); kind "profiled": every node a runtime runs for a model at a batch size, timed by the
# runtime's profiler inside the whole model, against its roofline (bench.study.layer_profiles, deploy.roofline):
# node (the runtime's), source (the ONNX node), op, shape, macs, bytes (at the batch), intensity (FLOPs per byte),
# level and bandwidth_gbs (the cache level its bytes fit in), bound (compute or memory), floor_ms, measured_ms and
# floor_ratio (measured / floor).
LAYER_COLUMNS = (
    "study",
    "model",
    "variant",
    "seed",
    "config_hash",
    "kind",
    "batch",
    "layer",
    "node",
    "source",
    "op",
    "shape",
    "macs",
    "bytes",
    "intensity",
    "level",
    "bandwidth_gbs",
    "bound",
    "floor_ms",
    "measured_ms",
    "floor_ratio",
    "kernel",
    "method",
    "rank",
    "runtime",
    "new_layer_macs",
    "macs_before",
    "macs_after",
    "theoretical_speedup",
    "measured_speedup",
    "measured_over_theoretical",
    "ms_before",
    "ms_after",
    "busy",
    "retimed",
    "confirmed",
    "rel_error",
    "norm_sum_als",
    "norm_sum_epc",
    "als_iters_run",
    "decompose_seconds",
    "note",
)

# checkpoint: the analysed model file; data: the dataset's name and fingerprint it was evaluated on
SENSITIVITY_COLUMNS = (
    "unit",
    "members",
    "method",
    "ratio",
    "params_removed",
    "macs_removed",
    "acc_mean",
    "drop",
    "checkpoint",
    "data",
)
SENSITIVITY_ATTRIBUTE_COLUMNS = ("unit", "attribute", "acc", "drop", "checkpoint", "data")

HISTORY_COLUMNS = (
    "study",
    "model",
    "variant",
    "seed",
    "config_hash",
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "seconds",
    "start_loss",
    # where an epoch's seconds went: batches read and converted, steps (forward, backward, update), validation, checkpoints
    "data_seconds",
    "step_seconds",
    "val_seconds",
    "checkpoint_seconds",
)


def as_number(value) -> float | None:
    """Return a table cell as a finite number, or None for an empty, non-numeric or non-finite cell ("not measured")."""
    import math

    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def make_row(columns, values: dict) -> dict:
    """Return ``values`` as a row with exactly ``columns`` (missing ones empty).

    Raises:
        KeyError: ``values`` has a key that is not a column (a typo would silently lose data).
    """
    unknown = sorted(set(values) - set(columns))
    if unknown:
        raise KeyError(f"not result columns: {unknown}; the schema is bench.schema")
    return {column: values.get(column, "") for column in columns}


def config_hash(cell: dict) -> str:
    """Return the 12-hex-digit SHA-1 of a cell's canonical JSON (everything that shapes its result).

    Where the data is cached (``data.cache_dir``) does not count; what the data is does (the
    cell's ``data_fingerprint``, see ``bench.data.FaceAttributeData``).
    """
    if isinstance(cell.get("data"), dict) and "cache_dir" in cell["data"]:
        cell = {**cell, "data": {k: v for k, v in cell["data"].items() if k != "cache_dir"}}
    payload = json.dumps({**cell, "record_version": RECORD_VERSION}, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def identity(cell: dict) -> dict:
    """Return the columns that identify a cell's rows in every table: study, model, variant, seed and the
    config hash (which tells apart runs of one model and variant that differ in anything else)."""
    return {
        "study": cell["study"],
        "model": cell["model"],
        "variant": cell.get("variant", ""),
        "seed": cell["seed"],
        "config_hash": config_hash(cell),
    }


def seedless(cell: dict) -> dict:
    """Return ``cell`` without its seed (top level and training): what runs of one experiment share."""
    stripped = {k: v for k, v in cell.items() if k != "seed"}
    if isinstance(stripped.get("train"), dict):
        stripped["train"] = {k: v for k, v in stripped["train"].items() if k != "seed"}
    return stripped


def group_hash(cell: dict) -> str:
    """Return the hash of a cell's config without its seed: rows with equal group hashes are seeds of one experiment."""
    return config_hash(seedless(cell))


# member / zoo: config hashes; member_runtime / zoo_runtime: the fastest of each at the batch; ratio: member / zoo model
# (its 95 % interval: the two resampled apart unless both ran in one runtime); zoo_int8_*: against the zoo model's fastest
# int8 runtime; d_acc: test accuracy difference in points, member minus zoo model, with its paired 95 % interval
DOMINANCE_COLUMNS = (
    "member",
    "zoo",
    "batch",
    "member_runtime",
    "member_ms",
    "zoo_runtime",
    "zoo_ms",
    "d_acc",
    "d_acc_lo",
    "d_acc_hi",
    "ratio",
    "ratio_lo",
    "ratio_hi",
    "zoo_int8_runtime",
    "zoo_int8_ratio",
    "zoo_int8_ratio_lo",
    "zoo_int8_ratio_hi",
    "dominates",
    "why_not",
)


# repeat_of: the earlier trial whose cell answered this one (the same pipeline proposed again: it spends no trial of the budget)
TRIAL_COLUMNS = (
    "trial",
    "state",
    "variant",
    "compression",
    "config_hash",
    "params",
    "macs",
    "acc_mean_val",
    "runtime",
    "latency_ratio",
    "latency_ratio_lo",
    "latency_ratio_hi",
    "screening_front",
    "promoted_hash",
    "repeat_of",
    "error",
)
