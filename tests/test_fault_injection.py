"""Fault injection (issue 11): the main job run in a subprocess, killed with SIGKILL while it trains,
generates data and decodes images, fed a corrupt record, and run twice at once into one folder.
Each rerun must keep every finished cell, resume the killed one, and leave no partial file."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

SMALL_SLIMNET = {"filter_count_values": [8, 8, 8, 8], "initial_conv": [16, 7, 2]}


def _study(tmp_path, images=300, epochs=3, seeds=(0,), name="faults"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        json.dumps(
            {  # JSON is YAML
                "study": name,
                "data": {"synthetic_images": images},
                "models": [{"name": "slimnet", "kwargs": SMALL_SLIMNET}],
                "seeds": list(seeds),
                "train": {"epochs": epochs, "batch_size": 16, "lr": 0.001},
                "timing": {"latency": False},
            }
        )
    )
    return str(path)


def _start(config, results, cache):
    env = {**os.environ, "SLIMBENCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO / "run_bench.py"),
            "--config",
            config,
            "--results-dir",
            str(results),
            "--reports-dir",
            str(results.parent / "reports"),
            "--no-plots",
            "-q",
            "--threads",
            "1",
        ],
        cwd=str(REPO),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _run(config, results, cache, timeout=600):
    process = _start(config, results, cache)
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


def _kill_when(process, condition, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended before the fault could be injected:\n{process.stdout.read()}")
        if condition():
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.02)
    process.kill()
    pytest.fail("the fault point was never reached")


def _partials(*folders):
    return [str(p) for folder in folders for p in Path(folder).rglob("*") if ".partial@" in p.name]


def _records(results, study="faults"):
    folder = Path(results) / study / "cells"
    return {p.name: json.loads(p.read_text()) for p in folder.glob("*.json")}


def test_sigkill_during_training_resumes_the_cell_and_keeps_the_others(tmp_path):
    cache, results = tmp_path / "cache", tmp_path / "results"
    config = _study(tmp_path)
    process = _start(config, results, cache)
    checkpoints = results / "faults" / "checkpoints"
    _kill_when(process, lambda: any(checkpoints.glob("*/last.pt")))  # after the first epoch, mid-training
    finished = _records(results)
    assert [r["row"]["model"] for r in finished.values()] == ["majority"]
    last = next(checkpoints.glob("*/last.pt"))
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] < 2  # killed before the last of three epochs

    out = _run(config, results, cache)
    assert "= majority seed 0: cached result, skipped" in out
    records = _records(results)
    assert records[next(iter(finished))]["row"] == finished[next(iter(finished))]["row"]  # kept as it was
    slimnet = next(r for r in records.values() if r["row"]["model"] == "slimnet")
    assert [h["epoch"] for h in slimnet["history"]] == [1, 2, 3]
    # the epochs finished before the kill were resumed, not retrained: their history entries are the saved ones
    resumed = slimnet["history"][: saved["epoch"] + 1]
    assert [{k: h[k] for k in old} for h, old in zip(resumed, saved["history"])] == saved["history"]
    assert not _partials(results, cache)


def test_sigkill_during_generation_and_decoding_leaves_nothing_behind(tmp_path):
    cache, results = tmp_path / "cache", tmp_path / "results"
    config = _study(tmp_path, images=1500, epochs=1)
    process = _start(config, results, cache)
    _kill_when(process, lambda: any(len(list(p.glob("img_align_celeba/*.jpg"))) > 50 for p in cache.glob(".*.partial@*")))
    assert _partials(cache)  # the half-written set is there...
    process = _start(config, results, cache)
    _kill_when(process, lambda: any((cache / "decoded").glob("*.partial@*")))
    assert not list(cache.glob(".*.partial@*"))  # ...and was removed by the next run, which generated the set
    root = next(p for p in cache.glob("synthetic-celeba-*") if p.is_dir())
    assert len(list((root / "img_align_celeba").glob("*.jpg"))) == 1500
    _run(config, results, cache)
    assert not _partials(results, cache)
    assert len(_records(results)) == 2


def test_corrupt_record_is_recovered_by_the_next_run(tmp_path):
    cache, results = tmp_path / "cache", tmp_path / "results"
    config = _study(tmp_path, epochs=1)
    _run(config, results, cache)
    cells = results / "faults" / "cells"
    victim = next(p for p in cells.glob("slimnet-*.json"))
    victim.write_text(victim.read_text()[:500])
    out = _run(config, results, cache)
    assert victim.name in out and "quarantine" in out
    assert "> slimnet seed 0" in out and (cells / "quarantine" / victim.name).is_file()
    assert json.loads(victim.read_text())["row"]["model"] == "slimnet"
    rows = (results / "faults" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 3


def test_two_runs_of_one_study_share_the_cells(tmp_path):
    cache, results = tmp_path / "cache", tmp_path / "results"
    config = _study(tmp_path, images=400, epochs=2, seeds=(0, 1, 2))  # a new synthetic size: both runs want to generate it
    first, second = _start(config, results, cache), _start(config, results, cache)
    outs = [p.communicate(timeout=900)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    started = [line for out in outs for line in out.splitlines() if line.startswith("> ")]
    assert sorted(started) == sorted(set(started)) and len(started) == 4  # every cell computed once, by one run
    records = _records(results)
    assert len(records) == 4 and sorted(r["row"]["seed"] for r in records.values() if r["row"]["model"] == "slimnet") == [0, 1, 2]
    rows = (results / "faults" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 5
    assert len([p for p in cache.glob("synthetic-celeba-*") if p.is_dir()]) == 1 and not _partials(results, cache)
