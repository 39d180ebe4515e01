"""Paper-style tables (Markdown, LaTeX, CSV) and plots rendered from a study's results alone."""
from __future__ import annotations

import os

import numpy as np

from bench.schema import MAJORITY, load_records, read_csv_table, read_results, study_dir, write_text_atomic

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


def _label(row) -> str:
    label = "majority class" if row["model"] == MAJORITY else str(row["model"])
    variant = row.get("variant")
    if isinstance(variant, str) and variant:
        label += f" [{variant}]"
    return label


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


def summary_table(frame) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Return (headers, cell texts, bold flags) of the summary table, majority row first.

    Rows are the mean over seeds of each (model, variant) (text columns: the first seed's);
    bold marks the best model value per column (the majority row never counts as best).
    Columns that are empty for every row (e.g. GPU latency without a GPU) are kept, so a reader
    sees they were not measured.
    """
    import pandas as pd

    numeric = {c[0]: pd.to_numeric(frame[c[0]], errors="coerce") for c in SUMMARY_COLUMNS if c[3] is not None}
    grouped = frame.assign(variant=frame["variant"].fillna(""), **numeric).groupby(["model", "variant"], sort=False)
    table = grouped.mean(numeric_only=True).reset_index()
    for column in TEXT_SUMMARY_COLUMNS:
        table[column] = grouped[column].first().values
    table["n_seeds"] = grouped.size().values
    headers = ["Model"] + [c[1] for c in SUMMARY_COLUMNS] + ["seeds"]
    rows, bold = [], []
    is_model = table["model"] != MAJORITY
    best = {}
    for column, _, _, _, better in SUMMARY_COLUMNS:
        values = table.loc[is_model, column].dropna() if column in table else []
        if better and len(values):
            best[column] = values.max() if better == "max" else values.min()
    for _, row in table.iterrows():
        texts = [_label(row)]
        flags = [False]
        for column, _, scale, decimals, better in SUMMARY_COLUMNS:
            value = row.get(column)
            texts.append(_cell_text(value, scale, decimals))
            flags.append(bool(row["model"] != MAJORITY and column in best and value == best[column]))
        texts.append(str(int(row["n_seeds"])))
        flags.append(False)
        rows.append(texts)
        bold.append(flags)
    return headers, rows, bold


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
    for (model, variant, batch), part in exact.groupby(["model", "variant", "batch"], sort=False):
        best = part.loc[part["median_ms"].idxmin()]
        verdict = "within" if best["floor_ratio"] <= limit else "beyond"
        lines.append(f"{_label(best)}, batch {int(batch)}: fastest exact runtime {best['runtime']} at {best['median_ms']:.2f} ms, "
                     f"{best['floor_ratio']:.2f}x the compute floor of {best['floor_ms']:.2f} ms ({verdict} {limit}x)")
    return lines


def to_markdown(headers, rows, bold=None) -> str:
    """Return a GitHub-flavoured Markdown table; bold cells are wrapped in ``**``."""
    bold = bold or [[False] * len(headers) for _ in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    for texts, flags in zip(rows, bold):
        lines.append("| " + " | ".join(f"**{t}**" if f and t else t for t, f in zip(texts, flags)) + " |")
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
    runtimes = list(dict.fromkeys(layers["runtime"].fillna("")))
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
            measured.append(f"{row['measured_speedup']:.2f}x{marks}")
        rows.append([label, str(layer), str(first["kernel"]), str(method), first["rank"], str(first["new_layer_macs"]),
                     f"{int(first['macs_before']):,}", f"{first['theoretical_speedup']:.2f}x"] + measured
                    + [_cell_text(first.get("rel_error"), 1, 4), _norm_sums(first)])
    return headers, rows


def render_report(results_dir: str, study: str, reports_dir: str = "reports", plots: bool = True) -> dict[str, str]:
    """Write the study's tables (and plots) under ``<reports_dir>/<study>/`` from its results alone.

    Returns:
        A dict artefact name -> path of every file written.
    Raises:
        FileNotFoundError: the study has no results yet.
    """
    import pandas as pd

    folder = study_dir(results_dir, study)
    frame = read_results(os.path.join(folder, "results.csv"))
    out = os.path.join(reports_dir, study)
    os.makedirs(out, exist_ok=True)
    written: dict[str, str] = {}
    headers, rows, bold = summary_table(frame)
    batch_n = sorted({int(b) for b in frame["batch_n"].dropna()})
    dataset = ", ".join(sorted({str(d) for d in frame["dataset"].dropna()}))
    peaks = sorted({f"{p:.0f} GFLOP/s ({lib})" for p, lib in zip(frame["peak_gflops"], frame["peak_library"]) if not _missing(p)})
    note = (f"Study '{study}' on {dataset}, test split. Rates in percent; PPP = mA / params in millions; "
            f"MACs are multiply-accumulates (ptflops aten) at each model's input size. Latency: median ms per batch "
            f"(bN = batch {'/'.join(map(str, batch_n)) or '-'}) in the fastest exact (fp32) runtime, named in 'Runtime' "
            f"(every runtime: latency.md); floor = 2 x MACs x batch / the machine's fp32 peak "
            f"({', '.join(peaks) or 'not measured'}); speed-up and realization (speed-up / MAC reduction) compare a "
            f"compressed variant with its base in the same runtime, timed interleaved; int8 = ONNX Runtime static "
            f"quantization, its accuracy on the same test split; empty = not measured.")
    written["summary.md"] = _write(out, "summary.md", f"# {study}: summary\n\n{note}\n\n" + to_markdown(headers, rows, bold))
    written["summary.tex"] = _write(out, "summary.tex", to_latex(headers, rows, bold, caption=note, label=f"tab:{study}-summary"))
    written["summary.csv"] = _write(out, "summary.csv", pd.DataFrame(rows, columns=headers).to_csv(index=False))
    per_attribute_path = os.path.join(folder, "per_attribute.csv")
    per_attribute = read_csv_table(per_attribute_path) if os.path.isfile(per_attribute_path) else None
    if per_attribute is not None and len(per_attribute):
        p_headers, p_rows = per_attribute_table(per_attribute)
        written["per_attribute.md"] = _write(out, "per_attribute.md", f"# {study}: per-attribute test accuracy (%)\n\n" + to_markdown(p_headers, p_rows))
        written["per_attribute.tex"] = _write(out, "per_attribute.tex", to_latex(p_headers, p_rows, caption=f"Per-attribute accuracy (%), study {study}", label=f"tab:{study}-attributes"))
    layers_path = os.path.join(folder, "layers.csv")
    layers = read_csv_table(layers_path) if os.path.isfile(layers_path) else None
    if layers is not None and len(layers):
        l_headers, l_rows = layer_table(layers)
        title = (f"# {study}: per-layer speed-up\n\nBatch 1, CPU; each layer and its replacement timed alone on its real "
                 f"activation shape, interleaved, in each runtime (ONNX Runtime: each exported alone). r = above 1.5x the "
                 f"theoretical speed-up, retimed and confirmed; * = timed while the machine was busy.\n\n")
        written["layers.md"] = _write(out, "layers.md", title + to_markdown(l_headers, l_rows))
        written["layers.tex"] = _write(out, "layers.tex", to_latex(l_headers, l_rows, caption=f"Per-layer theoretical and measured CPU speed-up, study {study}", label=f"tab:{study}-layers"))
    latency_path = os.path.join(folder, "latency.csv")
    latency = read_csv_table(latency_path) if os.path.isfile(latency_path) else None
    if latency is not None and len(latency):
        t_headers, t_rows = latency_table(latency)
        r_headers, r_rows = realization_table(latency)
        text = (f"# {study}: latency per runtime\n\nMedian ms per batch of the block medians (interleaved timing); in "
                f"brackets measured / compute floor; * = taken while the machine was busy (see busy in latency.csv).\n\n"
                + to_markdown(t_headers, t_rows) + "\n## Compute floor\n\n" + "".join(f"- {line}\n" for line in floor_statements(latency)))
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

        history_path = os.path.join(folder, "history.csv")
        history = read_csv_table(history_path) if os.path.isfile(history_path) else None
        written.update(plotting.render_plots(frame, per_attribute, history, load_records(results_dir, study), out, latency))
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
