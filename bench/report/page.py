"""``reports/<study>/index.html``: one self-contained page of a study, built with Plotly (no network, no CDN).

The page opens with the study's answer in a few lines (the accuracy-latency Pareto front, the
variants that lost significantly against their base, the fastest model per runtime), then
interactive plots (hover shows a point's name, parameters, MACs, accuracy and latency with their
intervals; a runtime selector), the tables, the warnings and the environment. Plotly's JavaScript is
inlined once; the tables sort on a click of their header.
"""

from __future__ import annotations

import html

from bench.metrics import pareto_front
from bench.report.labels import row_label
from bench.store.schema import MAJORITY, as_number

# The page's only script of our own: sorting a table by the clicked column (numbers as numbers).
_SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, column) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.from(body.rows);
    var up = th.dataset.order !== 'up';
    th.dataset.order = up ? 'up' : 'down';
    function key(row) { var text = row.cells[column].dataset.value || row.cells[column].textContent;
                        var number = parseFloat(text); return isNaN(number) ? text : number; }
    rows.sort(function (a, b) { var x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1); });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #eee; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { cursor: pointer; background: #f6f6f6; } td:first-child, th:first-child { text-align: left; }
.answer li { margin: 0.3em 0; } .warning { color: #a40; } .note { color: #555; font-size: 0.9em; }
"""


_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _half(row, column: str) -> float:
    high, low = as_number(row.get(f"{column}_hi")), as_number(row.get(f"{column}_lo"))
    return float("nan") if high is None or low is None else (high - low) / 2


def _table_html(headers, rows, table_id: str) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _models(frame):
    return frame[frame["model"] != MAJORITY]


def answer_lines(frame, latency, compared: list[dict]) -> list[str]:
    """Return the study's answer in a few sentences: the accuracy / batch-1 latency Pareto front (fastest exact runtime),
    the variants that lost significantly against their base, and the fastest model per runtime at batch 1."""
    lines = []
    models = _models(frame)
    timed = models[models["latency_b1_ms"].notna()] if "latency_b1_ms" in models else models.iloc[0:0]
    if len(timed):
        front = pareto_front(timed["latency_b1_ms"].values, timed["acc_mean"].values)
        members = [
            f"{row_label(timed.iloc[i])} ({timed.iloc[i]['acc_mean']:.2f} %, {timed.iloc[i]['latency_b1_ms']:.2f} ms "
            f"in {timed.iloc[i]['runtime_b1']})"
            for i in front
        ]
        lines.append("Pareto front of accuracy against batch-1 latency: " + "; ".join(members) + ".")
    losers = [r for r in compared if r["kind"] == "variant vs its base" and r["significant"] and r["d_acc_mean"] < 0]
    if losers:
        lines.append(
            "Lost significantly against their base: "
            + "; ".join(
                f"{r['comparison']} ({r['d_acc_mean']:+.2f} points [{r['d_acc_mean_lo']:+.2f}, {r['d_acc_mean_hi']:+.2f}])"
                for r in losers
            )
            + "."
        )
    elif compared:
        lines.append("No compressed variant lost significantly against its base (paired 95 % intervals).")
    if latency is not None and len(latency):
        batch_1 = latency[(latency["batch"] == 1) & (latency["device"] == "cpu")]
        fastest = []
        for runtime, part in batch_1.groupby("runtime", sort=False):
            best = part.loc[part["median_ms"].idxmin()]
            fastest.append(f"{runtime}: {row_label(best)} ({best['median_ms']:.2f} ms)")
        if fastest:
            lines.append("Fastest model per runtime at batch 1: " + "; ".join(fastest) + ".")
    return lines


def _hover(row) -> str:
    parts = [
        f"<b>{html.escape(row_label(row))}</b>",
        f"params {int(as_number(row['params']) or 0):,}",
        f"MACs {int(as_number(row['macs']) or 0):,}",
        f"accuracy {row['acc_mean']:.2f} +- {_half(row, 'acc_mean'):.2f} %",
    ]
    return "<br>".join(parts)


def accuracy_latency_figure(frame, latency, first_runtime: str | None = None):
    """Return the Plotly figure of accuracy against batch-1 latency: per runtime one trace per model (a dropdown shows
    one runtime at a time, ``first_runtime`` first), both intervals as error bars, names in the legend (never on top of
    each other) and in the hover, and the majority predictor's accuracy as a labelled line."""
    import plotly.graph_objects as go

    models = _models(frame).set_index("config_hash")
    figure = go.Figure()
    rows = latency[(latency["batch"] == 1) & (latency["device"] == "cpu") & latency["config_hash"].isin(models.index)]
    runtimes = list(dict.fromkeys(rows["runtime"]))
    if first_runtime in runtimes:
        runtimes.remove(first_runtime)
        runtimes.insert(0, first_runtime)
    owners = []
    for index, runtime in enumerate(runtimes):
        part = rows[rows["runtime"] == runtime]
        for colour, (_, row) in enumerate(part.iterrows()):
            model = models.loc[row["config_hash"]]
            figure.add_trace(
                go.Scatter(
                    x=[row["median_ms"]],
                    y=[model["acc_mean"]],
                    mode="markers",
                    name=row_label(model),
                    visible=index == 0,
                    marker=dict(size=10, color=_COLOURS[colour % len(_COLOURS)]),
                    legendgroup=row_label(model),
                    hovertext=[
                        f"{_hover(model)}<br>{runtime}: {row['median_ms']:.3f} ms "
                        f"[{row['median_lo']:.3f}, {row['median_hi']:.3f}]"
                    ],
                    hoverinfo="text",
                    error_x=dict(
                        type="data",
                        symmetric=False,
                        array=[row["median_hi"] - row["median_ms"]],
                        arrayminus=[row["median_ms"] - row["median_lo"]],
                    ),
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=[model["acc_mean_hi"] - model["acc_mean"]],
                        arrayminus=[model["acc_mean"] - model["acc_mean_lo"]],
                    ),
                )
            )
            owners.append(index)
    majority = frame.loc[frame["model"] == MAJORITY, "acc_mean"]
    if len(majority):
        figure.add_hline(
            y=float(majority.mean()),
            line_dash="dot",
            line_color="grey",
            annotation_text="majority class",
            annotation_position="bottom right",
        )
    buttons = [
        dict(
            label=runtime,
            method="update",
            args=[{"visible": [owner == i for owner in owners]}, {"title": f"Accuracy against batch-1 latency in {runtime}"}],
        )
        for i, runtime in enumerate(runtimes)
    ]
    figure.update_layout(
        title=f"Accuracy against batch-1 latency in {runtimes[0]}" if runtimes else "Accuracy against latency",
        xaxis=dict(title="latency, batch 1 (ms, log)", type="log"),
        yaxis=dict(title="mean accuracy (%)"),
        updatemenus=[dict(buttons=buttons, x=0.0, y=1.12, xanchor="left", showactive=True)] if runtimes else [],
        legend=dict(font=dict(size=10)),
        height=480,
        margin=dict(t=90),
    )
    return figure


def accuracy_cost_figure(frame, column: str, title: str):
    """Return the Plotly figure of accuracy (with its interval) against a counted cost (log axis), one legend entry per model."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for colour, (_, row) in enumerate(_models(frame).iterrows()):
        figure.add_trace(
            go.Scatter(
                x=[row[column]],
                y=[row["acc_mean"]],
                mode="markers",
                name=row_label(row),
                hovertext=[_hover(row)],
                hoverinfo="text",
                marker=dict(size=10, color=_COLOURS[colour % len(_COLOURS)]),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[row["acc_mean_hi"] - row["acc_mean"]],
                    arrayminus=[row["acc_mean"] - row["acc_mean_lo"]],
                ),
            )
        )
    figure.update_layout(
        title=title,
        xaxis=dict(title=title.split(" against ")[-1] + " (log)", type="log"),
        yaxis=dict(title="mean accuracy (%)"),
        height=420,
        legend=dict(font=dict(size=10)),
    )
    return figure


def roofline_page_figure(layers, peak_gflops: float):
    """Return the Plotly roofline of the per-layer profiles: a dropdown picks the runtime and batch size; each layer with
    MACs a point at (FLOPs per byte, achieved GFLOP/s), one trace per model, the hover naming the layer, its shape,
    measured time and floor; the compute roof and one memory roof per cache level drawn and named."""
    import plotly.graph_objects as go

    rows = layers[(layers["kind"] == "profiled") & (layers["macs"].astype(float) > 0)]
    panels = sorted({(r, int(b)) for r, b in zip(rows["runtime"], rows["batch"])}, key=lambda p: (p[1], p[0]))
    models = list(dict.fromkeys(row_label(r) for r in rows.to_dict("records")))
    figure = go.Figure()
    owners = []
    low, high = max(0.05, float(rows["intensity"].min()) / 2), float(rows["intensity"].max()) * 2
    for panel_index, (runtime, batch) in enumerate(panels):
        part = [r for r in rows.to_dict("records") if r["runtime"] == runtime and int(r["batch"]) == batch]
        for model_index, model in enumerate(models):
            mine = [r for r in part if row_label(r) == model]
            figure.add_trace(
                go.Scatter(
                    x=[r["intensity"] for r in mine],
                    y=[2.0 * float(r["macs"]) / (float(r["measured_ms"]) * 1e6) for r in mine],
                    mode="markers",
                    name=model,
                    visible=panel_index == 0,
                    marker=dict(color=_COLOURS[model_index % len(_COLOURS)], size=7),
                    text=[
                        f"{r['layer']} ({r['shape']}, {r['bound']}-bound): {float(r['measured_ms']):.3f} ms, "
                        f"floor {float(r['floor_ms']):.3f} ms ({float(r['floor_ratio']):.1f}x)"
                        for r in mine
                    ],
                    hovertemplate="%{text}<extra>" + html.escape(model) + "</extra>",
                )
            )
            owners.append(panel_index)
    roofs = rows.drop_duplicates("level")[["level", "bandwidth_gbs"]].to_dict("records")
    figure.add_trace(go.Scatter(x=[low, high], y=[peak_gflops] * 2, mode="lines", name=f"fp32 peak {peak_gflops:.0f} GFLOP/s"))
    owners.append(None)
    for roof in roofs:
        end = min(high, peak_gflops / float(roof["bandwidth_gbs"]))
        figure.add_trace(
            go.Scatter(
                x=[low, end],
                y=[low * float(roof["bandwidth_gbs"]), end * float(roof["bandwidth_gbs"])],
                mode="lines",
                line=dict(dash="dash"),
                name=f"{roof['level']} {float(roof['bandwidth_gbs']):.0f} GB/s",
            )
        )
        owners.append(None)
    buttons = [
        dict(
            label=f"{runtime}, batch {batch}",
            method="update",
            args=[{"visible": [owner is None or owner == index for owner in owners]}],
        )
        for index, (runtime, batch) in enumerate(panels)
    ]
    figure.update_layout(
        title="Per-layer roofline (every layer with MACs, in the runtime's own profiler)",
        xaxis=dict(title="arithmetic intensity (FLOPs per byte moved, log)", type="log"),
        yaxis=dict(title="achieved GFLOP/s (log)", type="log"),
        updatemenus=[dict(buttons=buttons, x=0.0, y=1.12, xanchor="left", showactive=True)],
        height=480,
        margin=dict(t=90),
        legend=dict(font=dict(size=10)),
    )
    return figure


def render_page(
    study: str,
    frame,
    latency,
    tables: dict[str, tuple],
    answer: list[str],
    warnings: list[str],
    environment: list[str],
    layers=None,
    shortfalls: list[str] = (),
) -> str:
    """Return the page's HTML: ``tables`` maps a section title to ``(headers, rows)`` (the "Summary" comes right after
    the answer, the others after the plots); with per-layer profiles in ``layers`` (layers.csv) the roofline chart, and
    ``shortfalls`` (why a compression's speed-up fell short, ``bench.report.explain``) under it."""
    from plotly.offline import get_plotlyjs

    figures = []
    if latency is not None and len(latency) and "median_lo" in latency:
        reference = frame[frame["ref_ratio_b1"] == 1.0]["runtime_b1"] if "ref_ratio_b1" in frame else []
        figures.append(accuracy_latency_figure(frame, latency, reference.iloc[0] if len(reference) else None))
    figures.append(accuracy_cost_figure(frame, "params", "Accuracy against parameters"))
    figures.append(accuracy_cost_figure(frame, "macs", "Accuracy against MACs"))
    if "peak_mb_b1" in frame and frame["peak_mb_b1"].notna().any():
        figures.append(accuracy_cost_figure(frame, "peak_mb_b1", "Accuracy against peak memory at batch 1 (MB)"))
    if layers is not None and "kind" in layers and (layers["kind"] == "profiled").any():
        figures.append(roofline_page_figure(layers, float(latency["peak_gflops"].dropna().max())))
    plots = "".join(
        f'<div class="plot">{f.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot{i}")}</div>'
        for i, f in enumerate(figures)
    )
    sections = {
        title: f"<h2>{html.escape(title)}</h2>{_table_html(headers, rows, 'table-' + title.lower().replace(' ', '-'))}"
        for title, (headers, rows) in tables.items()
    }
    first = sections.pop("Summary", "")
    answer_html = "".join(f"<li>{html.escape(line)}</li>" for line in answer)
    warning_html = "".join(f'<li class="warning">{html.escape(line)}</li>' for line in warnings) or "<li>none</li>"
    shortfall_html = (
        "<h2>Why a speed-up fell short</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in shortfalls) + "</ul>"
        if shortfalls
        else ""
    )
    environment_html = "".join(f"<li>{html.escape(line)}</li>" for line in environment)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(study)}: slimbench report</title>'
        f"<style>{_STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
        f'<h1>Study {html.escape(study)}</h1><h2>The answer</h2><ul class="answer">{answer_html}</ul>{first}'
        f'<h2>Plots</h2><p class="note">Hover a point for its figures; the menu above the first plot picks the runtime. '
        f"Error bars: 95 % bootstrap intervals (test images for accuracy, timing blocks for latency).</p>{plots}{shortfall_html}"
        f"{''.join(sections.values())}<h2>Warnings</h2><ul>{warning_html}</ul><h2>Environment</h2><ul>{environment_html}</ul>"
        f"<script>{_SORT_SCRIPT}</script></body></html>"
    )
