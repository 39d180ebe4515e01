"""The command line's setting flags, generated from the settings themselves.

Each :class:`Flag` is one row: the flag, the setting(s) it sets (``section.field``, or a top-level field) and, for a
switch, the value it sets. Its type, valid range and help come from the setting's own
:class:`~compress.options.Option` (``bench.settings``), so a flag cannot drift from the YAML key it stands for:
``--epochs ten`` is refused with the same words as ``train: {epochs: ten}``. Adding a flag is one row.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench.settings import StudyConfigError, StudySettings
from bench.study.config import SECTIONS

_UNSET = object()


@dataclass(frozen=True)
class Flag:
    """A flag (``--epochs``) that sets the settings ``targets`` (``'train.epochs'``; several for one flag that sets them
    together); ``value`` makes it a switch that sets that value; ``also`` holds settings a given flag implies."""

    name: str
    targets: tuple[str, ...]
    value: Any = _UNSET
    also: dict = field(default_factory=dict)

    @property
    def dest(self) -> str:
        """Return the argparse destination of the flag."""
        return self.name.lstrip("-").replace("-", "_")


STUDY_FLAGS: tuple[Flag, ...] = (
    Flag("--data-dir", ("data.data_dir",)),
    Flag("--synthetic-images", ("data.synthetic_images",)),
    Flag("--limit-train", ("data.limit_train",)),
    Flag("--limit-val", ("data.limit_val",)),
    Flag("--limit-test", ("data.limit_test",)),
    Flag("--epochs", ("train.epochs",)),
    Flag("--batch-size", ("train.batch_size",)),
    Flag("--lr", ("train.lr",)),
    Flag("--finetune-epochs", ("finetune.epochs",)),
    Flag("--norm-lambda", ("finetune.norm_lambda",)),
    Flag("--device", ("device",)),
    Flag("--threads", ("threads", "timing.threads")),
    Flag("--seeds", ("seeds",)),
    Flag("--study", ("study",)),
    Flag("--runtimes", ("timing.runtimes",)),
    Flag("--batch-n", ("timing.batch_n",)),
    Flag("--no-latency", ("timing.latency",), value=False),
    Flag("--executor", ("executor",)),
    Flag("--ray-address", ("ray.address",), also={"executor": "ray"}),
    Flag("--cpus-per-cell", ("ray.cpus_per_cell",)),
    Flag("--mlflow", ("mlflow",)),
)
SEARCH_FLAGS: tuple[Flag, ...] = (
    Flag("--trials", ("search.trials",)),
    Flag("--promote", ("search.promote",)),
    Flag("--sampler", ("search.sampler",)),
    Flag("--search-runtime", ("search.runtime",)),
)


def setting_field(path: str) -> dataclasses.Field:
    """Return the settings field at ``path`` (``'train.epochs'``, or a top-level ``'seeds'``).

    Raises:
        KeyError: no such setting.
    """
    section, _, name = path.rpartition(".")
    cls = SECTIONS[section] if section else StudySettings
    fields = {spec.name: spec for spec in dataclasses.fields(cls)}
    if name not in fields:
        raise KeyError(f"no setting {path!r}")
    return fields[name]


def _parser(path: str):
    """Return an argparse type for the setting at ``path``: its kind's conversion (text that does not convert is kept, so
    :func:`apply_flags` refuses it in the setting's own words, in one line)."""
    spec = setting_field(path)
    option = spec.metadata["option"]
    default = option.default

    def convert(text: str):
        if option.kind == "int":
            value = _parsed(text, int)
        elif option.kind == "float":
            value = _parsed(text, float)
        elif option.kind == "bool":
            value = {"true": True, "false": False}.get(text.lower(), text)
        elif isinstance(default, list) or (option.kind == "any" and "," in text):
            items = [item.strip() for item in text.split(",") if item.strip()]
            value = [_parsed(item, int) if isinstance(next(iter(default or []), None), int) else item for item in items]
        else:
            value = text
        return value

    convert.__name__ = path  # argparse names the type in its error message
    return convert


def _parsed(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        return text  # the setting's check says what was expected


def add_flags(parser: argparse.ArgumentParser, flags: tuple[Flag, ...]) -> None:
    """Add ``flags`` to ``parser``, each with its setting's help (its meaning and default) and type."""
    for flag in flags:
        option = setting_field(flag.targets[0]).metadata["option"]
        where = " and ".join(flag.targets)
        if flag.value is not _UNSET:
            parser.add_argument(
                flag.name,
                dest=flag.dest,
                action="store_const",
                const=flag.value,
                default=_UNSET,
                help=f"set {where} to {flag.value!r}: {option.doc}",
            )
            continue
        parser.add_argument(
            flag.name,
            dest=flag.dest,
            type=_parser(flag.targets[0]),
            default=_UNSET,
            metavar=flag.dest.upper(),
            help=f"{option.doc} (sets {where}; default {option.default!r})",
        )


def apply_flags(config: dict, args: argparse.Namespace, flags: tuple[Flag, ...]) -> dict:
    """Return ``config`` with every flag of ``flags`` given in ``args`` applied (the others leave it as it is).

    A training flag wins everywhere: a model's own ``train`` entry for the same key is dropped, so the flag is not
    silently beaten by it. A search flag creates the ``search`` section when the config has none.

    Raises:
        StudyConfigError: a flag's value does not fit its setting (the flag, the setting and what was expected named).
    """
    from bench.settings import field_problem

    config = copy.deepcopy(config)
    for flag in flags:
        value = getattr(args, flag.dest, _UNSET)
        if value is _UNSET:
            continue
        for path in flag.targets:
            problem = field_problem(setting_field(path), value)
            if problem:
                raise StudyConfigError(f"{flag.name} (sets {path}): {problem}")
        for path in flag.targets:
            _set(config, path, value)
        for path, implied in flag.also.items():
            _set(config, path, implied)
        for path in flag.targets:
            section, _, key = path.rpartition(".")
            if section == "train":
                config["models"] = [_without_train_key(entry, key) for entry in config["models"]]
    return config


def _set(config: dict, path: str, value) -> None:
    section, _, key = path.rpartition(".")
    if not section:
        config[key] = value
        return
    if config.get(section) is None:
        config[section] = {}
    if not isinstance(config[section], dict):
        raise StudyConfigError(f"{section}: expected a mapping, got {config[section]!r}")
    config[section][key] = value


def _without_train_key(entry, key: str):
    if isinstance(entry, dict) and key in entry.get("train", {}):
        entry = {**entry, "train": {k: v for k, v in entry["train"].items() if k != key}}
    return entry


__all__ = ["Flag", "SEARCH_FLAGS", "STUDY_FLAGS", "add_flags", "apply_flags", "setting_field"]
