"""The one result schema: a row per model variant with its config, environment and metrics.

Every writer (the study runner) and reader (reports, tests) goes through this module: the
columns, the cell records on disk (``<results_dir>/<study>/cells/<model>-<hash>.json``) and the
CSV tables rebuilt from them. It imports neither torch nor the models, so reports render from
results alone. Rates are in percent; an empty cell means "not measured" (e.g. GPU latency on a
machine without a GPU), never zero.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os

from bench.files import file_lock, write_atomically

_logger = logging.getLogger(__name__)

MAJORITY = "majority"  # the model name of the majority-class predictor's row
RECORD_VERSION = 3  # part of every cell hash: bump when a change alters what a cell computes
TIMING_FILE = "timing.json"  # the study's timing phase (bench.latency): every latency figure of the study
TIMING_VERSION = 1

RESULT_COLUMNS = (
    # identity and config
    # compression: the variant's full pipeline; compression_notes: what its steps decided beyond their options (a target met,
    # the nodes int8 accuracy control left in float)
    "study", "model", "variant", "compression", "compression_notes", "seed", "dataset", "input_size", "epochs", "batch_size", "lr",
    "n_train", "n_val", "n_test",
    # cost; latency: the fastest exact (fp32) runtime at batch 1 and batch N (all runtimes are in latency.csv), from the
    # study's one timing phase; *_lo / *_hi: 95 % bootstrap interval over timing blocks; ref_ratio: this latency over the
    # reference model's summary latency; speedup: the base's summary latency over this one (both fastest exact runtimes,
    # so the columns divide into the ratios; paired over blocks when the two runtimes are one, latency.csv has each runtime's)
    "params", "nonzero_params", "macs", "disk_bytes", "disk_bytes_zip",
    "runtime_b1", "latency_b1_ms", "latency_b1_lo", "latency_b1_hi", "floor_ratio_b1", "ref_ratio_b1", "ref_ratio_b1_lo",
    "ref_ratio_b1_hi", "speedup_b1", "speedup_b1_lo", "speedup_b1_hi", "realization_b1", "realization_b1_lo", "realization_b1_hi",
    "runtime_bN", "latency_bN_ms", "latency_bN_lo", "latency_bN_hi", "floor_ratio_bN", "ref_ratio_bN", "ref_ratio_bN_lo",
    "ref_ratio_bN_hi", "speedup_bN", "speedup_bN_lo", "speedup_bN_hi", "realization_bN", "realization_bN_lo", "realization_bN_hi",
    "batch_n",
    "int8_b1_ms", "gpu_b1_ms", "gpu_bN_ms",
    # quality (percent); *_lo / *_hi: 95 % bootstrap interval over test images
    "acc_mean", "acc_mean_lo", "acc_mean_hi", "acc_majority", "mA", "mA_lo", "mA_hi", "inst_acc", "inst_precision", "inst_recall", "inst_f1",
    "precision", "recall", "f1", "f1_lo", "f1_hi", "hamming_loss", "hamming_score", "ece", "ece_ts", "temperature",
    "acc_mean_tuned", "f1_tuned", "ppp", "acc_mean_nofinetune",
    # acc_mean_val: mean accuracy on the validation split (what a search ranks candidates by; the test split stays unseen)
    "acc_mean_val",
    # int8: test accuracy in ONNX Runtime int8 and in OpenVINO int8 (NNCF), and the drop from fp32 (a float model's; empty
    # for a quantized variant, whose acc_mean is already its ONNX Runtime int8 accuracy); int8_settings: a quantized
    # variant's quantization (latency.csv has each int8 row's)
    # int8_note: where the time goes when int8 runs slower than fp32 in ONNX Runtime at batch 1 (its profiler's kernel times)
    "acc_mean_int8", "acc_int8_delta", "acc_mean_ov_int8", "acc_ov_int8_delta", "int8_settings", "int8_note",
    # training; diverged: why the training looks diverged ('' when it does not, see bench.train.divergence_reason)
    "train_seconds", "finetune_seconds", "best_epoch", "diverged",
    # environment
    # cpu_isa: the vector instruction sets int8 speed depends on (AVX2, AVX-512, VNNI, AMX)
    "torch_version", "timm_version", "onnxruntime_version", "cpu_name", "cpu_isa", "threads", "peak_gflops", "peak_library", "device",
    "git_commit", "timestamp", "config_hash", "group_hash",
)

PER_ATTRIBUTE_COLUMNS = (
    "study", "model", "variant", "seed", "config_hash", "attribute", "positive_rate", "acc", "acc_majority",
    "balanced_acc", "precision", "recall", "f1", "threshold_tuned", "acc_tuned", "f1_tuned",
)

# One row per model variant, runtime, device and batch size, all from the study's one timing phase; `exact`
# runtimes keep fp32 arithmetic (int8 does not). Every model of the study ran in the same interleaved blocks of a
# runtime and batch: median_ms is the median of its block medians (blocks: those used, blocks_total: those timed),
# median_lo/hi its 95 % bootstrap interval over blocks; ref_ratio = median / the reference model's median,
# speedup = base_median_ms / median_ms, realization = speedup / mac_reduction, each with its interval (paired
# bootstrap over blocks); int8_settings: how an int8 row's model was quantized; cpu_isa: AVX2 / AVX-512 / VNNI / AMX. load_ratio / memory_load_ratio: the worst GEMM / memory-bound probe ratio over the blocks;
# block_medians_ms: the medians of the blocks used, '|'-separated, for anyone who wants to redo the statistics.
LATENCY_COLUMNS = (
    "study", "model", "variant", "seed", "config_hash", "runtime", "exact", "device", "batch", "threads", "median_ms", "median_lo",
    "median_hi", "p10_ms", "p90_ms", "iqr_ms", "iterations", "blocks", "blocks_total", "spread_pct", "load_ratio", "memory_load_ratio",
    "busy", "retimed", "macs", "floor_ms", "floor_ratio", "floor_ratio_lo", "floor_ratio_hi", "peak_gflops", "ref_ratio", "ref_ratio_lo",
    "ref_ratio_hi", "base_median_ms", "speedup", "speedup_lo", "speedup_hi", "mac_reduction", "param_reduction", "realization",
    "realization_lo", "realization_hi", "max_abs_diff", "int8_settings", "cpu_isa", "block_medians_ms",
)

LAYER_COLUMNS = (
    "study", "model", "variant", "seed", "config_hash", "layer", "kernel", "method", "rank", "runtime", "new_layer_macs", "macs_before",
    "macs_after", "theoretical_speedup", "measured_speedup", "measured_over_theoretical", "ms_before", "ms_after", "busy",
    "retimed", "confirmed", "rel_error", "norm_sum_als", "norm_sum_epc", "als_iters_run", "decompose_seconds",
    "note",
)

# checkpoint: the analysed model file; data: the dataset's name and fingerprint it was evaluated on
SENSITIVITY_COLUMNS = ("unit", "members", "method", "ratio", "params_removed", "macs_removed", "acc_mean", "drop", "checkpoint", "data")
SENSITIVITY_ATTRIBUTE_COLUMNS = ("unit", "attribute", "acc", "drop", "checkpoint", "data")

HISTORY_COLUMNS = ("study", "model", "variant", "seed", "config_hash", "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds",
                   "start_loss")


def make_row(columns, values: dict) -> dict:
    """Return ``values`` as a row with exactly ``columns`` (missing ones empty).

    Raises:
        KeyError: ``values`` has a key that is not a column (a typo would silently lose data).
    """
    unknown = sorted(set(values) - set(columns))
    if unknown:
        raise KeyError(f"not result columns: {unknown}; the schema is bench.schema")
    return {column: values.get(column, "") for column in columns}


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else repr(round(value, 6))
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def write_csv_atomic(path: str, columns, rows) -> None:
    """Write ``rows`` (dicts) as CSV with header ``columns``; the file is replaced atomically.

    Raises:
        KeyError: a row has a key outside ``columns``.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(v) for k, v in make_row(columns, row).items()})
    write_text_atomic(path, buffer.getvalue())


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (``bench.files.write_atomically``)."""
    def write(partial: str) -> None:
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write(text)

    write_atomically(path, write)


def read_results(path: str):
    """Return the results CSV at ``path`` as a pandas DataFrame with numeric columns parsed.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file lacks schema columns.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no results at {path!r}; run the study first")
    frame = read_csv_table(path)
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path!r} lacks result columns {missing[:6]}; was it written by another version?")
    return frame


TEXT_COLUMNS = {"diverged": str, "note": str, "study": str, "model": str, "variant": str, "compression": str, "input_size": str,
                "config_hash": str, "group_hash": str, "git_commit": str, "attribute": str, "rank": str, "kernel": str, "layer": str,
                "method": str, "new_layer_macs": str, "runtime": str, "runtime_b1": str, "runtime_bN": str, "device": str,
                "peak_library": str, "block_medians_ms": str, "unit": str, "members": str, "checkpoint": str, "data": str}


def read_csv_table(path: str):
    """Return any CSV written with this schema as a DataFrame, text columns as strings ('' when empty).

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    import pandas as pd

    with open(path, encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    dtypes = {c: t for c, t in TEXT_COLUMNS.items() if c in header}
    frame = pd.read_csv(path, dtype=dtypes, keep_default_na=True)
    for column in dtypes:
        frame[column] = frame[column].fillna("")
    return frame


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
    return {"study": cell["study"], "model": cell["model"], "variant": cell.get("variant", ""), "seed": cell["seed"],
            "config_hash": config_hash(cell)}


def seedless(cell: dict) -> dict:
    """Return ``cell`` without its seed (top level and training): what runs of one experiment share."""
    stripped = {k: v for k, v in cell.items() if k != "seed"}
    if isinstance(stripped.get("train"), dict):
        stripped["train"] = {k: v for k, v in stripped["train"].items() if k != "seed"}
    return stripped


def group_hash(cell: dict) -> str:
    """Return the hash of a cell's config without its seed: rows with equal group hashes are seeds of one experiment."""
    return config_hash(seedless(cell))


SEARCH_FOLDER = "search"  # under a study's folder: its search's trial cells, Optuna journal and trials.csv (bench.search)
SEARCH_FILE = "search.json"  # the search's summary, its front against the zoo included
TRIALS_FILE = "trials.csv"
TRIAL_COLUMNS = ("trial", "state", "variant", "compression", "config_hash", "params", "macs", "acc_mean_val", "acc_mean",
                 "runtime", "latency_ratio", "latency_ratio_lo", "latency_ratio_hi", "screening_front", "promoted_hash", "error")


def search_study_name(study: str) -> str:
    """Return the name of the study that holds a search's trial cells (a folder inside the searched study's)."""
    return f"{study}/{SEARCH_FOLDER}"


def read_search(results_dir: str, study: str) -> dict | None:
    """Return a study's search summary (``search.json``, see :func:`run_search`), or None when it has none."""
    path = os.path.join(study_dir(results_dir, study), SEARCH_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_trials(results_dir: str, study: str) -> list[dict]:
    """Return a study's search trials (``search/trials.csv``), or [] when it has none."""
    path = os.path.join(study_dir(results_dir, search_study_name(study)), TRIALS_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def study_dir(results_dir: str, study: str) -> str:
    """Return ``<results_dir>/<study>``."""
    return os.path.join(results_dir, study)


def record_path(results_dir: str, cell: dict, cell_hash: str | None = None) -> str:
    """Return the path of a cell's JSON record (``cell_hash``: of the cell of that study and model with this hash)."""
    return os.path.join(study_dir(results_dir, cell["study"]), "cells", f"{cell['model']}-{cell_hash or config_hash(cell)}.json")


def _record_problem(name: str, record) -> str:
    if not isinstance(record, dict) or not isinstance(record.get("row"), dict) or not isinstance(record.get("cell"), dict):
        return "not a cell record (no 'row' and 'cell' mappings)"
    row = record["row"]
    missing = [k for k in ("model", "config_hash", "timestamp", "acc_mean") if k not in row]
    if missing:
        return f"its row lacks {missing}"
    if not name.endswith(f"-{row['config_hash']}.json"):
        return f"its row's config_hash {row['config_hash']!r} does not match the file name"
    for key in ("per_attribute", "history"):
        if not isinstance(record.get(key, []), list):
            return f"'{key}' is not a list"
    return ""


def quarantine(path: str, reason: str) -> str:
    """Move a bad record to ``cells/quarantine/`` beside it (kept for inspection, never read again); return its new path."""
    folder = os.path.join(os.path.dirname(path), "quarantine")
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, os.path.basename(path))
    suffix = 1
    while os.path.exists(target):
        target = os.path.join(folder, f"{os.path.basename(path)}.{suffix}")
        suffix += 1
    try:
        os.replace(path, target)
    except FileNotFoundError:  # another process moved it first
        return target
    _logger.warning("record %s is unreadable (%s): moved to %s; its cell will be recomputed", path, reason, target)
    return target


def read_record(path: str) -> dict | None:
    """Return the cell record at ``path``; None when there is none, or when it is corrupt (truncated,
    not JSON, not a record), in which case it is moved to ``cells/quarantine/`` with a logged warning."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        quarantine(path, f"not JSON: {exc}")
        return None
    problem = _record_problem(os.path.basename(path), record)
    if problem:
        quarantine(path, problem)
        return None
    return record


def load_records(results_dir: str, study: str) -> list[dict]:
    """Return every valid cell record of a study: the majority row first, then by start time. Corrupt
    records are moved aside (:func:`read_record`), so one bad file never hides the others.

    Raises:
        FileNotFoundError: the study has no valid records.
    """
    folder = os.path.join(study_dir(results_dir, study), "cells")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".json")) if os.path.isdir(folder) else []
    records = [r for r in (read_record(os.path.join(folder, n)) for n in names) if r is not None]
    if not records:
        raise FileNotFoundError(f"no finished cells under {folder!r}; run the study first (study {study!r})")
    return sorted(records, key=lambda r: (r["row"]["model"] != MAJORITY, str(r["row"]["timestamp"]), r["row"]["model"]))


def write_tables(results_dir: str, study: str) -> list[dict]:
    """Rebuild ``results.csv``, ``per_attribute.csv``, ``history.csv``, ``layers.csv`` and ``latency.csv`` from
    every valid record; return those records (as :func:`load_records`, rows with exactly the schema's
    columns). Runs sharing the study take turns (a file lock).

    Raises:
        FileNotFoundError: the study has no valid records.
    """
    folder = study_dir(results_dir, study)
    with file_lock(os.path.join(folder, "tables")):
        return _write_tables(results_dir, study, folder)


def read_timing(results_dir: str, study: str) -> dict | None:
    """Return the study's timing phase (``timing.json``, see ``bench.latency``); None when there is none, or it is
    unreadable or of another version (a warning is logged; the next run times the study again)."""
    path = os.path.join(study_dir(results_dir, study), TIMING_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            timing = json.load(handle)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        _logger.warning("%s is unreadable (%s): the study will be timed again", path, exc)
        return None
    return timing if isinstance(timing, dict) and timing.get("version") == TIMING_VERSION else None


def with_timing(records: list[dict], timing: dict | None) -> list[dict]:
    """Return ``records`` with the timing phase's columns in their rows and its latency rows and skipped runtimes
    beside them (``latency``, ``skipped_runtimes``); records the phase did not time keep empty latency columns."""
    if not timing:
        return records
    joined = []
    for record in records:
        key = record["row"]["config_hash"]
        joined.append({**record, "row": {**record["row"], **timing["columns"].get(key, {})},
                       "latency": [r for r in timing["latency"] if r["config_hash"] == key],
                       "skipped_runtimes": timing["skipped"].get(key, {})})
    return joined


def _write_tables(results_dir: str, study: str, folder: str) -> list[dict]:
    records = with_timing(load_records(results_dir, study), read_timing(results_dir, study))
    records = [{**r, "row": make_row(RESULT_COLUMNS, {k: v for k, v in r["row"].items() if k in RESULT_COLUMNS})} for r in records]
    write_csv_atomic(os.path.join(folder, "results.csv"), RESULT_COLUMNS, [r["row"] for r in records])
    write_csv_atomic(os.path.join(folder, "per_attribute.csv"), PER_ATTRIBUTE_COLUMNS, [p for r in records for p in r["per_attribute"]])
    write_csv_atomic(os.path.join(folder, "history.csv"), HISTORY_COLUMNS, [h for r in records for h in r["history"]])
    write_csv_atomic(os.path.join(folder, "layers.csv"), LAYER_COLUMNS, [x for r in records for x in r.get("layers", [])])
    write_csv_atomic(os.path.join(folder, "latency.csv"), LATENCY_COLUMNS, [x for r in records for x in r.get("latency", [])])
    return records
