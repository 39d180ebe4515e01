"""The study's report: paper-style tables (Markdown, LaTeX, CSV) and plots written from its results alone.

Tables are built by ``bench.tables``, rendered by ``bench.render``, plotted by ``bench.plots``; this
module reads the results folder and writes the files.
"""
from __future__ import annotations

import json
import logging
import os

from bench.labels import group_labels, with_labels
from bench.render import to_latex, to_markdown
from bench.schema import (MAJORITY, load_records, read_csv_table, read_results, read_search, read_timing, read_trials, study_dir, with_timing,
                          write_tables, write_text_atomic)
from bench.tables import (attribute_difference_table, comparison_table, comparisons, floor_statements, front_table, latency_table,
                          layer_table, per_attribute_table, realization_table, summary_table, trials_table, variant_key_table,
                          warning_lines)

_logger = logging.getLogger(__name__)


def study_reference(results_dir: str, study: str, records: list[dict]) -> str:
    """Return the study's reference model (``study.json``, written by the runner); without that file, the first
    uncompressed model among the records."""
    path = os.path.join(study_dir(results_dir, study), "study.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)["reference_model"]
    models = [r["cell"]["model"] for r in records if r["cell"]["model"] != MAJORITY and not r["cell"].get("compression")]
    return models[0] if models else ""


def _as_number(value, default: float = float("nan")) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default

def render_report(results_dir: str, study: str, reports_dir: str = "reports", plots: bool = True) -> dict[str, str]:
    """Write the study's tables (and plots) under ``<reports_dir>/<study>/`` from its results alone.

    Returns:
        A dict artefact name -> path of every file written.
    Raises:
        FileNotFoundError: the study has no results yet.
    """
    import pandas as pd

    folder = study_dir(results_dir, study)
    timing = read_timing(results_dir, study)
    try:
        records = write_tables(results_dir, study)  # from every valid record: a table never outlives a bad or missing record
    except FileNotFoundError:
        raise  # no records at all: nothing to render
    except OSError as exc:  # a read-only copy of someone's results: render what its tables say
        _logger.warning("could not rebuild the tables of %s (%s); rendering them as they are", study_dir(results_dir, study), exc)
        records = with_timing(load_records(results_dir, study), timing)
    labels = group_labels(records)
    reference = study_reference(results_dir, study, records)

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
    peaks = sorted({f"{p:.0f} GFLOP/s ({lib})" for p, lib in zip(frame["peak_gflops"], frame["peak_library"]) if _as_number(p) > 0})
    isas = sorted({str(v) for v in frame.get("cpu_isa", pd.Series(dtype=object)).dropna() if str(v)})
    note = (f"Study '{study}' on {dataset}, test split. Rates in percent; PPP = mA / params in millions; "
            f"MACs are multiply-accumulates (ptflops aten) at each model's input size. Latency: median ms per batch "
            f"(bN = batch {'/'.join(map(str, batch_n)) or '-'}) in the fastest exact (fp32) runtime, named in 'Runtime' "
            f"(every runtime: latency.md), all models timed together in one timing phase (interleaved blocks), "
            f"+- half the 95 % bootstrap interval over blocks; '/ ref' = latency over {reference}'s in the same runtime "
            f"and blocks; floor = 2 x MACs x batch / the machine's fp32 peak "
            f"({', '.join(peaks) or 'not measured'}); speed-up and realization (speed-up / MAC reduction) compare a "
            f"compressed variant with its base in the same runtime and blocks; int8 = ONNX Runtime static "
            f"quantization (OV int8: OpenVINO through NNCF), its accuracy on the same test split, on a "
            f"{' / '.join(isas) or 'not recorded'} CPU (cpu_isa: int8 speed depends on VNNI); a quantized variant (int8 in its "
            f"name) is timed in its int8 runtimes only, its Acc is its ONNX Runtime int8 accuracy; empty = not measured. Acc, mA and F1: value +- half the "
            f"95 % bootstrap interval over test images (1,000 resamples) for one seed, +- the standard deviation over "
            f"seeds for several (seeds column); paired differences between models: comparisons.md.")
    warnings = warning_lines(records, labels)
    if timing and timing.get("unresolved"):
        warnings += [f"latency ratios wider than +-{timing['settings']['ratio_tolerance_pct']:g} % when the timing budget ran out, "
                     f"in {line}" for line in timing["unresolved"]]
    warning_text = ("\n## Warnings\n\n" + "".join(f"- {line}\n" for line in warnings)) if warnings else ""
    k_headers, k_rows = variant_key_table(frame)
    if k_rows:
        warning_text = ("\n## Variants\n\nThe short names of the tables and plots, and what each compression is in full.\n\n"
                        + to_markdown(k_headers, k_rows) + warning_text)
    written["summary.md"] = _write(out, "summary.md", f"# {study}: summary\n\n{note}\n\n" + to_markdown(headers, rows, bold) + warning_text)
    written["summary.tex"] = _write(out, "summary.tex", to_latex(headers, rows, bold, caption=note, label=f"tab:{study}-summary"))
    written["summary.csv"] = _write(out, "summary.csv", pd.DataFrame(rows, columns=headers).to_csv(index=False))
    compared, compared_attributes = comparisons(records, labels, reference)
    if compared:
        c_headers, c_rows = comparison_table(compared)
        intro = (f"# {study}: paired comparisons on the same test images\n\nA - B in points, with the 95 % paired bootstrap "
                 f"interval over test images (1,000 resamples); n.s. = the interval contains 0, so the difference is not "
                 f"significant at that level. Each compressed variant against its base, every other model against the "
                 f"study's reference model, {reference}.\n\n")
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
        seconds = f", {timing['seconds']:.0f} s" if timing else ""
        text = (f"# {study}: latency per runtime\n\nEvery model of the study timed together in one timing phase{seconds}: per "
                f"runtime and batch, interleaved blocks in which every model runs once, in rotating order. Median ms per batch "
                f"of the block medians +- half its 95 % bootstrap interval over blocks; in round brackets measured / compute "
                f"floor; in square brackets latency / {reference}'s in the same blocks, with its interval; * = taken while a "
                f"load probe flagged the machine busy (see busy in latency.csv).\n\n"
                + to_markdown(t_headers, t_rows) + "\n## Compute floor\n\n" + "".join(f"- {line}\n" for line in floor_statements(latency)))
        skipped = [f"- {labels[r['row']['config_hash']]} (seed {r['row']['seed']}): {runtime}: {reason}\n" for r in records
                   for runtime, reason in sorted(r.get("skipped_runtimes", {}).items())]
        if skipped:
            text += "\n## Runtimes not measured\n\n" + "".join(skipped)
        if r_rows:
            text += ("\n## Realized speed-up of compressed variants\n\nMeasured speed-up over the base model in the same runtime "
                     "and blocks +- half its 95 % interval, and in brackets realization = speed-up / MAC reduction.\n\n"
                     + to_markdown(r_headers, r_rows))
        written["latency.md"] = _write(out, "latency.md", text)
        written["latency.tex"] = _write(out, "latency.tex", to_latex(t_headers, t_rows, caption=f"Median latency (ms) per runtime, study {study}", label=f"tab:{study}-latency"))
        if r_rows:
            written["realization.tex"] = _write(out, "realization.tex", to_latex(r_headers, r_rows, caption=f"Measured speed-up (realization) of compressed variants, study {study}", label=f"tab:{study}-realization"))
    written.update(render_search(results_dir, study, records, labels, out, plots))
    if plots:
        from bench import plots as plotting
        from bench.html import answer_lines, render_page

        written.update(plotting.render_plots(frame, per_attribute, table("history.csv"), records, out, latency, labels))
        page_tables = {"Summary": (headers, rows), "Variants": (k_headers, k_rows)}
        if compared:
            page_tables["Comparisons"] = comparison_table(compared)
        if latency is not None and len(latency):
            page_tables["Latency"] = latency_table(latency)
        if per_attribute is not None and len(per_attribute):
            page_tables["Per attribute"] = per_attribute_table(per_attribute)
        if layers is not None and len(layers):
            page_tables["Per layer"] = layer_table(layers)
        page = render_page(study, frame, latency, page_tables, answer_lines(frame, latency, compared), warnings,
                           environment_lines(frame, timing))
        written["index.html"] = _write(out, "index.html", page)
    return written


def render_search(results_dir: str, study: str, records: list[dict], labels: dict[str, str], out: str,
                  plots: bool = True) -> dict[str, str]:
    """Write ``search.md`` / ``search.tex`` (and ``search.png``) when the study ran a search (``bench.search``): its measured
    front beside the zoo models with the dominance verdicts, then every trial; return the files written ({} without one)."""
    search = read_search(results_dir, study)
    if search is None or "front" not in search:
        return {}
    trials = read_trials(results_dir, study)
    rows = search["front"]
    by_key = {r["row"]["config_hash"]: r for r in records}
    rows = [r for r in rows if r["key"] in by_key]
    f_headers, f_rows = front_table(rows, records, labels)
    t_headers, t_rows = trials_table(trials)
    verdicts = []
    for zoo in dict.fromkeys(r["zoo"] for r in rows if r.get("zoo")):
        winners = [labels.get(r["key"], r["key"]) for r in rows if r["zoo"] == zoo and r["dominates"]]
        verdicts.append(f"- {labels.get(zoo, zoo)}: " + (f"dominated by {', '.join(winners)}" if winners else
                        "no front member dominates it (the table says what stands in the way of each)"))
    settings, screen = search["settings"], search["screen"]
    text = (f"# {study}: search over compression pipelines of {search['model']}\n\n"
            f"{search['finished']} trials ({settings['sampler']}, population {settings['population']}, seed {settings['seed']}; "
            f"knobs {', '.join(settings['knobs'])}), each screened with a {screen['epochs']}-epoch fine-tune on "
            f"{screen['limit_train'] or 'all'} training images (distillation {screen['distill']:g}) and ranked by validation "
            f"accuracy against latency in {search['runtime']} at batch {search['batch']} (a quantized one in "
            f"{search['int8_runtime']}), timed beside the searched model. Up to {settings['promote']} members of the screening "
            f"front were fine-tuned like the study's variants and timed with every model in the study's one timing phase; "
            f"the trials took {search['trial_seconds']:.0f} s (screening fine-tunes and their timing; the last run of the search "
            f"{search['search_seconds']:.0f} s, training, promotion and the timing phase included, cached cells not recomputed).\n\n"
            f"A member **dominates** a zoo model when its test accuracy is higher with the 95 % paired bootstrap interval above 0 "
            f"and its latency lower with the 95 % interval of the ratio (same timing phase, paired over blocks when both run in "
            f"one runtime) below 1. The zoo model runs in {search['runtime']} (fp32); '/ zoo int8' is the ratio to its int8 "
            f"form.\n\n## Verdict\n\n" + ("".join(line + "\n" for line in verdicts) or "- the study has no zoo model to compare with\n")
            + "\n## Front (test split, timing phase)\n\n" + to_markdown(f_headers, f_rows)
            + "\n## Settings of the front\n\n" + "".join(
                f"- {labels.get(k, k)}: `{by_key[k]['row']['compression']}`" + (f" ({by_key[k]['row']['compression_notes']})"
                                                                             if by_key[k]['row'].get('compression_notes') else "") + "\n"
                for k in search["promoted"] if k in by_key)
            + "\n## Trials (validation split, screening fine-tune)\n\nLatency / searched: median of block medians over "
            f"{settings['timing_blocks']} interleaved blocks with the searched model, [95 % interval].\n\n" + to_markdown(t_headers, t_rows))
    written = {"search.md": _write(out, "search.md", text),
               "search.tex": _write(out, "search.tex", to_latex(f_headers, f_rows, caption=f"Search front against the zoo, study {study}",
                                                               label=f"tab:{study}-search"))}
    if plots:
        from bench.plots import search_plot

        members = list({r["key"]: r for r in rows}.values())  # a member has one row per zoo model
        written.update(search_plot(trials, members, search["zoo"], records, labels, search["runtime"], search["batch"], out))
    return written


def environment_lines(frame, timing: dict | None) -> list[str]:
    """Return what the study ran on, in words: the machine, the library versions, the threads and the timing phase."""
    first = frame.iloc[-1]
    lines = [f"CPU: {first.get('cpu_name', '')}; threads: {first.get('threads', '')}",
             f"torch {first.get('torch_version', '')}, timm {first.get('timm_version', '')}, onnxruntime {first.get('onnxruntime_version', '')}",
             f"git commit {first.get('git_commit', '')}"]
    if timing:
        machine = timing["machine"]
        lines.append(f"timing phase: {timing['seconds']:.0f} s on {timing['timestamp']}; fp32 peak {machine['peak_gflops']:.0f} GFLOP/s "
                     f"({machine['peak_library']}, best of {machine.get('tries')})")
    return lines


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
    provenance = (f"Checkpoint `{units['checkpoint'].iloc[0]}`, data {units['data'].iloc[0]}.\n\n" if "checkpoint" in units else "")
    title = (f"# Sensitivity: {method} at {ratio:g}, one unit at a time\n\n{provenance}Each unit (a layer; for pruning, the group of layers "
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
