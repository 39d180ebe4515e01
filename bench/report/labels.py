"""The names rows carry in every table and plot: one function per kind of label, used everywhere."""

from __future__ import annotations

from bench.store.schema import MAJORITY, group_hash, seedless


def display_label(model, variant) -> str:
    """Return ``model [variant]`` (``majority class`` for the majority predictor's row; no brackets without a variant)."""
    label = "majority class" if model == MAJORITY else str(model)
    if isinstance(variant, str) and variant:
        label += f" [{variant}]"
    return label


def row_label(row) -> str:
    """Return a row's ``label`` column when it has one, else :func:`display_label` of its model and variant."""
    label = row.get("label")
    if isinstance(label, str) and label:
        return label
    return display_label(row["model"], row.get("variant"))


def flatten_config(config, prefix: str = "") -> dict:
    """Return a nested config as ``{'train.epochs': 4, ...}`` (dotted paths to leaf values)."""
    if not isinstance(config, dict):
        return {prefix: config}
    flat = {}
    for key, value in config.items():
        flat.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _describe(key: str, value) -> str:
    short = key.rsplit(".", 1)[-1]
    if short == "data_fingerprint":
        return f"data {str(value)[:8]}"
    if value is True:
        return short
    if value is False:
        return f"no {short}"
    if isinstance(value, (list, tuple)):
        value = "x".join(map(str, value))
    return f"{short} {value}"


def group_labels(records: list[dict]) -> dict[str, str]:
    """Return ``{config_hash: label}``: the model [variant], and where runs of one model and variant differ in
    anything but their seed, what differs, e.g. ``slimnet (epochs 12, hflip)``. Runs whose configs are equal
    but for the seed share a label: they are seeds of one experiment."""
    groups = {}
    for record in records:
        cell = record["cell"]
        groups.setdefault(
            group_hash(cell), (display_label(cell["model"], cell.get("variant", "")), flatten_config(seedless(cell)))
        )
    by_base_label = {}
    for key, (label, flat) in groups.items():
        by_base_label.setdefault(label, []).append((key, flat))
    label_of_group = {}
    for label, members in by_base_label.items():
        if len(members) == 1:
            label_of_group[members[0][0]] = label
            continue
        keys = sorted({k for _, flat in members for k in flat})
        differing = [k for k in keys if len({repr(flat.get(k)) for _, flat in members}) > 1]
        for key, flat in members:
            label_of_group[key] = f"{label} ({', '.join(_describe(k, flat.get(k)) for k in differing)})"
    return {record["row"]["config_hash"]: label_of_group[group_hash(record["cell"])] for record in records}


def with_labels(frame, labels: dict[str, str] | None):
    """Return ``frame`` with a ``label`` column from ``labels`` ({config_hash: label}; model [variant] where absent)."""
    fallback = [display_label(m, v) for m, v in zip(frame["model"], frame["variant"].fillna(""))]
    mapped = frame["config_hash"].map(labels or {}) if "config_hash" in frame else fallback
    return frame.assign(label=[m if isinstance(m, str) and m else f for m, f in zip(mapped, fallback)])
