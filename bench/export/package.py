"""``run_bench.py export``: a study's model as the files a deployer ships, checked before anything is written.

For one model of a finished study (by its label in the study's tables, e.g. ``slimnet [prune 0.3]``) and one runtime
the study timed it in, the model is rebuilt in that runtime exactly as the timing phase built it (its int8 settings,
the float nodes accuracy control chose, the same calibration images), and written with:

- the runtime's file (``model.onnx``, ``model.xml`` + ``.bin``, ``model.ts``, or the checkpoint for eager PyTorch);
- ``thresholds.json`` (per-attribute F1 thresholds fitted on the validation split), ``card.md`` and ``card.json``
  (``bench.export.card``), and ``run_model.py`` (``deploy/standalone.py``: runs the file with only its runtime).

Before the folder appears, the shipped file is loaded in a fresh process with only its runtime imported and run on the
whole test split; its mean accuracy must be within ``tolerance`` points of what the study measured in that runtime,
or nothing is written. Everything is written into a temporary folder beside ``out`` and renamed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

import deploy
import models
from bench.data.loading import load_data
from bench.export.card import card, card_json, card_markdown
from bench.report.labels import group_labels
from bench.store.records import load_records, read_timing, study_dir, with_timing
from bench.store.schema import MAJORITY
from bench.training.evaluate import model_inputs
from deploy.footprint import STANDALONE, run_standalone, save_artifact


class ExportError(ValueError):
    """An export that cannot be made or does not check out (the message names the value and what was expected)."""


@dataclass
class Exported:
    """What an export wrote: the folder, its files, and the accuracy check (shipped file against the study)."""

    folder: str
    files: list[str]
    acc_mean: float
    study_acc_mean: float


def _find(results_dir: str, study: str, label: str, runtime: str) -> tuple[dict, dict, list[dict]]:
    """Return ``(record with its timing joined, timing, latency rows of the model in runtime)`` or raise ExportError."""
    if not os.path.isdir(study_dir(results_dir, study)):
        raise ExportError(f"--study {study!r}: no results under {study_dir(results_dir, study)}; run the study first")
    try:
        records = load_records(results_dir, study)
    except FileNotFoundError as exc:
        raise ExportError(f"--study {study!r}: {exc}") from None
    timing = read_timing(results_dir, study)
    if timing is None:
        raise ExportError(f"--study {study!r} has no timing phase (timing.json); run it with latency on")
    labels = group_labels(records)
    matches = [r for r in with_timing(records, timing) if labels[r["row"]["config_hash"]] == label]
    if not matches:
        known = sorted({labels[r["row"]["config_hash"]] for r in records if r["cell"]["model"] != MAJORITY})
        raise ExportError(f"--model {label!r}: not a model of study {study!r}; its models: {', '.join(known)}")
    if len(matches) > 1:
        raise ExportError(f"--model {label!r}: {len(matches)} seeds in study {study!r}; a study of one seed exports")
    record = matches[0]
    if runtime not in deploy.RUNTIMES:
        raise ExportError(f"--runtime {runtime!r}: expected one of {', '.join(deploy.RUNTIMES)}")
    rows = [r for r in record["latency"] if r["runtime"] == runtime and r["device"] == "cpu"]
    if not rows:
        timed = sorted({r["runtime"] for r in record["latency"]})
        raise ExportError(f"--runtime {runtime!r}: study {study!r} did not time {label} in it; it did in: {', '.join(timed)}")
    return record, timing, rows


def _test_arrays(data, data_config: dict, folder: str) -> tuple[str, str, int]:
    rows = np.sort(np.asarray(data.splits["test"]))
    inputs = os.path.join(folder, "inputs.npy")
    np.save(inputs, model_inputs(data, "test", len(rows), data_config))
    labels = os.path.join(folder, "labels.npy")
    np.save(labels, data.labels[rows])
    return inputs, labels, len(rows)


def export_model(
    results_dir: str, study: str, label: str, runtime: str, out: str, tolerance: float = 0.1, threads: int | None = None
) -> Exported:
    """Write ``label`` of ``study`` as ``runtime`` ships it into the new folder ``out`` (see the module docstring);
    return what was written.

    Raises:
        ExportError: an unknown study, model or runtime, a runtime the study did not time the model in, an ``out`` that
        exists or cannot be written, or a shipped file whose test accuracy is not within ``tolerance`` points of the
        study's (nothing is written then).
    """
    out = os.path.abspath(out)
    if os.path.exists(out):
        raise ExportError(f"--out {out}: exists; give a new folder (an export never overwrites)")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ExportError(f"--out {out}: its folder {parent} does not exist or cannot be written")
    record, timing, rows = _find(results_dir, study, label, runtime)
    key = record["row"]["config_hash"]
    model = models.load_model(os.path.join(study_dir(results_dir, study), "checkpoints", key, "model.pt")).eval()
    data = load_data(record["cell"]["data"])
    settings = deploy.Int8Settings.from_mapping(timing["int8"][key]) if key in timing["int8"] else deploy.int8_settings(model)
    example = model_inputs(data, "val", 2, model.data_config)
    calibration = model_inputs(data, "train", settings.calibration_images, model.data_config)
    built = deploy.deploy(model, runtime, example, threads=threads, calibration=calibration, int8=settings)
    batch_one = next((r for r in rows if int(r["batch"]) == 1), rows[0])
    study_acc = float(batch_one["acc_mean"])
    work = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        checkpoint = os.path.join(work, "model.pt")
        shutil.copyfile(os.path.join(study_dir(results_dir, study), "checkpoints", key, "model.pt"), checkpoint)
        kind, path, artifact_settings = save_artifact(built, work, "model", checkpoint, "models:load_model")
        if kind != "checkpoint":
            os.remove(checkpoint)
        with tempfile.TemporaryDirectory(prefix="slimbench-check-") as scratch:
            inputs, labels, images = _test_arrays(data, model.data_config, scratch)
            job = {"kind": kind, "path": path, "threads": int(threads or 1), "settings": artifact_settings}
            checked = run_standalone("accuracy", {**job, "inputs": inputs, "labels": labels, "batch": 64})
        if kind in ("onnx", "openvino") and checked["torch_imported"]:
            raise ExportError(f"the {runtime} file needed torch to run: nothing written")
        if abs(checked["acc_mean"] - study_acc) > tolerance:
            raise ExportError(
                f"the exported {runtime} file reaches {checked['acc_mean']:.2f} % on the {images} test images, the study "
                f"measured {study_acc:.2f} % in {runtime} (difference {checked['acc_mean'] - study_acc:+.2f} pt, more than "
                f"{tolerance:g}): nothing written"
            )
        shutil.copyfile(STANDALONE, os.path.join(work, "run_model.py"))
        thresholds = {p["attribute"]: p["threshold_tuned"] for p in record["per_attribute"]}
        with open(os.path.join(work, "thresholds.json"), "w", encoding="utf-8") as handle:
            json.dump(thresholds, handle, indent=1)
        files = sorted(os.listdir(work)) + ["card.md", "card.json"]
        verdict = {
            "acc_mean": checked["acc_mean"],
            "images": images,
            "study_acc_mean": study_acc,
            "torch_imported": checked["torch_imported"],
        }
        model_card = card(record, label, runtime, rows, timing["machine"], model.data_config, files, verdict)
        with open(os.path.join(work, "card.md"), "w", encoding="utf-8") as handle:
            handle.write(card_markdown(model_card))
        with open(os.path.join(work, "card.json"), "w", encoding="utf-8") as handle:
            handle.write(card_json(model_card))
        os.rename(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Exported(out, files, checked["acc_mean"], study_acc)


__all__ = ["ExportError", "Exported", "export_model"]
