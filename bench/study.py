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

import functools
import json
import math
import os
import time
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from filelock import Timeout

import deploy
import models
from bench import metrics
from bench.config import DEFAULT_CONFIG, EXECUTORS, StudyConfigError, expand_cells, profile_settings, reference_model
from bench.data import load_data
from bench.environment import environment
from bench.evaluate import evaluate_cell_model, evaluate_majority, model_inputs, pse_mask_record
from bench.files import check_writable, file_lock, remove_stale_partials, write_atomically
from bench.latency import run_timing_phase
from bench.profile import cost_columns
from bench.schema import (MAJORITY, RESULT_COLUMNS, LAYER_COLUMNS, TIMING_FILE, config_hash, group_hash, identity, load_records,
                          make_row, read_record, read_timing, record_path, study_dir, write_tables, write_text_atomic)
from bench.settings import TrainConfig
from bench.train import divergence_reason, resolve_device, seed_everything, train_model
from bench.variants import compress_and_finetune, variant_label
from compress.layers import as_patterns


def create_cell_model(cell: dict, attr_names) -> torch.nn.Module:
    """Return the untrained (or checkpoint-initialised) model of a cell, with one output per attribute of the data.

    Attribute-group (DMTL) models get the data's attribute names beside their ``groups`` kwarg, so their
    heads cover the dataset's attributes in its column order.

    Raises:
        as ``models.create_model`` (unknown model, bad kwargs, checkpoint, input size; a DMTL model on a
        dataset other than CelebA without a ``groups`` mapping).
    """
    kwargs = dict(cell.get("kwargs", {}))
    if "groups" in kwargs:
        kwargs.setdefault("attributes", list(attr_names))
    return models.create_model(cell["model"], num_classes=len(attr_names), pretrained=cell.get("pretrained", False),
                               checkpoint_path=cell.get("checkpoint"), **kwargs)


def compute_record(cell: dict, data, checkpoint_dir: str | None = None, progress=None, layer_timing: dict | None = None,
                   base_checkpoint_dir: str | None = None) -> dict:
    """Compute one cell on ``data`` (the study's, loaded once) and return its record (``row``,
    ``per_attribute``, ``history``, ``reliability``, ``layers``): training, compression, evaluation and
    counted costs. Nothing is locked or written here but the cell's checkpoints (:func:`compute_and_store` does that).

    Latency is not measured here: the study's timing phase times every cell's saved model together
    (``bench.latency``). ``layer_timing`` (``ProfileSettings.layer_timing()``) times the per-layer
    speed-up table of a compressed variant; None leaves its measured columns empty (cells running in parallel).
    ``base_checkpoint_dir``: where a compressed variant's base cell keeps its training state (None: beside
    ``checkpoint_dir``, under the base's hash).

    Raises:
        ValueError: the data changed since the study started; whatever model creation, training or
        compression raise (clear messages, see those).
    """
    if cell.get("data_fingerprint") and data.fingerprint != cell["data_fingerprint"]:
        raise ValueError(f"the data ({data.source}) changed since the study started (fingerprint {data.fingerprint}, "
                         f"expected {cell['data_fingerprint']}); rerun the study")
    shared_columns = {**identity(cell), "dataset": data.name, **data.split_sizes(), "config_hash": config_hash(cell),
                      "group_hash": group_hash(cell), **environment()}
    if cell["model"] == MAJORITY:
        evaluation = evaluate_majority(cell, data)
        row = make_row(RESULT_COLUMNS, {**shared_columns, **evaluation.values, "params": 0, "macs": 0, "threads": ""})
        return {"cell": cell, "row": row, "per_attribute": evaluation.per_attribute, "history": [], "reliability": {},
                "layers": [], **_test_bits(data, evaluation)}

    config = TrainConfig(**cell["train"])
    compressed = None
    with deploy.torch_threads(cell.get("threads")):
        seed_everything(config.seed)  # the seed must also fix the initial weights, drawn here
        model = create_cell_model(cell, data.attr_names)
        # A compressed variant starts from its base cell's trained weights (trained now if missing).
        base_dir = checkpoint_dir
        if checkpoint_dir and cell.get("compression"):
            base_dir = base_checkpoint_dir or os.path.join(os.path.dirname(checkpoint_dir), cell["base_hash"])
        result = train_model(model, data, config, checkpoint_dir=base_dir, progress=progress)
        if cell.get("compression"):
            probe = deploy.LoadProbe(layer_timing.get("threads")) if layer_timing and layer_timing["runtimes"] else None
            per_layer = {**layer_timing, "probe": probe} if layer_timing else {"runtimes": ()}
            compressed = compress_and_finetune(model, data, cell["compression"], cell["finetune"], config, progress, per_layer)
            model = compressed.model
        model = model.cpu().to(memory_format=torch.contiguous_format).eval()
        evaluation = evaluate_cell_model(cell, model, data, deployed=_int8_deployed(model, data))
        if checkpoint_dir:  # the final (trained, or compressed and fine-tuned) model, rebuildable by models.load_model
            checkpoint = models.model_checkpoint(model, config_hash=config_hash(cell))
            write_atomically(os.path.join(checkpoint_dir, "model.pt"), lambda partial: torch.save(checkpoint, partial))
        masks = pse_mask_record(model, data)
        costs = cost_columns(model, model.data_config["input_size"])
    params_m = costs["params"] / 1e6
    majority_val = float(metrics.majority_per_attribute_accuracy(data.labels[data.splits["train"]], data.labels[data.splits["val"]]).mean())
    row = make_row(RESULT_COLUMNS, {
        **shared_columns, **evaluation.values, **costs,
        "compression": variant_label(cell["compression"]) if cell.get("compression") else "",
        "compression_notes": "; ".join(note for report in compressed.reports for note in report.notes) if compressed else "",
        "nonzero_params": int(sum(int(torch.count_nonzero(p)) for p in model.parameters())),
        "acc_mean_nofinetune": compressed.acc_mean_nofinetune if compressed else None,
        "int8_settings": deploy.int8_settings(model).describe() if getattr(model, "quantization", None) else "",
        "finetune_seconds": compressed.finetune_seconds if compressed else None,
        "input_size": list(model.data_config["input_size"]),
        "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
        "ppp": evaluation.values["mA"] / params_m if params_m > 0 else None,
        "train_seconds": result.train_seconds, "best_epoch": result.best_epoch,
        "diverged": "; ".join(r for r in (divergence_reason(result.history, majority_val),
                                          divergence_reason(compressed.history, majority_val) if compressed else "",
                                          evaluation.values.get("diverged", "")) if r),
        "device": str(resolve_device(config.device)),
    })
    history = [{**identity(cell), **h} for h in (compressed.history if compressed else result.history)]
    layers = [make_row(LAYER_COLUMNS, {**identity(cell), **r}) for r in (compressed.layer_rows if compressed else [])]
    return {"cell": cell, "row": row, "per_attribute": evaluation.per_attribute, "history": history,
            "reliability": evaluation.reliability, "layers": layers, "pse_masks": masks, **_test_bits(data, evaluation)}


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
    return {"test_labels": metrics.pack_bits(data.labels[data.splits["test"]]), "test_predictions": metrics.pack_bits(evaluation.predictions)}


class SequentialExecutor:
    """Runs cells one after another in this process. Any object with the same ``map`` works:
    ``map(fn, cells)`` must yield ``fn(cell)`` for every cell, in any order; ``parallel = True``
    says cells run concurrently (each then loads the data itself, and per-layer timing is skipped)."""

    parallel = False

    def map(self, fn: Callable[[dict], tuple], cells: Iterable[dict]) -> Iterator[tuple]:
        for cell in cells:
            yield fn(cell)


def make_executor(config: dict):
    """Return the executor a study config names (``executor``, and ``ray`` settings for Ray).

    Raises:
        ExecutorError: ``executor: ray`` without Ray installed.
        StudyConfigError: an unknown executor name.
    """
    name = config.get("executor") or "sequential"
    if name == "sequential":
        return SequentialExecutor()
    if name == "ray":
        settings = {**DEFAULT_CONFIG["ray"], **(config.get("ray") or {})}
        return RayExecutor(settings["address"], int(settings["cpus_per_cell"] or 1), num_cpus=settings["num_cpus"])
    raise StudyConfigError(f"executor: unknown executor {name!r}; known: {', '.join(EXECUTORS)}")


class ExecutorError(RuntimeError):
    """An executor could not start, or lost cells (the message names them; a rerun resumes)."""


def _run_with_threads(fn, cell: dict, threads: int):
    # A Ray worker process is reused across tasks: pin torch to the CPUs this task was granted.
    torch.set_num_threads(max(1, int(threads)))
    return fn(cell)


class RayExecutor:
    """Runs cells as Ray tasks (https://docs.ray.io): on a local cluster started here when ``address`` is
    None, or on the cluster at ``address`` (``HOST:PORT`` or ``auto``).

    Each task asks for ``cpus_per_cell`` CPUs (the cell's ``threads`` when set) and one GPU when its
    training device is ``cuda`` (or ``auto`` on a cluster that has GPUs). Workers compute
    :func:`compute_and_store`, which writes each record atomically into the results folder, so that folder
    (and the data) must be a path every node sees. A task whose worker dies is retried
    (``max_retries``); a cell that still fails is reported after the others finish.
    """

    parallel = True

    def __init__(self, address: str | None = None, cpus_per_cell: int = 1, max_retries: int = 2, num_cpus: int | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ExecutorError("the ray executor needs Ray: pip install -e \".[ray]\" (or pip install ray)") from None
        self.address, self.cpus_per_cell, self.max_retries, self.num_cpus = address, int(cpus_per_cell), int(max_retries), num_cpus

    def _resources(self, cell: dict, cluster: dict) -> dict:
        cpus = int(cell.get("threads") or self.cpus_per_cell)
        device = str(cell.get("train", {}).get("device", "auto"))
        gpus = 1 if device.startswith("cuda") or (device == "auto" and cluster.get("GPU", 0) > 0) else 0
        return {"num_cpus": cpus, "num_gpus": gpus, "max_retries": self.max_retries}

    def map(self, fn: Callable[[dict], tuple], cells: Iterable[dict]) -> Iterator[tuple]:
        import ray

        cells = list(cells)
        if not cells:
            return
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, num_cpus=self.num_cpus if self.address is None else None,
                         include_dashboard=False, log_to_driver=True, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ExecutorError(f"could not start or join a Ray cluster (address {self.address or 'local'}): {exc}") from None
        cluster = ray.cluster_resources()
        task = ray.remote(_run_with_threads)
        function = ray.put(fn)
        refs = {}
        for cell in cells:
            resources = self._resources(cell, cluster)
            refs[task.options(**resources).remote(function, cell, resources["num_cpus"])] = cell
        failed = []
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            cell = refs.pop(ready[0])
            try:
                yield ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                failed.append(f"{cell['model']} {cell.get('variant', '')} seed {cell['seed']}: {str(exc).splitlines()[0][:200]}")
        if failed:
            raise ExecutorError(f"{len(failed)} cells failed on the Ray cluster ({'; '.join(failed)}); finished cells are saved, "
                                "rerun to resume")


class CellResultError(RuntimeError):
    """A cell finished with metrics that are not numbers; it is not cached (the message names the cell)."""


# Row columns that must be finite numbers before a record is cached.
REQUIRED_METRICS = ("acc_mean", "mA", "f1", "hamming_loss")


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
    bad = [k for k in REQUIRED_METRICS if not _finite(row.get(k))]
    if bad:
        raise CellResultError(f"cell {cell['model']} {cell.get('variant', '')} seed {cell['seed']}: metrics {bad} are "
                              f"{[row.get(k) for k in bad]}; the record is not saved, so a rerun computes it again")


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
        key = json.dumps([cell["model"], cell.get("kwargs"), cell.get("checkpoint"), cell.get("pretrained")], sort_keys=True, default=str)
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
                raise StudyConfigError(f"compressions of {cell['model']} [{cell['variant']}]: {step['method']} {option}={pattern!r} "
                                       f"matches no conv or linear layer; close names: {', '.join(close)}")


def base_cell_of(cell: dict) -> dict:
    """Return the study and model a compressed variant's base cell lives in (``base_study``: a search's trials keep their
    records in a study of their own, their base in the searched study), as a cell-like mapping for :func:`record_path`."""
    return {"study": cell.get("base_study") or cell["study"], "model": cell["model"]}


def compute_and_store(cell: dict, results_dir: str, data=None, force: bool = False, started: float = 0.0,
                      layer_timing: dict | None = None, progress=None,
                      on_event: Callable[[str, dict], None] | None = None) -> tuple[str, dict, dict | None]:
    """Take a cell's lock, compute it (:func:`compute_record`) and write its record; return ``('done', cell, record)``,
    or ``('skip', cell, None)`` when a valid record exists (written by another run while this one waited for the lock;
    with ``force``, one written after ``started``).

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
        if cell.get("base_hash"):
            # the base cell may be training in another run: its weights are this cell's start
            with file_lock(record_path(results_dir, base_cell_of(cell), cell["base_hash"])):
                pass
        on_event("start", cell)
        checkpoint_dir = os.path.join(study_dir(results_dir, cell["study"]), "checkpoints", config_hash(cell))
        if force and os.path.isdir(checkpoint_dir):
            for name in ("last.pt", "best.pt"):
                if os.path.isfile(os.path.join(checkpoint_dir, name)):
                    os.unlink(os.path.join(checkpoint_dir, name))
        data = data if data is not None else load_data(cell["data"], progress)
        base_checkpoint_dir = (os.path.join(study_dir(results_dir, base_cell_of(cell)["study"]), "checkpoints", cell["base_hash"])
                               if cell.get("base_hash") else None)
        record = compute_record(cell, data, checkpoint_dir, progress, layer_timing, base_checkpoint_dir)
        check_row(cell, record["row"])
        _write_record(path, record)
    finally:
        lock.release()
    write_tables(results_dir, cell["study"])
    return "done", cell, record


def run_study(config: dict, results_dir: str = "results", force: bool = False, executor=None, progress=None,
              on_event: Callable[[str, dict], None] | None = None, retime: bool = False) -> list[dict]:
    """Run every cell of ``config`` that has no valid record yet, then the timing phase; return all result rows of the study.

    ``on_event(kind, cell)`` is told ``'skip'`` (cached), ``'start'`` and ``'done'`` for each cell,
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


def compute_cells(config: dict, results_dir: str = "results", force: bool = False, executor=None, progress=None,
                  on_event: Callable[[str, dict], None] | None = None, cells: list[dict] | None = None,
                  data=None) -> tuple[list[dict], object, int]:
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
    profile = profile_settings(config)
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
    compute = functools.partial(compute_and_store, results_dir=results_dir, data=None if parallel else data, force=force,
                                started=started, layer_timing=None if parallel or not profile.latency else profile.layer_timing(),
                                progress=None if parallel else progress, on_event=None if parallel else on_event)
    computed = 0
    for kind, cell, record in executor.map(compute, pending):
        if kind == "done":
            computed += 1
            on_event("done", {**cell, "row": record["row"]})
        else:
            on_event("skip", cell)
    return cells, data, computed


def finish_study(config: dict, results_dir: str, cells: list[dict], retime: bool = False,
                 on_event: Callable[[str, dict], None] | None = None) -> list[dict]:
    """Time the study's ``cells`` together (when the set of timed cells changed since the last timing phase, or with
    ``retime``), rebuild its tables and return the result rows of ``cells``.

    Raises:
        FileNotFoundError: a cell's saved model is missing; TimingPhaseError: the timing phase failed.
    """
    on_event = on_event or (lambda kind, cell: None)
    profile = profile_settings(config)
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


__all__ = ["CellResultError", "ExecutorError", "RayExecutor", "SequentialExecutor", "check_row", "compute_and_store", "compute_cells",
           "compute_record", "finish_study", "preflight", "run_study"]
