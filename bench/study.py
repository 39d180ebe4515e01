"""The study runner: a config becomes cells (model x variant x seed), each cached by its hash.

Layout under ``<results_dir>/<study>/``:

* ``cells/<model>-<hash>.json``: one record per finished cell (row, per-attribute rows, history,
  reliability data, full cell config, environment), written atomically as soon as it finishes;
* ``checkpoints/<hash>/{last,best}.pt``: training state, so a killed cell resumes mid-training;
* ``results.csv``, ``per_attribute.csv``, ``history.csv``: rebuilt from the records after each cell.

Rerunning a study skips every cell whose record exists (``force=True`` recomputes).
"""
from __future__ import annotations

import copy
import datetime
import hashlib
import json
import logging
import os
import platform
import subprocess
from dataclasses import fields
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

import models
from bench import metrics
from bench.data import load_dataset, to_model_input
from bench.profile import count_macs, count_params, disk_bytes, measure_latency
from bench.schema import (HISTORY_COLUMNS, LAYER_COLUMNS, PER_ATTRIBUTE_COLUMNS, RESULT_COLUMNS, make_row, write_csv_atomic,
                          write_text_atomic)
from bench.variants import FINETUNE_FIELDS, VariantSpecError, compress_and_finetune, parse_variant, variant_label
from bench.train import TrainConfig, predict_logits, resolve_device, seed_everything, torch_threads, train_model

_logger = logging.getLogger(__name__)

MAJORITY = "majority"
RECORD_VERSION = 1  # part of every cell hash: bump when a change alters what a cell computes

DEFAULT_CONFIG = {
    "study": "default",
    "data": {"data_dir": None, "synthetic_images": 3000, "synthetic_seed": 0,
             "limit_train": None, "limit_val": None, "limit_test": None},
    "models": ["slimnet"],
    "seeds": [0],
    "train": {},
    "profile": {"latency": True, "batch_n": 32, "min_iters": 50, "min_seconds": 2.0, "threads": None},
    "compressions": [],
    "finetune": {"epochs": 1, "norm_lambda": 0.0},
    "device": "auto",
    "threads": None,
}


class StudyConfigError(ValueError):
    """A study configuration value is missing or invalid (the message names the field)."""


def merge_config(base: dict, override: dict) -> dict:
    """Return ``base`` updated recursively with ``override`` (dicts merge, other values replace)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(path: str | None) -> dict:
    """Return ``DEFAULT_CONFIG`` merged with the YAML file at ``path`` (None: the defaults alone).

    Raises:
        FileNotFoundError: no file at ``path``.
        StudyConfigError: the YAML is malformed, or has keys the runner does not know.
    """
    if path is None:
        return copy.deepcopy(DEFAULT_CONFIG)
    import yaml

    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        try:
            loaded = yaml.safe_load(handle) or {}
        except yaml.YAMLError as exc:
            raise StudyConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise StudyConfigError(f"{path}: expected a mapping at the top level, found {type(loaded).__name__}")
    unknown = sorted(set(loaded) - set(DEFAULT_CONFIG))
    if unknown:
        raise StudyConfigError(f"{path}: unknown top-level keys {unknown}; known: {sorted(DEFAULT_CONFIG)}")
    return merge_config(DEFAULT_CONFIG, loaded)


def _model_spec(entry, index: int) -> dict:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise StudyConfigError(f"models[{index}]: expected a model name or a mapping with 'name', found {entry!r}")
    unknown = sorted(set(entry) - {"name", "kwargs", "train", "pretrained", "checkpoint", "variant", "compressions"})
    if unknown:
        raise StudyConfigError(f"models[{index}] ({entry['name']}): unknown keys {unknown}")
    if entry["name"] != MAJORITY and not models.is_model(entry["name"]):
        raise StudyConfigError(f"models[{index}]: unknown model {entry['name']!r}; known: {', '.join(models.list_models())}")
    return entry


def config_hash(cell: dict) -> str:
    """Return the 12-hex-digit SHA-1 of a cell's canonical JSON (everything that shapes its result)."""
    payload = json.dumps({**cell, "record_version": RECORD_VERSION}, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def expand_cells(config: dict) -> list[dict]:
    """Return the study's cells: a majority-class row, then every model x seed.

    Raises:
        StudyConfigError: unknown model, bad model entry, bad train field, or no seeds.
    """
    seeds = config.get("seeds") or []
    if not seeds:
        raise StudyConfigError("seeds: expected at least one seed, e.g. [0]")
    train_fields = {f.name for f in fields(TrainConfig)}
    cells = [{"study": config["study"], "model": MAJORITY, "variant": "", "seed": 0, "data": config["data"]}]
    for index, entry in enumerate(config.get("models") or []):
        spec = _model_spec(entry, index)
        if spec["name"] == MAJORITY:
            continue
        for seed in seeds:
            train = {**config.get("train", {}), **spec.get("train", {}), "seed": int(seed)}
            train.setdefault("device", config.get("device", "auto"))
            unknown = sorted(set(train) - train_fields)
            if unknown:
                raise StudyConfigError(f"train settings for {spec['name']}: unknown fields {unknown}; known: {sorted(train_fields)}")
            TrainConfig(**train)  # validates values now rather than mid-study
            base = {
                "study": config["study"],
                "model": spec["name"],
                "variant": spec.get("variant", ""),
                "kwargs": spec.get("kwargs", {}),
                "pretrained": bool(spec.get("pretrained", False)),
                "checkpoint": spec.get("checkpoint"),
                "seed": int(seed),
                "data": config["data"],
                "train": train,
                "profile": config.get("profile", {}),
                "threads": config.get("threads"),
            }
            cells.append(base)
            for variant in spec.get("compressions", config.get("compressions") or []):
                try:
                    steps = parse_variant(variant)
                except VariantSpecError as exc:
                    raise StudyConfigError(f"compressions of {spec['name']}: {exc}") from None
                label = variant_label(steps)
                name = variant.get("name") if isinstance(variant, dict) else None
                finetune = {**config.get("finetune", {}), **(variant.get("finetune", {}) if isinstance(variant, dict) else {})}
                unknown = sorted(set(finetune) - FINETUNE_FIELDS)
                if unknown:
                    raise StudyConfigError(f"finetune settings: unknown fields {unknown}; known: {sorted(FINETUNE_FIELDS)}")
                cells.append({**base, "variant": name or label, "compression": steps, "finetune": finetune,
                              "base_hash": config_hash(base)})
    return cells


def environment() -> dict:
    """Return the environment fingerprint stored with every row (versions, CPU, threads, git commit)."""
    import timm

    cpu_name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu_name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu_name)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "cpu_name": cpu_name,
        "threads": torch.get_num_threads(),
        "git_commit": commit,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _data_for(cell: dict):
    d = cell["data"]
    limits = {"train": d.get("limit_train"), "val": d.get("limit_val"), "test": d.get("limit_test")}
    return load_dataset(d.get("data_dir"), int(d.get("synthetic_images", 3000)), int(d.get("synthetic_seed", 0)),
                        limits, d.get("cache_dir"))


def _identity(cell: dict) -> dict:
    """Return the columns that identify a cell's rows in every table: study, model, variant, seed."""
    return {"study": cell["study"], "model": cell["model"], "variant": cell.get("variant", ""), "seed": cell["seed"]}


def _per_attribute_rows(cell, data, labels, probs, tuned_thresholds, tuned_probs_threshold_acc, tuned_f1) -> list[dict]:
    train_labels = data.labels[data.splits["train"]]
    accuracy = metrics.per_attribute_accuracy(labels, probs)
    majority = metrics.majority_per_attribute_accuracy(train_labels, labels)
    balanced = metrics.per_attribute_balanced_accuracy(labels, probs)
    precision, recall, f1 = metrics.per_attribute_prf(labels, probs)
    return [
        {
            **_identity(cell), "attribute": name, "positive_rate": 100.0 * float(labels[:, j].mean()),
            "acc": accuracy[j], "acc_majority": majority[j], "balanced_acc": balanced[j],
            "precision": precision[j], "recall": recall[j], "f1": f1[j],
            "threshold_tuned": tuned_thresholds[j], "acc_tuned": tuned_probs_threshold_acc[j], "f1_tuned": tuned_f1[j],
        }
        for j, name in enumerate(data.attr_names)
    ]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def evaluate_cell_model(cell: dict, model, data) -> tuple[dict, list[dict], dict]:
    """Return (metric columns, per-attribute rows, reliability data) of a trained model on test.

    Temperature and per-attribute F1 thresholds are fitted on the validation split only.
    """
    train_cfg = cell["train"]
    test_logits = predict_logits(model, data, "test", train_cfg.get("eval_batch_size", 64), train_cfg.get("device", "auto"))
    val_logits = predict_logits(model, data, "val", train_cfg.get("eval_batch_size", 64), train_cfg.get("device", "auto"))
    test_labels, val_labels = data.labels[data.splits["test"]], data.labels[data.splits["val"]]
    train_labels = data.labels[data.splits["train"]]
    probs = _sigmoid(test_logits)
    values = metrics.summary_metrics(test_labels, probs, train_labels)
    temperature = metrics.fit_temperature(val_logits, val_labels)
    scaled = _sigmoid(test_logits / temperature)
    thresholds = metrics.tune_thresholds(val_labels, _sigmoid(val_logits))
    tuned_acc = metrics.per_attribute_accuracy(test_labels, probs, thresholds)
    tuned_f1 = metrics.per_attribute_prf(test_labels, probs, thresholds)[2]
    values.update({
        "ece_ts": metrics.expected_calibration_error(test_labels, scaled),
        "temperature": temperature,
        "acc_mean_tuned": float(tuned_acc.mean()),
        "f1_tuned": float(tuned_f1.mean()),
    })
    reliability = {}
    for key, p in (("before", probs), ("after", scaled)):
        freq, conf, counts = metrics.reliability_diagram(test_labels, p)
        reliability[key] = {"frequency": freq.tolist(), "confidence": conf.tolist(), "count": counts.tolist()}
    per_attribute = _per_attribute_rows(cell, data, test_labels, probs, thresholds, tuned_acc, tuned_f1)
    return values, per_attribute, reliability


def profile_model(model, input_size, profile: dict, device: str = "auto") -> dict:
    """Return the cost columns: params, macs, disk bytes and latency (per ``profile`` settings).

    CPU latency is measured in PyTorch's default (contiguous, NCHW) memory format and, unless
    ``channels_last_latency`` is false, in channels_last too (``cpu_*_cl_ms``). GPU columns stay
    None (empty in the CSV) when CUDA is absent.
    """
    row = {"params": count_params(model), "macs": count_macs(model, input_size)}
    row["disk_bytes"], row["disk_bytes_zip"] = disk_bytes(model)
    if not profile.get("latency", True):
        return row
    batch_n = int(profile.get("batch_n", 32))
    timing = {"min_iters": int(profile.get("min_iters", 50)), "min_seconds": float(profile.get("min_seconds", 2.0))}
    with torch_threads(profile.get("threads")):
        b1 = measure_latency(model, input_size, 1, "cpu", **timing)
        bn = measure_latency(model, input_size, batch_n, "cpu", **timing)
        row.update({"cpu_b1_ms": b1["median_ms"], "cpu_b1_p90_ms": b1["p90_ms"], "cpu_bN_ms": bn["median_ms"],
                    "cpu_bN_p90_ms": bn["p90_ms"], "batch_n": batch_n})
        if profile.get("channels_last_latency", True):
            # The memory format can change the CPU ranking (e.g. factorized stems), so both are shown.
            row["cpu_b1_cl_ms"] = measure_latency(model, input_size, 1, "cpu", channels_last=True, **timing)["median_ms"]
            row["cpu_bN_cl_ms"] = measure_latency(model, input_size, batch_n, "cpu", channels_last=True, **timing)["median_ms"]
        row["threads"] = torch.get_num_threads()
    if torch.cuda.is_available() and resolve_device(device).type == "cuda":
        row["gpu_b1_ms"] = measure_latency(model, input_size, 1, "cuda", **timing)["median_ms"]
        row["gpu_bN_ms"] = measure_latency(model, input_size, batch_n, "cuda", **timing)["median_ms"]
    return row


def pse_mask_record(model, data, n_images: int = 3, thumbnail=(109, 89)) -> dict:
    """Return the PSE masks of a model on its first test images, small enough for the JSON record.

    ``{'images': [H x W x 3 uint8 thumbnails], 'masks': {module: [mask per image]}}``; ``{}`` for a
    model without PSE modules or an empty test split.
    """
    from models.pse import PSE, pse_masks

    indices = data.splits["test"][:n_images]
    if not any(isinstance(m, PSE) for m in model.modules()) or len(indices) == 0:
        return {}
    images = np.asarray(data.images[np.sort(indices)])
    masks = pse_masks(model, to_model_input(images, model.data_config))
    thumbs = torch.nn.functional.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2).float(), size=thumbnail,
                                             mode="bilinear", antialias=True)
    return {"images": thumbs.round().clamp(0, 255).byte().permute(0, 2, 3, 1).tolist(),
            "masks": {name: [np.round(m[0].numpy(), 4).tolist() for m in mask] for name, mask in masks.items()}}


def run_cell(cell: dict, checkpoint_dir: str | None = None, progress=None) -> dict:
    """Compute one cell and return its record (``row``, ``per_attribute``, ``history``, ``reliability``).

    Raises:
        whatever data loading, model creation or training raises (clear messages, see those).
    """
    data = _data_for(cell)
    base = {**_identity(cell), "dataset": data.name, **data.split_sizes(), "config_hash": config_hash(cell), **environment()}
    test_labels = data.labels[data.splits["test"]]
    train_labels = data.labels[data.splits["train"]]
    if cell["model"] == MAJORITY:
        majority = (train_labels.mean(axis=0) >= 0.5).astype(np.float64)
        probs = np.broadcast_to(majority, test_labels.shape)
        values = metrics.summary_metrics(test_labels, probs, train_labels)
        values.pop("ece")  # a constant 0/1 predictor has no calibration to speak of
        row = make_row(RESULT_COLUMNS, {**base, **values, "params": 0, "macs": 0, "threads": ""})
        default_thresholds = np.full(len(data.attr_names), 0.5)
        per_attribute = _per_attribute_rows(cell, data, test_labels, probs, default_thresholds, metrics.per_attribute_accuracy(test_labels, probs),
                                            metrics.per_attribute_prf(test_labels, probs)[2])
        return {"cell": cell, "row": row, "per_attribute": per_attribute, "history": [], "reliability": {}, "layers": []}

    config = TrainConfig(**cell["train"])
    compressed = None
    with torch_threads(cell.get("threads")):
        seed_everything(config.seed)  # the seed must also fix the initial weights, drawn here
        model = models.create_model(cell["model"], pretrained=cell.get("pretrained", False),
                                    checkpoint_path=cell.get("checkpoint"), **cell.get("kwargs", {}))
        # A compressed variant starts from its base cell's trained weights (trained now if missing).
        base_dir = (os.path.join(os.path.dirname(checkpoint_dir), cell["base_hash"])
                    if checkpoint_dir and cell.get("compression") else checkpoint_dir)
        result = train_model(model, data, config, checkpoint_dir=base_dir, progress=progress)
        if cell.get("compression"):
            profile = cell.get("profile", {})
            timing = {"min_iters": int(profile.get("layer_min_iters", 20)), "min_seconds": float(profile.get("layer_min_seconds", 0.2)),
                      "threads": profile.get("threads")}
            compressed = compress_and_finetune(model, data, cell["compression"], cell.get("finetune", {}), config, progress, timing)
            model = compressed["model"]
        values, per_attribute, reliability = evaluate_cell_model(cell, model, data)
        model = model.cpu().to(memory_format=torch.contiguous_format)
        masks = pse_mask_record(model, data)
        cost = profile_model(model, model.data_config["input_size"], cell.get("profile", {}), config.device)
    params_m = cost["params"] / 1e6
    row = make_row(RESULT_COLUMNS, {
        **base, **values, **cost,
        "compression": variant_label(cell["compression"]) if cell.get("compression") else "",
        "nonzero_params": int(sum(int(torch.count_nonzero(p)) for p in model.parameters())),
        "acc_mean_nofinetune": compressed["acc_mean_nofinetune"] if compressed else None,
        "finetune_seconds": compressed["finetune_seconds"] if compressed else None,
        "input_size": list(model.data_config["input_size"]),
        "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
        "ppp": values["mA"] / params_m if params_m > 0 else None,
        "train_seconds": result.train_seconds, "best_epoch": result.best_epoch,
        "device": str(resolve_device(config.device)),
        "threads": cost.get("threads", torch.get_num_threads()),
    })
    history = [{**_identity(cell), **h} for h in (compressed["history"] if compressed else result.history)]
    layers = [make_row(LAYER_COLUMNS, {**_identity(cell), **r}) for r in (compressed["layer_rows"] if compressed else [])]
    return {"cell": cell, "row": row, "per_attribute": per_attribute, "history": history, "reliability": reliability,
            "layers": layers, "pse_masks": masks}


class SequentialExecutor:
    """Runs cells one after another in this process. Any object with the same ``map`` works:
    ``map(fn, cells)`` must yield ``fn(cell)`` for every cell, in any order."""

    def map(self, fn: Callable[[dict], dict], cells: Iterable[dict]) -> Iterator[dict]:
        for cell in cells:
            yield fn(cell)


def study_dir(results_dir: str, study: str) -> str:
    """Return ``<results_dir>/<study>``."""
    return os.path.join(results_dir, study)


def record_path(results_dir: str, cell: dict) -> str:
    """Return the path of a cell's JSON record."""
    return os.path.join(study_dir(results_dir, cell["study"]), "cells", f"{cell['model']}-{config_hash(cell)}.json")


def load_records(results_dir: str, study: str) -> list[dict]:
    """Return every finished cell record of a study, sorted by finish time then model.

    Raises:
        FileNotFoundError: the study has no records.
    """
    folder = os.path.join(study_dir(results_dir, study), "cells")
    if not os.path.isdir(folder) or not any(n.endswith(".json") for n in os.listdir(folder)):
        raise FileNotFoundError(f"no finished cells under {folder!r}; run the study {study!r} first")
    records = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                records.append(json.load(handle))
    return sorted(records, key=lambda r: (r["row"]["model"] != MAJORITY, r["row"]["timestamp"], r["row"]["model"]))


def write_tables(results_dir: str, study: str) -> str:
    """Rebuild ``results.csv``, ``per_attribute.csv``, ``history.csv`` and ``layers.csv`` from the records; return the study folder."""
    records = load_records(results_dir, study)
    folder = study_dir(results_dir, study)
    write_csv_atomic(os.path.join(folder, "results.csv"), RESULT_COLUMNS, [r["row"] for r in records])
    write_csv_atomic(os.path.join(folder, "per_attribute.csv"), PER_ATTRIBUTE_COLUMNS, [p for r in records for p in r["per_attribute"]])
    write_csv_atomic(os.path.join(folder, "history.csv"), HISTORY_COLUMNS, [h for r in records for h in r["history"]])
    write_csv_atomic(os.path.join(folder, "layers.csv"), LAYER_COLUMNS, [x for r in records for x in r.get("layers", [])])
    return folder


def run_study(config: dict, results_dir: str = "results", force: bool = False, executor=None,
              progress=None, on_event: Callable[[str, dict], None] | None = None) -> list[dict]:
    """Run every cell of ``config`` that has no record yet; return all result rows of the study.

    ``on_event(kind, cell)`` is told ``'skip'`` (cached), ``'start'`` and ``'done'`` for each cell.
    Records are written as soon as a cell finishes and the CSV tables rebuilt, so killing the
    run loses at most the cell in progress (which resumes from its last epoch).

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

    def compute(cell: dict) -> dict:
        on_event("start", cell)
        checkpoint_dir = os.path.join(study_dir(results_dir, cell["study"]), "checkpoints", config_hash(cell))
        if force and os.path.isdir(checkpoint_dir):
            for name in ("last.pt", "best.pt"):
                if os.path.isfile(os.path.join(checkpoint_dir, name)):
                    os.unlink(os.path.join(checkpoint_dir, name))
        record = run_cell(cell, checkpoint_dir, progress)
        write_text_atomic(record_path(results_dir, cell), json.dumps(record, indent=1, default=_json_default))
        write_tables(results_dir, cell["study"])
        on_event("done", {**cell, "row": record["row"]})
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


__all__ = ["DEFAULT_CONFIG", "MAJORITY", "SequentialExecutor", "StudyConfigError", "config_hash", "environment",
           "evaluate_cell_model", "expand_cells", "load_config", "load_records", "merge_config", "profile_model",
           "record_path", "run_cell", "run_study", "study_dir", "write_tables"]
