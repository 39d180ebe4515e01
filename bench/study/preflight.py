"""What a study checks before its first cell: the config, the results folder, the data and every model entry."""

from __future__ import annotations

import json
import os

import torch

from bench.data.loading import load_data
from bench.settings import StudyConfigError
from bench.store.files import check_writable, remove_stale_partials
from bench.store.records import study_dir
from bench.store.schema import MAJORITY
from bench.study.config import create_cell_model, expand_cells, timing_settings
from compress.layers import as_patterns


def preflight(config: dict, results_dir: str, progress=None) -> tuple[list[dict], object]:
    """Check everything a study can check before its first cell; return its cells (with the data's
    fingerprint in each) and the loaded data.

    Checks, in order: the config (keys and values), that the results folder is writable, the data
    (loaded, generated or decoded once; every split non-empty), and every model entry (created once,
    so an unknown checkpoint or an input smaller than a model accepts fails now, not after hours).
    Removes partial files left by killed runs.

    Raises:
        StudyConfigError, PermissionError, FileNotFoundError, EmptySplitError, CelebAFormatError,
        ImageDecodeError, ValueError (bad model settings or checkpoint).
    """
    expand_cells(config)  # the config alone, before touching the disk
    folder = study_dir(results_dir, config["study"])
    check_writable(folder)
    checkpoints = os.path.join(folder, "checkpoints")
    cell_checkpoints = [os.path.join(checkpoints, n) for n in os.listdir(checkpoints)] if os.path.isdir(checkpoints) else []
    for sub in (folder, os.path.join(folder, "cells"), *cell_checkpoints):
        remove_stale_partials(sub)
    data = load_data(config["data"], progress)
    data.check_splits()
    cells = expand_cells(config, data.fingerprint)
    created = {}
    for cell in cells:
        if cell["model"] == MAJORITY:
            continue
        key = json.dumps(
            [cell["model"], cell.get("kwargs"), cell.get("checkpoint"), cell.get("pretrained")], sort_keys=True, default=str
        )
        if key not in created:
            try:
                created[key] = create_cell_model(cell, data.attr_names)
            except ValueError as exc:
                raise StudyConfigError(f"models: {exc}") from None
        for step in cell.get("compression") or []:
            check_step_patterns(created[key], step, cell)
    check_calibration(config, cells, len(data.splits["train"]))
    check_threads(config)
    return cells, data


def check_calibration(config: dict, cells: list[dict], train_images: int) -> None:
    """Check that every int8 calibration the study will run has its images: each quantize step's, and the timing
    phase's int8 of the float models (``timing.int8``) when an int8 runtime is timed.

    Raises:
        StudyConfigError: more calibration images asked for than the training split holds (the setting named).
    """
    import deploy
    from compress.options import QUANTIZE_OPTIONS, resolve_options

    for cell in cells:
        for step in cell.get("compression") or []:
            if step["method"] != "quantize":
                continue
            options = {k: v for k, v in step.items() if k in QUANTIZE_OPTIONS}
            wanted = resolve_options("quantize", QUANTIZE_OPTIONS, options)["calibration_images"]
            if wanted > train_images:
                raise StudyConfigError(
                    f"compressions of {cell['model']} [{cell['variant']}]: quantize calibration_images={wanted} but the "
                    f"training split holds {train_images} images; set calibration_images <= {train_images}"
                )
    timing = timing_settings(config)
    if timing.latency and any(not deploy.RUNTIMES[r].exact for r in deploy.resolve_runtimes(timing.runtimes)):
        wanted = timing.int8_settings().calibration_images
        if wanted > train_images:
            raise StudyConfigError(
                f"timing.int8: calibration_images={wanted} (int8 runtimes of the float models) but the training split "
                f"holds {train_images} images; set timing.int8.calibration_images <= {train_images}"
            )


def available_cpus() -> int:
    """Return the CPUs this process may run on (its affinity; the machine's count where affinity is unknown)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_threads(config: dict) -> None:
    """Check that the thread counts this machine runs (training in this process, the timing phase) are at most its CPUs:
    oversubscribed threads wait on each other (``--threads 999`` on 2 cores trained 100x slower).

    Raises:
        StudyConfigError: a thread count above the CPUs (the setting and the CPU count named).
    """
    cpus = available_cpus()
    local = config["executor"] == "sequential"  # Ray cells run on the cluster's machines, with their own CPUs
    for name, value in (("threads", config["threads"] if local else None), ("timing.threads", timing_settings(config).threads)):
        if value is not None and int(value) > cpus:
            raise StudyConfigError(
                f"{name}: {value} threads on {cpus} CPUs would wait on each other (training ran 100x slower); "
                f"set at most {cpus} (or leave it unset: all of them)"
            )


def check_step_patterns(model, step: dict, cell: dict) -> None:
    """Check that a compression step's ``layers`` / ``exclude`` patterns each match a conv or linear layer of ``model``,
    or a factor an earlier step can create under one (``<layer>.<i>``).

    Raises:
        StudyConfigError: a pattern matches nothing (the pattern, the variant and close layer names named).
    """
    import difflib
    import fnmatch

    layers = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    reachable = layers + [f"{n}.{i}" for n in layers for i in range(3)]
    for option in ("layers", "exclude"):
        for pattern in as_patterns(step.get(option)):
            if not any(fnmatch.fnmatch(name, pattern) for name in reachable):
                close = difflib.get_close_matches(pattern.replace("*", ""), layers, n=3, cutoff=0.3) or layers[:3]
                raise StudyConfigError(
                    f"compressions of {cell['model']} [{cell['variant']}]: {step['method']} {option}={pattern!r} "
                    f"matches no conv or linear layer; close names: {', '.join(close)}"
                )
