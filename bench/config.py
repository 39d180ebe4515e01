"""Study configuration: defaults, YAML loading, validation, and expansion into cells.

A cell is one model x variant x seed (plus the majority-class predictor); its hash
(:func:`bench.schema.config_hash`) names its record, so a rerun finds what is already done.
"""
from __future__ import annotations

import copy
import difflib
import os
from dataclasses import fields

import models
from bench.datasets import CSV_OPTIONS
from bench.profile import resolve_runtimes
from bench.schema import MAJORITY, config_hash
from bench.train import TrainConfig
from bench.variants import FINETUNE_FIELDS, VariantSpecError, parse_variant, validate_finetune, variant_label

DEFAULT_CONFIG = {
    "study": "default",
    "data": {"data_dir": None, "synthetic_images": 3000, "synthetic_seed": 0,
             "limit_train": None, "limit_val": None, "limit_test": None},
    "models": ["slimnet"],
    "seeds": [0],
    "train": {},
    # Latency: every runtime in `runtimes` at batch 1 and batch_n, interleaved in `blocks` blocks of at
    # least `min_iters` calls and `min_seconds` each; the per-layer table uses the layer_* settings.
    "profile": {"latency": True, "runtimes": "all", "batch_n": 32, "blocks": 5, "min_iters": 3, "min_seconds": 0.1,
                "threads": None, "int8_calibration_images": 64, "layer_runtimes": ["eager", "onnxruntime"], "layer_blocks": 3,
                "layer_min_iters": 5, "layer_min_seconds": 0.05},
    "compressions": [],
    "finetune": {"epochs": 1, "norm_lambda": 0.0},
    "device": "auto",
    "threads": None,
    # How cells run: "sequential" (this process) or "ray" (tasks on a Ray cluster; address None starts a
    # local one, "auto" or HOST:PORT joins one). Not part of any cell's hash: where a cell runs does not change it.
    "executor": "sequential",
    "ray": {"address": None, "cpus_per_cell": 1, "num_cpus": None},
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
    try:
        validate_keys(loaded)
    except StudyConfigError as exc:
        raise StudyConfigError(f"{path}: {exc}") from None
    return merge_config(DEFAULT_CONFIG, loaded)


EXECUTORS = ("sequential", "ray")
# data keys beside the defaults: where the cache lives, and how a dataset other than CelebA is read (bench.datasets)
DATA_KEYS = (*DEFAULT_CONFIG["data"], "cache_dir", "format", "image_size", "name", *CSV_OPTIONS)
MODEL_KEYS = ("name", "kwargs", "train", "pretrained", "checkpoint", "variant", "compressions")
VARIANT_KEYS = ("name", "steps", "finetune")


def check_keys(where: str, given, known) -> None:
    """Check that the mapping ``given`` (found at ``where``) has only ``known`` keys.

    Raises:
        StudyConfigError: ``given`` is not a mapping, or has an unknown key (named, with the closest known one).
    """
    if not isinstance(given, dict):
        raise StudyConfigError(f"{where}: expected a mapping, found {given!r}")
    known = sorted(known)
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {where + '.' if where else ''}{close[0]}? " if close else ""
            raise StudyConfigError(f"unknown key {where + '.' if where else ''}{key}: {hint}known: {', '.join(known)}")


def validate_keys(config: dict) -> None:
    """Check every nesting level of a study config against the keys the runner knows: a typo
    (``data.limit_tran``) would otherwise be ignored and silently change the run.

    Raises:
        StudyConfigError: an unknown key, named with its path and the closest known key.
    """
    check_keys("", config, DEFAULT_CONFIG)
    train_fields = [f.name for f in fields(TrainConfig)]
    if config.get("executor", "sequential") not in EXECUTORS:
        raise StudyConfigError(f"executor: unknown executor {config['executor']!r}; known: {', '.join(EXECUTORS)}")
    for section, known in (("data", DATA_KEYS), ("ray", DEFAULT_CONFIG["ray"]), ("profile", DEFAULT_CONFIG["profile"]), ("train", train_fields),
                           ("finetune", FINETUNE_FIELDS)):
        if config.get(section) is not None:
            check_keys(section, config[section], known)

    def check_variants(where, variants):
        for index, variant in enumerate(variants or []):
            if isinstance(variant, dict):
                check_keys(f"{where}[{index}]", variant, VARIANT_KEYS)
                check_keys(f"{where}[{index}].finetune", variant.get("finetune") or {}, FINETUNE_FIELDS)

    check_variants("compressions", config.get("compressions"))
    for index, entry in enumerate(config.get("models") or []):
        if isinstance(entry, dict):
            check_keys(f"models[{index}]", entry, MODEL_KEYS)
            check_keys(f"models[{index}].train", entry.get("train") or {}, train_fields)
            check_variants(f"models[{index}].compressions", entry.get("compressions"))


def _model_spec(entry, index: int) -> dict:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise StudyConfigError(f"models[{index}]: expected a model name or a mapping with 'name', found {entry!r}")
    if entry["name"] != MAJORITY and not models.is_model(entry["name"]):
        raise StudyConfigError(f"models[{index}]: unknown model {entry['name']!r}; known: {', '.join(models.list_models())}")
    return entry


def expand_cells(config: dict, data_fingerprint: str | None = None) -> list[dict]:
    """Return the study's cells: a majority-class row, then every model x seed, then its compressed variants.

    ``data_fingerprint`` (``FaceAttributeData.fingerprint``) goes into every cell, so its hash changes
    when the data does.

    Raises:
        StudyConfigError: unknown model, bad model entry, bad train field, or no seeds.
    """
    validate_keys(config)
    seeds = config.get("seeds") or []
    if not seeds:
        raise StudyConfigError("seeds: expected at least one seed, e.g. [0]")
    profile = config.get("profile", {})
    for key in ("runtimes", "layer_runtimes"):
        try:
            resolve_runtimes(profile.get(key, "all"))
        except KeyError as exc:
            raise StudyConfigError(f"profile.{key}: {exc.args[0]}") from None
    train_fields = {f.name for f in fields(TrainConfig)}
    fingerprint = {"data_fingerprint": data_fingerprint} if data_fingerprint else {}
    cells = [{"study": config["study"], "model": MAJORITY, "variant": "", "seed": 0, "data": config["data"], **fingerprint}]
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
                **fingerprint,
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
                try:
                    validate_finetune(finetune)
                except ValueError as exc:
                    raise StudyConfigError(str(exc)) from None
                cells.append({**base, "variant": name or label, "compression": steps, "finetune": finetune,
                              "base_hash": config_hash(base)})
    return cells
