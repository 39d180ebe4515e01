"""Study configuration: defaults, YAML loading, validation, expansion into cells, and the model of a cell.

A study YAML's top level is ``bench.settings.StudySettings`` and each section a settings dataclass
(``data``, ``train``, ``finetune``, ``timing``, ``ray``, ``search``) whose defaults are the only defaults. A cell
is one model x variant x seed (plus the majority-class predictor); its hash (:func:`bench.store.schema.config_hash`)
names its record, so a rerun finds what is already done. How a study is timed (``timing``), where its cells run
(``executor``, ``ray``) and where it is tracked (``mlflow``) are not part of any cell.
"""

from __future__ import annotations

import copy
import difflib
import json
import os

import torch

import models
from bench.settings import (
    DataSettings,
    FinetuneSettings,
    RaySettings,
    SearchSettings,
    StudyConfigError,
    StudySettings,
    TimingSettings,
    TrainSettings,
    defaults,
)
from bench.store.schema import MAJORITY, config_hash
from bench.study.variants import VariantSpecError, parse_variant, variant_label, variant_name

# Each section's settings class; ``search`` is None (no search) unless the YAML has one.
SECTIONS = {
    "data": DataSettings,
    "train": TrainSettings,
    "finetune": FinetuneSettings,
    "timing": TimingSettings,
    "ray": RaySettings,
    "search": SearchSettings,
}
# The train section stays a partial mapping: each model's own train settings go over it, and the cell holds them in full.
DEFAULT_CONFIG = {
    **defaults(StudySettings),
    **{name: defaults(cls) for name, cls in SECTIONS.items()},
    "train": {},
    "search": None,
}
RENAMED_KEYS = {"profile": "timing"}  # a YAML of an earlier version is told the key's new name
MODEL_KEYS = ("name", "kwargs", "train", "pretrained", "checkpoint", "variant", "compressions")
VARIANT_KEYS = ("name", "steps", "finetune")

__all__ = [
    "DEFAULT_CONFIG",
    "SECTIONS",
    "StudyConfigError",
    "create_cell_model",
    "expand_cells",
    "load_config",
    "merge_config",
    "reference_model",
    "search_settings",
    "study_settings",
    "timing_settings",
    "validate_config",
]


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
        StudyConfigError: the YAML is malformed or empty, or has a key the runner does not know or a value of the
            wrong type or out of range (the file and the field named).
    """
    if path is None:
        return copy.deepcopy(DEFAULT_CONFIG)
    import yaml

    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        try:
            loaded = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise StudyConfigError(f"{path}: not valid YAML: {exc}") from None
    if loaded is None:  # an empty file would run the default study under its name without a word
        raise StudyConfigError(
            f"{path}: the file is empty; a study file sets at least `study: NAME` (the default study: configs/default.yaml)"
        )
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
            if key in RENAMED_KEYS and not where:
                raise StudyConfigError(f"unknown key {key}: it is called {RENAMED_KEYS[key]} now; known: {', '.join(known)}")
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {where + '.' if where else ''}{close[0]}? " if close else ""
            raise StudyConfigError(f"unknown key {where + '.' if where else ''}{key}: {hint}known: {', '.join(known)}")


def validate_config(config: dict) -> None:
    """Check every key and value of a study config (merged with the defaults) against its type and range.

    Raises:
        StudyConfigError: an unknown key (with its path and the closest known one) or a bad value (the field
            named, with what was expected).
    """
    check_keys("", config, DEFAULT_CONFIG)
    study_settings(config)
    for name, cls in SECTIONS.items():
        if config[name] is not None or name != "search":
            cls.from_mapping(config[name])
    for index, entry in enumerate(config["models"]):
        if isinstance(entry, dict):
            check_keys(f"models[{index}]", entry, MODEL_KEYS)
            TrainSettings.from_mapping(entry.get("train") or {}, f"models[{index}].train")
        _check_variants(f"models[{index}].compressions", entry.get("compressions") if isinstance(entry, dict) else None)
    _check_variants("compressions", config["compressions"])
    names = [_model_spec(e, i)["name"] for i, e in enumerate(config["models"])]
    if config["reference"] is not None and config["reference"] not in names:
        raise StudyConfigError(f"reference: expected one of the study's models {names}, got {config['reference']!r}")
    if config["search"] is not None:
        search = search_settings(config)
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


def timing_settings(config: dict) -> TimingSettings:
    """Return the study's :class:`TimingSettings` (``timing`` over its defaults).

    Raises:
        StudyConfigError: a bad ``timing`` key or value.
    """
    return TimingSettings.from_mapping(config.get("timing"))


def study_settings(config: dict) -> StudySettings:
    """Return the top level of a study config as :class:`StudySettings` (its sections left out).

    Raises:
        StudyConfigError: a bad top-level value (named).
    """
    return StudySettings.from_mapping({k: v for k, v in config.items() if k not in SECTIONS})


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
                raise StudyConfigError(
                    f"compressions of {spec['name']}: variant {variant!r} has no step; "
                    "write one as 'method:option=value' (steps joined by '+')"
                )
            label = variant_label(steps)
            # the same pipeline fine-tuned another way is another experiment, not a repeat
            finetune = json.dumps(variant.get("finetune", {}) if isinstance(variant, dict) else {}, sort_keys=True)
            if (label, finetune) in seen:
                raise StudyConfigError(
                    f"compressions of {spec['name']}: {variant!r} repeats {seen[label, finetune]!r}; remove one"
                )
            seen[label, finetune] = variant
            variants.append((variant, steps, label))
        for seed in config["seeds"]:
            device = {"device": config["device"]} if config["device"] is not None else {}
            train = TrainSettings.from_mapping(
                {**device, **config["train"], **spec.get("train", {}), "seed": int(seed)}, f"models[{index}].train"
            )
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
            for variant, steps, _ in variants:
                name = variant.get("name") if isinstance(variant, dict) else None
                finetune = FinetuneSettings.from_mapping(
                    {**config["finetune"], **((variant.get("finetune") or {}) if isinstance(variant, dict) else {})},
                    f"compressions of {spec['name']}: finetune",
                )
                cells.append(
                    {
                        **base_cell,
                        "variant": name or variant_name(steps),
                        "compression": steps,
                        "finetune": finetune.to_dict(),
                        "base_hash": config_hash(base_cell),
                    }
                )
    return _with_teachers(cells)


def _with_teachers(cells: list[dict]) -> list[dict]:
    """Return ``cells`` with every variant that distils from another model (``finetune.teacher``) holding that model's
    cell hash of its seed (``teacher_hash``), moved after every model's own cell so the teacher is trained first.

    Raises:
        StudyConfigError: a teacher that is not an uncompressed model of the study.
    """
    bases = {(c["model"], c["seed"]): c for c in cells if c["model"] != MAJORITY and not c.get("compression")}
    first, later = [], []
    for cell in cells:
        teacher = (cell.get("finetune") or {}).get("teacher")
        if teacher is None:
            first.append(cell)
            continue
        if (teacher, cell["seed"]) not in bases:
            names = sorted({model for model, _ in bases})
            raise StudyConfigError(
                f"finetune.teacher of {cell['model']} [{cell['variant']}]: expected one of the study's models {names}, "
                f"got {teacher!r}"
            )
        later.append({**cell, "teacher_hash": config_hash(bases[(teacher, cell["seed"])])})
    return first + later


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
    return models.create_model(
        cell["model"],
        num_classes=len(attr_names),
        pretrained=cell.get("pretrained", False),
        checkpoint_path=cell.get("checkpoint"),
        **kwargs,
    )
