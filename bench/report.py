"""Paper-style tables (Markdown, LaTeX, CSV) and plots rendered from a study's results alone."""
from __future__ import annotations

import logging
import os

import numpy as np

from bench import metrics
from bench.schema import (MAJORITY, group_hash, load_records, read_csv_table, read_results, seedless, study_dir, write_tables,
                          write_text_atomic)

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
    ("floor_ratio_b1", "b1 / floor", 1, "x", None),
    ("latency_bN_ms", "bN (ms)", 1, 1, "min"),
    ("speedup_b1", "Speed-up b1", 1, "x", "max"),
    ("realization_b1", "Realized b1", 1, 2, None),
    ("acc_mean_int8", "Acc int8", 1, 2, None),
    ("int8_b1_ms", "int8 b1 (ms)", 1, 2, "min"),
    ("gpu_b1_ms", "GPU b1 (ms)", 1, 3, "min"),
    ("disk_bytes", "Disk (MB)", 1e-6, 2, "min"),
    ("disk_bytes_zip", "Zip (MB)", 1e-6, 2, "min"),
)
TEXT_SUMMARY_COLUMNS = [c[0] for c in SUMMARY_COLUMNS if c[3] is None]


INTERVAL_COLUMNS = ("acc_mean", "mA", "f1")  # shown as value +- half the 95 % bootstrap interval (or +- sd over seeds)


_logger = logging.getLogger(__name__)


def _base_label(model, variant) -> str:
    label = "majority class" if model == MAJORITY else str(model)
    if isinstance(variant, str) and variant:
        label += f" [{variant}]"
    return label


def _label(row) -> str:
    label = row.get("label")
    if isinstance(label, str) and label:
        return label
    return _base_label(row["model"], row.get("variant"))


def _flatten(config, prefix: str = "") -> dict:
    if not isinstance(config, dict):
        return {prefix: config}
    flat = {}
    for key, value in config.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
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
        groups.setdefault(group_hash(cell), (_base_label(cell["model"], cell.get("variant", "")), _flatten(seedless(cell))))
    by_base = {}
    for key, (base, flat) in groups.items():
        by_base.setdefault(base, []).append((key, flat))
    label_of_group = {}
    for base, members in by_base.items():
        if len(members) == 1:
            label_of_group[members[0][0]] = base
            continue
        keys = sorted({k for _, flat in members for k in flat})
        differing = [k for k in keys if len({repr(flat.get(k)) for _, flat in members}) > 1]
        for key, flat in members:
            label_of_group[key] = f"{base} ({', '.join(_describe(k, flat.get(k)) for k in differing)})"
    return {record["row"]["config_hash"]: label_of_group[group_hash(record["cell"])] for record in records}


def with_labels(frame, labels: dict[str, str] | None):
    """Return ``frame`` with a ``label`` column from ``labels`` ({config_hash: label}; model [variant] where absent)."""
    mapped = frame["config_hash"].map(labels or {}) if "config_hash" in frame else None
    fallback = [_base_label(m, v) for m, v in zip(frame["model"], frame["variant"].fillna(""))]
    return frame.assign(label=[m if isinstance(m, str) and m else f for m, f in zip(mapped if mapped is not None else fallback, fallback)])


def _missing(value) -> bool:
    return value is None or value == "" or (isinstance(value, float) and np.isnan(value))


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
    bounds = {f"{c}_{end}": pd.to_numeric(frame[f"{c}_{end}"], errors="coerce") for c in INTERVAL_COLUMNS for end in ("lo", "hi")
              if f"{c}_{end}" in frame}
    grouped = frame.assign(**numeric, **bounds).groupby("label", sort=False)
    table = grouped.mean(numeric_only=True).reset_index()
    spread = grouped.std(numeric_only=True).reset_index(drop=True)
    for column in TEXT_SUMMARY_COLUMNS + ["model"]:
        table[column] = grouped[column].first().values
    table["n_seeds"] = grouped["seed"].nunique().values
    if "diverged" in frame:
        table["diverged"] = grouped["diverged"].agg(lambda reasons: "; ".join(sorted({str(r) for r in reasons if isinstance(r, str) and r}))).values
    headers = ["Model"] + [c[1] for c in SUMMARY_COLUMNS] + ["seeds"]
    rows, bold = [], []
    is_model = table["model"] != MAJORITY
    best = {}
    for column, _, _, _, better in SUMMARY_COLUMNS:
        values = table.loc[is_model, column].dropna() if column in table else []
        if better and len(values):
            best[column] = values.max() if better == "max" else values.min()
    for index, row in table.iterrows():
        texts = [_label(row) + (" (diverged)" if row.get("diverged") else "")]
        flags = [False]
        for column, _, scale, decimals, better in SUMMARY_COLUMNS:
            value = row.get(column)
            text = _cell_text(value, scale, decimals)
            if column in INTERVAL_COLUMNS and text:
                half = (spread.loc[index, column] if row["n_seeds"] > 1
                        else (row.get(f"{column}_hi", float("nan")) - row.get(f"{column}_lo", float("nan"))) / 2)
                text += "" if _missing(half) else f" +- {half:.2f}"
            texts.append(text)
            flags.append(bool(row["model"] != MAJORITY and column in best and value == best[column]))
        texts.append(str(int(row["n_seeds"])))
        flags.append(False)
        rows.append(texts)
        bold.append(flags)
    return headers, rows, bold


def comparisons(records: list[dict], labels: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """Return ``(rows, attribute rows)`` of paired comparisons on the same test images: each compressed
    variant against its base, and every other model (the majority predictor too) against Slim-Net, seed by
    seed. Rows hold the difference A - B in points of ``acc_mean``, ``mA`` and ``f1`` with its 95 % paired
    bootstrap interval and ``significant`` (the interval of acc_mean excludes 0); attribute rows the same
    for each attribute's accuracy. Records without stored predictions, or scored on other test images,
    are not compared."""
    by_hash = {r["row"]["config_hash"]: r for r in records if r.get("test_predictions")}
    pairs = []
    for record in by_hash.values():
        cell = record["cell"]
        if cell.get("compression") and cell.get("base_hash") in by_hash:
            pairs.append((record, by_hash[cell["base_hash"]], "variant vs its base"))
    references = [r for r in by_hash.values() if r["cell"]["model"] == "slimnet" and not r["cell"].get("compression")]
    for record in by_hash.values():
        cell = record["cell"]
        if cell.get("compression") or cell["model"] == "slimnet":
            continue
        for reference in references:
            if reference["cell"]["seed"] == cell["seed"] or cell["model"] == MAJORITY:
                pairs.append((record, reference, "model vs slimnet"))
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
        attribute_rows += [{"comparison": name, "seed": seed, "attribute": attribute, "d_acc": float(difference[j]),
                            "d_acc_lo": float(low[j]), "d_acc_hi": float(high[j]), "significant": not (low[j] <= 0 <= high[j])}
                           for j, attribute in enumerate(names)]
    return rows, attribute_rows


def _difference_text(value, low, high, significant: bool) -> str:
    return f"{value:+.2f} [{low:+.2f}, {high:+.2f}]" + ("" if significant else " n.s.")


def comparison_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of the paired comparisons: A - B in points with the 95 % interval; n.s. = it contains 0."""
    headers = ["Comparison (A vs B)", "Seed", "d Acc", "d mA", "d F1"]
    body = [[r["comparison"], str(r["seed"])] + [_difference_text(r[f"d_{m}"], r[f"d_{m}_lo"], r[f"d_{m}_hi"],
                                                                   not (r[f"d_{m}_lo"] <= 0 <= r[f"d_{m}_hi"])) for m in INTERVAL_COLUMNS]
            for r in rows]
    return headers, body


def attribute_difference_table(attribute_rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows): attributes as rows, one column per comparison, each cell A - B in points of
    that attribute's accuracy with its paired interval (n.s. = it contains 0)."""
    columns = list(dict.fromkeys(f"{r['comparison']} (seed {r['seed']})" for r in attribute_rows))
    cells = {(f"{r['comparison']} (seed {r['seed']})", r["attribute"]): _difference_text(r["d_acc"], r["d_acc_lo"], r["d_acc_hi"], r["significant"])
             for r in attribute_rows}
    attributes = list(dict.fromkeys(r["attribute"] for r in attribute_rows))
    return ["Attribute"] + columns, [[a] + [cells.get((c, a), "") for c in columns] for a in attributes]


def latency_table(latency) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of median latency per runtime: one row per model variant, device and batch,
    one column per runtime, each cell ``median ms (measured / compute floor)``; ``*`` marks a
    measurement the load probe flagged busy."""
    runtimes = list(dict.fromkeys(latency["runtime"]))
    frame = latency.assign(label=[_label(r) for _, r in latency.iterrows()])
    headers = ["Model", "Device", "Batch"] + runtimes
    rows = []
    for (label, device, batch), part in frame.groupby(["label", "device", "batch"], sort=False):
        cells = []
        for runtime in runtimes:
            hit = part[part["runtime"] == runtime]
            if not len(hit):
                cells.append("")
                continue
            median, ratio = hit["median_ms"].median(), hit["floor_ratio"].median()
            busy = "*" if hit["busy"].astype(str).str.lower().eq("true").any() else ""
            cells.append(f"{median:.2f}" + ("" if _missing(ratio) else f" ({ratio:.2f}x)") + busy)
        rows.append([label, str(device), str(int(batch))] + cells)
    return headers, rows


def realization_table(latency) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of compressed variants against their base, per runtime: the MAC and
    parameter reductions, then per runtime ``measured speed-up (realization = speed-up / MAC reduction)``."""
    compressed = latency[latency["speedup"].notna()]
    runtimes = list(dict.fromkeys(compressed["runtime"]))
    frame = compressed.assign(label=[_label(r) for _, r in compressed.iterrows()])
    headers = ["Variant", "Device", "Batch", "MAC reduction", "Param reduction"] + runtimes
    rows = []
    for (label, device, batch), part in frame.groupby(["label", "device", "batch"], sort=False):
        cells = []
        for runtime in runtimes:
            hit = part[part["runtime"] == runtime]
            cells.append("" if not len(hit) else f"{hit['speedup'].median():.2f}x ({hit['realization'].median():.2f})")
        rows.append([label, str(device), str(int(batch)), f"{part['mac_reduction'].median():.2f}x",
                     f"{part['param_reduction'].median():.2f}x"] + cells)
    return headers, rows


def floor_statements(latency, limit: float = 1.5) -> list[str]:
    """Return one sentence per model variant and batch: its fastest exact runtime and how far it is from the compute floor."""
    exact = latency[latency["exact"].astype(str).str.lower().eq("true") & latency["floor_ratio"].notna()]
    lines = []
    exact = exact.assign(label=[_label(r) for _, r in exact.iterrows()])
    for (_, batch), part in exact.groupby(["label", "batch"], sort=False):
        best = part.loc[part["median_ms"].idxmin()]
        verdict = "within" if best["floor_ratio"] <= limit else "beyond"
        lines.append(f"{_label(best)}, batch {int(batch)}: fastest exact runtime {best['runtime']} at {best['median_ms']:.2f} ms, "
                     f"{best['floor_ratio']:.2f}x the compute floor of {best['floor_ms']:.2f} ms ({verdict} {limit}x)")
    return lines


def _md(text) -> str:
    return str(text).replace("|", "\\|")  # a pipe inside a cell (e.g. layers=a.*|b.*) would split it


def to_markdown(headers, rows, bold=None) -> str:
    """Return a GitHub-flavoured Markdown table; bold cells are wrapped in ``**``; pipes inside cells are escaped."""
    bold = bold or [[False] * len(headers) for _ in rows]
    lines = ["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    for texts, flags in zip(rows, bold):
        lines.append("| " + " | ".join(f"**{_md(t)}**" if f and t else _md(t) for t, f in zip(texts, flags)) + " |")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def to_latex(headers, rows, bold=None, caption: str = "", label: str = "") -> str:
    """Return a booktabs LaTeX table; bold cells use ``\\textbf``."""
    bold = bold or [[False] * len(headers) for _ in rows]
    spec = "l" + "r" * (len(headers) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(_latex_escape(h) for h in headers) + r" \\", r"\midrule"]
    for index, (texts, flags) in enumerate(zip(rows, bold)):
        cells = [rf"\textbf{{{_latex_escape(t)}}}" if f and t else _latex_escape(t) for t, f in zip(texts, flags)]
        lines.append(" & ".join(cells) + r" \\")
        if index == len(rows) - 2 and headers[0] == "Attribute":
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def per_attribute_table(per_attribute) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows): attributes as rows, model variants as columns, the mean row last."""
    frame = per_attribute.assign(column=[_label(r) for _, r in per_attribute.iterrows()])
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


def layer_table(layers) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of the per-layer speed-up table in the layout of LWALM's Table 1, with one
    measured column per runtime. ``r`` marks a speed-up above 1.5x the theoretical one that was
    retimed and confirmed; ``*`` a timing the load probe flagged busy."""
    runtimes = [r for r in dict.fromkeys(layers["runtime"].fillna("")) if r]
    headers = (["Model", "Layer", "Kernel", "Method", "Rank", "MACs of new layers", "MACs before", "Theor. speed-up"]
               + [f"Measured ({r})" for r in runtimes] + ["Weight rel. error", "Rank-1 norm sum (ALS -> EPC)"])
    rows = []
    frame = layers.assign(label=[_label(r) for _, r in layers.iterrows()], runtime=layers["runtime"].fillna(""))
    for (label, layer, method), part in frame.groupby(["label", "layer", "method"], sort=False):
        first = part.iloc[0]
        measured = []
        for runtime in runtimes:
            hit = part[part["runtime"] == runtime]
            if not len(hit):
                measured.append("")
                continue
            row = hit.iloc[0]
            marks = ("r" if _flag(row.get("confirmed")) else "") + ("*" if _flag(row.get("busy")) else "")
            measured.append("" if _missing(row["measured_speedup"]) else f"{row['measured_speedup']:.2f}x{marks}")
        rows.append([label, str(layer), str(first["kernel"]), str(method), first["rank"], str(first["new_layer_macs"]),
                     f"{int(first['macs_before']):,}", f"{first['theoretical_speedup']:.2f}x"] + measured
                    + [_cell_text(first.get("rel_error"), 1, 4), _norm_sums(first)])
    return headers, rows


def warning_lines(records: list[dict], labels: dict[str, str]) -> list[str]:
    """Return one line per thing a reader of the summary must know about a row: a diverged training
    (``diverged`` column) and a compression setting the engine changed (e.g. a CPD-EPC ``delta`` raised to
    the ALS error, from the layer rows' ``note``)."""
    lines = []
    for record in records:
        row = record["row"]
        label = f"{labels.get(row['config_hash'], row['model'])} (seed {row['seed']})"
        if row.get("diverged"):
            lines.append(f"{label}: training diverged: {row['diverged']}")
        notes = sorted({f"{x['layer']}: {x['note']}" for x in record.get("layers", []) if x.get("note")})
        lines.extend(f"{label}: {note}" for note in notes)
    return lines


def render_report(results_dir: str, study: str, reports_dir: str = "reports", plots: bool = True) -> dict[str, str]:
    """Write the study's tables (and plots) under ``<reports_dir>/<study>/`` from its results alone.

    Returns:
        A dict artefact name -> path of every file written.
    Raises:
        FileNotFoundError: the study has no results yet.
    """
    import pandas as pd

    folder = study_dir(results_dir, study)
    try:
        records = write_tables(results_dir, study)  # from every valid record: a table never outlives a bad or missing record
    except FileNotFoundError:
        raise  # no records at all: nothing to render
    except OSError as exc:  # a read-only copy of someone's results: render what its tables say
        _logger.warning("could not rebuild the tables of %s (%s); rendering them as they are", study_dir(results_dir, study), exc)
        records = load_records(results_dir, study)
    labels = group_labels(records)

    def table(name):
        path = os.path.join(folder, name)
        return with_labels(read_csv_table(path), labels) if os.path.isfile(path) and os.path.getsize(path) else None

    frame = with_labels(read_results(os.path.join(folder, "results.csv")), labels)
    out = os.path.join(reports_dir, study)
    os.makedirs(out, exist_ok=True)
    written: dict[str, str] = {}
    headers, rows, bold = summary_table(frame, labels)
    batch_n = sorted({int(b) for b in frame["batch_n"].dropna()})
    dataset = ", ".join(sorted({str(d) for d in frame["dataset"].dropna()}))
    peaks = sorted({f"{p:.0f} GFLOP/s ({lib})" for p, lib in zip(frame["peak_gflops"], frame["peak_library"]) if not _missing(p)})
    note = (f"Study '{study}' on {dataset}, test split. Rates in percent; PPP = mA / params in millions; "
            f"MACs are multiply-accumulates (ptflops aten) at each model's input size. Latency: median ms per batch "
            f"(bN = batch {'/'.join(map(str, batch_n)) or '-'}) in the fastest exact (fp32) runtime, named in 'Runtime' "
            f"(every runtime: latency.md); floor = 2 x MACs x batch / the machine's fp32 peak "
            f"({', '.join(peaks) or 'not measured'}); speed-up and realization (speed-up / MAC reduction) compare a "
            f"compressed variant with its base in the same runtime, timed interleaved; int8 = ONNX Runtime static "
            f"quantization, its accuracy on the same test split; empty = not measured. Acc, mA and F1: value +- half the "
            f"95 % bootstrap interval over test images (1,000 resamples) for one seed, +- the standard deviation over "
            f"seeds for several (seeds column); paired differences between models: comparisons.md.")
    warnings = warning_lines(records, labels)
    warning_text = ("\n## Warnings\n\n" + "".join(f"- {line}\n" for line in warnings)) if warnings else ""
    written["summary.md"] = _write(out, "summary.md", f"# {study}: summary\n\n{note}\n\n" + to_markdown(headers, rows, bold) + warning_text)
    written["summary.tex"] = _write(out, "summary.tex", to_latex(headers, rows, bold, caption=note, label=f"tab:{study}-summary"))
    written["summary.csv"] = _write(out, "summary.csv", pd.DataFrame(rows, columns=headers).to_csv(index=False))
    compared, compared_attributes = comparisons(records, labels)
    if compared:
        c_headers, c_rows = comparison_table(compared)
        intro = (f"# {study}: paired comparisons on the same test images\n\nA - B in points, with the 95 % paired bootstrap "
                 f"interval over test images (1,000 resamples); n.s. = the interval contains 0, so the difference is not "
                 f"significant at that level. Each compressed variant against its base, every other model against Slim-Net.\n\n")
        written["comparisons.md"] = _write(out, "comparisons.md", intro + to_markdown(c_headers, c_rows))
        written["comparisons.tex"] = _write(out, "comparisons.tex", to_latex(c_headers, c_rows, caption=f"Paired differences (points, 95 % bootstrap interval), study {study}", label=f"tab:{study}-comparisons"))
        written["comparisons.csv"] = _write(out, "comparisons.csv", pd.DataFrame(compared).to_csv(index=False))
    per_attribute = table("per_attribute.csv")
    if per_attribute is not None and len(per_attribute):
        p_headers, p_rows = per_attribute_table(per_attribute)
        text = f"# {study}: per-attribute test accuracy (%)\n\n" + to_markdown(p_headers, p_rows)
        if compared_attributes:
            d_headers, d_rows = attribute_difference_table(compared_attributes)
            text += ("\n## Paired differences per attribute\n\nA - B in points of each attribute's accuracy, 95 % paired bootstrap "
                     "interval; n.s. = it contains 0.\n\n" + to_markdown(d_headers, d_rows))
        written["per_attribute.md"] = _write(out, "per_attribute.md", text)
        written["per_attribute.tex"] = _write(out, "per_attribute.tex", to_latex(p_headers, p_rows, caption=f"Per-attribute accuracy (%), study {study}", label=f"tab:{study}-attributes"))
    layers = table("layers.csv")
    if layers is not None and len(layers):
        l_headers, l_rows = layer_table(layers)
        title = (f"# {study}: per-layer speed-up\n\nBatch 1, CPU; each layer and its replacement timed alone on its real "
                 f"activation shape, interleaved, in each runtime (ONNX Runtime: each exported alone). r = above 1.5x the "
                 f"theoretical speed-up, retimed and confirmed; * = timed while the machine was busy.\n\n")
        written["layers.md"] = _write(out, "layers.md", title + to_markdown(l_headers, l_rows))
        written["layers.tex"] = _write(out, "layers.tex", to_latex(l_headers, l_rows, caption=f"Per-layer theoretical and measured CPU speed-up, study {study}", label=f"tab:{study}-layers"))
    latency = table("latency.csv")
    if latency is not None and len(latency):
        t_headers, t_rows = latency_table(latency)
        r_headers, r_rows = realization_table(latency)
        text = (f"# {study}: latency per runtime\n\nMedian ms per batch of the block medians (interleaved timing); in "
                f"brackets measured / compute floor; * = taken while the machine was busy (see busy in latency.csv).\n\n"
                + to_markdown(t_headers, t_rows) + "\n## Compute floor\n\n" + "".join(f"- {line}\n" for line in floor_statements(latency)))
        skipped = [f"- {labels[r['row']['config_hash']]} (seed {r['row']['seed']}): {runtime}: {reason}\n" for r in records
                   for runtime, reason in sorted(r.get("skipped_runtimes", {}).items())]
        if skipped:
            text += "\n## Runtimes not measured\n\n" + "".join(skipped)
        if r_rows:
            text += ("\n## Realized speed-up of compressed variants\n\nMeasured speed-up over the base model in the same runtime "
                     "(timed interleaved in one run), and in brackets realization = speed-up / MAC reduction.\n\n"
                     + to_markdown(r_headers, r_rows))
        written["latency.md"] = _write(out, "latency.md", text)
        written["latency.tex"] = _write(out, "latency.tex", to_latex(t_headers, t_rows, caption=f"Median latency (ms) per runtime, study {study}", label=f"tab:{study}-latency"))
        if r_rows:
            written["realization.tex"] = _write(out, "realization.tex", to_latex(r_headers, r_rows, caption=f"Measured speed-up (realization) of compressed variants, study {study}", label=f"tab:{study}-realization"))
    if plots:
        from bench import plots as plotting

        written.update(plotting.render_plots(frame, per_attribute, table("history.csv"), records, out, latency, labels))
    return written


def render_sensitivity(units, attributes, folder: str, name: str, plots: bool = True) -> dict[str, str]:
    """Write ``<name>.md`` (units by accuracy drop, largest first) and, with ``plots``, ``<name>.png/.pdf``
    (a unit x attribute heat map of the drops) into ``folder``; return artefact name -> path.
    ``units``/``attributes`` are the tables of ``bench.sensitivity.sensitivity`` as DataFrames."""
    os.makedirs(folder, exist_ok=True)
    ordered = units.sort_values("drop", ascending=False)
    headers = ["Unit", "Layers", "Params removed", "MACs removed", "Acc", "Drop (pt)"]
    rows = [[str(r["unit"]), str(len(str(r["members"]).split("|"))), f"{int(r['params_removed']):,}", f"{int(r['macs_removed']):,}",
             f"{r['acc_mean']:.2f}", f"{r['drop']:.2f}"] for _, r in ordered.iterrows()]
    method, ratio = units["method"].iloc[0], units["ratio"].iloc[0]
    title = (f"# Sensitivity: {method} at {ratio:g}, one unit at a time\n\nEach unit (a layer; for pruning, the group of layers "
             f"coupled with its root) compressed alone; drop = points of mean accuracy lost on the evaluation split.\n\n")
    written = {f"{name}.md": _write(folder, f"{name}.md", title + to_markdown(headers, rows))}
    if plots:
        from bench import plots as plotting

        written.update(plotting.sensitivity_heatmap(attributes, ordered["unit"].tolist(), folder, name))
    return written


def _write(folder: str, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    write_text_atomic(path, text)
    return path
