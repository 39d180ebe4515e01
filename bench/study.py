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

import json
import os
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

import deploy
import models
from bench import metrics
from bench.config import expand_cells
from bench.data import load_data
from bench.environment import environment
from bench.evaluate import evaluate_cell_model, evaluate_majority, model_inputs, pse_mask_record, runtime_accuracy
from bench.profile import profile_model
from bench.schema import (LATENCY_COLUMNS, LAYER_COLUMNS, MAJORITY, RESULT_COLUMNS, config_hash, group_hash, identity, load_records,
                          make_row, record_path, study_dir, write_tables, write_text_atomic)
from bench.train import TrainConfig, resolve_device, seed_everything, torch_threads, train_model
from bench.variants import compress_and_finetune, variant_label


def _latency_rows(cell: dict, rows: list[dict]) -> list[dict]:
    return [make_row(LATENCY_COLUMNS, {**identity(cell), **row}) for row in rows]


def run_cell(cell: dict, checkpoint_dir: str | None = None, progress=None, machine: dict | None = None) -> dict:
    """Compute one cell and return its record (``row``, ``per_attribute``, ``history``, ``reliability``,
    ``layers``, ``latency``).

    ``machine`` holds the study's timing references (:func:`measure_machine`): the compute peak,
    which gives every latency row its floor, and the load probe's idle time, against which every
    timing block is checked for load.

    Raises:
        whatever data loading, model creation, training or a runtime's parity check raises (clear
        messages, see those).
    """
    machine = machine or {}
    data = load_data(cell["data"], progress)
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
    probe = deploy.LoadProbe(profile.get("threads"), reference_ms=machine.get("probe_ms")) if profile.get("latency", True) else None
    with torch_threads(cell.get("threads")):
        seed_everything(config.seed)  # the seed must also fix the initial weights, drawn here
        model = models.create_model(cell["model"], pretrained=cell.get("pretrained", False),
                                    checkpoint_path=cell.get("checkpoint"), **cell.get("kwargs", {}))
        # A compressed variant starts from its base cell's trained weights (trained now if missing).
        base_dir = (os.path.join(os.path.dirname(checkpoint_dir), cell["base_hash"])
                    if checkpoint_dir and cell.get("compression") else checkpoint_dir)
        result = train_model(model, data, config, checkpoint_dir=base_dir, progress=progress)
        base_model = None
        if cell.get("compression"):
            base_model = model.cpu().to(memory_format=torch.contiguous_format).eval()
            compressed = compress_and_finetune(model, data, cell["compression"], cell.get("finetune", {}), config, progress,
                                               layer_timing(profile, probe))
            model = compressed.model
        evaluation = evaluate_cell_model(cell, model, data)
        model = model.cpu().to(memory_format=torch.contiguous_format).eval()
        if checkpoint_dir:  # the final (trained, or compressed and fine-tuned) model, rebuildable by models.load_model
            models.save_model(model, os.path.join(checkpoint_dir, "model.pt"), config_hash=config_hash(cell))
        masks = pse_mask_record(model, data)
        data_config = model.data_config
        example = model_inputs(data, "val", 2, data_config)
        calibration = model_inputs(data, "train", int(profile.get("int8_calibration_images", 64)), data_config)
        cost = profile_model(model, data_config["input_size"], profile, example, calibration, machine.get("peak_gflops"),
                             base_model, str(resolve_device(config.device)), probe)
        if "onnxruntime_int8" in cost.deployed:
            int8_accuracy = runtime_accuracy(cost.deployed["onnxruntime_int8"], data, data_config, "test", config.eval_batch_size)
            evaluation.values.update({"acc_mean_int8": int8_accuracy, "acc_int8_delta": int8_accuracy - evaluation.values["acc_mean"]})
    params_m = cost.columns["params"] / 1e6
    row = make_row(RESULT_COLUMNS, {
        **base, **evaluation.values, **cost.columns,
        "compression": variant_label(cell["compression"]) if cell.get("compression") else "",
        "nonzero_params": int(sum(int(torch.count_nonzero(p)) for p in model.parameters())),
        "acc_mean_nofinetune": compressed.acc_mean_nofinetune if compressed else None,
        "finetune_seconds": compressed.finetune_seconds if compressed else None,
        "input_size": list(data_config["input_size"]),
        "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
        "ppp": evaluation.values["mA"] / params_m if params_m > 0 else None,
        "train_seconds": result.train_seconds, "best_epoch": result.best_epoch,
        "device": str(resolve_device(config.device)),
        "threads": cost.columns.get("threads", torch.get_num_threads()),
    })
    history = [{**identity(cell), **h} for h in (compressed.history if compressed else result.history)]
    layers = [make_row(LAYER_COLUMNS, {**identity(cell), **r}) for r in (compressed.layer_rows if compressed else [])]
    return {"cell": cell, "row": row, "per_attribute": evaluation.per_attribute, "history": history,
            "reliability": evaluation.reliability, "layers": layers, "latency": _latency_rows(cell, cost.latency),
            "skipped_runtimes": cost.skipped, "pse_masks": masks, **_test_bits(data, evaluation)}


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
    ``map(fn, cells)`` must yield ``fn(cell)`` for every cell, in any order."""

    def map(self, fn: Callable[[dict], dict], cells: Iterable[dict]) -> Iterator[dict]:
        for cell in cells:
            yield fn(cell)


def run_study(config: dict, results_dir: str = "results", force: bool = False, executor=None,
              progress=None, on_event: Callable[[str, dict], None] | None = None) -> list[dict]:
    """Run every cell of ``config`` that has no record yet; return all result rows of the study.

    ``on_event(kind, cell)`` is told ``'skip'`` (cached), ``'start'`` and ``'done'`` for each cell.
    Records are written as soon as a cell finishes and the CSV tables rebuilt, so killing the
    run loses at most the cell in progress (which resumes from its last epoch). When any pending
    cell times latency, this machine's fp32 peak is measured once first (``deploy.peak_gflops``)
    and handed to every cell for its compute floor.

    Raises:
        StudyConfigError: an invalid config (before any work starts).
    """
    executor = executor or SequentialExecutor()
    on_event = on_event or (lambda kind, cell: None)
    cells = expand_cells(config)
    pending = []
    for cell in cells:
        if not force and os.path.isfile(record_path(results_dir, cell)):
            on_event("skip", cell)
        else:
            pending.append(cell)
    machine = {}
    if any(c["model"] != MAJORITY and c.get("profile", {}).get("latency", True) for c in pending):
        machine = measure_machine(config.get("profile", {}).get("threads") or config.get("threads"))

    def compute(cell: dict) -> dict:
        on_event("start", cell)
        checkpoint_dir = os.path.join(study_dir(results_dir, cell["study"]), "checkpoints", config_hash(cell))
        if force and os.path.isdir(checkpoint_dir):
            for name in ("last.pt", "best.pt"):
                if os.path.isfile(os.path.join(checkpoint_dir, name)):
                    os.unlink(os.path.join(checkpoint_dir, name))
        record = run_cell(cell, checkpoint_dir, progress, machine)
        write_text_atomic(record_path(results_dir, cell), json.dumps(record, indent=1, default=_json_default))
        write_tables(results_dir, cell["study"])
        on_event("done", {**cell, "row": record["row"], "skipped_runtimes": record.get("skipped_runtimes", {})})
        return record

    for _ in executor.map(compute, pending):
        pass
    wanted = {config_hash(c) for c in cells}
    return [r["row"] for r in load_records(results_dir, config["study"]) if r["row"]["config_hash"] in wanted]


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


__all__ = ["SequentialExecutor", "run_cell", "run_study"]
