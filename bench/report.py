"""Paper-style tables (Markdown, LaTeX, CSV) and plots rendered from a study's results alone."""
from __future__ import annotations

import os

import numpy as np

from bench.schema import MAJORITY, load_records, read_csv_table, read_results, study_dir, write_text_atomic

# (result column, header, scale, decimals, better): better is "max", "min" or None (not bolded).
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
    ("cpu_b1_ms", "CPU b1 (ms)", 1, 2, "min"),
    ("cpu_bN_ms", "CPU bN (ms)", 1, 1, "min"),
    ("cpu_b1_cl_ms", "CPU b1 CL (ms)", 1, 2, "min"),
    ("gpu_b1_ms", "GPU b1 (ms)", 1, 3, "min"),
    ("disk_bytes", "Disk (MB)", 1e-6, 2, "min"),
    ("disk_bytes_zip", "Zip (MB)", 1e-6, 2, "min"),
)


def _label(row) -> str:
    label = "majority class" if row["model"] == MAJORITY else str(row["model"])
    variant = row.get("variant")
    if isinstance(variant, str) and variant:
        label += f" [{variant}]"
    return label


def _cell_text(value, scale, decimals) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return ""
    return f"{float(value) * scale:.{decimals}f}"


def summary_table(frame) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Return (headers, cell texts, bold flags) of the summary table, majority row first.

    Rows are the mean over seeds of each (model, variant); bold marks the best model value per
    column (the majority row never counts as best). Columns that are empty for every row (e.g.
    GPU latency without a GPU) are kept, so a reader sees they were not measured.
    """
    import pandas as pd

    numeric = {c[0]: pd.to_numeric(frame[c[0]], errors="coerce") for c in SUMMARY_COLUMNS}
    grouped = frame.assign(variant=frame["variant"].fillna(""), **numeric).groupby(["model", "variant"], sort=False)
    table = grouped.mean(numeric_only=True).reset_index()
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


def layer_table(layers) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of the per-layer speed-up table in the layout of LWALM's Table 1."""
    headers = ["Model", "Layer", "Kernel", "Method", "Rank", "MACs of new layers", "MACs before",
               "Theor. speed-up", "Measured speed-up", "Measured / theor.", "Weight rel. error", "Rank-1 norm sum (ALS -> EPC)"]
    rows = []
    for _, row in layers.iterrows():
        rank = row["rank"]
        rows.append([_label(row), str(row["layer"]), str(row["kernel"]), str(row["method"]), rank,
                     str(row["new_layer_macs"]), f"{int(row['macs_before']):,}", f"{row['theoretical_speedup']:.2f}x",
                     f"{row['measured_speedup']:.2f}x", f"{row['measured_over_theoretical']:.2f}",
                     _cell_text(row.get("rel_error"), 1, 4), _norm_sums(row)])
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
    note = (f"Study '{study}' on {dataset}, test split. Rates in percent; PPP = mA / params in millions; "
            f"MACs are multiply-accumulates (ptflops aten) at each model's input size; CPU bN = batch "
            f"{'/'.join(map(str, batch_n)) or '-'}, median ms per batch; CL = channels_last memory format "
            f"(the others: PyTorch's default NCHW); eager PyTorch; empty = not measured.")
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
        title = f"# {study}: per-layer speed-up (batch 1, CPU, each layer timed alone on its real activation shape)\n\n"
        written["layers.md"] = _write(out, "layers.md", title + to_markdown(l_headers, l_rows))
        written["layers.tex"] = _write(out, "layers.tex", to_latex(l_headers, l_rows, caption=f"Per-layer theoretical and measured CPU speed-up, study {study}", label=f"tab:{study}-layers"))
    if plots:
        from bench import plots as plotting

        history_path = os.path.join(folder, "history.csv")
        history = read_csv_table(history_path) if os.path.isfile(history_path) else None
        written.update(plotting.render_plots(frame, per_attribute, history, load_records(results_dir, study), out))
    return written


def _write(folder: str, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    write_text_atomic(path, text)
    return path
