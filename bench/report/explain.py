"""Why a compression did not pay: one sentence per variant, runtime and batch size whose realization (measured speed-up
over its base / MAC reduction) is below :data:`REALIZATION_LIMIT`, from the numbers of the per-layer profiles.

The sentence compares the layers the compression changed (in the base: the layers the variant lacks or computes with
other MACs; in the variant: its new or changed layers) with the rest of the network, in MACs, bytes moved, roofline
floor and measured time (``layers.csv`` rows of kind ``profiled``, ``deploy.roofline``): a layer that moves more bytes
than it saves MACs sits under the memory roof, where fewer MACs buy no time.
"""

from __future__ import annotations

from bench.report.labels import row_label

REALIZATION_LIMIT = 0.8


def _profile(layers, key: str, runtime: str, batch: int) -> list[dict]:
    hit = layers[(layers["config_hash"] == key) & (layers["runtime"] == runtime) & (layers["batch"].astype(int) == batch)]
    return [r for r in hit.to_dict("records") if r["source"]]


def changed_layers(base: list[dict], variant: list[dict]) -> tuple[list[dict], list[dict]]:
    """Return ``(base rows, variant rows)`` of the layers a compression changed: the base's layers the variant does not
    compute with the same MACs, and the variant's layers the base does not (a factorized layer's factors, ``conv1.0.0``
    for ``conv1.0``, count as its replacement)."""
    base_macs = {(r["layer"], r["op"]): r["macs"] for r in base}
    variant_macs = {(r["layer"], r["op"]): r["macs"] for r in variant}
    before = [r for r in base if variant_macs.get((r["layer"], r["op"])) != r["macs"]]
    after = [r for r in variant if base_macs.get((r["layer"], r["op"])) != r["macs"]]
    return before, after


def _sums(rows: list[dict]) -> dict:
    return {
        "macs": sum(float(r["macs"]) for r in rows),
        "bytes": sum(float(r["bytes"]) for r in rows),
        "floor": sum(float(r["floor_ms"] or 0.0) for r in rows),
        "measured": sum(float(r["measured_ms"]) for r in rows),
        "memory": sum(r["bound"] == "memory" for r in rows),
        "count": len(rows),
    }


def _change(before: float, after: float) -> str:
    if not before:
        return "from none"
    ratio = after / before
    return f"{100 * (ratio - 1):+.0f} %" if ratio < 1.5 else f"{ratio:.1f}x"


def shortfall_sentence(label: str, runtime: str, batch: int, latency_row: dict, base: list[dict], variant: list[dict]) -> str:
    """Return the sentence that explains ``label``'s realization in ``runtime`` at ``batch`` (``latency_row``: its
    latency.csv row) from the per-layer profiles of its base and of itself."""
    before, after = changed_layers(base, variant)
    b, a = _sums(before), _sums(after)
    rest_before = _sums([r for r in base if r not in before])
    rest_after = _sums([r for r in variant if r not in after])
    text = (
        f"{label} in {runtime}, batch {batch}: realization {float(latency_row['realization']):.2f} "
        f"(speed-up {float(latency_row['speedup']):.2f}x for {float(latency_row['mac_reduction']):.2f}x fewer MACs). "
        f"The {b['count']} layer{'s' * (b['count'] != 1)} it changed became {a['count']}: MACs {_change(b['macs'], a['macs'])}, "
        f"bytes moved {_change(b['bytes'], a['bytes'])}; {a['memory']} of the {a['count']} are memory-bound "
        f"(before: {b['memory']} of {b['count']}), so their roofline floor went {b['floor']:.3f} -> {a['floor']:.3f} ms "
        f"({_change(b['floor'], a['floor'])}) and their profiled time {b['measured']:.3f} -> {a['measured']:.3f} ms "
        f"({_change(b['measured'], a['measured'])})"
    )
    if rest_before["count"]:
        text += f"; the unchanged rest ran {rest_before['measured']:.3f} -> {rest_after['measured']:.3f} ms"
    worst = max(after, key=lambda r: float(r["measured_ms"]) - float(r["floor_ms"] or 0.0), default=None)
    if worst is not None and worst["floor_ms"]:
        text += (
            f"; the furthest from its floor: {worst['layer']} ({worst['shape']}, {worst['bound']}-bound) "
            f"{float(worst['measured_ms']):.3f} ms, {float(worst['measured_ms']) / float(worst['floor_ms']):.1f}x its floor"
        )
    return text + "."


def shortfall_sentences(latency, layers, limit: float = REALIZATION_LIMIT) -> list[str]:
    """Return one sentence per compressed variant, runtime and batch size whose realization is below ``limit`` and whose
    runtime profiled both it and its base (:func:`shortfall_sentence`); empty without per-layer profiles."""
    if latency is None or layers is None or not len(layers) or "kind" not in layers:
        return []
    profiled = layers[layers["kind"] == "profiled"]
    lines = []
    for row in latency.to_dict("records"):
        realization = row.get("realization")
        if realization is None or realization != realization or float(realization) >= limit or not row.get("base_hash"):
            continue
        batch = int(row["batch"])
        base = _profile(profiled, row["base_hash"], row["runtime"], batch)
        variant = _profile(profiled, row["config_hash"], row["runtime"], batch)
        if base and variant:
            lines.append(shortfall_sentence(row_label(row), row["runtime"], batch, row, base, variant))
    return lines


__all__ = ["REALIZATION_LIMIT", "changed_layers", "shortfall_sentence", "shortfall_sentences"]
