"""Experiment tracking: a study's cells as MLflow runs (https://mlflow.org), for teams that keep their runs there.

One parent run per study holds the rendered report as artifacts; each cell is a child run with its
config as parameters, its result row's numbers as metrics, its training history as stepped metrics
and its config hash as a tag, so logging a study again adds only the cells not yet logged.
"""

from __future__ import annotations

import logging
import os
import time

from bench.report.labels import flatten_config, group_labels
from bench.store.schema import RESULT_COLUMNS, as_number

_logger = logging.getLogger(__name__)

# Result columns that are identity or text, not metrics.
_NOT_METRICS = {
    "study",
    "model",
    "variant",
    "compression",
    "dataset",
    "input_size",
    "runtime_b1",
    "runtime_bN",
    "diverged",
    "torch_version",
    "timm_version",
    "onnxruntime_version",
    "cpu_name",
    "peak_library",
    "device",
    "git_commit",
    "timestamp",
    "config_hash",
    "group_hash",
}


def _quiet_mlflow() -> None:
    """Keep MLflow's own INFO lines (creating database tables, migrations) out of the study's output."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


class TrackingError(ValueError):
    """The MLflow tracking target cannot be used (the message names it and what to do)."""


def _store_folder(tracking_uri: str) -> str | None:
    """Return the local folder a file or SQLite tracking URI writes in (None for a server)."""
    from urllib.parse import urlparse

    parsed = urlparse(tracking_uri)
    if parsed.scheme in ("", "file"):
        return os.path.dirname(os.path.abspath(parsed.path if parsed.scheme else tracking_uri).rstrip("/")) or "/"
    if parsed.scheme == "sqlite":
        return os.path.dirname(os.path.abspath(tracking_uri.split(":///", 1)[-1])) or "/"
    return None


def check_tracking(tracking_uri: str, study: str, timeout: int = 5) -> None:
    """Check, before a study's first cell, that its MLflow target takes the study: a local store's folder exists and
    can be written, a server answers within ``timeout`` seconds (no retries), and the experiment ``study`` exists or
    can be created.

    Raises:
        TrackingError: the target cannot be used (named, with what failed, in one line).
        ImportError: MLflow is not installed.
    """
    from mlflow.tracking import MlflowClient

    _quiet_mlflow()
    folder = _store_folder(tracking_uri)
    if folder is not None and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
        raise TrackingError(f"--mlflow {tracking_uri}: its folder {folder} does not exist or cannot be written")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)})
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        if client.get_experiment_by_name(study) is None:
            client.create_experiment(study)
    except Exception as exc:  # any failure of the target is the same answer to the user: it cannot take the study
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise TrackingError(f"--mlflow {tracking_uri}: cannot log experiment {study!r} there ({reason})") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def log_study(
    tracking_uri: str, study: str, records: list[dict], report_folder: str | None = None, artifact_location: str | None = None
) -> dict[str, str]:
    """Log a study's records to the MLflow tracking server or store at ``tracking_uri`` (experiment ``study``, created with
    ``artifact_location`` when new; None: the server's default); return ``{config_hash: run id}`` of every cell's run
    (those logged before included).

    Raises:
        ImportError: MLflow is not installed (``pip install -e ".[mlflow]"``).
        mlflow.exceptions.MlflowException: the tracking server refused a call.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    _quiet_mlflow()
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(study)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(study, artifact_location=artifact_location)
    )
    parents = client.search_runs([experiment_id], filter_string="tags.slimbench_kind = 'study'")
    parent = (
        parents[0].info.run_id
        if parents
        else client.create_run(experiment_id, run_name=study, tags={"slimbench_kind": "study"}).info.run_id
    )
    logged = {
        run.data.tags["config_hash"]: run.info.run_id
        for run in client.search_runs([experiment_id], filter_string="tags.slimbench_kind = 'cell'", max_results=10_000)
    }
    labels = group_labels(records)
    now = int(time.time() * 1000)
    for record in records:
        row = record["row"]
        if row["config_hash"] in logged:
            continue
        tags = {
            "slimbench_kind": "cell",
            "config_hash": row["config_hash"],
            "model": row["model"],
            "variant": str(row.get("variant", "")),
            "mlflow.parentRunId": parent,
        }
        run_id = client.create_run(
            experiment_id, run_name=f"{labels[row['config_hash']]} seed {row['seed']}", tags=tags
        ).info.run_id
        params = [Param(key[:250], str(value)[:6000]) for key, value in sorted(flatten_config(record["cell"]).items())]
        metrics = [
            Metric(column, value, now, 0)
            for column in RESULT_COLUMNS
            if column not in _NOT_METRICS and (value := as_number(row.get(column))) is not None
        ]
        for entry in record.get("history", []):
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                if (value := as_number(entry.get(key))) is not None:
                    metrics.append(Metric(key, value, now, int(entry["epoch"])))
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=params[start : start + 100])
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        client.set_terminated(run_id)
        logged[row["config_hash"]] = run_id
    if report_folder and os.path.isdir(report_folder):
        client.log_artifacts(parent, report_folder, artifact_path="report")
    client.set_tag(parent, "cells", str(len(logged)))
    return logged
