"""The runtime registry (parity with eager for every runtime and model kind) and the timer."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import compress
import deploy
import models
from bench.profile import best_runtime, profile_model, summary_latency_columns


@pytest.fixture(scope="module")
def three_models():
    """Slim-Net with non-trivial BatchNorm statistics, its SVD factorization and a pruned copy."""
    torch.manual_seed(0)
    slimnet = models.create_model("slimnet").eval()
    with torch.no_grad():
        for module in slimnet.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 218, 178)
    factorized, _ = compress.apply(slimnet, "svd", x, rank_ratio=0.5)
    pruned, _ = compress.apply(slimnet, "prune", x, pruning_ratio=0.5)
    return {"slimnet": slimnet, "svd": factorized.eval(), "pruned": pruned.eval()}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, 3, 218, 178)).astype(np.float32), rng.standard_normal((16, 3, 218, 178)).astype(np.float32)


@pytest.mark.parametrize("runtime", deploy.list_runtimes())
@pytest.mark.parametrize("kind", ["slimnet", "svd", "pruned"])
def test_every_runtime_matches_eager_on_plain_factorized_and_pruned_models(three_models, images, runtime, kind):
    if deploy.unavailable_reason(runtime):
        pytest.skip(deploy.unavailable_reason(runtime))
    example, calibration = images
    model = three_models[kind]
    deployed = deploy.deploy(model, runtime, example, threads=2, calibration=calibration)
    with torch.no_grad():
        reference = model(torch.from_numpy(example)).numpy()
    out = deployed(example)
    assert out.shape == (2, 40) and out.dtype == np.float32
    tolerance = deploy.RUNTIMES[runtime].tolerance * max(1.0, float(np.abs(reference).max()))
    assert deployed.max_abs_diff == pytest.approx(float(np.abs(out - reference).max()), abs=1e-6)
    assert deployed.max_abs_diff <= tolerance
    if deploy.RUNTIMES[runtime].exact:
        assert deployed.max_abs_diff < 1e-4 * max(1.0, float(np.abs(reference).max()))
    assert deployed(example[:1]).shape == (1, 40)  # any batch size, not only the example's


def test_slimnet_scripts_and_runs_like_eager(three_models):
    model = three_models["slimnet"]
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 218, 178)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=1e-6)


def test_a_runtime_that_breaks_parity_fails_loudly(monkeypatch, images):
    def broken(model, example, threads=None, device="cpu", calibration=None):
        eager = deploy.runtimes.build_eager(model, example)
        return deploy.Deployed("eager", eager.prepare, lambda x: eager.run(x) + 0.5)

    monkeypatch.setitem(deploy.RUNTIMES, "eager", deploy.runtimes.RuntimeEntry("eager", broken, "off by 0.5"))
    with pytest.raises(deploy.RuntimeParityError, match=r"eager: logits differ from eager PyTorch by up to 0.5"):
        deploy.deploy(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)), "eager", np.zeros((2, 3, 2, 2), np.float32))


def test_a_missing_package_is_a_reason_not_a_crash(monkeypatch):
    entry = deploy.RUNTIMES["openvino"]
    monkeypatch.setitem(deploy.RUNTIMES, "openvino", deploy.runtimes.RuntimeEntry("openvino", entry.build, entry.description,
                                                                                   ("no_such_package_xyz",)))
    assert deploy.unavailable_reason("openvino") == "openvino needs the package(s) ['no_such_package_xyz'] (pip install no_such_package_xyz)"
    assert "openvino" not in deploy.list_runtimes(available_only=True)
    with pytest.raises(deploy.RuntimeUnavailable, match="no_such_package_xyz"):
        deploy.deploy(torch.nn.Linear(3, 2), "openvino", np.zeros((1, 3), np.float32))
    with pytest.raises(KeyError, match="unknown runtime 'tensorrt'"):
        deploy.unavailable_reason("tensorrt")


def test_int8_needs_calibration_images():
    with pytest.raises(ValueError, match="int8 quantization needs calibration images"):
        deploy.deploy(torch.nn.Linear(3, 2), "onnxruntime_int8", np.zeros((1, 3), np.float32))


def test_floor_arithmetic():
    # Slim-Net's 245,801,868 MACs... here a round number: 2.5e8 MACs x 32 images x 2 flops at 400 GFLOP/s = 40 ms.
    assert deploy.floor_ms(2.5e8, 32, 400.0) == pytest.approx(40.0)
    assert deploy.floor_ms(2.5e8, 1, 500.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        deploy.floor_ms(1e6, 1, 0)


def test_peak_is_the_best_library():
    peak = deploy.peak_gflops(threads=1, size=256, repeats=2)
    assert peak["peak_gflops"] == max(peak["per_library"].values()) > 0
    assert peak["peak_library"] in peak["per_library"] and {"torch", "numpy", "onnxruntime"} <= set(peak["per_library"])


def test_compare_interleaves_blocks_and_ranks_known_durations():
    calls = []

    def sleeper(name, seconds):
        return lambda x: (calls.append(name), time.sleep(seconds))

    candidates = {"fast": (sleeper("fast", 0.002), None, lambda: None), "slow": (sleeper("slow", 0.006), None, lambda: None)}
    timings = deploy.compare(candidates, blocks=4, min_iters=3, min_seconds=0.0, warmup=1)
    assert len(timings["fast"].block_medians) == 4 and timings["fast"].iterations == 12
    assert 2.0 < timings["slow"].median_ms / timings["fast"].median_ms < 4.0
    timed = calls[4:]  # after one warm-up and one untimed call each
    firsts = [timed[i * 6] for i in range(4)]
    assert firsts == ["fast", "slow", "fast", "slow"]  # each block starts one candidate further
    assert timings["fast"].p10_ms <= timings["fast"].median_ms <= timings["fast"].p90_ms
    with pytest.raises(ValueError, match="at least one candidate"):
        deploy.compare({}, blocks=1)


def test_profile_compares_a_variant_with_its_base_in_each_runtime(three_models):
    profile = {"runtimes": ["eager_cl", "onnxruntime"], "batch_n": 2, "blocks": 2, "min_iters": 2, "min_seconds": 0.0}
    result = profile_model(three_models["pruned"], (3, 218, 178), profile, peak=400.0, base_model=three_models["slimnet"])
    assert {(r["runtime"], r["batch"]) for r in result.latency} == {("eager_cl", 1), ("eager_cl", 2), ("onnxruntime", 1), ("onnxruntime", 2)}
    for row in result.latency:
        assert row["speedup"] == pytest.approx(row["base_median_ms"] / row["median_ms"])
        assert row["realization"] == pytest.approx(row["speedup"] / row["mac_reduction"])
        assert row["mac_reduction"] > 2 and row["param_reduction"] > 3
        assert row["floor_ratio"] == pytest.approx(row["median_ms"] / deploy.floor_ms(row["macs"], row["batch"], 400.0))
    best = best_runtime(result.latency, 1)
    assert result.columns["runtime_b1"] == best["runtime"] and result.columns["latency_b1_ms"] == best["median_ms"]
    assert set(result.deployed) == {"eager_cl", "onnxruntime"}


def test_summary_columns_never_pick_int8_as_the_best_exact_runtime():
    rows = [{"runtime": "onnxruntime_int8", "batch": 1, "device": "cpu", "median_ms": 1.0},
            {"runtime": "onnxruntime", "batch": 1, "device": "cpu", "median_ms": 2.0, "floor_ratio": 1.1}]
    columns = summary_latency_columns(rows, 8)
    assert columns["runtime_b1"] == "onnxruntime" and columns["int8_b1_ms"] == 1.0 and columns["floor_ratio_b1"] == 1.1


@pytest.mark.slow
def test_a_measurement_under_load_is_flagged_busy():
    probe = deploy.LoadProbe(threads=2)
    x = torch.randn(256, 256)
    candidates = {"mm": (lambda a: torch.mm(a, a), x, lambda: None)}
    idle = deploy.compare(candidates, blocks=3, min_iters=20, min_seconds=0.05, probe=probe)
    assert not idle["mm"].busy
    burn = "import time\nt = time.time()\nwhile time.time() - t < 30: pass\n"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2 * (os.cpu_count() or 2))]
    try:
        time.sleep(1.0)
        loaded = deploy.compare(candidates, blocks=3, min_iters=20, min_seconds=0.05, probe=probe)
    finally:
        for process in burners:
            process.kill()
    assert loaded["mm"].busy and loaded["mm"].load_ratio > 1.3 and loaded["mm"].retimed >= 1


def test_steady_allocator_pins_glibc_thresholds():
    import ctypes.util
    import platform

    if platform.system() != "Linux" or "libc" not in (ctypes.util.find_library("c") or ""):
        pytest.skip("glibc only")
    assert deploy.steady_allocator() is True and deploy.steady_allocator() is True  # idempotent
