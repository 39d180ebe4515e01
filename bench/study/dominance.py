"""Does a compressed model dominate a zoo model? The verdict of every study (``dominance.csv``) and of a search's front.

A compressed model dominates a zoo model (an uncompressed model of another architecture in the same study) when it is
**more accurate**, with the 95 % paired bootstrap interval of the difference over the same test images above 0, **and
faster**, with the 95 % interval of the latency ratio (compressed / zoo model, from the study's one timing phase) below
1. In a study each model runs in its fastest runtime at the batch size (a quantized variant in its fastest int8 runtime,
any other model in its fastest fp32 one: the runtimes its accuracy was measured for); the zoo model's fastest int8
runtime is given beside. A search compares in its own runtime instead (``bench.analysis.front``). Pure functions of the
records and the timing phase.
"""

from __future__ import annotations

from bench import metrics
from bench.store.records import as_stored
from bench.store.schema import DOMINANCE_COLUMNS, MAJORITY, make_row
from bench.study.timing_phase import best_runtime, row_ratio


def latency_of(timing: dict | None, key: str, runtime: str, batch: int) -> dict | None:
    """Return the timing phase's latency row of cell ``key`` in ``runtime`` at ``batch`` on the CPU, or None."""
    for row in (timing or {}).get("latency", []):
        if row["config_hash"] == key and row["runtime"] == runtime and int(row["batch"]) == batch and row["device"] == "cpu":
            return row
    return None


def fastest_latency(timing: dict | None, key: str, batch: int, exact: bool) -> dict | None:
    """Return the fastest CPU latency row of cell ``key`` at ``batch`` among the exact (fp32, ``exact``) or the int8
    runtimes (the summary's choice, ``best_runtime``), or None when it has none."""
    return best_runtime([row for row in (timing or {}).get("latency", []) if row["config_hash"] == key], batch, exact=exact)


def accuracy_difference(a: dict, b: dict) -> tuple[float, float, float] | None:
    """Return ``(difference, low, high)`` in points of mean accuracy, record ``a`` minus record ``b``, with the 95 % paired
    bootstrap interval over the same test images; None when either has no stored predictions or their test images differ."""
    if not a.get("test_predictions") or not b.get("test_predictions") or a["test_labels"] != b["test_labels"]:
        return None
    labels = metrics.unpack_bits(a["test_labels"])
    return metrics.paired_bootstrap(
        labels, metrics.unpack_bits(a["test_predictions"]), metrics.unpack_bits(b["test_predictions"])
    )["acc_mean"]


def dominance(difference: tuple[float, float, float] | None, ratio: tuple[float, float, float] | None) -> dict:
    """Return ``{dominates, why_not}`` for an accuracy difference (member minus zoo model, points, with its interval) and a
    latency ratio (member / zoo model, with its interval): dominance needs the difference's interval above 0 and the
    ratio's below 1; ``why_not`` names each condition that fails, with its numbers."""
    if difference is None or ratio is None:
        return {"dominates": False, "why_not": "not measured (no paired predictions or no latency in the same timing phase)"}
    reasons = []
    # as dominance.csv keeps them: a difference of -0.5650000000000003 read -0.57 here and -0.56 in the table beside it
    d, d_lo, d_hi = (as_stored(float(v)) for v in difference)
    r, r_lo, r_hi = (as_stored(float(v)) for v in ratio)
    if not d_lo > 0:
        reasons.append(f"accuracy {d:+.2f} pt [{d_lo:+.2f}, {d_hi:+.2f}] " + ("is lower" if d_hi < 0 else "is not surely higher"))
    if not r_hi < 1:
        reasons.append(f"latency {r:.2f}x [{r_lo:.2f}, {r_hi:.2f}] " + ("is slower" if r_lo > 1 else "is not surely lower"))
    return {"dominates": not reasons, "why_not": "; ".join(reasons)}


def _triple(prefix: str, value: tuple[float, float, float] | None) -> dict:
    return {prefix: value[0], f"{prefix}_lo": value[1], f"{prefix}_hi": value[2]} if value else {}


def dominance_rows(records: list[dict], timing: dict | None) -> list[dict]:
    """Return one :data:`DOMINANCE_COLUMNS` row per compressed model, zoo model of another architecture and timed batch
    size of the study (none without both, or without a timing phase): the verdict in each one's fastest runtime."""
    zoo = [r for r in records if r["cell"]["model"] != MAJORITY and not r["cell"].get("compression")]
    members = [r for r in records if r["cell"].get("compression")]
    batches = sorted({int(row["batch"]) for row in (timing or {}).get("latency", []) if row["device"] == "cpu"})
    rows = []
    for member in members:
        quantized = bool(member["row"].get("int8_settings"))
        for other in (z for z in zoo if z["cell"]["model"] != member["cell"]["model"]):
            difference = accuracy_difference(member, other)
            for batch in batches:
                mine = fastest_latency(timing, member["row"]["config_hash"], batch, exact=not quantized)
                theirs = fastest_latency(timing, other["row"]["config_hash"], batch, exact=True)
                theirs_int8 = fastest_latency(timing, other["row"]["config_hash"], batch, exact=False)
                ratio = row_ratio(mine, theirs)
                values = {
                    "member": member["row"]["config_hash"],
                    "zoo": other["row"]["config_hash"],
                    "batch": batch,
                    "member_runtime": mine["runtime"] if mine else None,
                    "member_ms": mine["median_ms"] if mine else None,
                    "zoo_runtime": theirs["runtime"] if theirs else None,
                    "zoo_ms": theirs["median_ms"] if theirs else None,
                    "zoo_int8_runtime": theirs_int8["runtime"] if theirs_int8 else None,
                    **_triple("d_acc", difference),
                    **_triple("ratio", ratio),
                    **_triple("zoo_int8_ratio", row_ratio(mine, theirs_int8)),
                    **dominance(difference, ratio),
                }
                rows.append(make_row(DOMINANCE_COLUMNS, values))
    return rows


__all__ = ["accuracy_difference", "dominance", "dominance_rows", "fastest_latency", "latency_of"]
