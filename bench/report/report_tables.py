"""The one table of report tables: each row writes one table of a study's report (Markdown, LaTeX and, where it has one,
CSV) and, when it has a page title, its section of the HTML page.

A :class:`ReportTable` row names the files (``name``), the page section (``page_title``) and a ``build`` function that
turns the study's loaded results (:class:`StudyResults`) into a :class:`Built` table (None when the study has nothing
for it). Adding a table to every report is one builder and one row of :data:`REPORT_TABLES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from bench.report.explain import REALIZATION_LIMIT, shortfall_sentences
from bench.report.markup import to_markdown
from bench.report.tables import (
    attribute_difference_table,
    comparison_table,
    dominance_table,
    floor_statements,
    footprint_table,
    latency_table,
    layer_table,
    per_attribute_table,
    realization_table,
    summary_table,
    variant_key_table,
)


@dataclass
class StudyResults:
    """A study's results as the report reads them: ``frame`` (results.csv with labels), ``records`` (with the timing phase
    joined), ``labels`` ({config_hash: label}), the ``reference`` model, ``timing`` (timing.json or None), the optional
    tables (``latency``, ``per_attribute``, ``layers``, ``history``: DataFrames or None), the paired ``compared`` and
    ``compared_attributes`` rows, the ``warnings`` lines and ``dominance`` (dominance.csv as a DataFrame, or None)."""

    study: str
    frame: object
    records: list[dict]
    labels: dict[str, str]
    reference: str
    timing: dict | None
    latency: object = None
    per_attribute: object = None
    layers: object = None
    history: object = None
    compared: list[dict] = field(default_factory=list)
    compared_attributes: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dominance: object = None


@dataclass
class Built:
    """One built table: ``headers`` and ``rows`` (text), ``bold`` flags, the Markdown file's ``title`` and ``intro``, more
    Markdown after the table (``appendix``), the LaTeX ``caption``, and ``csv`` (the CSV file's text; None: no CSV)."""

    headers: list[str]
    rows: list[list[str]]
    title: str
    intro: str = ""
    appendix: str = ""
    caption: str = ""
    bold: list | None = None
    csv: str | None = None

    def markdown(self) -> str:
        """Return the Markdown file: title, intro, table, appendix."""
        return (
            f"# {self.title}\n\n"
            + (f"{self.intro}\n\n" if self.intro else "")
            + to_markdown(self.headers, self.rows, self.bold)
            + self.appendix
        )


@dataclass(frozen=True)
class ReportTable:
    """A table of every study's report: ``<name>.md`` / ``.tex`` (and ``.csv`` when its :class:`Built` has one) from
    ``build(results)``, and a section titled ``page_title`` on the HTML page (None: not on the page)."""

    name: str
    page_title: str | None
    build: Callable[[StudyResults], Built | None]


def _summary_note(results: StudyResults) -> str:
    import pandas as pd

    frame = results.frame
    batch_n = sorted({int(b) for b in frame["batch_n"].dropna()})
    dataset = ", ".join(sorted({str(d) for d in frame["dataset"].dropna()}))
    peaks = sorted(
        {
            f"{float(p):.0f} GFLOP/s ({lib})"
            for p, lib in zip(frame["peak_gflops"], frame["peak_library"])
            if pd.notna(p) and float(p) > 0
        }
    )
    isas = sorted({str(v) for v in frame.get("cpu_isa", pd.Series(dtype=object)).dropna() if str(v)})
    return (
        f"Study '{results.study}' on {dataset}, test split. Rates in percent; PPP = mA / params in millions; "
        f"MACs are multiply-accumulates (ptflops aten) at each model's input size. Latency: ms per batch "
        f"(bN = batch {'/'.join(map(str, batch_n)) or '-'}; each interleaved block's median call, averaged over the "
        f"blocks) in the fastest exact (fp32) runtime, named in 'Runtime' "
        f"(every runtime: latency.md), all models timed together in one timing phase (interleaved blocks), "
        f"+- half the 95 % bootstrap interval over blocks; '/ ref' = latency over {results.reference}'s in the same runtime "
        f"and blocks; floor = 2 x MACs x batch / the machine's fp32 peak "
        f"({', '.join(peaks) or 'not measured'}); roofline = the sum of the model's per-layer roofline floors in that "
        f"runtime (each layer: max(its MACs at the peak, its bytes at the bandwidth of the cache level they fit in); "
        f"layers.csv, kind profiled); speed-up and realization (speed-up / MAC reduction) compare a "
        f"compressed variant with its base in the same runtime and blocks; int8 = the fastest int8 runtime at batch 1, "
        f"named, its accuracy measured in it on the same test split; the CPU's instruction sets (cpu_isa): "
        f"{' / '.join(isas) or 'not recorded'} (int8 speed depends on VNNI); a quantized variant (int8 in its name) is "
        f"timed in its int8 runtimes only, its Acc is its ONNX Runtime int8 accuracy; empty = not measured. Acc, mA "
        f"and F1: value +- half the 95 % bootstrap interval over test images (1,000 resamples) for one seed, +- the "
        f"standard deviation over seeds for several (seeds column); paired differences between models: comparisons.md."
    )


def build_summary(results: StudyResults) -> Built:
    """Return the summary: one row per experiment (the variant key and the warnings after it)."""
    import pandas as pd

    headers, rows, bold = summary_table(results.frame, results.labels)
    note = _summary_note(results)
    k_headers, k_rows = variant_key_table(results.frame)
    appendix = (
        (
            "\n## Variants\n\nThe short names of the tables and plots, and what each compression is in full.\n\n"
            + to_markdown(k_headers, k_rows)
        )
        if k_rows
        else ""
    )
    if results.warnings:
        appendix += "\n## Warnings\n\n" + "".join(f"- {line}\n" for line in results.warnings)
    return Built(
        headers,
        rows,
        f"{results.study}: summary",
        note,
        appendix,
        note,
        bold,
        pd.DataFrame(rows, columns=headers).to_csv(index=False),
    )


def build_variants(results: StudyResults) -> Built | None:
    """Return the key of the variants' short names to their full specification (None without a variant)."""
    headers, rows = variant_key_table(results.frame)
    if not rows:
        return None
    return Built(
        headers,
        rows,
        f"{results.study}: variants",
        "The short names of the tables and plots, and what each compression is in full.",
        caption=f"Compression variants, study {results.study}",
    )


def build_comparisons(results: StudyResults) -> Built | None:
    """Return the paired accuracy differences (None when the study has nothing to compare)."""
    import pandas as pd

    if not results.compared:
        return None
    headers, rows = comparison_table(results.compared)
    intro = (
        "A - B in points, with the 95 % paired bootstrap interval over test images (1,000 resamples); n.s. = the interval "
        "contains 0, so the difference is not significant at that level. Each compressed variant against its base, every "
        f"other model against the study's reference model, {results.reference}."
    )
    return Built(
        headers,
        rows,
        f"{results.study}: paired comparisons on the same test images",
        intro,
        caption=f"Paired differences (points, 95 % bootstrap interval), study {results.study}",
        csv=pd.DataFrame(results.compared).to_csv(index=False),
    )


def _latency_appendix(results: StudyResults) -> str:
    text = "\n## Compute floor\n\n" + "".join(f"- {line}\n" for line in floor_statements(results.latency))
    skipped = [
        f"- {results.labels[r['row']['config_hash']]} (seed {r['row']['seed']}): {runtime}: {reason}\n"
        for r in results.records
        for runtime, reason in sorted(r.get("skipped_runtimes", {}).items())
    ]
    if skipped:
        text += "\n## Runtimes not measured\n\n" + "".join(skipped)
    reasons = shortfall_sentences(results.latency, results.layers)
    if reasons:
        text += (
            f"\n## Why a speed-up fell short\n\nEvery variant whose realization (speed-up / MAC reduction) is below "
            f"{REALIZATION_LIMIT}, in each runtime that profiled it and its base layer by layer (layers.csv, kind profiled; "
            f"roofline.png):\n\n" + "".join(f"- {line}\n" for line in reasons)
        )
    r_headers, r_rows = realization_table(results.latency)
    if r_rows:
        text += (
            "\n## Realized speed-up of compressed variants\n\nMeasured speed-up over the base model in the same runtime "
            "and blocks +- half its 95 % interval, and in brackets realization = speed-up / MAC reduction.\n\n"
            + to_markdown(r_headers, r_rows)
        )
    return text


def build_latency(results: StudyResults) -> Built | None:
    """Return latency per runtime (None when the study was not timed)."""
    if results.latency is None or not len(results.latency):
        return None
    headers, rows = latency_table(results.latency)
    seconds = f", {results.timing['seconds']:.0f} s" if results.timing else ""
    intro = (
        f"Every model of the study timed together in one timing phase{seconds}: per runtime and batch, interleaved blocks in "
        f"which every model runs once, in rotating order. Ms per batch: the mean of the block medians +- half its 95 % bootstrap "
        f"interval over blocks; in round brackets measured / compute floor and, marked r, measured / roofline floor (the "
        f"sum of its layers' floors, layers.csv); in square brackets latency / {results.reference}'s "
        f"in the same blocks, with its interval; * = taken while a load probe flagged the machine busy (see busy in latency.csv)."
    )
    return Built(
        headers,
        rows,
        f"{results.study}: latency per runtime",
        intro,
        _latency_appendix(results),
        caption=f"Median latency (ms) per runtime, study {results.study}",
    )


def build_footprint(results: StudyResults) -> Built | None:
    """Return peak memory and cold start per model and runtime (None when the study did not measure them)."""
    if results.latency is None or "peak_mb" not in results.latency or not results.latency["peak_mb"].notna().any():
        return None
    headers, rows = footprint_table(results.latency)
    repeats = int(results.latency["footprint_repeats"].dropna().max())
    intro = (
        f"Each figure the median of {repeats} fresh processes, each running the file the runtime ships with nothing but "
        "that runtime imported (deploy/standalone.py), spread = largest minus smallest. Import = the process's peak "
        "memory after importing the runtime (every model in it pays that); Peak = its high-water mark (VmHWM) after "
        "loading the model and running it at the batch size; Model = Peak - Import. Load = reading the file and, for "
        "OpenVINO, compiling it (Compile); First = the first inference; Cold start = Load + First, what a command-line "
        "tool or a serverless function pays on every call; Steady = the timing phase's batch-1 median. The memory "
        "settings change the figures: they are recorded with them."
    )
    return Built(
        headers,
        rows,
        f"{results.study}: peak memory and cold start",
        intro,
        caption=f"Peak memory and cold start per runtime, study {results.study}",
    )


def build_realization(results: StudyResults) -> Built | None:
    """Return the realized speed-up of compressed variants (None without one timed)."""
    if results.latency is None or not len(results.latency):
        return None
    headers, rows = realization_table(results.latency)
    if not rows:
        return None
    return Built(
        headers,
        rows,
        f"{results.study}: realized speed-up",
        "Measured speed-up over the base model in the same runtime and "
        "blocks +- half its 95 % interval, and in brackets realization = speed-up / MAC reduction.",
        caption=f"Measured speed-up (realization) of compressed variants, study {results.study}",
    )


def build_per_attribute(results: StudyResults) -> Built | None:
    """Return per-attribute test accuracy, with the paired per-attribute differences after it."""
    if results.per_attribute is None or not len(results.per_attribute):
        return None
    headers, rows = per_attribute_table(results.per_attribute)
    appendix = ""
    if results.compared_attributes:
        d_headers, d_rows = attribute_difference_table(results.compared_attributes)
        appendix = (
            "\n## Paired differences per attribute\n\nA - B in points of each attribute's accuracy, 95 % paired bootstrap "
            "interval; n.s. = it contains 0.\n\n" + to_markdown(d_headers, d_rows)
        )
    return Built(
        headers,
        rows,
        f"{results.study}: per-attribute test accuracy (%)",
        appendix=appendix,
        caption=f"Per-attribute accuracy (%), study {results.study}",
    )


def build_layers(results: StudyResults) -> Built | None:
    """Return the per-layer speed-up table (None without a compressed variant)."""
    if results.layers is None or not (results.layers["kind"].astype(str) != "profiled").any():
        return None
    latency = results.latency
    bases = (
        {}
        if latency is None or "base_hash" not in latency
        else {k: b for k, b in zip(latency["config_hash"], latency["base_hash"]) if isinstance(b, str) and b}
    )
    headers, rows = layer_table(results.layers, bases)
    intro = (
        "Batch 1, CPU. Measured alone: each layer and its replacement timed alone on its real activation shape, "
        "interleaved (ONNX Runtime: each exported alone); r = above 1.5x the theoretical speed-up, retimed and confirmed; "
        "* = timed while the machine was busy. In model: the base's time on the layer over the variant's on its "
        "replacement, both from the runtime's own profiler inside the whole model in the timing phase (layers.csv, kind "
        "profiled)."
    )
    return Built(
        headers,
        rows,
        f"{results.study}: per-layer speed-up",
        intro,
        caption=f"Per-layer theoretical and measured CPU speed-up, study {results.study}",
    )


def build_dominance(results: StudyResults) -> Built | None:
    """Return whether each compressed model dominates each zoo model (None without such a pair, or untimed)."""
    if results.dominance is None or not len(results.dominance):
        return None
    headers, rows = dominance_table(results.dominance, results.labels)
    intro = (
        "Does a compressed model beat an uncompressed model of another architecture on both axes? It **dominates** it when "
        "its test accuracy is higher with the 95 % paired bootstrap interval of the difference (same test images) above 0 "
        "and its latency lower with the 95 % interval of the ratio (one timing phase; the two figures resampled apart when "
        "they come from different runtimes) below 1. Each model runs in its fastest runtime at the batch size: a quantized "
        "variant in its fastest int8 runtime (its accuracy: ONNX Runtime int8's), every other model in its fastest fp32 "
        "runtime; '/ zoo int8' is the ratio to the zoo model's fastest int8 runtime (its int8 accuracy: summary.md)."
    )
    return Built(
        headers,
        rows,
        f"{results.study}: does a compressed model dominate a zoo model?",
        intro,
        caption=f"Dominance of compressed models over zoo models, study {results.study}",
        csv=results.dominance.drop(columns=["label"], errors="ignore").to_csv(index=False),
    )


REPORT_TABLES: tuple[ReportTable, ...] = (
    ReportTable("summary", "Summary", build_summary),
    ReportTable("variants", "Variants", build_variants),
    ReportTable("comparisons", "Comparisons", build_comparisons),
    ReportTable("dominance", "Against the zoo", build_dominance),
    ReportTable("latency", "Latency", build_latency),
    ReportTable("footprint", "Memory and cold start", build_footprint),
    ReportTable("realization", None, build_realization),
    ReportTable("per_attribute", "Per attribute", build_per_attribute),
    ReportTable("layers", "Per layer", build_layers),
)
