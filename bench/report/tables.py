"""The study's tables as (headers, rows[, bold flags]), built from results alone: the summary, paired
comparisons, per-attribute accuracy, latency per runtime, realized speed-ups and the per-layer table.

Statistics of accuracy (paired bootstrap) are computed here; latency intervals come from the timing
phase (``bench.study.timing_phase``) through the CSV columns. Rendering to Markdown and LaTeX is ``bench.report.markup``.
"""

from __future__ import annotations

import numpy as np

from bench import metrics
from bench.report.labels import row_label, with_labels
from bench.store.schema import MAJORITY, as_number

# (result column, header, scale, decimals, better): better is "max", "min" or None (not bolded);
# decimals "x" prints a ratio as "1.12x", None prints the text as it is.
SUMMARY_COLUMNS = (
    ("params", "#P (M)", 1e-6, 3, None),
    ("macs", "MACs (G)", 1e-9, 3, None),
    ("mA", "mA", 1, 2, "max"),
    ("acc_mean", "Acc", 1, 2, "max"),
    ("acc_mean_nofinetune", "Acc no-FT", 1, 2, None),
    ("precision", "Prec", 1, 2, "max"),
    ("recall", "Recall", 1, 2, "max"),
    ("f1", "F1", 1, 2, "max"),
    ("ppp", "PPP (mA/M)", 1, 2, "max"),
    ("ece", "ECE", 1, 2, "min"),
    ("runtime_b1", "Runtime", 1, None, None),
    ("latency_b1_ms", "b1 (ms)", 1, 2, "min"),
    ("ref_ratio_b1", "b1 / ref", 1, "x", None),
    ("floor_ratio_b1", "b1 / floor", 1, "x", None),
    ("roofline_ratio_b1", "b1 / roofline", 1, "x", None),
    ("latency_bN_ms", "bN (ms)", 1, 1, "min"),
    ("ref_ratio_bN", "bN / ref", 1, "x", None),
    ("speedup_b1", "Speed-up b1", 1, "x", "max"),
    ("speedup_bN", "Speed-up bN", 1, "x", None),
    ("realization_b1", "Realized b1", 1, 2, None),
    ("runtime_int8_b1", "int8 runtime", 1, None, None),
    ("acc_mean_int8", "Acc int8", 1, 2, None),
    ("latency_int8_b1_ms", "int8 b1 (ms)", 1, 2, "min"),
    ("ref_ratio_int8_b1", "int8 b1 / ref", 1, "x", None),
    ("latency_int8_bN_ms", "int8 bN (ms)", 1, 1, "min"),
    ("ref_ratio_int8_bN", "int8 bN / ref", 1, "x", None),
    ("gpu_b1_ms", "GPU b1 (ms)", 1, 3, "min"),
    ("disk_bytes", "Disk (MB)", 1e-6, 2, "min"),
    ("disk_bytes_zip", "Zip (MB)", 1e-6, 2, "min"),
)
TEXT_SUMMARY_COLUMNS = [c[0] for c in SUMMARY_COLUMNS if c[3] is None]


INTERVAL_COLUMNS = ("acc_mean", "mA", "f1")  # shown as value +- half the 95 % bootstrap interval (or +- sd over seeds)
# Latency columns shown as value +- half their 95 % bootstrap interval over timing blocks ({column: (low column, high column)}).
LATENCY_INTERVALS = {
    f"{name}_{suffix}{unit}": (f"{name}_{suffix}_lo", f"{name}_{suffix}_hi")
    for name, unit in (
        ("latency", "_ms"),
        ("ref_ratio", ""),
        ("speedup", ""),
        ("realization", ""),
        ("latency_int8", "_ms"),
        ("ref_ratio_int8", ""),
    )
    for suffix in ("b1", "bN")
}


def _missing(value) -> bool:
    return value is None or value == "" or (isinstance(value, float) and np.isnan(value))


def _plus_minus(low, high, scale, decimals) -> str:
    """Return `` +- x``: half the interval [low, high] in the value's format ('' when the interval is missing)."""
    if _missing(low) or _missing(high):
        return ""
    half = (float(high) - float(low)) / 2 * scale
    return f" +- {half:.2f}x" if decimals == "x" else f" +- {half:.{decimals}f}"


def _cell_text(value, scale, decimals) -> str:
    if _missing(value):
        return ""
    if decimals is None:
        return str(value)
    if decimals == "x":
        return f"{float(value) * scale:.2f}x"
    return f"{float(value) * scale:.{decimals}f}"


def summary_table(frame, labels: dict[str, str] | None = None) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Return (headers, cell texts, bold flags) of the summary table, majority row first.

    One row per experiment: runs whose configs differ only in their seed (``labels``, see
    :func:`group_labels`) are averaged, and the seeds column counts them. Accuracy, mA and F1 show
    ``value +- x``: x is half the 95 % bootstrap interval over test images for one seed, the
    standard deviation over seeds for several. Bold marks the best model value per column (the
    majority row never counts). Columns empty for every row (e.g. GPU latency without a GPU) are
    kept, so a reader sees they were not measured.
    """
    import pandas as pd

    frame = with_labels(frame, labels)
    numeric = {c[0]: pd.to_numeric(frame[c[0]], errors="coerce") for c in SUMMARY_COLUMNS if c[3] is not None}
    bounds = {
        f"{c}_{end}": pd.to_numeric(frame[f"{c}_{end}"], errors="coerce")
        for c in INTERVAL_COLUMNS
        for end in ("lo", "hi")
        if f"{c}_{end}" in frame
    }
    bounds.update(
        {b: pd.to_numeric(frame[b], errors="coerce") for pair in LATENCY_INTERVALS.values() for b in pair if b in frame}
    )
    grouped = frame.assign(**numeric, **bounds).groupby("label", sort=False)
    table = grouped.mean(numeric_only=True).reset_index()
    spread = grouped.std(numeric_only=True).reset_index(drop=True)
    for column in TEXT_SUMMARY_COLUMNS + ["model"]:
        table[column] = grouped[column].first().values
    table["n_seeds"] = grouped["seed"].nunique().values
    if "diverged" in frame:
        table["diverged"] = (
            grouped["diverged"]
            .agg(lambda reasons: "; ".join(sorted({str(r) for r in reasons if isinstance(r, str) and r})))
            .values
        )
    headers = ["Model"] + [c[1] for c in SUMMARY_COLUMNS] + ["seeds"]
    rows, bold = [], []
    is_model = table["model"] != MAJORITY
    if "diverged" in table:  # a diverged row is never the best
        is_model &= ~table["diverged"].astype(bool)
    best = {}
    for column, _, _, _, better in SUMMARY_COLUMNS:
        values = table.loc[is_model, column].dropna() if column in table else []
        if better and len(values):
            best[column] = values.max() if better == "max" else values.min()
    for index, row in table.iterrows():
        texts = [row_label(row) + (" (diverged)" if row.get("diverged") else "")]
        flags = [False]
        for column, _, scale, decimals, _ in SUMMARY_COLUMNS:
            value = row.get(column)
            text = _cell_text(value, scale, decimals)
            if column in INTERVAL_COLUMNS and text:
                half = (
                    spread.loc[index, column]
                    if row["n_seeds"] > 1
                    else (row.get(f"{column}_hi", float("nan")) - row.get(f"{column}_lo", float("nan"))) / 2
                )
                text += "" if _missing(half) else f" +- {half:.2f}"
            elif column in LATENCY_INTERVALS and text and row["n_seeds"] == 1:
                low, high = LATENCY_INTERVALS[column]
                text += _plus_minus(row.get(low), row.get(high), scale, decimals)
            texts.append(text)
            flags.append(bool(row["model"] != MAJORITY and not row.get("diverged") and column in best and value == best[column]))
        texts.append(str(int(row["n_seeds"])))
        flags.append(False)
        rows.append(texts)
        bold.append(flags)
    return headers, rows, bold


def variant_key_table(frame) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows): each compressed variant's display label beside its full specification (the ``compression``
    column)."""
    compressed = frame[frame["compression"].fillna("").astype(str) != ""]
    seen = dict.fromkeys(zip((row_label(r) for _, r in compressed.iterrows()), compressed["compression"]))
    return ["Variant", "Compression (full specification)"], [[label, spec] for label, spec in seen]


def comparisons(records: list[dict], labels: dict[str, str], reference: str) -> tuple[list[dict], list[dict]]:
    """Return ``(rows, attribute rows)`` of paired comparisons on the same test images: each compressed
    variant against its base, and every other model (the majority predictor too) against the study's
    ``reference`` model (its uncompressed cells), seed by seed. Rows hold the difference A - B in points of ``acc_mean``,
    ``mA`` and ``f1`` with its 95 % paired bootstrap interval and ``significant`` (the interval of acc_mean excludes 0);
    attribute rows the same for each attribute's accuracy. Records without stored predictions, or scored on other test images,
    are not compared."""
    by_hash = {r["row"]["config_hash"]: r for r in records if r.get("test_predictions")}
    pairs = []
    for record in by_hash.values():
        cell = record["cell"]
        if cell.get("compression") and cell.get("base_hash") in by_hash:
            pairs.append((record, by_hash[cell["base_hash"]], "variant vs its base"))
    references = [r for r in by_hash.values() if r["cell"]["model"] == reference and not r["cell"].get("compression")]
    for record in by_hash.values():
        cell = record["cell"]
        if cell.get("compression") or cell["model"] == reference:
            continue
        for reference_record in references:
            if reference_record["cell"]["seed"] == cell["seed"] or cell["model"] == MAJORITY:
                pairs.append((record, reference_record, f"model vs {reference}"))
    rows, attribute_rows = [], []
    for a, b, kind in pairs:
        if a["test_labels"] != b["test_labels"]:
            continue
        labels_matrix = metrics.unpack_bits(a["test_labels"])
        pa, pb = metrics.unpack_bits(a["test_predictions"]), metrics.unpack_bits(b["test_predictions"])
        name = f"{labels[a['row']['config_hash']]} vs {labels[b['row']['config_hash']]}"
        seed = b["cell"]["seed"]
        row = {"comparison": name, "kind": kind, "seed": seed, "n_test": len(labels_matrix)}
        for metric, (difference, low, high) in metrics.paired_bootstrap(labels_matrix, pa, pb).items():
            row.update({f"d_{metric}": difference, f"d_{metric}_lo": low, f"d_{metric}_hi": high})
        row["significant"] = not (row["d_acc_mean_lo"] <= 0 <= row["d_acc_mean_hi"])
        rows.append(row)
        difference, low, high = metrics.paired_attribute_bootstrap(labels_matrix, pa, pb)
        names = [p["attribute"] for p in a["per_attribute"]]
        attribute_rows += [
            {
                "comparison": name,
                "seed": seed,
                "attribute": attribute,
                "d_acc": float(difference[j]),
                "d_acc_lo": float(low[j]),
                "d_acc_hi": float(high[j]),
                "significant": not (low[j] <= 0 <= high[j]),
            }
            for j, attribute in enumerate(names)
        ]
    return rows, attribute_rows


def _difference_text(value, low, high, significant: bool) -> str:
    return f"{value:+.2f} [{low:+.2f}, {high:+.2f}]" + ("" if significant else " n.s.")


def comparison_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of the paired comparisons: A - B in points with the 95 % interval; n.s. = it contains 0."""
    headers = ["Comparison (A vs B)", "Seed", "d Acc", "d mA", "d F1"]
    body = [
        [r["comparison"], str(r["seed"])]
        + [
            _difference_text(r[f"d_{m}"], r[f"d_{m}_lo"], r[f"d_{m}_hi"], not (r[f"d_{m}_lo"] <= 0 <= r[f"d_{m}_hi"]))
            for m in INTERVAL_COLUMNS
        ]
        for r in rows
    ]
    return headers, body


def attribute_difference_table(attribute_rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows): attributes as rows, one column per comparison, each cell A - B in points of
    that attribute's accuracy with its paired interval (n.s. = it contains 0)."""
    columns = list(dict.fromkeys(f"{r['comparison']} (seed {r['seed']})" for r in attribute_rows))
    cells = {
        (f"{r['comparison']} (seed {r['seed']})", r["attribute"]): _difference_text(
            r["d_acc"], r["d_acc_lo"], r["d_acc_hi"], r["significant"]
        )
        for r in attribute_rows
    }
    attributes = list(dict.fromkeys(r["attribute"] for r in attribute_rows))
    return ["Attribute"] + columns, [[a] + [cells.get((c, a), "") for c in columns] for a in attributes]


def pivot_by_runtime(frame, keys: list[str], cell) -> tuple[list[str], list[tuple[tuple, object, list[str]]]]:
    """Return ``(runtimes, groups)``: the runtimes of ``frame`` in order of appearance, and per group of ``keys``
    ``(key values, group frame, [cell(rows of that runtime) or '' per runtime])``: the one pivot every per-runtime table uses."""
    runtimes = [r for r in dict.fromkeys(frame["runtime"].fillna("")) if r]
    groups = []
    for key, part in frame.groupby(keys, sort=False):
        texts = []
        for runtime in runtimes:
            hit = part[part["runtime"] == runtime]
            texts.append(cell(hit) if len(hit) else "")
        groups.append((key, part, texts))
    return runtimes, groups


def _interval_text(value, low, high, decimals: int, suffix: str = "") -> str:
    text = f"{value:.{decimals}f}{suffix}"
    return text if _missing(low) or _missing(high) else text + f" +- {(high - low) / 2:.{decimals}f}{suffix}"


def _latency_cell(hit) -> str:
    row = hit.iloc[0]
    text = _interval_text(row["median_ms"], row.get("median_lo"), row.get("median_hi"), 2)
    ratios = [f"{row[k]:.2f}x{mark}" for k, mark in (("floor_ratio", ""), ("roofline_ratio", " r")) if not _missing(row.get(k))]
    if ratios:
        text += f" ({', '.join(ratios)})"
    if not _missing(row.get("ref_ratio")):
        text += f" [{_interval_text(row['ref_ratio'], row.get('ref_ratio_lo'), row.get('ref_ratio_hi'), 2, 'x')}]"
    return text + ("*" if str(row.get("busy")).lower() == "true" else "")


def latency_table(latency) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of latency per runtime: one row per model variant, device and batch, one column per
    runtime, each cell ``ms (mean of block medians) +- half its 95 % interval (measured / compute floor, measured
    / roofline floor 'r') [latency / the reference model's +- interval]``; ``*`` marks a measurement taken while a
    load probe flagged the machine busy.
    """
    frame = latency.assign(label=[row_label(r) for _, r in latency.iterrows()])
    runtimes, groups = pivot_by_runtime(frame, ["label", "device", "batch"], _latency_cell)
    return (
        ["Model", "Device", "Batch"] + runtimes,
        [[label, str(device), str(int(batch))] + texts for (label, device, batch), _, texts in groups],
    )


def _speedup_cell(hit) -> str:
    row = hit.iloc[0]
    text = _interval_text(row["speedup"], row.get("speedup_lo"), row.get("speedup_hi"), 2, "x")
    return text + ("" if _missing(row.get("realization")) else f" ({row['realization']:.2f})")


def realization_table(latency) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of compressed variants against their base, per runtime: the MAC and parameter
    reductions, then per runtime ``measured speed-up +- half its 95 % interval (realization = speed-up / MAC reduction)``."""
    compressed = latency[latency["speedup"].notna()]
    frame = compressed.assign(label=[row_label(r) for _, r in compressed.iterrows()])
    runtimes, groups = pivot_by_runtime(frame, ["label", "device", "batch"], _speedup_cell)
    rows = [
        [
            label,
            str(device),
            str(int(batch)),
            f"{part['mac_reduction'].median():.2f}x",
            f"{part['param_reduction'].median():.2f}x",
        ]
        + texts
        for (label, device, batch), part, texts in groups
    ]
    return ["Variant", "Device", "Batch", "MAC reduction", "Param reduction"] + runtimes, rows


def floor_statements(latency, limit: float = 1.5) -> list[str]:
    """Return one sentence per model variant and batch: its fastest exact runtime and how far it is from the compute floor."""
    exact = latency[latency["exact"].astype(str).str.lower().eq("true") & latency["floor_ratio"].notna()]
    lines = []
    exact = exact.assign(label=[row_label(r) for _, r in exact.iterrows()])
    for (_, batch), part in exact.groupby(["label", "batch"], sort=False):
        best = part.loc[part["median_ms"].idxmin()]
        verdict = "within" if best["floor_ratio"] <= limit else "beyond"
        roofline = (
            ""
            if _missing(best.get("roofline_ratio"))
            else f", {best['roofline_ratio']:.2f}x its roofline floor of {best['roofline_ms']:.2f} ms"
        )
        lines.append(
            f"{row_label(best)}, batch {int(batch)}: fastest exact runtime {best['runtime']} at "
            f"{_interval_text(best['median_ms'], best.get('median_lo'), best.get('median_hi'), 2)} ms, "
            f"{best['floor_ratio']:.2f}x the compute floor of {best['floor_ms']:.2f} ms ({verdict} {limit}x){roofline}"
        )
    return lines


def per_attribute_table(per_attribute) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows): attributes as rows, model variants as columns, the mean row last."""
    frame = per_attribute.assign(column=[row_label(r) for _, r in per_attribute.iterrows()])
    pivot = frame.pivot_table(index="attribute", columns="column", values="acc", aggfunc="mean", sort=False)
    order = list(dict.fromkeys(frame["column"]))
    attribute_order = list(dict.fromkeys(frame["attribute"]))
    pivot = pivot.reindex(index=attribute_order, columns=order)
    headers = ["Attribute"] + order
    rows = [[name] + [f"{v:.2f}" for v in pivot.loc[name]] for name in attribute_order]
    rows.append(["Mean"] + [f"{v:.2f}" for v in pivot.mean(axis=0)])
    return headers, rows


def _norm_sums(row) -> str:
    als, epc = row.get("norm_sum_als"), row.get("norm_sum_epc")
    if als is None or als != als or als == "":
        return ""
    return f"{float(als):.4g}" + ("" if epc is None or epc != epc or epc == "" else f" -> {float(epc):.4g}")


def _flag(value) -> bool:
    return str(value).lower() == "true"


def in_model_speedup(profiled, base: str, variant: str, layer: str, runtime: str, batch: int = 1) -> float | None:
    """Return a compressed layer's speed-up inside the whole model, from the per-layer profiles (kind profiled) of the
    base and the variant in ``runtime`` at ``batch``: the base's time on ``layer`` over the variant's on it and its
    replacement layers (``layer.0``, ``layer.1``, ...); None when either was not profiled there."""
    where = (profiled["runtime"] == runtime) & (profiled["batch"].astype(int) == batch)
    names = profiled["layer"].astype(str)
    before = profiled[where & (profiled["config_hash"] == base) & (names == layer)]["measured_ms"].astype(float).sum()
    mine = where & (profiled["config_hash"] == variant) & ((names == layer) | names.str.startswith(layer + "."))
    after = profiled[mine]["measured_ms"].astype(float).sum()
    return before / after if before > 0 and after > 0 else None


def layer_table(layers, bases: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of the per-layer speed-up table in the layout of LWALM's Table 1: one measured column per
    runtime the layers were timed alone in, and one per runtime that profiled base and variant inside the whole model
    at batch 1 (``bases``: {variant hash: base hash}; :func:`in_model_speedup`). ``r`` marks a speed-up above 1.5x the
    theoretical one that was retimed and confirmed; ``*`` a timing the load probe flagged busy."""

    def measured(hit) -> str:
        row = hit.iloc[0]
        marks = ("r" if _flag(row.get("confirmed")) else "") + ("*" if _flag(row.get("busy")) else "")
        return "" if _missing(row["measured_speedup"]) else f"{row['measured_speedup']:.2f}x{marks}"

    kinds = layers["kind"].astype(str)
    replaced, profiled = layers[kinds != "profiled"], layers[kinds == "profiled"]
    frame = replaced.assign(label=[row_label(r) for _, r in replaced.iterrows()], runtime=replaced["runtime"].fillna(""))
    runtimes, groups = pivot_by_runtime(frame, ["label", "layer", "method"], measured)
    in_model = sorted(set(profiled["runtime"])) if bases else []
    headers = (
        ["Model", "Layer", "Kernel", "Method", "Rank", "MACs of new layers", "MACs before", "Theor. speed-up"]
        + [f"Measured alone ({r})" for r in runtimes if r]
        + [f"In model ({r})" for r in in_model]
        + ["Weight rel. error", "Rank-1 norm sum (ALS -> EPC)"]
    )
    rows = []
    for (label, layer, method), part, measured_texts in groups:
        first = part.iloc[0]
        in_model_texts = []
        for runtime in in_model:
            speedup = in_model_speedup(profiled, bases.get(first["config_hash"], ""), first["config_hash"], str(layer), runtime)
            in_model_texts.append("" if speedup is None else f"{speedup:.2f}x")
        measured_texts = [t for t, r in zip(measured_texts, runtimes) if r] + in_model_texts
        rows.append(
            [
                label,
                str(layer),
                str(first["kernel"]),
                str(method),
                first["rank"],
                str(first["new_layer_macs"]),
                f"{int(first['macs_before']):,}",
                f"{first['theoretical_speedup']:.2f}x",
            ]
            + measured_texts
            + [_cell_text(first.get("rel_error"), 1, 4), _norm_sums(first)]
        )
    return headers, rows


def warning_lines(records: list[dict], labels: dict[str, str]) -> list[str]:
    """Return one line per thing a reader of the summary must know about a row: a diverged training
    (``diverged`` column), int8 slower than fp32 and why (``int8_note``), what a compression step could not do as asked
    (``compression_warnings``) and a compression setting the engine changed (e.g. a CPD-EPC ``delta`` raised to the ALS
    error, from the layer rows' ``note``)."""
    lines = []
    for record in records:
        row = record["row"]
        label = f"{labels.get(row['config_hash'], row['model'])} (seed {row['seed']})"
        if row.get("diverged"):
            lines.append(f"{label}: training diverged: {row['diverged']}")
        if row.get("int8_note"):
            lines.append(f"{label}: {row['int8_note']}")
        if row.get("compression_warnings"):
            lines.extend(f"{label}: {warning}" for warning in row["compression_warnings"].split("; "))
        notes = sorted({f"{x['layer']}: {x['note']}" for x in record.get("layers", []) if x.get("note")})
        lines.extend(f"{label}: {note}" for note in notes)
    return lines + majority_lines(records)


def majority_lines(records: list[dict]) -> list[str]:
    """Return a line when no model of the study is surely more accurate than the majority-class predictor (its test
    accuracy's 95 % interval above the majority's): such a study has learned nothing the label frequencies do not give."""
    majority = [float(r["row"]["acc_mean"]) for r in records if r["row"]["model"] == MAJORITY]
    learners = [r["row"] for r in records if r["row"]["model"] != MAJORITY and as_number(r["row"].get("acc_mean")) is not None]
    if not majority or not learners:
        return []
    floor = max(majority)
    if any((as_number(row.get("acc_mean_lo")) or float(row["acc_mean"])) > floor for row in learners):
        return []
    best = max(learners, key=lambda row: float(row["acc_mean"]))
    return [
        f"no model is surely more accurate than the majority-class predictor ({floor:.2f} %; the best, "
        f"{row_label(best)}, {float(best['acc_mean']):.2f} %): the models learned nothing the label frequencies do not "
        f"give; train longer or on more images, or check the labels"
    ]


def _bracket_text(value, low, high, unit: str = "", decimals: int = 2) -> str:
    if value is None:
        return ""
    return f"{value:.{decimals}f}{unit} [{low:.{decimals}f}, {high:.{decimals}f}]"


def _signed_text(value, low, high) -> str:
    return "" if value is None else f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"


def dominance_table(frame, labels: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """Return ``(headers, rows)`` of ``dominance.csv`` (:func:`bench.study.dominance.dominance_rows`): per compressed
    model, zoo model and batch size, each in its fastest runtime, the paired accuracy difference, the latency ratio and
    the verdict."""
    headers = ["Model", "vs zoo model", "Batch", "Runtime (ms)", "Zoo runtime (ms)", "d Acc (pt)", "Latency / zoo", "/ zoo int8"]
    headers.append("Dominates?")
    table = []
    for row in frame.to_dict("records"):
        number = {k: as_number(row.get(k)) for k in ("member_ms", "zoo_ms", "d_acc", "d_acc_lo", "d_acc_hi")}
        ratios = {k: as_number(row.get(k)) for k in frame.columns if "ratio" in k}

        def timed(runtime, ms):
            return f"{runtime} ({ms:.3g})" if runtime and ms is not None else "not timed"

        int8 = f"{ratios['zoo_int8_ratio']:.2f} ({row['zoo_int8_runtime']})" if ratios.get("zoo_int8_ratio") is not None else ""
        table.append(
            [
                labels.get(row["member"], row["member"]),
                labels.get(row["zoo"], row["zoo"]),
                str(int(row["batch"])),
                timed(row.get("member_runtime"), number["member_ms"]),
                timed(row.get("zoo_runtime"), number["zoo_ms"]),
                _signed_text(number["d_acc"], number["d_acc_lo"], number["d_acc_hi"]),
                _bracket_text(ratios.get("ratio"), ratios.get("ratio_lo"), ratios.get("ratio_hi"), "x"),
                int8,
                "yes" if str(row["dominates"]) == "True" else f"no: {row['why_not']}",
            ]
        )
    return headers, table


def footprint_table(latency) -> tuple[list[str], list[list[str]]]:
    """Return ``(headers, rows)`` of every model's footprint per runtime (``latency.csv`` rows with ``peak_mb``): peak
    memory at batch 1 and batch N with their spread over fresh processes, what the model adds to the runtime's import,
    and the cold start (load and compile, first inference) beside the steady latency."""
    cpu = latency[latency["peak_mb"].notna() & (latency["device"] == "cpu")]
    frame = cpu.assign(label=[row_label(r) for _, r in cpu.iterrows()])
    headers = ["Model", "Runtime", "Import (MB)", "Peak b1 (MB)", "Peak bN (MB)", "Model b1 (MB)", "Load (ms)"]
    headers += ["Compile (ms)", "First (ms)", "Cold start (ms)", "Steady b1 (ms)", "Memory settings"]
    rows = []
    for (label, runtime), part in frame.groupby(["label", "runtime"], sort=False):
        one = part[part["batch"].astype(int) == 1]
        many = part[part["batch"].astype(int) != 1]
        b1 = one.iloc[0] if len(one) else None
        bn = many.iloc[0] if len(many) else None
        if b1 is None:
            continue

        def spread(row, column, decimals=1):
            return f"{row[column]:.{decimals}f} (spread {row[column + '_spread']:.{decimals}f})"

        rows.append(
            [
                label,
                runtime,
                f"{b1['import_mb']:.0f}",
                spread(b1, "peak_mb"),
                spread(bn, "peak_mb") if bn is not None else "",
                spread(b1, "model_mb"),
                f"{b1['load_ms']:.1f}",
                f"{b1['compile_ms']:.1f}" if b1["compile_ms"] else "-",
                f"{b1['first_ms']:.1f}",
                spread(b1, "cold_ms"),
                f"{b1['median_ms']:.2f}",
                str(b1["memory_settings"]),
            ]
        )
    return headers, rows


def front_table(rows: list[dict], records: list[dict], labels: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """Return ``(headers, rows)`` of the front against the zoo (:func:`bench.front.front_rows`) for Markdown and LaTeX."""
    by_key = {r["row"]["config_hash"]: r for r in records}
    headers = [
        "Model",
        "Params",
        "MACs (M)",
        "Acc (%)",
        "d vs searched",
        "Runtime",
        "Latency (ms)",
        "/ searched",
        "vs zoo model",
        "d Acc vs zoo",
        "Latency / zoo",
        "/ zoo int8",
        "Dominates?",
    ]
    table = []
    for row in rows:
        record = by_key[row["key"]]["row"]
        acc = float(record["acc_mean"])
        acc_text = f"{acc:.2f} +- {(float(record['acc_mean_hi']) - float(record['acc_mean_lo'])) / 2:.2f}"
        # as the summary prints a latency: 2 decimals for value and interval alike (":.3g" printed 1.00 ms as "1")
        latency = (
            "" if row["latency_ms"] is None else _interval_text(row["latency_ms"], row["latency_ms_lo"], row["latency_ms_hi"], 2)
        )
        zoo = labels.get(row["zoo"], "") if row.get("zoo") else "-"
        verdict = "" if not row.get("zoo") else ("yes" if row["dominates"] else f"no: {row['why_not']}")
        table.append(
            [
                labels.get(row["key"], row["key"]),
                f"{int(record['params']):,}",
                f"{int(record['macs']) / 1e6:.1f}",
                acc_text,
                _signed_text(row["d_base"], row["d_base_lo"], row["d_base_hi"]),
                row["runtime"],
                latency,
                _bracket_text(row["base_ratio"], row["base_ratio_lo"], row["base_ratio_hi"]),
                zoo,
                _signed_text(row.get("d_zoo"), row.get("d_zoo_lo"), row.get("d_zoo_hi")),
                _bracket_text(row.get("zoo_ratio"), row.get("zoo_ratio_lo"), row.get("zoo_ratio_hi")),
                "" if row.get("zoo_int8_ratio") is None else f"{row['zoo_int8_ratio']:.2f}",
                verdict,
            ]
        )
    return headers, table


def trials_table(trials: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Return ``(headers, rows)`` of a search's trials (``trials.csv`` rows) for Markdown."""
    headers = [
        "Trial",
        "State",
        "Pipeline",
        "Params",
        "Val acc (%)",
        "Runtime",
        "Latency / searched",
        "Screening front",
        "Promoted",
        "Repeat of",
        "Error",
    ]
    table = []
    for t in trials:
        ratio = (
            ""
            if t["latency_ratio"] in ("", None)
            else (
                f"{float(t['latency_ratio']):.2f}"
                + (
                    f" [{float(t['latency_ratio_lo']):.2f}, {float(t['latency_ratio_hi']):.2f}]"
                    if t["latency_ratio_lo"] not in ("", None)
                    else ""
                )
            )
        )
        table.append(
            [
                str(t["trial"]),
                t["state"],
                t["variant"],
                f"{int(float(t['params'])):,}" if t["params"] not in ("", None) else "",
                f"{float(t['acc_mean_val']):.2f}" if t["acc_mean_val"] not in ("", None) else "",
                t["runtime"],
                ratio,
                "yes" if str(t["screening_front"]) == "True" else "",
                "yes" if t["promoted_hash"] else "",
                ""
                if t.get("repeat_of") in ("", None)
                else f"#{t['repeat_of']}"
                if str(t["repeat_of"]).isdigit()
                else str(t["repeat_of"]),
                t["error"],
            ]
        )
    return headers, table
