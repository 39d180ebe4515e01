"""Issue 13: a study on a real local Ray cluster gives the records the sequential executor gives, and
survives a killed worker."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.store.records import load_records
from bench.study.config import merge_config
from bench.study.executors import RayExecutor, SequentialExecutor, make_executor
from bench.study.runner import run_study
from tests.helpers import TINY_SLIMNET, tiny_study

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]
# Metrics that must match to 1e-6 between executors (timings are machine state, not results).
COMPARED = ("acc_mean", "mA", "f1", "precision", "recall", "hamming_loss", "ece", "params", "macs", "train_seconds")


def _config(**overrides):
    return tiny_study(
        "ray",
        **merge_config(
            {
                "models": [{"name": "slimnet", "kwargs": TINY_SLIMNET, "compressions": ["svd:rank_ratio=0.5"]}],
                "threads": 1,  # one thread in both executors: identical arithmetic, identical records
                "timing": {"runtimes": ["eager", "onnxruntime"], "layer_runtimes": []},
            },
            overrides,
        ),
    )


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_gives_the_sequential_records(tmp_path, cache_dir, local_cluster):
    config = _config(seeds=[0, 1])
    sequential, on_ray = str(tmp_path / "sequential"), str(tmp_path / "ray")
    started = time.perf_counter()
    run_study(config, sequential, executor=SequentialExecutor())
    sequential_seconds = time.perf_counter() - started
    events = []
    started = time.perf_counter()
    run_study(config, on_ray, executor=RayExecutor(), on_event=lambda kind, payload: events.append((kind, payload.get("model"))))
    ray_seconds = time.perf_counter() - started
    print(f"4-cell study + majority: sequential {sequential_seconds:.1f} s, local Ray cluster (2 workers) {ray_seconds:.1f} s")
    assert sorted(k for k, *_ in events) == sorted(["study"] + ["start"] * 5 + ["done"] * 5 + ["timing", "timed"])
    first, second = load_records(sequential, "ray"), load_records(on_ray, "ray")
    assert sorted(r["row"]["config_hash"] for r in first) == sorted(r["row"]["config_hash"] for r in second)
    assert len(first) == 5
    by_hash = {r["row"]["config_hash"]: r for r in second}
    for record in first:
        other = by_hash[record["row"]["config_hash"]]
        for column in COMPARED[:-1]:
            value = record["row"][column]
            if value not in ("", None):
                assert other["row"][column] == pytest.approx(value, abs=1e-6), column
        assert other["test_predictions"] == record["test_predictions"]
    # Both executors time the same way: every model of the study in one phase, after the last cell.
    for results in (sequential, on_ray):
        timing = json.load(open(os.path.join(results, "ray", "timing.json")))
        assert len(timing["cells"]) == 4 and {r["runtime"] for r in timing["latency"]} == {"eager", "onnxruntime"}


def test_executor_from_config_and_missing_ray_message(monkeypatch):
    assert isinstance(make_executor({"executor": "sequential"}), SequentialExecutor)
    executor = make_executor({"executor": "ray", "ray": {"address": "auto", "cpus_per_cell": 2}})
    assert isinstance(executor, RayExecutor) and executor.address == "auto" and executor.cpus_per_cell == 2
    assert executor._resources({"train": {"device": "cuda"}}, {})["num_gpus"] == 1
    assert executor._resources({"train": {"device": "auto"}, "threads": 3}, {"GPU": 0})["num_cpus"] == 3
    monkeypatch.setitem(sys.modules, "ray", None)
    from bench.study.executors import ExecutorError

    with pytest.raises(ExecutorError, match=r'needs Ray: pip install -e ".\[ray\]"'):
        RayExecutor()


@pytest.mark.slow
def test_a_killed_worker_loses_no_cell(tmp_path, cache_dir):
    import psutil

    config = tmp_path / "study.yaml"
    config.write_text(
        json.dumps(
            {
                "study": "ray",
                "data": {"synthetic_images": 200},
                "models": [{"name": "slimnet", "kwargs": {"filter_count_values": [8, 8, 8, 8], "initial_conv": [16, 7, 2]}}],
                "seeds": [0, 1, 2, 3],
                "threads": 1,
                "train": {"epochs": 3, "batch_size": 16},
                "timing": {"latency": False},
                "executor": "ray",
                "ray": {"num_cpus": 2},
            }
        )
    )
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        str(REPO / "run_bench.py"),
        "--config",
        str(config),
        "--results-dir",
        str(results),
        "--reports-dir",
        str(tmp_path / "reports"),
        "--no-plots",
        "-q",
    ]
    driver = subprocess.Popen(command, cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    killed = None
    while time.monotonic() < deadline and killed is None:
        if any((results / "ray" / "checkpoints").glob("*/last.pt")):
            workers = []
            for process in psutil.Process(driver.pid).children(recursive=True):
                try:
                    # a worker running a cell is titled "ray::_run_with_threads" (Ray sets the process title)
                    if "_run_with_threads" in " ".join(process.cmdline()):
                        workers.append(process)
                except psutil.Error:  # exited meanwhile
                    continue
            if workers:
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    assert killed, "no busy Ray worker to kill"
    first_out, _ = driver.communicate(timeout=600)
    rerun = subprocess.run(command, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    done = [line for out in (first_out, rerun.stdout) for line in out.splitlines() if line.startswith("  done:")]
    assert len(done) == 5, first_out + rerun.stdout  # the majority row and four seeds, each finished once
    records = load_records(str(results), "ray")
    assert sorted(r["row"]["seed"] for r in records if r["row"]["model"] == "slimnet") == [0, 1, 2, 3]
    assert not [p for p in results.rglob("*") if ".partial@" in p.name]
