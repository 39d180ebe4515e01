"""The model card shipped with an exported model: what it is, how it was made and what it costs, as the study measured it.

Pure functions of the study's record of the model, its latency rows and the timing phase's machine: every measured
number on the card is one of the study's tables (results.csv, latency.csv, per_attribute.csv), to their decimals, never
measured again here.
"""

from __future__ import annotations

import json

from bench.store.records import as_stored
from bench.store.schema import as_number


def _stored(value) -> float | None:
    """Return ``value`` as the study's tables store it (rounded to their decimals), or None when not measured."""
    # the records keep full precision; a card whose 0.4971665 reads 0.497167 in latency.csv would contradict the table
    number = as_number(value)
    return None if number is None else as_stored(number)


def _made(record: dict, by_batch: dict[int, dict]) -> dict:
    row, cell = record["row"], record["cell"]
    return {
        "architecture": row["model"],
        "compression": row["compression"] or "none",
        "compression_notes": row["compression_notes"],
        "int8_settings": (by_batch.get(1) or {}).get("int8_settings", ""),
        "study": row["study"],
        "config_hash": row["config_hash"],
        "seed": row["seed"],
        "train": cell["train"],
        "finetune": cell["finetune"] if cell.get("compression") else None,
        "data": {"dataset": row["dataset"], "fingerprint": cell.get("data_fingerprint"), **row_sizes(row)},
        "train_setup": row["train_setup"],
        "git_commit": row["git_commit"],
    }


def _costs(row: dict, by_batch: dict[int, dict]) -> dict:
    return {
        "params": int(row["params"]),
        "macs": int(row["macs"]),
        "disk_bytes": int(row["disk_bytes"]),
        "latency_ms": {
            str(batch): {
                "median": _stored(r["median_ms"]),
                "interval_95": [_stored(r["median_lo"]), _stored(r["median_hi"])],
                "peak_mb": _stored(r.get("peak_mb")),
                "peak_mb_spread": _stored(r.get("peak_mb_spread")),
                "cold_ms": _stored(r.get("cold_ms")),
                "memory_settings": r.get("memory_settings") or None,
            }
            for batch, r in sorted(by_batch.items())
        },
    }


def card(
    record: dict,
    label: str,
    runtime: str,
    rows: list[dict],
    machine: dict,
    data_config: dict,
    files: list[str],
    checked: dict,
) -> dict:
    """Return the model card of ``record`` (the study's cell record, its timing columns joined) shipped for ``runtime``:
    ``rows`` its latency.csv rows in that runtime (batch 1 and batch N), ``machine`` the timing phase's, ``data_config``
    the model's input transform, ``files`` the shipped file names, ``checked`` the export's own accuracy check
    (``acc_mean``, ``images``, ``study_acc_mean``)."""
    row = record["row"]
    by_batch = {int(r["batch"]): r for r in rows}
    per_attribute = {p["attribute"]: _stored(p["acc"]) for p in record["per_attribute"]}
    # the thresholds stay at full precision: they are thresholds.json's, the values the shipped model decides with
    thresholds = {p["attribute"]: p["threshold_tuned"] for p in record["per_attribute"]}
    exact = not runtime.endswith("_int8")
    return {
        "model": label,
        "runtime": runtime,
        "files": files,
        "made": _made(record, by_batch),
        "input": {
            "shape": ["batch", *data_config["input_size"]],
            "dtype": "float32",
            "layout": "NCHW",
            "preprocessing": "RGB in [0, 1], (x - mean) / std per channel, resized to the input size (bilinear, antialiased)",
            "mean": list(data_config["mean"]),
            "std": list(data_config["std"]),
        },
        "output": {
            "shape": ["batch", len(per_attribute)],
            "meaning": "one logit per attribute; positive when logit > 0 (or sigmoid(logit) > the attribute's threshold)",
            "attributes": list(per_attribute),
            "thresholds_f1": thresholds,
        },
        "accuracy": {
            "acc_mean": _stored(row["acc_mean"]) if exact else _stored((by_batch.get(1) or {}).get("acc_mean")),
            "acc_mean_fp32": _stored(row["acc_mean"]),
            "interval_95": [_stored(row["acc_mean_lo"]), _stored(row["acc_mean_hi"])],
            "mA": _stored(row["mA"]),
            "f1": _stored(row["f1"]),
            "per_attribute": per_attribute,
            "split": f"test ({row['n_test']} images)",
            "export_check": checked,
        },
        "costs": _costs(row, by_batch),
        "machine": {
            "cpu": row["cpu_name"],
            "isa": machine.get("cpu_isa"),
            "threads": row["threads"],
            "fp32_peak_gflops": _stored(machine.get("peak_gflops")),
            "versions": {k: row[k] for k in ("torch_version", "onnxruntime_version", "openvino_version") if row.get(k)},
        },
    }


def row_sizes(row: dict) -> dict:
    """Return the split sizes of a result row (``n_train``, ``n_val``, ``n_test``)."""
    return {k: int(row[k]) for k in ("n_train", "n_val", "n_test") if as_number(row.get(k)) is not None}


def card_markdown(model_card: dict) -> str:
    """Return the model card as Markdown (the same numbers as its JSON)."""
    made, accuracy, costs, machine = model_card["made"], model_card["accuracy"], model_card["costs"], model_card["machine"]
    low, high = accuracy["interval_95"]
    lines = [
        f"# {model_card['model']} in {model_card['runtime']}",
        "",
        f"Files: {', '.join(model_card['files'])}. Made by study `{made['study']}` (cell `{made['config_hash']}`, seed "
        f"{made['seed']}, commit `{made['git_commit'] or 'unknown'}`): {made['architecture']}, compression "
        f"`{made['compression']}`" + (f" ({made['compression_notes']})" if made["compression_notes"] else "") + ".",
        f"Data: {made['data']['dataset']} (fingerprint {made['data']['fingerprint']}), trained in {made['train_setup']}.",
        "",
        "## Input and output",
        "",
        f"- input: {model_card['input']['dtype']} {model_card['input']['layout']} {model_card['input']['shape']}; "
        f"{model_card['input']['preprocessing']}; mean {model_card['input']['mean']}, std {model_card['input']['std']}",
        f"- output: {model_card['output']['meaning']} (thresholds.json: the F1 thresholds fitted on the validation split)",
        "",
        "## Accuracy (the study's test split)",
        "",
        f"- mean accuracy in {model_card['runtime']}: {accuracy['acc_mean']:.2f} % (fp32: {accuracy['acc_mean_fp32']:.2f} %, "
        f"95 % interval [{low:.2f}, {high:.2f}]); mA {accuracy['mA']:.2f} %, F1 {accuracy['f1']:.2f} %",
        f"- export check: the shipped file reached {accuracy['export_check']['acc_mean']:.2f} % on "
        f"{accuracy['export_check']['images']} test images, loaded with only its runtime "
        f"(the study: {accuracy['export_check']['study_acc_mean']:.2f} %)",
        "",
        "## Costs",
        "",
        f"- {costs['params']:,} parameters, {costs['macs'] / 1e6:.1f} M MACs, {costs['disk_bytes'] / 1e6:.2f} MB on disk (fp32)",
    ]
    for batch, latency in costs["latency_ms"].items():
        low_ms, high_ms = latency["interval_95"]
        line = f"- batch {batch}: {latency['median']:.3f} ms [{low_ms:.3f}, {high_ms:.3f}]"
        if latency["peak_mb"] is not None:
            spread = latency["peak_mb_spread"]
            line += f", peak memory {latency['peak_mb']:.1f} MB (spread {spread:.1f}; {latency['memory_settings']})"
        if latency["cold_ms"] is not None:
            line += f", cold start {latency['cold_ms']:.1f} ms"
        lines.append(line)
    if all(latency["peak_mb"] is None for latency in costs["latency_ms"].values()):
        lines.append("- peak memory and cold start: not measured (the study ran with `timing.footprint: false`)")
    lines += [
        "",
        f"Measured on {machine['cpu']} ({machine['isa']}, {machine['threads']} threads, fp32 peak "
        f"{machine['fp32_peak_gflops']:.0f} GFLOP/s); {', '.join(f'{k} {v}' for k, v in machine['versions'].items())}.",
        "",
        "## Per-attribute accuracy (%)",
        "",
        "| Attribute | Acc | F1 threshold |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {name} | {acc:.2f} | {model_card['output']['thresholds_f1'][name]:.2f} |"
        for name, acc in accuracy["per_attribute"].items()
    ]
    return "\n".join(lines) + "\n"


def card_json(model_card: dict) -> str:
    """Return the model card as indented JSON."""
    return json.dumps(model_card, indent=1, default=str) + "\n"


__all__ = ["card", "card_json", "card_markdown", "row_sizes"]
