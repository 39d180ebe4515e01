"""The study's report: paper-style tables (Markdown, LaTeX, CSV), plots and one HTML page written from its results alone.

Which tables a report has is ``bench.report.report_tables``; their rows are built by ``bench.report.tables``, turned
into Markdown and LaTeX by ``bench.report.markup``, plotted by ``bench.report.plots`` and laid out on the page by
``bench.report.page``; this module reads the results folder and writes the files.
"""

from __future__ import annotations

import json
import logging
import os

from bench.report import report_tables
from bench.report.explain import shortfall_sentences
from bench.report.labels import group_labels, with_labels
from bench.report.markup import to_latex, to_markdown
from bench.report.report_tables import Built, ReportTable, StudyResults
from bench.report.tables import comparisons, front_table, trials_table, warning_lines
from bench.store.files import write_text_atomic
from bench.store.records import (
    DOMINANCE_FILE,
    load_records,
    read_csv_table,
    read_results,
    read_search,
    read_timing,
    read_trials,
    study_dir,
    with_timing,
    write_tables,
)
from bench.store.schema import MAJORITY

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


def load_results(results_dir: str, study: str) -> StudyResults:
    """Return a study's results as its report reads them (tables rebuilt from every valid record when the folder can be
    written; a read-only copy is rendered as its tables are).

    Raises:
        FileNotFoundError: the study has no results yet.
    """
    folder = study_dir(results_dir, study)
    timing = read_timing(results_dir, study)
    try:
        records = write_tables(results_dir, study)  # from every valid record: a table never outlives a bad or missing record
    except FileNotFoundError:
        raise  # no records at all: nothing to render
    except OSError as exc:  # a read-only copy of someone's results: render what its tables say
        _logger.warning("could not rebuild the tables of %s (%s); rendering them as they are", folder, exc)
        records = with_timing(load_records(results_dir, study), timing)
    labels = group_labels(records)
    reference = study_reference(results_dir, study, records)

    def table(name, labelled=True):
        path = os.path.join(folder, name)
        if not (os.path.isfile(path) and os.path.getsize(path)):
            return None
        return with_labels(read_csv_table(path), labels) if labelled else read_csv_table(path)

    compared, compared_attributes = comparisons(records, labels, reference)
    warnings = warning_lines(records, labels)
    if timing and timing.get("unresolved"):
        warnings += [
            f"latency ratios wider than +-{timing['settings']['ratio_tolerance_pct']:g} % when the timing budget ran out, "
            f"in {line}"
            for line in timing["unresolved"]
        ]
    return StudyResults(
        study,
        with_labels(read_results(os.path.join(folder, "results.csv")), labels),
        records,
        labels,
        reference,
        timing,
        table("latency.csv"),
        table("per_attribute.csv"),
        table("layers.csv"),
        table("history.csv"),
        compared,
        compared_attributes,
        warnings,
        dominance=table(DOMINANCE_FILE, labelled=False),
    )


def write_report_table(out: str, table: ReportTable, built: Built, study: str) -> dict[str, str]:
    """Write one report table's files (``<name>.md``, ``.tex`` and ``.csv`` when it has one) into ``out``; return them."""
    written = {
        f"{table.name}.md": _write(out, f"{table.name}.md", built.markdown()),
        f"{table.name}.tex": _write(
            out,
            f"{table.name}.tex",
            to_latex(built.headers, built.rows, built.bold, caption=built.caption, label=f"tab:{study}-{table.name}"),
        ),
    }
    if built.csv is not None:
        written[f"{table.name}.csv"] = _write(out, f"{table.name}.csv", built.csv)
    return written


def render_report(results_dir: str, study: str, reports_dir: str = "reports", plots: bool = True) -> dict[str, str]:
    """Write the study's tables (every row of ``bench.report.report_tables.REPORT_TABLES``), its search report, and with
    ``plots`` its plots and its one-page HTML report under ``<reports_dir>/<study>/``, from its results alone.

    Returns:
        A dict artefact name -> path of every file written.
    Raises:
        FileNotFoundError: the study has no results yet.
    """
    results = load_results(results_dir, study)
    out = os.path.join(reports_dir, study)
    os.makedirs(out, exist_ok=True)
    written: dict[str, str] = {}
    page_tables = {}
    for table in report_tables.REPORT_TABLES:
        built = table.build(results)
        if built is None:
            continue
        written.update(write_report_table(out, table, built, study))
        if table.page_title:
            page_tables[table.page_title] = (built.headers, built.rows)
    written.update(render_search(results_dir, study, results.records, results.labels, out, plots))
    if plots:
        from bench.report import plots as plotting
        from bench.report.page import answer_lines, render_page

        written.update(
            plotting.render_plots(
                results.frame,
                results.per_attribute,
                results.history,
                results.records,
                out,
                results.latency,
                results.labels,
                results.layers,
            )
        )
        page = render_page(
            study,
            results.frame,
            results.latency,
            page_tables,
            answer_lines(results.frame, results.latency, results.compared),
            results.warnings,
            environment_lines(results.frame, results.timing),
            results.layers,
            shortfall_sentences(results.latency, results.layers),
        )
        written["index.html"] = _write(out, "index.html", page)
    return written


def screen_text(screen: dict) -> str:
    """Return what a search's screening (``FinetuneSettings.to_dict()`` of ``search.screen``) does to each trial, in words."""
    recalibrate = screen.get("bn_recalibration") or 0
    batchnorm = f"re-estimating its BatchNorm statistics on {recalibrate} training images" if recalibrate else ""
    if not screen["epochs"]:
        return f"{batchnorm}, without a fine-tune" if batchnorm else "its compressed model as is, without a fine-tune"
    return (
        (f"{batchnorm}, then " if batchnorm else "")
        + f"a {screen['epochs']}-epoch fine-tune on {screen['limit_train'] or 'all'} training images "
        f"(distillation {screen['distill']:g})"
    )


def render_search(
    results_dir: str, study: str, records: list[dict], labels: dict[str, str], out: str, plots: bool = True
) -> dict[str, str]:
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
        verdicts.append(
            f"- {labels.get(zoo, zoo)}: "
            + (
                f"dominated by {', '.join(winners)}"
                if winners
                else "no front member dominates it (the table says what stands in the way of each)"
            )
        )
    settings, screen = search["settings"], search["screen"]
    text = (
        f"# {study}: search over compression pipelines of {search['model']}\n\n"
        f"{search['finished']} trials ({settings['sampler']}, population {settings['population']}, seed {settings['seed']}; "
        f"knobs {', '.join(settings['knobs'])}), each screened by {screen_text(screen)}, and ranked by validation "
        f"accuracy against latency in {search['runtime']} at batch {search['batch']} (a quantized one in "
        f"{search['int8_runtime']}), timed beside the searched model. Up to {settings['promote']} members of the screening "
        f"front were fine-tuned like the study's variants and timed with every model in the study's one timing phase; "
        f"the trials took {search['trial_seconds']:.0f} s (screening and timing each; the last run of the search "
        f"{search['search_seconds']:.0f} s, training, promotion and the timing phase included, cached cells not recomputed).\n\n"
        f"A member **dominates** a zoo model when its test accuracy is higher with the 95 % paired bootstrap interval above 0 "
        f"and its latency lower with the 95 % interval of the ratio (same timing phase, paired over blocks when both run in "
        f"one runtime) below 1. The zoo model runs in {search['runtime']} (fp32); '/ zoo int8' is the ratio to its int8 "
        f"form.\n\n## Verdict\n\n"
        + ("".join(line + "\n" for line in verdicts) or "- the study has no zoo model to compare with\n")
        + "\n## Front (test split, timing phase)\n\n"
        + to_markdown(f_headers, f_rows)
        + "\n## Settings of the front\n\n"
        + "".join(
            f"- {labels.get(k, k)}: `{by_key[k]['row']['compression']}`"
            + (f" ({by_key[k]['row']['compression_notes']})" if by_key[k]["row"].get("compression_notes") else "")
            + "\n"
            for k in search["promoted"]
            if k in by_key
        )
        + "\n## Trials (validation split, after screening)\n\nLatency / searched: mean of block medians (each block's median "
        "call) over the searched model's, "
        f"in {settings['timing_blocks']} interleaved blocks with it, [95 % interval].\n\n" + to_markdown(t_headers, t_rows)
    )
    written = {
        "search.md": _write(out, "search.md", text),
        "search.tex": _write(
            out,
            "search.tex",
            to_latex(f_headers, f_rows, caption=f"Search front against the zoo, study {study}", label=f"tab:{study}-search"),
        ),
    }
    if plots:
        from bench.report.plots import search_plot

        members = list({r["key"]: r for r in rows}.values())  # a member has one row per zoo model
        written.update(search_plot(trials, members, search["zoo"], records, labels, search["runtime"], search["batch"], out))
    return written


def environment_lines(frame, timing: dict | None) -> list[str]:
    """Return what the study ran on, in words: the machine, the library versions, the threads and the timing phase."""
    first = frame.iloc[-1]
    lines = [
        f"CPU: {first.get('cpu_name', '')}; threads: {first.get('threads', '')}",
        f"torch {first.get('torch_version', '')}, timm {first.get('timm_version', '')}, "
        f"onnxruntime {first.get('onnxruntime_version', '')}",
        f"git commit {first.get('git_commit', '')}",
    ]
    if timing:
        machine = timing["machine"]
        lines.append(
            f"timing phase: {timing['seconds']:.0f} s on {timing['timestamp']}; fp32 peak {machine['peak_gflops']:.0f} GFLOP/s "
            f"({machine['peak_library']}, best of {machine['tries']}); ISA {machine['cpu_isa']}"
        )
        if "bandwidth" in machine:  # measured when a runtime profiles layers (deploy.roofline.bandwidth_levels)
            lines.append(
                "bandwidth (input + output of a stream, best library): "
                + ", ".join(
                    f"{level['level']} {level['gbs']:.0f} GB/s ({level['library']}, {level['working_set'] / 2**20:g} MiB)"
                    for level in machine["bandwidth"]
                )
            )
    return lines


def render_sensitivity(units, attributes, folder: str, name: str, plots: bool = True) -> dict[str, str]:
    """Write ``<name>.md`` (units by accuracy drop, largest first) and, with ``plots``, ``<name>.png/.pdf``
    (a unit x attribute heat map of the drops) into ``folder``; return artefact name -> path.
    ``units``/``attributes`` are the tables of ``bench.sensitivity.sensitivity`` as DataFrames."""
    os.makedirs(folder, exist_ok=True)
    ordered = units.sort_values("drop", ascending=False)
    headers = ["Unit", "Layers", "Params removed", "MACs removed", "Acc", "Drop (pt)"]
    rows = [
        [
            str(r["unit"]),
            str(len(str(r["members"]).split("|"))),
            f"{int(r['params_removed']):,}",
            f"{int(r['macs_removed']):,}",
            f"{r['acc_mean']:.2f}",
            f"{r['drop']:.2f}",
        ]
        for _, r in ordered.iterrows()
    ]
    method, ratio = units["method"].iloc[0], units["ratio"].iloc[0]
    provenance = f"Checkpoint `{units['checkpoint'].iloc[0]}`, data {units['data'].iloc[0]}.\n\n" if "checkpoint" in units else ""
    title = (
        f"# Sensitivity: {method} at {ratio:g}, one unit at a time\n\n{provenance}Each unit (a layer; for pruning, the group "
        f"of layers coupled with its root) compressed alone; drop = points of mean accuracy lost on the evaluation split.\n\n"
    )
    written = {f"{name}.md": _write(folder, f"{name}.md", title + to_markdown(headers, rows))}
    if plots:
        from bench.report import plots as plotting

        written.update(plotting.sensitivity_heatmap(attributes, ordered["unit"].tolist(), folder, name))
    return written


def _write(folder: str, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    write_text_atomic(path, text)
    return path
