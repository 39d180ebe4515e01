"""The one result schema: a row per model variant with its config, environment and metrics.

Every writer (the study runner) and reader (reports, tests) goes through this module. Rates are
in percent; an empty cell means "not measured" (e.g. GPU latency on a machine without a GPU),
never zero.
"""
from __future__ import annotations

import csv
import io
import os

RESULT_COLUMNS = (
    # identity and config
    "study", "model", "variant", "compression", "seed", "dataset", "input_size", "epochs", "batch_size", "lr",
    "n_train", "n_val", "n_test",
    # cost
    "params", "nonzero_params", "macs", "disk_bytes", "disk_bytes_zip",
    "cpu_b1_ms", "cpu_b1_p90_ms", "cpu_bN_ms", "cpu_bN_p90_ms", "cpu_b1_cl_ms", "cpu_bN_cl_ms", "batch_n",
    "gpu_b1_ms", "gpu_bN_ms",
    # quality (percent)
    "acc_mean", "acc_majority", "mA", "inst_acc", "inst_precision", "inst_recall", "inst_f1",
    "precision", "recall", "f1", "hamming_loss", "hamming_score", "ece", "ece_ts", "temperature",
    "acc_mean_tuned", "f1_tuned", "ppp", "acc_mean_nofinetune",
    # training
    "train_seconds", "finetune_seconds", "best_epoch",
    # environment
    "torch_version", "timm_version", "cpu_name", "threads", "device", "git_commit", "timestamp", "config_hash",
)

PER_ATTRIBUTE_COLUMNS = (
    "study", "model", "variant", "seed", "attribute", "positive_rate", "acc", "acc_majority",
    "balanced_acc", "precision", "recall", "f1", "threshold_tuned", "acc_tuned", "f1_tuned",
)

LAYER_COLUMNS = (
    "study", "model", "variant", "seed", "layer", "kernel", "method", "rank", "new_layer_macs", "macs_before",
    "macs_after", "theoretical_speedup", "measured_speedup", "measured_over_theoretical", "ms_before", "ms_after", "rel_error",
    "norm_sum_als", "norm_sum_epc",
)

HISTORY_COLUMNS = ("study", "model", "variant", "seed", "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")


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
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)


def read_results(path: str):
    """Return the results CSV at ``path`` as a pandas DataFrame with numeric columns parsed.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file lacks schema columns.
    """
    import pandas as pd

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no results at {path!r}; run the study first")
    frame = read_csv_table(path)
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path!r} lacks result columns {missing[:6]}; was it written by another version?")
    return frame


TEXT_COLUMNS = {"study": str, "model": str, "variant": str, "compression": str, "input_size": str,
                "config_hash": str, "git_commit": str, "attribute": str, "rank": str, "kernel": str, "layer": str,
                "method": str, "new_layer_macs": str}


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
