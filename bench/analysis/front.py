"""A search's measured front against the study's zoo models: does a compressed model dominate one?

A front member dominates a zoo model when it is **more accurate**, with the 95 % paired bootstrap interval of
the difference over the same test images above 0, **and faster**, with the 95 % interval of the latency ratio
(member / zoo model, in the search's runtime at its batch size, from the study's one timing phase) below 1. A
quantized member runs in the runtime's int8 form; the zoo model in the fp32 runtime (and its int8 figure is
shown beside). The verdict itself is every study's (``bench.study.dominance``); here it is taken in the search's runtime.
Pure functions of the records, the timing phase and the search summary (``bench.analysis.pipeline_search``).
"""

from __future__ import annotations

from bench.store.schema import MAJORITY
from bench.study.dominance import accuracy_difference, dominance, latency_of
from bench.study.timing_phase import row_ratio


def member_runtime(record: dict, search: dict) -> str:
    """Return the runtime a model of the search is compared in: the int8 form of the search's runtime for a quantized one."""
    return search["int8_runtime"] if record["row"].get("int8_settings") else search["runtime"]


def front_rows(records: list[dict], timing: dict | None, search: dict) -> list[dict]:
    """Return one row per promoted front member (and the searched model itself, first) and zoo model of the study.

    Columns: ``key`` (the member's cell hash), ``zoo`` (the zoo model's hash, '' when the study has none), ``runtime``,
    ``latency_ms`` with ``_lo``/``_hi``, ``base_ratio`` (member / searched model) with its interval, ``d_base``
    (accuracy minus the searched model's) with its interval, and against the zoo model ``d_zoo``, ``zoo_ratio`` (each
    with ``_lo``/``_hi``), ``zoo_int8_ratio`` (member / the zoo model in the int8 runtime), ``dominates`` and ``why_not``
    (what stands in the way, in numbers).
    """
    by_key = {r["row"]["config_hash"]: r for r in records}
    base = by_key.get(search["base_hash"])
    if base is None:
        return []
    batch = int(search["batch"])
    base_latency = latency_of(timing, base["row"]["config_hash"], search["runtime"], batch)
    zoo = [r for r in records if r["cell"]["model"] not in (MAJORITY, search["model"]) and not r["cell"].get("compression")]
    members = [base] + [by_key[k] for k in search["promoted"] if k in by_key]
    rows = []
    for member in members:
        key = member["row"]["config_hash"]
        runtime = member_runtime(member, search)
        latency = latency_of(timing, key, runtime, batch)
        row = {
            "key": key,
            "runtime": runtime,
            "latency_ms": latency["median_ms"] if latency else None,
            "latency_ms_lo": latency["median_lo"] if latency else None,
            "latency_ms_hi": latency["median_hi"] if latency else None,
        }
        for prefix, value in (
            ("base_ratio", row_ratio(latency, base_latency)),
            ("d_base", accuracy_difference(member, base) if member is not base else None),
        ):
            row.update(
                {prefix: value[0], f"{prefix}_lo": value[1], f"{prefix}_hi": value[2]}
                if value
                else {prefix: None, f"{prefix}_lo": None, f"{prefix}_hi": None}
            )
        for other in zoo or [None]:
            pair = dict(row, zoo="" if other is None else other["row"]["config_hash"])
            if other is not None:
                other_key = other["row"]["config_hash"]
                d = accuracy_difference(member, other)
                ratio = row_ratio(latency, latency_of(timing, other_key, search["runtime"], batch))
                int8_ratio = (
                    row_ratio(latency, latency_of(timing, other_key, search["int8_runtime"], batch))
                    if search["int8_runtime"]
                    else None
                )
                pair.update(
                    {
                        "d_zoo": d[0] if d else None,
                        "d_zoo_lo": d[1] if d else None,
                        "d_zoo_hi": d[2] if d else None,
                        "zoo_ratio": ratio[0] if ratio else None,
                        "zoo_ratio_lo": ratio[1] if ratio else None,
                        "zoo_ratio_hi": ratio[2] if ratio else None,
                        "zoo_int8_ratio": int8_ratio[0] if int8_ratio else None,
                    }
                )
                pair.update(dominance(d, ratio))
            rows.append(pair)
    return rows


def zoo_points(records: list[dict], timing: dict | None, search: dict) -> list[dict]:
    """Return ``{key, base_ratio, base_ratio_lo, base_ratio_hi}`` for every zoo model of the study: its latency in the search's
    fp32 runtime over the searched model's, in the same timing phase (None where it was not timed)."""
    batch = int(search["batch"])
    base_latency = latency_of(timing, search["base_hash"], search["runtime"], batch)
    points = []
    for record in records:
        if record["cell"]["model"] in (MAJORITY, search["model"]) or record["cell"].get("compression"):
            continue
        ratio = row_ratio(latency_of(timing, record["row"]["config_hash"], search["runtime"], batch), base_latency)
        points.append(
            {
                "key": record["row"]["config_hash"],
                "base_ratio": ratio[0] if ratio else None,
                "base_ratio_lo": ratio[1] if ratio else None,
                "base_ratio_hi": ratio[2] if ratio else None,
            }
        )
    return points


__all__ = ["front_rows", "member_runtime", "zoo_points"]
