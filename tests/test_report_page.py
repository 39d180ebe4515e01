"""The study's page (reports/<study>/index.html) opened in a real headless Chromium, and the static plots' content (issue 21)."""

import os
import re
import shutil

import pandas as pd
import pytest

from bench.report.render import render_report
from bench.study.runner import run_study
from tests.helpers import tiny_study


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, cache_dir):
    """A tiny study with a compressed variant and a baseline, run and rendered once for every test here."""
    folder = tmp_path_factory.mktemp("page")
    config = tiny_study(
        "page",
        compressions=["svd:rank_ratio=0.5"],
        finetune={"epochs": 0},
        timing={"layer_runtimes": []},
        models=[
            {"name": "slimnet", "kwargs": {"filter_count_values": [4, 4, 4, 4], "initial_conv": [8, 7, 2]}},
            {"name": "mobilenetv3_small_100", "kwargs": {"input_size": [3, 218, 178]}},
        ],
    )
    results, reports = str(folder / "results"), str(folder / "reports")
    run_study(config, results)
    written = render_report(results, "page", reports)
    return results, reports, written


def frame_labels(results):
    frame = pd.read_csv(os.path.join(results, "page", "results.csv"))
    frame = frame[frame["model"] != "majority"]
    return [m if not isinstance(v, str) or not v else f"{m} [{v}]" for m, v in zip(frame["model"], frame["variant"])]


def _browser_binaries():
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    return browser, shutil.which("chromedriver")


def test_the_page_is_self_contained(rendered):
    _, _, written = rendered
    text = open(written["index.html"], encoding="utf-8").read()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)\s*=\s*[\"']?(https?:)?//", text)  # nothing from the network
    assert "Plotly" in text and "The answer" in text and "Pareto front" in text


def test_the_page_renders_in_a_real_browser_and_shows_the_results(rendered, tmp_path):
    browser, driver_path = _browser_binaries()
    if not browser or not driver_path:
        pytest.skip("no Chromium with a driver here: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    results, _, written = rendered
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get("file://" + os.path.abspath(written["index.html"]))
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")
        plots = driver.find_elements(By.CSS_SELECTOR, ".plotly-graph-div")
        WebDriverWait(driver, 60).until(lambda d: all(p.find_elements(By.CSS_SELECTOR, "svg.main-svg") for p in plots))
        assert len(plots) == 3
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        # hover text carries the figures of a point
        hover = driver.execute_script("return document.getElementById('plot0').data.map(t => t.hovertext[0])")
        assert any("params" in h and "MACs" in h and "accuracy" in h and "ms [" in h for h in hover)
        names = driver.execute_script(
            "return document.getElementById('plot0').data.filter(t => t.visible === true).map(t => t.name)"
        )
        assert sorted(names) == sorted(frame_labels(results))  # one legend entry per model, in the first runtime
        # the numbers on the page are results.csv's
        frame = pd.read_csv(os.path.join(results, "page", "results.csv"))
        table = driver.find_element(By.ID, "table-summary")
        headers = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
        shown = {
            tr.find_elements(By.TAG_NAME, "td")[0].text: [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
        }
        for _, row in frame[frame["model"] != "majority"].iterrows():
            label = (
                row["model"]
                if not isinstance(row["variant"], str) or not row["variant"]
                else f"{row['model']} [{row['variant']}]"
            )
            assert shown[label][headers.index("Acc")].startswith(f"{row['acc_mean']:.2f} +- ")
            assert shown[label][headers.index("b1 (ms)")].startswith(f"{row['latency_b1_ms']:.2f} +- ")
        # a header click sorts the table by that column
        params = headers.index("#P (M)")
        table.find_elements(By.CSS_SELECTOR, "thead th")[params].click()
        values = [
            float(tr.find_elements(By.TAG_NAME, "td")[params].text) for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
        ]
        assert values == sorted(values)
        driver.save_screenshot(str(tmp_path / "page.png"))
        assert os.path.getsize(tmp_path / "page.png") > 10_000
    finally:
        driver.quit()


def test_the_accuracy_latency_plot_holds_points_bars_front_and_labels_inside(rendered):
    import matplotlib.pyplot as plt

    from bench.report.labels import group_labels, with_labels
    from bench.report.plots import tradeoff_figure
    from bench.store.records import load_records, read_results, read_timing, with_timing

    results, _, _ = rendered
    records = with_timing(load_records(results, "page"), read_timing(results, "page"))
    frame = with_labels(read_results(os.path.join(results, "page", "results.csv")), group_labels(records))
    figure = tradeoff_figure(
        frame, "latency_b1_ms", "latency, batch 1 (ms, log)", cost_interval=("latency_b1_lo", "latency_b1_hi")
    )
    ax = figure.axes[0]
    figure.canvas.draw()
    models = frame[frame["model"] != "majority"]
    (bars,) = [c for c in ax.containers if hasattr(c, "has_xerr")]
    assert bars.has_xerr and bars.has_yerr and len(bars.lines[0].get_xdata()) == len(models)  # one point, two bars per model
    names = set(models["label"])
    texts = [t for t in ax.texts if t.get_text() in names or t.get_text().isdigit()]
    if all(t.get_text().isdigit() for t in texts):  # numbered points, names in the key under the axes
        assert sorted(int(t.get_text()) for t in texts) == list(range(1, len(models) + 1))
        key = next(t.get_text() for t in ax.texts if "\n" in t.get_text() or t.get_text().startswith("1  "))
        assert all(f"{i + 1}  {name}" in key for i, name in enumerate(models["label"]))
    else:
        assert sorted(t.get_text() for t in texts) == sorted(names)
    box = ax.get_window_extent()
    renderer = figure.canvas.get_renderer()
    extents = [t.get_window_extent(renderer) for t in texts]
    assert all(box.x0 - 1 <= e.x0 and e.x1 <= box.x1 + 1 and box.y0 - 1 <= e.y0 and e.y1 <= box.y1 + 1 for e in extents)
    assert not any(a.overlaps(b) for i, a in enumerate(extents) for b in extents[i + 1 :])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("majority class (") for t in legend)
    front_drawn = any(line.get_label() == "Pareto front" for line in ax.get_lines())
    assert ("Pareto front" in legend) == front_drawn
    ticks = [
        t.get_text() for t in ax.get_xticklabels() if t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]
    ]
    assert len(ticks) >= 2 and not any("^" in t for t in ticks)  # plain numbers, more than one
    plt.close(figure)


def test_per_runtime_panels_do_not_collide(rendered):
    import matplotlib.pyplot as plt

    from bench.report.labels import group_labels, with_labels
    from bench.report.plots import latency_panels_figure
    from bench.store.records import load_records, read_csv_table, read_results, read_timing, with_timing

    results, _, _ = rendered
    records = with_timing(load_records(results, "page"), read_timing(results, "page"))
    labels = group_labels(records)
    frame = with_labels(read_results(os.path.join(results, "page", "results.csv")), labels)
    latency = with_labels(read_csv_table(os.path.join(results, "page", "latency.csv")), labels)
    figure = latency_panels_figure(latency, frame)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(dict.fromkeys(latency["runtime"]))
    titles = [ax.title.get_window_extent(renderer) for ax in panels]
    ticks = [
        label.get_window_extent(renderer)
        for ax in panels
        for label in ax.get_xticklabels() + [ax.xaxis.label]
        if label.get_text()
    ]
    assert not any(title.overlaps(tick) for title in titles for tick in ticks)
    for ax in panels:
        box = ax.get_window_extent()
        for text in [t for t in ax.texts if not t.get_text().startswith("1  ")]:  # the key of numbered points sits below
            extent = text.get_window_extent(renderer)
            assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, (ax.get_title(), text.get_text())
    plt.close(figure)
