"""The study runner: every cell of a config (model x variant x seed) computed once, cached by its hash.

Layout under ``<results_dir>/<study>/``:

* ``cells/<model>-<hash>.json``: one record per finished cell (row, per-attribute rows, history,
  reliability data, full cell config, environment), written atomically as soon as it finishes;
* ``checkpoints/<hash>/{last,best}.pt``: training state, so a killed cell resumes mid-training;
  ``checkpoints/<hash>/model.pt``: the cell's final model (compressed variants too), which
  ``models.load_model`` rebuilds from the file alone;
* ``results.csv``, ``per_attribute.csv``, ``history.csv``, ``layers.csv``: rebuilt from the records
  after each cell (``bench.schema.write_tables``).

Rerunning a study skips every cell whose record exists (``force=True`` recomputes). The config
side (defaults, validation, cells) is ``bench.config``; evaluation ``bench.evaluate``; costs
``bench.profile``.
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
from bench.config import DEFAULT_CONFIG, EXECUTORS, StudyConfigError, expand_cells
from bench.data import load_data
from bench.files import check_writable, file_lock, remove_stale_partials
from bench.environment import environment
from bench.evaluate import evaluate_cell_model, evaluate_majority, model_inputs, pse_mask_record, runtime_accuracy
from bench.profile import profile_model
from bench.schema import (LATENCY_COLUMNS, LAYER_COLUMNS, MAJORITY, RESULT_COLUMNS, config_hash, group_hash, identity, load_records,
                          make_row, read_record, record_path, study_dir, write_tables, write_text_atomic)
from bench.train import TrainConfig, divergence_reason, resolve_device, seed_everything, torch_threads, train_model
from bench.variants import compress_and_finetune, variant_label


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


def _latency_rows(cell: dict, rows: list[dict]) -> list[dict]:
    return [make_row(LATENCY_COLUMNS, {**identity(cell), **row}) for row in rows]


def profile_cell(cell: dict, model, base_model, data, machine: dict, probe, device: str, acc_mean: float | None,
                 latency: bool = True) -> tuple[dict, list[dict], dict]:
    """Return a cell model's cost: ``(row columns, latency rows, runtimes skipped with reasons)``.

    Row columns: parameters, MACs, disk bytes, the fastest runtime's latency at batch 1 and N (timed
    interleaved with ``base_model`` for speed-ups), int8 accuracy on the test split and its delta
    from ``acc_mean``, and the threads timed with. ``latency=False`` counts without timing.

    Raises:
        deploy.RuntimeParityError: a runtime broke parity with eager PyTorch.
    """
    profile = {**cell.get("profile", {}), **({} if latency else {"latency": False})}
    data_config = model.data_config
    example = model_inputs(data, "val", 2, data_config)
    calibration = model_inputs(data, "train", int(profile.get("int8_calibration_images", 64)), data_config)
    cost = profile_model(model, data_config["input_size"], profile, example, calibration, machine.get("peak_gflops"),
                         base_model, device, probe)
    columns = {**cost.columns, "threads": cost.columns.get("threads", torch.get_num_threads())}
    if "onnxruntime_int8" in cost.deployed:
        int8_accuracy = runtime_accuracy(cost.deployed["onnxruntime_int8"], data, data_config, "test",
                                         int(cell["train"].get("eval_batch_size", 64)))
        columns.update({"acc_mean_int8": int8_accuracy, "acc_int8_delta": int8_accuracy - acc_mean if acc_mean is not None else None})
    return columns, _latency_rows(cell, cost.latency), cost.skipped


def needs_timing(cell: dict) -> bool:
    """Return whether a cell times latency (every model cell, unless its profile says ``latency: false``)."""
    return cell["model"] != MAJORITY and bool(cell.get("profile", {}).get("latency", True))


def time_cell(record: dict, data, checkpoint_root: str, machine: dict | None = None) -> dict:
    """Return ``record`` with the latency its cell skipped (``latency_pending``) measured now: the
    cell's final model (and its base model, for speed-ups) are loaded from ``checkpoint_root``
    (``checkpoints/<hash>/model.pt``) and profiled on ``data`` (the study's, loaded once) as
    :func:`run_cell` would have.

    This is the timing phase of executors that run cells in parallel: timings taken while other
    cells train on the same cores would be wrong.

    Raises:
        FileNotFoundError: a model checkpoint is missing; whatever :func:`profile_cell` raises.
    """
    machine = machine or {}
    cell = record["cell"]
    model = models.load_model(os.path.join(checkpoint_root, config_hash(cell), "model.pt")).eval()
    base_model = (models.load_model(os.path.join(checkpoint_root, cell["base_hash"], "model.pt")).eval()
                  if cell.get("compression") else None)
    profile = cell.get("profile", {})
    probe = deploy.LoadProbe(profile.get("threads"), reference_ms=machine.get("probe_ms"))
    device = str(resolve_device(cell["train"].get("device", "auto")))
    with torch_threads(cell.get("threads")):
        columns, latency, skipped = profile_cell(cell, model, base_model, data, machine, probe, device, record["row"].get("acc_mean"))
    row = make_row(RESULT_COLUMNS, {**record["row"], **columns, "peak_gflops": machine.get("peak_gflops"),
                                    "peak_library": machine.get("peak_library")})
    timed = {**record, "row": row, "latency": latency, "skipped_runtimes": skipped}
    timed.pop("latency_pending", None)
    return timed


def run_cell(cell: dict, checkpoint_dir: str | None = None, progress=None, machine: dict | None = None, timing: bool = True) -> dict:
    """Compute one cell and return its record (``row``, ``per_attribute``, ``history``, ``reliability``,
    ``layers``, ``latency``).

    ``machine`` holds the study's timing references (:func:`measure_machine`): the compute peak,
    which gives every latency row its floor, and the load probe's idle time, against which every
    timing block is checked for load. With ``timing=False`` (cells running in parallel) nothing is
    timed, per-layer speed-ups included, and the record says ``latency_pending`` for :func:`time_cell`.

    Raises:
        whatever data loading, model creation, training or a runtime's parity check raises (clear
        messages, see those).
    """
    machine = machine or {}
    data = load_data(cell["data"], progress)
    if cell.get("data_fingerprint") and data.fingerprint != cell["data_fingerprint"]:
        raise ValueError(f"the data ({data.source}) changed since the study started (fingerprint {data.fingerprint}, "
                         f"expected {cell['data_fingerprint']}); rerun the study")
    base = {**identity(cell), "dataset": data.name, **data.split_sizes(), "config_hash": config_hash(cell),
            "group_hash": group_hash(cell), **environment(),
            "peak_gflops": machine.get("peak_gflops"), "peak_library": machine.get("peak_library")}
    if cell["model"] == MAJORITY:
        evaluation = evaluate_majority(cell, data)
        row = make_row(RESULT_COLUMNS, {**base, **evaluation.values, "params": 0, "macs": 0, "threads": ""})
        return {"cell": cell, "row": row, "per_attribute": evaluation.per_attribute, "history": [], "reliability": {},
                "layers": [], "latency": [], **_test_bits(data, evaluation)}

    config = TrainConfig(**cell["train"])
    profile = cell.get("profile", {})
    compressed = None
    timed = timing and needs_timing(cell)
    probe = deploy.LoadProbe(profile.get("threads"), reference_ms=machine.get("probe_ms")) if timed else None
    with torch_threads(cell.get("threads")):
        seed_everything(config.seed)  # the seed must also fix the initial weights, drawn here
        model = create_cell_model(cell, data.attr_names)
        # A compressed variant starts from its base cell's trained weights (trained now if missing).
        base_dir = (os.path.join(os.path.dirname(checkpoint_dir), cell["base_hash"])
                    if checkpoint_dir and cell.get("compression") else checkpoint_dir)
        result = train_model(model, data, config, checkpoint_dir=base_dir, progress=progress)
        base_model = None
        if cell.get("compression"):
            base_model = model.cpu().to(memory_format=torch.contiguous_format).eval()
            compressed = compress_and_finetune(model, data, cell["compression"], cell.get("finetune", {}), config, progress,
                                               layer_timing(profile, probe) if timing else {"runtimes": ()})
            model = compressed.model
        evaluation = evaluate_cell_model(cell, model, data)
        model = model.cpu().to(memory_format=torch.contiguous_format).eval()
        if checkpoint_dir:  # the final (trained, or compressed and fine-tuned) model, rebuildable by models.load_model
            models.save_model(model, os.path.join(checkpoint_dir, "model.pt"), config_hash=config_hash(cell))
        masks = pse_mask_record(model, data)
        data_config = model.data_config
        columns, latency, skipped = profile_cell(cell, model, base_model, data, machine, probe, str(resolve_device(config.device)),
                                                 evaluation.values["acc_mean"], latency=timed)
    params_m = columns["params"] / 1e6
    row = make_row(RESULT_COLUMNS, {
        **base, **evaluation.values, **columns,
        "compression": variant_label(cell["compression"]) if cell.get("compression") else "",
        "nonzero_params": int(sum(int(torch.count_nonzero(p)) for p in model.parameters())),
        "acc_mean_nofinetune": compressed.acc_mean_nofinetune if compressed else None,
        "finetune_seconds": compressed.finetune_seconds if compressed else None,
        "input_size": list(data_config["input_size"]),
        "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
        "ppp": evaluation.values["mA"] / params_m if params_m > 0 else None,
        "train_seconds": result.train_seconds, "best_epoch": result.best_epoch,
        "diverged": "; ".join(r for r in (divergence_reason(result.history),
                                          divergence_reason(compressed.history) if compressed else "",
                                          evaluation.values.get("diverged", "")) if r),
        "device": str(resolve_device(config.device)),
    })
    history = [{**identity(cell), **h} for h in (compressed.history if compressed else result.history)]
    layers = [make_row(LAYER_COLUMNS, {**identity(cell), **r}) for r in (compressed.layer_rows if compressed else [])]
    return {"cell": cell, "row": row, "per_attribute": evaluation.per_attribute, "history": history,
            "reliability": evaluation.reliability, "layers": layers, "latency": latency,
            "skipped_runtimes": skipped, "pse_masks": masks, **_test_bits(data, evaluation),
            **({"latency_pending": True} if needs_timing(cell) and not timed else {})}


def _test_bits(data, evaluation) -> dict:
    """Return the test labels and 0/1 predictions, packed, for paired comparisons at report time."""
    return {"test_labels": metrics.pack_bits(data.labels[data.splits["test"]]), "test_predictions": metrics.pack_bits(evaluation.predictions)}


def measure_machine(threads: int | None = None) -> dict:
    """Return the study-wide timing references: the fp32 peak (``peak_gflops``, ``peak_library``,
    ``per_library``) and the load probe's idle time (``probe_ms``), measured once before any cell."""
    with torch_threads(threads):
        machine = deploy.peak_gflops()
        machine["probe_ms"] = deploy.LoadProbe(threads, calibration_rounds=20).best_ms
    return machine


def layer_timing(profile: dict, probe=None) -> dict:
    """Return the per-layer timer's settings from a study's ``profile`` section (``layer_*`` keys)."""
    return {"runtimes": tuple(profile.get("layer_runtimes", ("eager", "onnxruntime"))), "blocks": int(profile.get("layer_blocks", 3)),
            "min_iters": int(profile.get("layer_min_iters", 5)), "min_seconds": float(profile.get("layer_min_seconds", 0.05)),
            "threads": profile.get("threads"), "probe": probe}


class SequentialExecutor:
    """Runs cells one after another in this process. Any object with the same ``map`` works:
    ``map(fn, cells)`` must yield ``fn(cell)`` for every cell, in any order; ``parallel = True``
    says cells run concurrently (they are then timed afterwards, see :func:`run_study`)."""

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
    :func:`compute_cell`, which writes each record atomically into the results folder, so that folder
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
    seen = set()
    for cell in cells:
        key = json.dumps([cell["model"], cell.get("kwargs"), cell.get("checkpoint"), cell.get("pretrained")], sort_keys=True, default=str)
        if cell["model"] == MAJORITY or key in seen:
            continue
        seen.add(key)
        create_cell_model(cell, data.attr_names)
    return cells, data


def compute_cell(cell: dict, results_dir: str, force: bool = False, started: float = 0.0, machine: dict | None = None,
                 timing: bool = True, progress=None, on_event: Callable[[str, dict], None] | None = None) -> tuple[str, dict, dict | None]:
    """Compute one cell under its lock and write its record; return ``('done', cell, record)``, or
    ``('skip', cell, None)`` when a valid record exists (written by another run while this one waited for the lock; with ``force``,
    one written after ``started``).

    The function executors run (in this process, or as a Ray task on any machine that sees
    ``results_dir``): the record is written atomically by whoever computes the cell, so a lost driver
    or worker loses at most the cells in flight. ``on_event`` (local runs only) hears ``'wait'`` and ``'start'``.

    Raises:
        whatever :func:`run_cell` raises; CellResultError for metrics that are not numbers.
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
            with file_lock(record_path(results_dir, cell, cell["base_hash"])):
                pass
        on_event("start", cell)
        checkpoint_dir = os.path.join(study_dir(results_dir, cell["study"]), "checkpoints", config_hash(cell))
        if force and os.path.isdir(checkpoint_dir):
            for name in ("last.pt", "best.pt"):
                if os.path.isfile(os.path.join(checkpoint_dir, name)):
                    os.unlink(os.path.join(checkpoint_dir, name))
        record = run_cell(cell, checkpoint_dir, progress, machine, timing)
        check_row(cell, record["row"])
        _write_record(path, record)
    finally:
        lock.release()
    write_tables(results_dir, cell["study"])
    return "done", cell, record


def run_study(config: dict, results_dir: str = "results", force: bool = False, executor=None,
              progress=None, on_event: Callable[[str, dict], None] | None = None) -> list[dict]:
    """Run every cell of ``config`` that has no valid record yet; return all result rows of the study.

    ``on_event(kind, cell)`` is told ``'skip'`` (cached), ``'start'`` and ``'done'`` for each cell,
    ``'wait'`` when another run holds the cell, and ``'timed'`` after the timing phase measured it.
    Records are written as soon as a cell finishes and the CSV tables rebuilt, so killing the
    run loses at most the cells in progress (a killed cell resumes from its last epoch). A corrupt
    record is moved to ``cells/quarantine/`` and its cell recomputed. Several runs of one study
    (processes or machines sharing the folder) split the cells between them: each cell is computed
    under a file lock by one of them, and the others skip it, so no cell is computed twice.

    ``executor`` runs the cells (:class:`SequentialExecutor` by default; :class:`RayExecutor` on a Ray
    cluster). An executor with ``parallel = True`` runs cells without timing them; a timing phase
    then measures them here, one cell at a time, with nothing else running (:func:`time_cell`).
    Before the first timing, this machine's fp32 peak is measured once (``deploy.peak_gflops``)
    and handed to every cell for its compute floor.

    Raises:
        as :func:`preflight`, before any cell runs; then whatever a cell raises (see :func:`run_cell`),
        CellResultError for a cell whose metrics are not numbers, and the executor's error for cells it lost.
    """
    executor = executor or SequentialExecutor()
    parallel = bool(getattr(executor, "parallel", False))
    on_event = on_event or (lambda kind, cell: None)
    cells, data = preflight(config, results_dir, progress)
    pending = []
    for cell in cells:
        if not force and read_record(record_path(results_dir, cell)) is not None:
            on_event("skip", cell)
        else:
            pending.append(cell)
    threads = config.get("profile", {}).get("threads") or config.get("threads")
    machine = measure_machine(threads) if any(needs_timing(c) for c in pending) else {}
    started = time.time()
    if parallel:
        for cell in pending:
            on_event("start", cell)
    compute = functools.partial(compute_cell, results_dir=results_dir, force=force, started=started, machine=machine,
                                timing=not parallel, progress=None if parallel else progress,
                                on_event=None if parallel else on_event)
    for kind, cell, record in executor.map(compute, pending):
        if kind == "done":
            on_event("done", {**cell, "row": record["row"], "skipped_runtimes": record.get("skipped_runtimes", {})})
        else:
            on_event("skip", cell)
    wanted = {config_hash(c) for c in cells}
    _timing_phase(config, results_dir, wanted, data, machine, threads, on_event)
    records = write_tables(results_dir, config["study"])  # from every valid record, whoever wrote it
    return [r["row"] for r in records if r["row"]["config_hash"] in wanted]


def _timing_phase(config: dict, results_dir: str, wanted: set, data, machine: dict, threads, on_event) -> None:
    pending = [r for r in load_records(results_dir, config["study"]) if r.get("latency_pending") and r["row"]["config_hash"] in wanted]
    if not pending:
        return
    machine = machine or measure_machine(threads)  # empty when no cell was pending: a rerun after a killed timing phase
    checkpoints = os.path.join(study_dir(results_dir, config["study"]), "checkpoints")
    for record in pending:
        path = record_path(results_dir, record["cell"])
        with file_lock(path):
            current = read_record(path)
            if current is None or not current.get("latency_pending"):
                continue  # timed by another run meanwhile
            timed = time_cell(current, data, checkpoints, machine)
            _write_record(path, timed)
        write_tables(results_dir, config["study"])
        on_event("timed", {**record["cell"], "row": timed["row"], "skipped_runtimes": timed.get("skipped_runtimes", {})})


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


__all__ = ["CellResultError", "ExecutorError", "RayExecutor", "SequentialExecutor", "compute_cell", "time_cell", "check_row", "preflight", "run_cell", "run_study"]
