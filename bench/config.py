"""Study configuration: defaults, YAML loading, validation, and expansion into cells.

A cell is one model x variant x seed (plus the majority-class predictor); its hash
(:func:`bench.schema.config_hash`) names its record, so a rerun finds what is already done.
"""
from __future__ import annotations

import copy
import os
from dataclasses import fields

import models
from bench.profile import resolve_runtimes
from bench.schema import MAJORITY, config_hash
from bench.train import TrainConfig
from bench.variants import VariantSpecError, parse_variant, validate_finetune, variant_label

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


def expand_cells(config: dict) -> list[dict]:
    """Return the study's cells: a majority-class row, then every model x seed.

    Raises:
        StudyConfigError: unknown model, bad model entry, bad train field, or no seeds.
    """
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
                try:
                    validate_finetune(finetune)
                except ValueError as exc:
                    raise StudyConfigError(str(exc)) from None
                cells.append({**base, "variant": name or label, "compression": steps, "finetune": finetune,
                              "base_hash": config_hash(base)})
    return cells
