"""The study runner: every cell of a config (model x variant x seed) computed once, cached by its hash,
then every model of the study timed together in one timing phase.

Layout under ``<results_dir>/<study>/``:

* ``cells/<model>-<hash>.json``: one record per finished cell (row, per-attribute rows, history,
  reliability data, full cell config, environment), written atomically as soon as it finishes;
* ``checkpoints/<hash>/{last,best}.pt``: training state, so a killed cell resumes mid-training;
  ``checkpoints/<hash>/model.pt``: the cell's final model (compressed variants too), which
  ``models.load_model`` rebuilds from the file alone and the timing phase times;
* ``timing.json``: the study's timing phase (``bench.latency``): every latency, speed-up and ratio;
* ``study.json``: what the report needs beyond the records (the reference model);
* ``results.csv``, ``per_attribute.csv``, ``history.csv``, ``layers.csv``, ``latency.csv``: rebuilt from the
  records and the timing phase (``bench.schema.write_tables``).

Rerunning a study skips every cell whose record exists (``force=True`` recomputes), and retimes only
when the set of cells changed (or ``retime=True``). The config side (defaults, validation, cells) is
``bench.config``; evaluation ``bench.evaluate``; costs ``bench.profile``; timing ``bench.latency``.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import shutil
import time
from typing import Callable

import numpy as np
import torch
from filelock import Timeout

import deploy
import models
from bench import metrics
from bench.data.loading import load_data
from bench.data.synthetic import default_cache_dir
from bench.settings import FinetuneSettings, TrainSettings
from bench.store.environment import environment
from bench.store.files import file_lock, write_atomically, write_text_atomic
from bench.store.records import (
    DOMINANCE_FILE,
    TIMING_FILE,
    load_records,
    read_record,
    read_timing,
    record_path,
    study_dir,
    twin_record_path,
    write_csv_atomic,
    write_tables,
)
from bench.store.schema import (
    DOMINANCE_COLUMNS,
    LAYER_COLUMNS,
    MAJORITY,
    RESULT_COLUMNS,
    config_hash,
    group_hash,
    identity,
    make_row,
)
from bench.study.config import create_cell_model, reference_model, timing_settings
from bench.study.costs import cost_columns
from bench.study.dominance import dominance_rows
from bench.study.executors import ExecutorError, RayExecutor, SequentialExecutor
from bench.study.preflight import preflight
from bench.study.timing_phase import run_timing_phase
from bench.study.variants import variant_label
from bench.training.evaluate import (
    evaluate_cell_model,
    evaluate_majority,
    evaluate_validation,
    model_inputs,
    pse_mask_record,
)
from bench.training.pipeline import compress_and_finetune
from bench.training.setups import training_setup
from bench.training.teacher import SoftTargets, soft_targets
from bench.training.train import divergence_reason, resolve_device, seed_everything, train_model


def _majority_record(cell: dict, data, shared_columns: dict) -> dict:
    evaluation = evaluate_majority(cell, data)
    row = make_row(RESULT_COLUMNS, {**shared_columns, **evaluation.values, "params": 0, "macs": 0, "threads": ""})
    return {
        "cell": cell,
        "row": row,
        "per_attribute": evaluation.per_attribute,
        "history": [],
        "reliability": {},
        "layers": [],
        **_test_bits(data, evaluation),
    }


def _teacher_targets(cell: dict, data, model, base_dir: str | None, config: TrainSettings) -> SoftTargets | None:
    """Return the outputs a variant's fine-tune distils from (None without distillation): the trained base's (``model``),
    or those of ``finetune.teacher``'s cell (``teacher_hash``), computed once per training image and flip and cached
    beside that cell's checkpoint, so every variant of the study shares them."""
    finetune = FinetuneSettings.from_mapping(cell["finetune"])
    if not finetune.distils:
        return None
    teacher, teacher_dir = model, base_dir
    if cell.get("teacher_hash"):
        teacher_dir = os.path.join(os.path.dirname(base_dir or "."), cell["teacher_hash"])
        path = os.path.join(teacher_dir, "model.pt")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"finetune.teacher {finetune.teacher!r}: its cell's model ({path}) is not trained yet; rerun the study"
            )
        teacher = models.load_model(path)
    cache = os.path.join(teacher_dir, "teacher_logits.npz") if teacher_dir else None
    teacher = copy.deepcopy(teacher)
    setup = training_setup(teacher, config.batch_size, config.channels_last, config.precision, False, "cpu", default_cache_dir())
    return soft_targets(teacher, data, config.eval_batch_size, cache, setup=setup)


def _trained_model(cell: dict, data, config: TrainSettings, checkpoint_dir, base_checkpoint_dir, progress, layer_timing):
    """Return ``(final model, TrainResult of the base, CompressionResult or None)``: the cell's model trained (a variant's
    base, from its base cell's checkpoints) and, for a variant, compressed and fine-tuned."""
    seed_everything(config.seed)  # the seed must also fix the initial weights, drawn here
    model = create_cell_model(cell, data.attr_names)
    # A compressed variant starts from its base cell's trained weights (trained now if missing).
    base_dir = checkpoint_dir
    if checkpoint_dir and cell.get("compression"):
        base_dir = base_checkpoint_dir or os.path.join(os.path.dirname(checkpoint_dir), cell["base_hash"])
    result = train_model(model, data, config, checkpoint_dir=base_dir, progress=progress)
    compressed = None
    if cell.get("compression"):
        teacher = _teacher_targets(cell, data, model, base_dir, config)
        timed = layer_timing and layer_timing["runtimes"]
        per_layer = {**layer_timing, "probe": deploy.LoadProbe(layer_timing["threads"])} if timed else None
        compressed = compress_and_finetune(
            model,
            data,
            cell["compression"],
            cell["finetune"],
            config,
            progress,
            per_layer,
            teacher,
            test_split=not cell.get("validation_only"),
        )
        model = compressed.model
    return model.cpu().to(memory_format=torch.contiguous_format).eval(), result, compressed


def _setups_text(train_setup: str, finetune_setup: str) -> str:
    """Return the ``train_setup`` cell: the base's training set-up, and the fine-tune's where it differed."""
    return f"{train_setup}; fine-tune: {finetune_setup}" if finetune_setup and finetune_setup != train_setup else train_setup


def _result_row(
    cell: dict, data, config: TrainSettings, model, result, compressed, evaluation, costs: dict, shared_columns: dict
) -> dict:
    params_m = costs["params"] / 1e6
    train, val = data.labels[data.splits["train"]], data.labels[data.splits["val"]]
    majority_val = float(metrics.majority_per_attribute_accuracy(train, val).mean())
    diverged = (
        divergence_reason(result.history, majority_val),
        divergence_reason(compressed.history, majority_val) if compressed else "",
        evaluation.values.get("diverged", ""),
    )
    return make_row(
        RESULT_COLUMNS,
        {
            **shared_columns,
            **evaluation.values,
            **costs,
            "compression": variant_label(cell["compression"]) if cell.get("compression") else "",
            "compression_notes": "; ".join(note for report in compressed.reports for note in report.notes) if compressed else "",
            "compression_warnings": "; ".join(w for report in compressed.reports for w in report.warnings) if compressed else "",
            "nonzero_params": int(sum(int(torch.count_nonzero(p)) for p in model.parameters())),
            "acc_mean_nofinetune": compressed.acc_mean_nofinetune if compressed else None,
            "int8_settings": deploy.int8_settings(model).describe() if getattr(model, "quantization", None) else "",
            "finetune_seconds": compressed.finetune_seconds if compressed else None,
            "input_size": list(model.data_config["input_size"]),
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "ppp": evaluation.values["mA"] / params_m if params_m > 0 and "mA" in evaluation.values else None,
            "train_setup": _setups_text(result.setup, compressed.finetune_setup if compressed else ""),
            "train_seconds": result.train_seconds,
            "best_epoch": result.best_epoch,
            "diverged": "; ".join(r for r in diverged if r),
            "device": str(resolve_device(config.device)),
        },
    )


def compute_record(
    cell: dict,
    data,
    checkpoint_dir: str | None = None,
    progress=None,
    layer_timing: dict | None = None,
    base_checkpoint_dir: str | None = None,
) -> dict:
    """Compute one cell on ``data`` (the study's, loaded once) and return its record (``row``,
    ``per_attribute``, ``history``, ``reliability``, ``layers``): training, compression, evaluation and
    counted costs. Nothing is locked or written here but the cell's checkpoints (:func:`compute_and_store` does that).

    Latency is not measured here: the study's timing phase times every cell's saved model together
    (``bench.study.timing_phase``). ``layer_timing`` (``TimingSettings.layer_timing()``) times the per-layer
    speed-up table of a compressed variant; None leaves its measured columns empty (cells running in parallel).
    ``base_checkpoint_dir``: where a compressed variant's base cell keeps its training state (None: beside
    ``checkpoint_dir``, under the base's hash).

    Raises:
        ValueError: the data changed since the study started; whatever model creation, training or
        compression raise (clear messages, see those).
    """
    if cell.get("data_fingerprint") and data.fingerprint != cell["data_fingerprint"]:
        raise ValueError(
            f"the data ({data.source}) changed since the study started (fingerprint {data.fingerprint}, "
            f"expected {cell['data_fingerprint']}); rerun the study"
        )
    shared_columns = {
        **identity(cell),
        "dataset": data.name,
        **data.split_sizes(),
        "config_hash": config_hash(cell),
        "group_hash": group_hash(cell),
        **environment(),
    }
    if cell["model"] == MAJORITY:
        return _majority_record(cell, data, shared_columns)
    config = TrainSettings(**cell["train"])
    with deploy.torch_threads(cell.get("threads")):
        model, result, compressed = _trained_model(
            cell, data, config, checkpoint_dir, base_checkpoint_dir, progress, layer_timing
        )
        int8 = _int8_deployed(model, data)  # a quantized model's accuracy and size are its int8 form's, whatever is timed
        # the validation logits training computed last for the model it returns (its best epoch's), not computed again
        trained_logits = compressed.val_logits if compressed else result.best_val_logits
        if cell.get("validation_only"):  # a search's screened trial: the test split stays unseen
            evaluation = evaluate_validation(cell, model, data, deployed=int8, val_logits=trained_logits)
        else:
            evaluation = evaluate_cell_model(
                cell,
                model,
                data,
                deployed=int8,
                val_logits=trained_logits,
                test_logits=compressed.test_logits if compressed else None,
            )
        if checkpoint_dir:  # the final (trained, or compressed and fine-tuned) model, rebuildable by models.load_model
            checkpoint = models.model_checkpoint(model, config_hash=config_hash(cell))
            write_atomically(os.path.join(checkpoint_dir, "model.pt"), lambda partial: torch.save(checkpoint, partial))
        masks = {} if cell.get("validation_only") else pse_mask_record(model, data)  # drawn on test images
        costs = cost_columns(model, model.data_config["input_size"], shipped=int8.artifact[1] if int8 else None)
    row = _result_row(cell, data, config, model, result, compressed, evaluation, costs, shared_columns)
    history = [{**identity(cell), **h} for h in (compressed.history if compressed else result.history)]
    replaced = compressed.layer_rows if compressed else []
    layers = [make_row(LAYER_COLUMNS, {**identity(cell), "kind": "replaced", **r}) for r in replaced]
    return {
        "cell": cell,
        "row": row,
        "per_attribute": evaluation.per_attribute,
        "history": history,
        "reliability": evaluation.reliability,
        "layers": layers,
        "pse_masks": masks,
        **(_test_bits(data, evaluation) if evaluation.predictions is not None else {}),
    }


def _int8_deployed(model, data):
    """Return a quantized model (one the ``quantize`` step set up) in ONNX Runtime int8, the runtime its accuracy is
    measured in (the timing phase builds it alike), or None for a float model."""
    if not getattr(model, "quantization", None):
        return None
    settings = deploy.int8_settings(model)
    calibration = model_inputs(data, "train", settings.calibration_images, model.data_config)
    return deploy.deploy(model, "onnxruntime_int8", model_inputs(data, "val", 2, model.data_config), calibration=calibration)


def _test_bits(data, evaluation) -> dict:
    """Return the test labels and 0/1 predictions, packed, for paired comparisons at report time."""
    return {
        "test_labels": metrics.pack_bits(data.labels[data.splits["test"]]),
        "test_predictions": metrics.pack_bits(evaluation.predictions),
    }


class CellResultError(RuntimeError):
    """A cell finished with metrics that are not numbers; it is not cached (the message names the cell)."""


# Row columns that must be finite numbers before a record is cached (a search's screened trial, ``validation_only``: the
# validation accuracy it is ranked by).
REQUIRED_METRICS = ("acc_mean", "mA", "f1", "hamming_loss")
REQUIRED_VALIDATION_METRICS = ("acc_mean_val",)


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def check_row(cell: dict, row: dict) -> None:
    """Check that a finished cell's headline metrics are finite numbers.

    Raises:
        CellResultError: a metric is NaN, infinite or missing (named, with the cell).
    """
    required = REQUIRED_VALIDATION_METRICS if cell.get("validation_only") else REQUIRED_METRICS
    bad = [k for k in required if not _finite(row.get(k))]
    if bad:
        raise CellResultError(
            f"cell {cell['model']} {cell.get('variant', '')} seed {cell['seed']}: metrics {bad} are "
            f"{[row.get(k) for k in bad]}; the record is not saved, so a rerun computes it again"
        )


def base_cell_of(cell: dict) -> dict:
    """Return the study and model a compressed variant's base cell lives in (``base_study``: a search's trials keep their
    records in a study of their own, their base in the searched study), as a cell-like mapping for :func:`record_path`."""
    return {"study": cell.get("base_study") or cell["study"], "model": cell["model"]}


def _copy_checkpoints(source: str, target: str, cell: dict) -> None:
    """Copy a cell's checkpoint folder ``source`` (training state, final model, teacher outputs) to ``target``, each file
    atomically; the final model's file names ``cell``'s hash as a checkpoint written here would."""
    for name in sorted(os.listdir(source)) if os.path.isdir(source) else []:
        path = os.path.join(source, name)
        if not os.path.isfile(path) or name.endswith(".partial"):
            continue
        if name == "model.pt":
            checkpoint = {**torch.load(path, map_location="cpu", weights_only=True), "config_hash": config_hash(cell)}
            write_atomically(os.path.join(target, name), lambda partial, c=checkpoint: torch.save(c, partial))
        else:
            write_atomically(os.path.join(target, name), lambda partial, p=path: shutil.copyfile(p, partial))


def adopt_twin(results_dir: str, cell: dict) -> dict | None:
    """Return ``cell``'s record taken from its twin in another study (``bench.store.records.twin_record_path``: the same
    cell in all but its study, e.g. the default study's Slim-Net in the search's config), with the twin's checkpoints copied
    to this study; its rows name this study and cell, ``reused_from`` the study that computed it. None when there is no
    valid twin (or its final model is missing).

    Raises:
        OSError: a checkpoint file cannot be read or written.
    """
    path = twin_record_path(results_dir, cell)
    twin = read_record(path) if path else None
    if twin is None:
        return None
    source = os.path.join(study_dir(results_dir, twin["cell"]["study"]), "checkpoints", twin["row"]["config_hash"])
    if cell["model"] != MAJORITY and not os.path.isfile(os.path.join(source, "model.pt")):
        return None
    _copy_checkpoints(source, os.path.join(study_dir(results_dir, cell["study"]), "checkpoints", config_hash(cell)), cell)
    ours = identity(cell)
    return {
        **twin,
        "cell": cell,
        "row": {**twin["row"], **ours, "group_hash": group_hash(cell)},
        **{key: [{**row, **ours} for row in twin.get(key, [])] for key in ("per_attribute", "history", "layers")},
        "reused_from": twin.get("reused_from") or twin["cell"]["study"],
    }


def compute_and_store(
    cell: dict,
    results_dir: str,
    data=None,
    force: bool = False,
    started: float = 0.0,
    layer_timing: dict | None = None,
    progress=None,
    on_event: Callable[[str, dict], None] | None = None,
) -> tuple[str, dict, dict | None]:
    """Take a cell's lock, compute it (:func:`compute_record`) and write its record; return ``('done', cell, record)``,
    ``('reused', cell, record)`` when another study of ``results_dir`` had finished the same cell (:func:`adopt_twin`; not
    with ``force``), or ``('skip', cell, None)`` when a valid record exists (written by another run while this one waited
    for the lock; with ``force``, one written after ``started``).

    The function executors run (in this process, or as a Ray task on any machine that sees
    ``results_dir``): the record is written atomically by whoever computes the cell, so a lost driver
    or worker loses at most the cells in flight. ``data`` is the study's loaded data (None: loaded
    here, as a Ray task must). ``on_event`` (local runs only) hears ``'wait'`` and ``'start'``.

    Raises:
        whatever :func:`compute_record` raises; CellResultError for metrics that are not numbers.
    """
    on_event = on_event or (lambda kind, cell: None)
    path = record_path(results_dir, cell)
    lock = file_lock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        on_event("wait", cell)  # another run computes it: wait for its record rather than compute it twice
        lock = file_lock(path)
        lock.acquire()
    try:
        if read_record(path) is not None and (not force or os.path.getmtime(path) >= started):
            return "skip", cell, None
        record = None if force else adopt_twin(results_dir, cell)
        if record is not None:
            kind = "reused"
            _write_record(path, record)
        else:
            kind = "done"
            record = _compute_locked(cell, results_dir, data, force, layer_timing, progress, on_event)
    finally:
        lock.release()
    write_tables(results_dir, cell["study"])
    return kind, cell, record


def _compute_locked(cell: dict, results_dir: str, data, force: bool, layer_timing, progress, on_event) -> dict:
    """Compute a cell whose lock this run holds (its base and teacher cells finished first) and write its record; return
    the record."""
    path = record_path(results_dir, cell)
    if cell.get("base_hash"):
        # the base cell may be training in another run: its weights are this cell's start
        with file_lock(record_path(results_dir, base_cell_of(cell), cell["base_hash"])):
            pass
    if cell.get("teacher_hash"):  # so may the cell of the model its fine-tune distils from
        with file_lock(
            record_path(results_dir, {"study": cell["study"], "model": cell["finetune"]["teacher"]}, cell["teacher_hash"])
        ):
            pass
    on_event("start", cell)
    checkpoint_dir = os.path.join(study_dir(results_dir, cell["study"]), "checkpoints", config_hash(cell))
    if force and os.path.isdir(checkpoint_dir):
        for name in ("last.pt", "best.pt"):
            if os.path.isfile(os.path.join(checkpoint_dir, name)):
                os.unlink(os.path.join(checkpoint_dir, name))
    data = data if data is not None else load_data(cell["data"], progress)
    base_checkpoint_dir = (
        os.path.join(study_dir(results_dir, base_cell_of(cell)["study"]), "checkpoints", cell["base_hash"])
        if cell.get("base_hash")
        else None
    )
    record = compute_record(cell, data, checkpoint_dir, progress, layer_timing, base_checkpoint_dir)
    check_row(cell, record["row"])
    _write_record(path, record)
    return record


def run_study(
    config: dict,
    results_dir: str = "results",
    force: bool = False,
    executor=None,
    progress=None,
    on_event: Callable[[str, dict], None] | None = None,
    retime: bool = False,
) -> list[dict]:
    """Run every cell of ``config`` that has no valid record yet, then the timing phase; return all result rows of the study.

    ``on_event(kind, cell)`` is told ``'study'`` once the pre-flight passed (``{study, cells, data, images, warnings}``:
    the data's attribute warnings), then
    ``'skip'`` (cached), ``'start'`` and ``'done'`` for each cell,
    ``'wait'`` when another run holds the cell; ``on_event('timing', {...})`` before the timing phase
    (``cells``: how many models) and ``on_event('timed', timing)`` after it. Records are written as
    soon as a cell finishes and the CSV tables rebuilt, so killing the run loses at most the cells in
    progress (a killed cell resumes from its last epoch). A corrupt record is moved to
    ``cells/quarantine/`` and its cell recomputed. Several runs of one study (processes or machines
    sharing the folder) split the cells between them: each cell is computed under a file lock by one
    of them, and the others skip it, so no cell is computed twice.

    ``executor`` runs the cells (:class:`SequentialExecutor` by default; :class:`RayExecutor` on a Ray
    cluster). Whatever the executor, no cell times latency: after the last cell, every model of the
    study is timed together in one fresh process (``bench.latency.run_timing_phase``), so every
    latency and ratio of the study comes from the same blocks. That phase runs again only when the
    study's set of cells changed since it last ran, or with ``retime`` (or ``force``).

    Raises:
        as :func:`preflight`, before any cell runs; then whatever a cell raises (see :func:`compute_record`),
        CellResultError for a cell whose metrics are not numbers, the executor's error for cells it lost,
        and what the timing phase raises.
    """
    cells, data, computed = compute_cells(config, results_dir, force, executor, progress, on_event)
    return finish_study(config, results_dir, cells, retime=retime or (force and computed > 0), on_event=on_event)


def compute_cells(
    config: dict,
    results_dir: str = "results",
    force: bool = False,
    executor=None,
    progress=None,
    on_event: Callable[[str, dict], None] | None = None,
    cells: list[dict] | None = None,
    data=None,
) -> tuple[list[dict], object, int]:
    """Compute every cell of ``config`` (or the given ``cells``, with the study's ``data`` already loaded) that has no
    valid record yet; return ``(cells, data, number computed)``. No timing: :func:`finish_study` times the study.

    Raises:
        as :func:`run_study`, but for the timing phase.
    """
    executor = executor or SequentialExecutor()
    parallel = bool(getattr(executor, "parallel", False))
    on_event = on_event or (lambda kind, cell: None)
    if cells is None:
        cells, data = preflight(config, results_dir, progress)
        on_event(
            "study",
            {
                "study": config["study"],
                "cells": len(cells),
                "data": data.name,
                "images": len(data.labels),
                "warnings": data.attribute_warnings(),
            },
        )
    profile = timing_settings(config)
    pending = []
    for cell in cells:
        if not force and read_record(record_path(results_dir, cell)) is not None:
            on_event("skip", cell)
        else:
            pending.append(cell)
    started = time.time()
    if parallel:
        for cell in pending:
            on_event("start", cell)
    compute = functools.partial(
        compute_and_store,
        results_dir=results_dir,
        data=None if parallel else data,
        force=force,
        started=started,
        layer_timing=None if parallel or not profile.latency else profile.layer_timing(),
        progress=None if parallel else progress,
        on_event=None if parallel else on_event,
    )
    computed = 0
    for kind, cell, record in executor.map(compute, pending):
        if kind == "done":
            computed += 1
            on_event("done", {**cell, "row": record["row"]})
        elif kind == "reused":
            on_event("reused", {**cell, "reused_from": record["reused_from"]})
        else:
            on_event("skip", cell)
    return cells, data, computed


def finish_study(
    config: dict, results_dir: str, cells: list[dict], retime: bool = False, on_event: Callable[[str, dict], None] | None = None
) -> list[dict]:
    """Time the study's ``cells`` together (when the set of timed cells changed since the last timing phase, or with
    ``retime``), rebuild its tables, write whether each compressed model dominates each zoo model (``dominance.csv``,
    ``bench.study.dominance``) and return the result rows of ``cells``.

    Raises:
        FileNotFoundError: a cell's saved model is missing; TimingPhaseError: the timing phase failed.
    """
    on_event = on_event or (lambda kind, cell: None)
    profile = timing_settings(config)
    wanted = {config_hash(c) for c in cells}
    folder = study_dir(results_dir, config["study"])
    write_text_atomic(os.path.join(folder, "study.json"), json.dumps({"reference_model": reference_model(config)}, indent=1))
    if profile.latency:
        records = [r for r in load_records(results_dir, config["study"]) if r["row"]["config_hash"] in wanted]
        timed = {r["row"]["config_hash"] for r in records if r["cell"]["model"] != MAJORITY}
        with file_lock(os.path.join(folder, TIMING_FILE)):
            timing = read_timing(results_dir, config["study"])
            if timed and (retime or timing is None or set(timing["cells"]) != timed):
                on_event("timing", {"cells": len(timed)})
                timing = run_timing_phase(results_dir, config["study"], records, config["data"], profile, reference_model(config))
                on_event("timed", timing)
    records = write_tables(results_dir, config["study"])  # from every valid record, whoever wrote it
    if profile.latency:
        write_csv_atomic(
            os.path.join(folder, DOMINANCE_FILE),
            DOMINANCE_COLUMNS,
            dominance_rows(load_records(results_dir, config["study"]), read_timing(results_dir, config["study"])),
        )
    return [r["row"] for r in records if r["row"]["config_hash"] in wanted]


def _write_record(path: str, record: dict) -> None:
    write_text_atomic(path, json.dumps(record, indent=1, default=_json_default))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


__all__ = [
    "CellResultError",
    "ExecutorError",
    "RayExecutor",
    "SequentialExecutor",
    "check_row",
    "compute_and_store",
    "compute_cells",
    "compute_record",
    "finish_study",
    "preflight",
    "run_study",
]
