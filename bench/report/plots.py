"""Paper-column-width plots (PNG + PDF) of a study: trade-offs, per-attribute accuracy, calibration, training."""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # headless: reports are rendered on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.metrics import pareto_front
from bench.report.labels import row_label
from bench.store.schema import MAJORITY

COLUMN_WIDTH_IN = 3.4  # one column of a two-column paper


def _save(fig, folder: str, name: str) -> dict[str, str]:
    paths = {}
    for ext in ("png", "pdf"):
        path = os.path.join(folder, f"{name}.{ext}")
        fig.savefig(path, dpi=200, bbox_inches="tight")
        paths[f"{name}.{ext}"] = path
    plt.close(fig)
    return paths


def _labels(frame):
    return [row_label(row) for _, row in frame.iterrows()]


class _ReadableLogLocator(matplotlib.ticker.Locator):
    """Log ticks at 1-2-5 steps; where fewer than two of them fall in view (a narrow range: latencies of 2.2 to 2.9 ms),
    four evenly spaced plain ticks instead, so an axis never shows a single number."""

    def __call__(self):
        low, high = sorted(self.axis.get_view_interval())
        return self.tick_values(low, high)

    def tick_values(self, vmin, vmax):
        ticks = [
            t for t in matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)).tick_values(vmin, vmax) if vmin <= t <= vmax
        ]
        return ticks if len(ticks) >= 2 else matplotlib.ticker.MaxNLocator(nbins=4).tick_values(vmin, vmax)


def _log_axis(axis) -> None:
    """Readable log ticks: 1-2-5 steps as plain numbers (at least two in view), no colliding minor labels."""
    axis.set_major_locator(_ReadableLogLocator())
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.6g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _interval(frame, column: str, low: str, high: str):
    """Return the (2, N) asymmetric error-bar array of ``column`` from its interval columns (zeros where absent)."""
    values = frame[column].astype(float).values
    lows = frame[low].astype(float).values if low in frame else values
    highs = frame[high].astype(float).values if high in frame else values
    return np.vstack([np.nan_to_num(values - lows), np.nan_to_num(highs - values)]).clip(min=0)


def _fits(ax, texts) -> bool:
    renderer = ax.figure.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    extents = [t.get_window_extent(renderer) for t in texts]
    inside = all(box.x0 - 1 <= e.x0 and e.x1 <= box.x1 + 1 and box.y0 - 1 <= e.y0 and e.y1 <= box.y1 + 1 for e in extents)
    return inside and not any(a.overlaps(b) for i, a in enumerate(extents) for b in extents[i + 1 :])


def _place_labels(ax, xs, ys, labels) -> list:
    """Write ``labels`` beside their points, moved apart by adjustText inside the axes; where they still do not fit
    (long names, crowded points), number the points instead and put the names in a key under the axes."""
    from adjustText import adjust_text

    texts = [ax.text(x, y, label, fontsize=6) for x, y, label in zip(xs, ys, labels)]
    if not texts:
        return texts
    quiet = logging.getLogger("adjustText")
    level, quiet.level = quiet.level, logging.ERROR  # "labels too long" is what the numbered key below answers
    try:
        adjust_text(texts, x=list(xs), y=list(ys), ax=ax, ensure_inside_axes=True, expand=(1.2, 1.4))
    finally:
        quiet.setLevel(level)
    if _fits(ax, texts):
        return texts
    for text in texts:
        text.remove()
    numbers = [
        ax.annotate(str(i + 1), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6, fontweight="bold")
        for i, (x, y) in enumerate(zip(xs, ys))
    ]
    key = "\n".join(f"{i + 1}  {label}" for i, label in enumerate(labels))
    ax.text(0.0, -0.2, key, transform=ax.transAxes, fontsize=5, va="top", ha="left")
    return numbers


def _majority_line(ax, frame) -> None:
    majority = frame.loc[frame["model"] == MAJORITY, "acc_mean"]
    if len(majority):
        value = float(majority.mean())
        ax.axhline(value, color="grey", lw=0.8, ls=":", label=f"majority class ({value:.1f} %)")


def tradeoff_figure(frame, cost_column: str, cost_label: str, log_x: bool = True, cost_interval: tuple[str, str] | None = None):
    """Return a figure of test acc_mean (with its 95 % interval) against a cost column, one labelled point per experiment,
    the Pareto front drawn through its members and the majority predictor's accuracy as a labelled line."""
    models = frame[(frame["model"] != MAJORITY) & frame[cost_column].notna()]
    models = models.groupby("label", sort=False).mean(numeric_only=True).reset_index()
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN * 1.4, 3.0), layout="constrained")
    if len(models):
        xerr = _interval(models, cost_column, *cost_interval) if cost_interval else None
        ax.errorbar(
            models[cost_column],
            models["acc_mean"],
            yerr=_interval(models, "acc_mean", "acc_mean_lo", "acc_mean_hi"),
            xerr=xerr,
            fmt="o",
            ms=4,
            lw=0.8,
            capsize=2,
            zorder=3,
            label="experiment (95 % intervals)",
        )
        front = pareto_front(models[cost_column].values, models["acc_mean"].values)
        if len(front) > 1:
            ax.plot(
                models[cost_column].values[front], models["acc_mean"].values[front], "--", lw=1, color="C3", label="Pareto front"
            )
    _majority_line(ax, frame)
    if log_x and len(models) and (models[cost_column] > 0).all():
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
    ax.set_xlabel(cost_label)
    ax.set_ylabel("mean accuracy (%)")
    ax.legend(fontsize=6, loc="lower right")
    if len(models):
        ax.margins(x=0.15, y=0.12)
        fig.canvas.draw()  # fixes the limits the labels are kept inside
        _place_labels(ax, models[cost_column].values, models["acc_mean"].values, list(models["label"]))
    return fig


def tradeoff_plot(
    frame,
    cost_column: str,
    cost_label: str,
    folder: str,
    name: str,
    log_x: bool = True,
    cost_interval: tuple[str, str] | None = None,
) -> dict[str, str]:
    """Write :func:`tradeoff_figure` as ``<name>.png`` / ``.pdf``; return paths."""
    return _save(tradeoff_figure(frame, cost_column, cost_label, log_x, cost_interval), folder, name)


def per_attribute_plot(per_attribute, folder: str) -> dict[str, str]:
    """Plot per-attribute test accuracy, one marker series per model; return paths."""
    frame = per_attribute.assign(label=_labels(per_attribute))
    fig, ax = plt.subplots(figsize=(2 * COLUMN_WIDTH_IN, 3.0))
    sns.pointplot(data=frame, x="attribute", y="acc", hue="label", linestyles="none", markersize=3, ax=ax, errorbar=None)
    ax.tick_params(axis="x", rotation=90, labelsize=6)
    ax.set_xlabel("")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=6, title=None, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _save(fig, folder, "per_attribute_accuracy")


def reliability_plot(records, folder: str, labels: dict[str, str]) -> dict[str, str]:
    """Plot reliability diagrams before/after temperature scaling for every model; return paths."""
    records = [r for r in records if r.get("reliability")]
    if not records:
        return {}
    fig, axes = plt.subplots(1, 2, figsize=(2 * COLUMN_WIDTH_IN, 2.6), sharey=True)
    for ax, key, title in zip(axes, ("before", "after"), ("before temperature scaling", "after temperature scaling")):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        for record in records:
            data = record["reliability"][key]
            conf = np.asarray(data["confidence"], dtype=float)
            freq = np.asarray(data["frequency"], dtype=float)
            keep = ~np.isnan(conf)
            label = labels.get(record["row"]["config_hash"], record["row"]["model"]) + f" s{record['row']['seed']}"
            ax.plot(conf[keep], freq[keep], marker="o", ms=2, lw=1, label=label)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("predicted probability")
    axes[0].set_ylabel("observed frequency")
    axes[1].legend(fontsize=6, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _save(fig, folder, "reliability")


def training_curves_plot(history, folder: str) -> dict[str, str]:
    """Plot train/val loss and accuracy per epoch for every model; return paths."""
    if history is None or not len(history):
        return {}
    frame = history.assign(label=_labels(history))
    fig, axes = plt.subplots(1, 2, figsize=(2 * COLUMN_WIDTH_IN, 2.6))
    for label, part in frame.groupby("label", sort=False):
        part = part.groupby("epoch").mean(numeric_only=True).reset_index()
        line = axes[0].plot(part["epoch"], part["train_loss"], marker="o", ms=2, label=f"{label} train")[0]
        axes[0].plot(part["epoch"], part["val_loss"], marker="s", ms=2, ls="--", color=line.get_color(), label=f"{label} val")
        axes[1].plot(part["epoch"], part["train_acc"], marker="o", ms=2, color=line.get_color())
        axes[1].plot(part["epoch"], part["val_acc"], marker="s", ms=2, ls="--", color=line.get_color())
    for axis in axes:
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0].set(xlabel="epoch", ylabel="BCE loss")
    axes[1].set(xlabel="epoch", ylabel="mean accuracy (%)")
    axes[0].legend(fontsize=5, bbox_to_anchor=(0, -0.25), loc="upper left", ncol=2)
    return _save(fig, folder, "training_curves")


def pse_mask_plot(record: dict, folder: str, name: str) -> dict[str, str]:
    """Plot a PSE model's position masks over its test images (the PSE paper's Figure 5); return paths."""
    images = [np.asarray(image, dtype=np.uint8) for image in record["pse_masks"]["images"]]
    masks = record["pse_masks"]["masks"]
    columns = 1 + len(masks)
    fig, axes = plt.subplots(
        len(images), columns, figsize=(min(2 * COLUMN_WIDTH_IN, 0.9 * columns), 1.1 * len(images)), squeeze=False
    )
    for row, image in enumerate(images):
        axes[row][0].imshow(image)
        for column, (module, per_image) in enumerate(masks.items(), start=1):
            axes[row][column].imshow(image)
            axes[row][column].imshow(
                np.asarray(per_image[row]),
                cmap="jet",
                alpha=0.5,
                vmin=0,
                vmax=1,
                extent=(0, image.shape[1], image.shape[0], 0),
                interpolation="bilinear",
            )
            if row == 0:
                axes[row][column].set_title(module.replace("heads.groups.", "").replace(".0", ""), fontsize=5)
    for axis in np.ravel(axes):
        axis.axis("off")
    return _save(fig, folder, name)


def _with_accuracy(latency, frame):
    """Return latency rows at batch 1 on the CPU with the accuracy measured in their runtime (``acc_mean`` of the row:
    an exact runtime's is its model's, an int8 runtime's its own) and both intervals."""
    columns = [c for c in ("acc_mean", "acc_mean_lo", "acc_mean_hi") if c in frame]
    accuracy = frame.groupby("label", sort=False)[columns].mean().reset_index()
    rows = latency[(latency["batch"] == 1) & (latency["device"] == "cpu")]
    timed = [c for c in ("median_ms", "median_lo", "median_hi", "floor_ratio", "acc_mean") if c in rows]
    rows = rows.groupby(["label", "runtime"], sort=False)[timed].median().reset_index()
    rows = rows.rename(columns={"acc_mean": "accuracy"}).merge(accuracy, on="label", how="left")
    if "accuracy" not in rows:
        rows["accuracy"] = rows["acc_mean"]
    rows["accuracy"] = rows["accuracy"].fillna(rows["acc_mean"])
    # an int8 accuracy has no interval of its own here: its bars are the model's own, shifted
    for end in ("lo", "hi"):
        rows[f"accuracy_{end}"] = rows[f"acc_mean_{end}"] - rows["acc_mean"] + rows["accuracy"]
    return rows


def latency_panels_figure(latency, frame):
    """Return a figure of test accuracy against batch-1 latency, one panel per runtime, with both intervals as error
    bars, each panel's Pareto front, the majority line and labels kept apart inside their panel."""
    rows = _with_accuracy(latency, frame)
    runtimes = list(dict.fromkeys(rows["runtime"]))
    columns = min(2, len(runtimes))
    lines = int(np.ceil(len(runtimes) / columns))
    fig, axes = plt.subplots(
        lines, columns, figsize=(2 * COLUMN_WIDTH_IN, 2.6 * lines), squeeze=False, sharey=True, layout="constrained"
    )
    for ax, runtime in zip(np.ravel(axes), runtimes):
        part = rows[(rows["runtime"] == runtime) & rows["accuracy"].notna()]
        if len(part):
            ax.errorbar(
                part["median_ms"],
                part["accuracy"],
                xerr=_interval(part, "median_ms", "median_lo", "median_hi"),
                yerr=_interval(part, "accuracy", "accuracy_lo", "accuracy_hi"),
                fmt="o",
                ms=3,
                lw=0.7,
                capsize=1.5,
                zorder=3,
            )
            front = pareto_front(part["median_ms"].values, part["accuracy"].values)
            if len(front) > 1:
                ax.plot(part["median_ms"].values[front], part["accuracy"].values[front], "--", lw=0.8, color="C3")
            if (part["median_ms"] > 0).all():
                ax.set_xscale("log")
                _log_axis(ax.xaxis)
        _majority_line(ax, frame)
        ax.set_title(runtime, fontsize=7)
        ax.set_xlabel("batch-1 latency (ms, log)", fontsize=6)
        ax.tick_params(labelsize=6)
        ax.margins(x=0.2, y=0.15)
    for ax in np.ravel(axes)[len(runtimes) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean accuracy (%)")
    fig.canvas.draw()
    for ax, runtime in zip(np.ravel(axes), runtimes):
        part = rows[(rows["runtime"] == runtime) & rows["accuracy"].notna()]
        _place_labels(ax, part["median_ms"].values, part["accuracy"].values, list(part["label"]))
    return fig


def latency_panels_plot(latency, frame, folder: str) -> dict[str, str]:
    """Write :func:`latency_panels_figure` as ``acc_vs_latency_per_runtime.png`` / ``.pdf``; return paths."""
    return _save(latency_panels_figure(latency, frame), folder, "acc_vs_latency_per_runtime")


def floor_ratio_plot(latency, frame, folder: str) -> dict[str, str]:
    """Plot measured / compute floor at batch 1 per model variant, one bar per runtime; return paths."""
    rows = _with_accuracy(latency, frame).dropna(subset=["floor_ratio"])
    rows = rows.assign(label=_labels(rows))
    fig, ax = plt.subplots(figsize=(2 * COLUMN_WIDTH_IN, 2.6))
    sns.barplot(data=rows, x="label", y="floor_ratio", hue="runtime", ax=ax)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axhline(1.5, color="C3", lw=0.8, ls="--", label="1.5x floor")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlabel("")
    ax.set_ylabel("measured / compute floor (batch 1)")
    ax.tick_params(axis="x", rotation=30, labelsize=6)
    ax.legend(fontsize=6, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _save(fig, folder, "floor_ratio")


def roofline_figure(layers, peak_gflops: float):
    """Return the roofline chart of the per-layer profiles (``layers.csv`` rows of kind ``profiled``): one panel per
    profiled runtime and batch size, each layer with MACs a point at its arithmetic intensity (FLOPs per byte moved)
    and the throughput it reached (GFLOP/s), one colour per model, under the compute roof (the fp32 peak) and one
    memory roof per cache level (bandwidth x intensity), each roof named inside the axes."""
    rows = layers[(layers["kind"] == "profiled") & (layers["macs"].astype(float) > 0)].copy()
    rows = rows.assign(label=_labels(rows), gflops=2.0 * rows["macs"].astype(float) / (rows["measured_ms"].astype(float) * 1e6))
    panels = sorted({(r, int(b)) for r, b in zip(rows["runtime"], rows["batch"])}, key=lambda p: (p[1], p[0]))
    columns = max(1, len({p[0] for p in panels}))
    grid = max(1, -(-len(panels) // columns))
    fig, axes = plt.subplots(
        grid, columns, figsize=(COLUMN_WIDTH_IN * 1.2 * columns, 2.8 * grid), squeeze=False, layout="constrained"
    )
    models = list(dict.fromkeys(rows["label"]))
    roofs = rows.drop_duplicates("level")[["level", "bandwidth_gbs"]].sort_values("bandwidth_gbs", ascending=False)
    for ax, (runtime, batch) in zip(axes.flat, panels):
        part = rows[(rows["runtime"] == runtime) & (rows["batch"].astype(int) == batch)]
        for index, model in enumerate(models):
            mine = part[part["label"] == model]
            ax.scatter(mine["intensity"], mine["gflops"], s=9, alpha=0.8, color=f"C{index % 10}", label=model, lw=0)
        low = max(0.05, float(part["intensity"].min()) / 2)
        high = float(part["intensity"].max()) * 2
        ax.plot([low, high], [peak_gflops, peak_gflops], color="black", lw=1)
        ax.text(high / 1.15, peak_gflops * 1.12, f"fp32 peak {peak_gflops:.0f} GFLOP/s", ha="right", va="bottom", fontsize=5.5)
        for position, (level, bandwidth) in enumerate(roofs.itertuples(index=False)):
            ridge = peak_gflops / float(bandwidth)
            x_end = min(high, ridge)
            ax.plot([low, x_end], [low * bandwidth, x_end * bandwidth], color="0.4", lw=0.8, ls=("-", "--", ":")[position % 3])
            ax.text(low * 1.1, low * bandwidth * 1.15, f"{level} {bandwidth:.0f} GB/s", fontsize=5.5, color="0.3", rotation=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(max(0.01, float(part["gflops"].min()) / 2), peak_gflops * 2.5)  # room for the peak label inside
        ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
        ax.set_ylabel("achieved GFLOP/s")
        ax.set_title(f"{runtime}, batch {batch}", fontsize=7)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=5.5, loc="lower right", markerscale=1.5)
    return fig


def roofline_plot(layers, latency, folder: str) -> dict[str, str]:
    """Write :func:`roofline_figure` as ``roofline.png`` / ``.pdf`` (nothing without per-layer profiles); return paths."""
    if layers is None or "kind" not in layers or not (layers["kind"] == "profiled").any():
        return {}
    peak = float(latency["peak_gflops"].dropna().max())
    return _save(roofline_figure(layers, peak), folder, "roofline")


def sensitivity_heatmap(attributes, unit_order: list[str], folder: str, name: str) -> dict[str, str]:
    """Plot the accuracy drop of each attribute (columns) when each unit (rows, in ``unit_order``) is
    compressed alone; return paths."""
    table = attributes.pivot_table(index="unit", columns="attribute", values="drop", sort=False).reindex(unit_order)
    fig, ax = plt.subplots(figsize=(2 * COLUMN_WIDTH_IN, 0.9 + 0.16 * len(table)))
    limit = float(np.nanmax(np.abs(table.values))) if table.size else 1.0
    sns.heatmap(
        table,
        cmap="RdBu_r",
        center=0,
        vmin=-limit,
        vmax=limit,
        ax=ax,
        cbar_kws={"label": "accuracy drop (points)"},
        xticklabels=True,
        yticklabels=True,
    )
    ax.tick_params(axis="x", rotation=90, labelsize=5)
    ax.tick_params(axis="y", labelsize=5)
    ax.set_xlabel("")
    ax.set_ylabel("")
    return _save(fig, folder, name)


def render_plots(
    frame, per_attribute, history, records, folder: str, latency=None, labels: dict[str, str] | None = None, layers=None
) -> dict[str, str]:
    """Write every plot of a study into ``folder``; return artefact name -> path."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=0.8)
    jobs = [
        lambda: tradeoff_plot(frame, "params", "parameters (log)", folder, "acc_vs_params"),
        lambda: tradeoff_plot(frame, "macs", "MACs (log)", folder, "acc_vs_macs"),
    ]
    if frame["latency_b1_ms"].notna().any():
        jobs.append(
            lambda: tradeoff_plot(
                frame,
                "latency_b1_ms",
                "latency, batch 1, fastest exact runtime (ms, log)",
                folder,
                "acc_vs_latency",
                cost_interval=("latency_b1_lo", "latency_b1_hi"),
            )
        )
    if latency is not None and len(latency):
        jobs.append(lambda: latency_panels_plot(latency, frame, folder))
        if latency["floor_ratio"].notna().any():
            jobs.append(lambda: floor_ratio_plot(latency, frame, folder))
        jobs.append(lambda: roofline_plot(layers, latency, folder))
    if "peak_mb_b1" in frame and frame["peak_mb_b1"].notna().any():
        jobs.append(
            lambda: tradeoff_plot(
                frame, "peak_mb_b1", "peak memory, batch 1, fastest runtime (MB, log)", folder, "acc_vs_peak_memory"
            )
        )
    if per_attribute is not None and len(per_attribute):
        jobs.append(lambda: per_attribute_plot(per_attribute, folder))
    jobs.append(lambda: reliability_plot(records, folder, labels or {}))
    jobs.append(lambda: training_curves_plot(history, folder))
    for record in records:
        if record.get("pse_masks"):
            row = record["row"]
            label = (labels or {}).get(row["config_hash"], row["model"]) + f"_seed{row['seed']}"
            name = "pse_masks_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
            jobs.append(lambda record=record, name=name: pse_mask_plot(record, folder, name))
    written = {}
    for paths in _run_jobs(jobs):
        written.update(paths)
    return written


_JOBS: list = []  # the plots a forked worker draws, by index (a closure does not pickle; a fork inherits it)


def _run_job(index: int) -> dict[str, str]:
    return _JOBS[index]()


def _run_jobs(jobs: list) -> list:
    """Return each job's result, the jobs drawn by one forked process per core where processes fork (each plot is
    independent and matplotlib draws on one core: the default study's 9 figures, PNG and PDF, took 15.5 s of its
    report's 20 s on machine D), else one after the other."""
    global _JOBS
    workers = min(os.cpu_count() or 1, len(jobs))
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [job() for job in jobs]
    _JOBS = jobs
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_run_job, range(len(jobs))))
    finally:
        _JOBS = []


def search_figure(
    trials: list[dict],
    members: list[dict],
    zoo: list[dict],
    records: list[dict],
    labels: dict[str, str],
    runtime: str,
    batch: int,
):
    """Return the search's figure: left, every screened trial (validation accuracy after screening against its
    latency over the searched model's, timed beside it) with the screening front; right, the promoted members, the
    searched model and the zoo models (test accuracy against latency over the searched model's, all from the study's
    timing phase), each with its 95 % intervals."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(COLUMN_WIDTH_IN * 2.4, 3.0), layout="constrained")
    done = [t for t in trials if t["state"] == "COMPLETE" and t["latency_ratio"] not in ("", None)]
    if done:
        x = np.array([float(t["latency_ratio"]) for t in done])
        y = np.array([float(t["acc_mean_val"]) for t in done])
        low = np.array([float(t["latency_ratio_lo"]) if t["latency_ratio_lo"] not in ("", None) else v for t, v in zip(done, x)])
        high = np.array([float(t["latency_ratio_hi"]) if t["latency_ratio_hi"] not in ("", None) else v for t, v in zip(done, x)])
        left.errorbar(x, y, xerr=[x - low, high - x], fmt="o", ms=3, lw=0.6, color="0.55", label="trial (screened)")
        front = pareto_front(x, y)
        left.plot(x[front], y[front], "--", lw=1, color="C3", label="screening front")
        promoted = np.array([bool(t["promoted_hash"]) for t in done])
        if promoted.any():
            left.plot(x[promoted], y[promoted], "o", ms=7, mfc="none", color="C3", label="promoted")
    left.axvline(1.0, color="0.8", lw=0.8)
    left.set_xlabel("latency / searched model's")
    left.set_ylabel("validation mean accuracy (%)")
    left.set_title("screened trials (each timed beside the searched model)", fontsize=7)
    left.legend(fontsize=6, loc="lower right")
    by_key = {r["row"]["config_hash"]: r["row"] for r in records}
    for points, style, name in ((members, "o", "searched model and promoted members"), (zoo, "s", "zoo models")):
        points = [p for p in points if p["base_ratio"] is not None and p["key"] in by_key]
        if not points:
            continue
        x = np.array([p["base_ratio"] for p in points])
        y = np.array([float(by_key[p["key"]]["acc_mean"]) for p in points])
        xerr = [x - np.array([p["base_ratio_lo"] for p in points]), np.array([p["base_ratio_hi"] for p in points]) - x]
        yerr = [
            y - np.array([float(by_key[p["key"]]["acc_mean_lo"]) for p in points]),
            np.array([float(by_key[p["key"]]["acc_mean_hi"]) for p in points]) - y,
        ]
        right.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=style, ms=4, lw=0.8, capsize=2, label=name)
        for xi, yi, p in zip(x, y, points):
            label = labels.get(p["key"], p["key"])
            trial = re.search(r"#\d+", label)  # a promoted member is named by its trial (search.md has its pipeline)
            right.annotate(trial.group(0) if trial else label, (xi, yi), fontsize=6, xytext=(4, 3), textcoords="offset points")
    right.set_xlabel("latency / searched model's")
    right.set_ylabel("test mean accuracy (%)")
    right.set_title("promoted (full fine-tune) and zoo, one timing phase", fontsize=7)
    right.legend(fontsize=6, loc="lower right")
    fig.suptitle(f"latency in {runtime} at batch {batch} (a quantized model in its int8 form)", fontsize=7)
    return fig


def search_plot(trials, members, zoo, records, labels, runtime: str, batch: int, folder: str) -> dict[str, str]:
    """Write :func:`search_figure` as ``search.png`` / ``.pdf``; return paths."""
    return _save(search_figure(trials, members, zoo, records, labels, runtime, batch), folder, "search")
