"""The results store: a study's cell records, its timing phase and its search on disk, and the CSV tables rebuilt from them.

Everything under ``<results_dir>/<study>/`` is read and written here (through the atomic writer of
``bench.store.files``), so a reader never sees half a file and one bad record never hides the others. It imports
neither torch nor the models, so reports render from results alone.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os

from bench.store.files import file_lock, write_text_atomic
from bench.store.schema import (
    HISTORY_COLUMNS,
    LATENCY_COLUMNS,
    LAYER_COLUMNS,
    MAJORITY,
    PER_ATTRIBUTE_COLUMNS,
    RESULT_COLUMNS,
    config_hash,
    make_row,
)

_logger = logging.getLogger(__name__)

DOMINANCE_FILE = "dominance.csv"  # whether each compressed model dominates each zoo model (bench.study.dominance)
TIMING_FILE = "timing.json"  # the study's timing phase (bench.study.timing_phase): every latency figure of the study


TIMING_VERSION = 3  # 2: every latency row holds the accuracy measured in its runtime; 3: per-layer roofline profiles (layers)


# the decimals a float keeps in every CSV written here: text made from a number (a verdict) rounds it so first, so that
# it reads as the tables print the stored number
CSV_DECIMALS = 6


def as_stored(value: float) -> float:
    """Return ``value`` as every CSV written here stores it: rounded to ``CSV_DECIMALS``."""
    return round(value, CSV_DECIMALS)


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else repr(as_stored(value))
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


TEXT_COLUMNS = {
    "diverged": str,
    "note": str,
    "study": str,
    "model": str,
    "variant": str,
    "compression": str,
    "input_size": str,
    "config_hash": str,
    "group_hash": str,
    "git_commit": str,
    "attribute": str,
    "rank": str,
    "kernel": str,
    "layer": str,
    "method": str,
    "new_layer_macs": str,
    "runtime": str,
    "runtime_b1": str,
    "runtime_bN": str,
    "device": str,
    "peak_library": str,
    "block_medians_ms": str,
    "unit": str,
    "members": str,
    "checkpoint": str,
    "data": str,
    # config hashes: 12 hex digits, which pandas reads as a number when they happen to be all digits, or as inf when they
    # look like '8e2713051191' (a cell's label then became inf and the LaTeX writer failed)
    "base_hash": str,
    "member": str,
    "zoo": str,
    "member_runtime": str,
    "zoo_runtime": str,
    "zoo_int8_runtime": str,
    "why_not": str,
}


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


SEARCH_FOLDER = "search"  # under a study's folder: its search's trial cells, Optuna journal and trials.csv (bench.search)


SEARCH_FILE = "search.json"  # the search's summary, its front against the zoo included


TRIALS_FILE = "trials.csv"


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


def twin_record_path(results_dir: str, cell: dict) -> str | None:
    """Return the path of the record of ``cell``'s twin: the same cell (data, model, training, compression, seed: all but
    ``study``) finished in another study of ``results_dir``; None when no other study has one."""
    if not os.path.isdir(results_dir):
        return None
    for study in sorted(os.listdir(results_dir)):
        if study != cell["study"] and os.path.isdir(os.path.join(results_dir, study, "cells")):
            path = record_path(results_dir, {**cell, "study": study})
            if os.path.isfile(path):
                return path
    return None


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
    """Return ``records`` with the timing phase's columns in their rows and its latency rows, per-layer profiles and
    skipped runtimes beside them (``latency``, ``layer_profiles``, ``skipped_runtimes``); records the phase did not time
    keep empty latency columns."""
    if not timing:
        return records
    joined = []
    for record in records:
        key = record["row"]["config_hash"]
        joined.append(
            {
                **record,
                "row": {**record["row"], **timing["columns"].get(key, {})},
                "latency": [r for r in timing["latency"] if r["config_hash"] == key],
                "layer_profiles": [r for r in timing["layers"] if r["config_hash"] == key],
                "skipped_runtimes": timing["skipped"].get(key, {}),
            }
        )
    return joined


def _write_tables(results_dir: str, study: str, folder: str) -> list[dict]:
    records = with_timing(load_records(results_dir, study), read_timing(results_dir, study))
    records = [
        {**r, "row": make_row(RESULT_COLUMNS, {k: v for k, v in r["row"].items() if k in RESULT_COLUMNS})} for r in records
    ]
    write_csv_atomic(os.path.join(folder, "results.csv"), RESULT_COLUMNS, [r["row"] for r in records])
    write_csv_atomic(
        os.path.join(folder, "per_attribute.csv"), PER_ATTRIBUTE_COLUMNS, [p for r in records for p in r["per_attribute"]]
    )
    write_csv_atomic(os.path.join(folder, "history.csv"), HISTORY_COLUMNS, [h for r in records for h in r["history"]])
    layers = [{**x, "kind": x.get("kind") or "replaced"} for r in records for x in r.get("layers", [])]  # records before kind
    layers += [x for r in records for x in r.get("layer_profiles", [])]
    write_csv_atomic(os.path.join(folder, "layers.csv"), LAYER_COLUMNS, layers)
    write_csv_atomic(os.path.join(folder, "latency.csv"), LATENCY_COLUMNS, [x for r in records for x in r.get("latency", [])])
    return records
