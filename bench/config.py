"""Study configuration: defaults, YAML loading, validation, and expansion into cells.

A study YAML has top-level keys (``study``, ``models``, ``seeds``, ...) and sections, each a settings
dataclass of ``bench.settings`` (``data``, ``train``, ``finetune``, ``profile``) whose defaults are the
only defaults. A cell is one model x variant x seed (plus the majority-class predictor); its hash
(:func:`bench.schema.config_hash`) names its record, so a rerun finds what is already done. How a
study is timed (``profile``) is not part of any cell: timing is a phase of the whole study.
"""
from __future__ import annotations

import copy
import difflib
import os

import models
from bench.schema import MAJORITY, config_hash
from bench.settings import (DataSettings, FinetuneSettings, ProfileSettings, SearchSettings, StudyConfigError, TrainConfig, defaults,
                            field_problem)
from bench.variants import VariantSpecError, parse_variant, variant_label, variant_name

EXECUTORS = ("sequential", "ray")

DEFAULT_CONFIG = {
    "study": "default",
    "data": defaults(DataSettings),
    "models": ["slimnet"],
    # the model every other model is compared with (paired accuracy differences, latency ratios); None: the first in `models`
    "reference": None,
    "seeds": [0],
    "train": {},
    "profile": defaults(ProfileSettings),
    "compressions": [],
    "finetune": defaults(FinetuneSettings),
    "device": "auto",
    "threads": None,
    # How cells run: "sequential" (this process) or "ray" (tasks on a Ray cluster; address None starts a
    # local one, "auto" or HOST:PORT joins one). Not part of any cell's hash: where a cell runs does not change it.
    "executor": "sequential",
    "ray": {"address": None, "cpus_per_cell": 1, "num_cpus": None},
    # An MLflow tracking URI (a server, or a local store such as file:///path/mlruns): every cell is logged there as a
    # run after the study (bench.tracking). None: no tracking. Not part of any cell's hash.
    "mlflow": None,
    # A search over compression pipelines of one model (bench.settings.SearchSettings; run_bench.py search): null for none.
    # Its trials and front are cells of the study, not part of any other cell's hash.
    "search": None,
}
MODEL_KEYS = ("name", "kwargs", "train", "pretrained", "checkpoint", "variant", "compressions")
VARIANT_KEYS = ("name", "steps", "finetune")

__all__ = ["DEFAULT_CONFIG", "EXECUTORS", "StudyConfigError", "expand_cells", "load_config", "merge_config", "profile_settings",
           "reference_model", "search_settings", "validate_config"]


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
    """Return ``DEFAULT_CONFIG`` merged with the YAML file at ``path`` (None: the defaults alone), validated.

    Raises:
        FileNotFoundError: no file at ``path``.
        StudyConfigError: the YAML is malformed, or has a key the runner does not know or a value of the
            wrong type or out of range (the file and the field named).
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
        check_keys("", loaded, DEFAULT_CONFIG)
        config = merge_config(DEFAULT_CONFIG, loaded)
        validate_config(config)
    except StudyConfigError as exc:
        raise StudyConfigError(f"{path}: {exc}") from None
    return config


def check_keys(where: str, given, known) -> None:
    """Check that the mapping ``given`` (found at ``where``) has only ``known`` keys.

    Raises:
        StudyConfigError: ``given`` is not a mapping, or has an unknown key (named, with the closest known one).
    """
    if not isinstance(given, dict):
        raise StudyConfigError(f"{where}: expected a mapping, got {given!r}")
    known = sorted(known)
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {where + '.' if where else ''}{close[0]}? " if close else ""
            raise StudyConfigError(f"unknown key {where + '.' if where else ''}{key}: {hint}known: {', '.join(known)}")


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_config(config: dict) -> None:
    """Check every key and value of a study config (merged with the defaults) against its type and range.

    Raises:
        StudyConfigError: an unknown key (with its path and the closest known one) or a bad value (the field
            named, with what was expected).
    """
    check_keys("", config, DEFAULT_CONFIG)
    if not isinstance(config["study"], str) or not config["study"] or os.sep in config["study"]:
        raise StudyConfigError(f"study: expected a name (text without '{os.sep}'), got {config['study']!r}")
    if config["mlflow"] is not None and (not isinstance(config["mlflow"], str) or not config["mlflow"]):
        raise StudyConfigError(f"mlflow: expected a tracking URI (e.g. file:///tmp/mlruns or http://host:5000), got {config['mlflow']!r}")
    if config["executor"] not in EXECUTORS:
        raise StudyConfigError(f"executor: expected one of {list(EXECUTORS)}, got {config['executor']!r}")
    seeds = config["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(_int(s) and s >= 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise StudyConfigError(f"seeds: expected a list of distinct integers >= 0, e.g. [0, 1, 2], got {seeds!r}")
    if config["threads"] is not None and not (_int(config["threads"]) and config["threads"] >= 1):
        raise StudyConfigError(f"threads: expected an integer >= 1 or null, got {config['threads']!r}")
    device_problem = field_problem(TrainConfig.__dataclass_fields__["device"], config["device"])
    if device_problem:
        raise StudyConfigError(f"device: {device_problem}")
    DataSettings.from_mapping(config["data"])
    TrainConfig.from_mapping(config["train"])
    FinetuneSettings.from_mapping(config["finetune"])
    ProfileSettings.from_mapping(config["profile"])
    check_keys("ray", config["ray"], DEFAULT_CONFIG["ray"])
    if not isinstance(config["models"], list) or not config["models"]:
        raise StudyConfigError(f"models: expected a list of model names or mappings, got {config['models']!r}")
    for index, entry in enumerate(config["models"]):
        if isinstance(entry, dict):
            check_keys(f"models[{index}]", entry, MODEL_KEYS)
            TrainConfig.from_mapping(entry.get("train") or {}, f"models[{index}].train")
        _check_variants(f"models[{index}].compressions", entry.get("compressions") if isinstance(entry, dict) else None)
    _check_variants("compressions", config["compressions"])
    names = [_model_spec(e, i)["name"] for i, e in enumerate(config["models"])]
    if config["reference"] is not None and config["reference"] not in names:
        raise StudyConfigError(f"reference: expected one of the study's models {names}, got {config['reference']!r}")
    if config["search"] is not None:
        search = SearchSettings.from_mapping(config["search"])
        if search.model is not None and search.model not in names:
            raise StudyConfigError(f"search.model: expected one of the study's models {names}, got {search.model!r}")


def search_settings(config: dict) -> SearchSettings | None:
    """Return the study's :class:`SearchSettings` (None when it has no ``search`` section).

    Raises:
        StudyConfigError: a bad ``search`` key or value.
    """
    return None if config.get("search") is None else SearchSettings.from_mapping(config["search"])


def _check_variants(where: str, variants) -> None:
    if variants is None:
        return
    if not isinstance(variants, list):
        raise StudyConfigError(f"{where}: expected a list of variants, got {variants!r}")
    for index, variant in enumerate(variants):
        if isinstance(variant, dict):
            check_keys(f"{where}[{index}]", variant, VARIANT_KEYS)
            FinetuneSettings.from_mapping(variant.get("finetune") or {}, f"{where}[{index}].finetune")


def _model_spec(entry, index: int) -> dict:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise StudyConfigError(f"models[{index}]: expected a model name or a mapping with 'name', found {entry!r}")
    if entry["name"] != MAJORITY and not models.is_model(entry["name"]):
        raise StudyConfigError(f"models[{index}]: unknown model {entry['name']!r}; known: {', '.join(models.list_models())}")
    return entry


def profile_settings(config: dict) -> ProfileSettings:
    """Return the study's :class:`ProfileSettings` (``profile`` over its defaults).

    Raises:
        StudyConfigError: a bad ``profile`` key or value.
    """
    return ProfileSettings.from_mapping(config.get("profile"))


def reference_model(config: dict) -> str:
    """Return the name of the study's reference model: ``reference``, else the first model in ``models``."""
    if config.get("reference"):
        return config["reference"]
    first = config["models"][0]
    return first["name"] if isinstance(first, dict) else first


def expand_cells(config: dict, data_fingerprint: str | None = None) -> list[dict]:
    """Return the study's cells: a majority-class row, then every model x seed, then its compressed variants.

    ``data_fingerprint`` (``FaceAttributeData.fingerprint``) goes into every cell, so its hash changes
    when the data does. Every cell holds its settings in full (defaults filled in), so a changed
    default is a new cell.

    Raises:
        StudyConfigError: unknown model, bad model entry, a bad setting, a bad variant, or a variant
            that duplicates another one or the base model.
    """
    validate_config(config)
    fingerprint = {"data_fingerprint": data_fingerprint} if data_fingerprint else {}
    cells = [{"study": config["study"], "model": MAJORITY, "variant": "", "seed": 0, "data": config["data"], **fingerprint}]
    for index, entry in enumerate(config["models"]):
        spec = _model_spec(entry, index)
        if spec["name"] == MAJORITY:
            continue
        variants = []
        seen = {}
        for variant in spec.get("compressions", config["compressions"]) or []:
            try:
                steps = parse_variant(variant)
            except VariantSpecError as exc:
                raise StudyConfigError(f"compressions of {spec['name']}: {exc}") from None
            if not steps:
                raise StudyConfigError(f"compressions of {spec['name']}: variant {variant!r} has no step; "
                                       "write one as 'method:option=value' (steps joined by '+')")
            label = variant_label(steps)
            if label in seen:
                raise StudyConfigError(f"compressions of {spec['name']}: {variant!r} repeats {seen[label]!r}; remove one")
            seen[label] = variant
            variants.append((variant, steps, label))
        for seed in config["seeds"]:
            train = TrainConfig.from_mapping({"device": config["device"], **config["train"], **spec.get("train", {}), "seed": int(seed)},
                                             f"models[{index}].train")
            base_cell = {
                "study": config["study"],
                "model": spec["name"],
                "variant": spec.get("variant", ""),
                "kwargs": spec.get("kwargs", {}),
                "pretrained": bool(spec.get("pretrained", False)),
                "checkpoint": spec.get("checkpoint"),
                "seed": int(seed),
                "data": config["data"],
                **fingerprint,
                "train": train.to_dict(),
                "threads": config["threads"],
            }
            cells.append(base_cell)
            for variant, steps, label in variants:
                name = variant.get("name") if isinstance(variant, dict) else None
                finetune = FinetuneSettings.from_mapping(
                    {**config["finetune"], **((variant.get("finetune") or {}) if isinstance(variant, dict) else {})},
                    f"compressions of {spec['name']}: finetune")
                cells.append({**base_cell, "variant": name or variant_name(steps), "compression": steps, "finetune": finetune.to_dict(),
                              "base_hash": config_hash(base_cell)})
    return cells
