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
from bench.study.config import create_cell_model, expand_cells
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
    return cells, data


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
