"""The runtime registry (parity with eager for every runtime and model kind) and the timer."""

import dataclasses
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
from bench.study.timing_phase import summary_latency_columns


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
    deployed = deploy.deploy(
        model, runtime, example, threads=2, calibration=calibration, int8=deploy.Int8Settings(calibration_images=16)
    )
    with torch.no_grad():
        reference = model(torch.from_numpy(example)).numpy()
    out = deployed(example)
    assert out.shape == (2, 40) and out.dtype == np.float32
    assert deployed.max_abs_diff == pytest.approx(float(np.abs(out - reference).max()), abs=1e-6)
    # int8 has no parity gate, but an untrained net's int8 logits still lie within a tenth of its largest logit
    tolerance = (deploy.RUNTIMES[runtime].tolerance or 0.1) * max(1.0, float(np.abs(reference).max()))
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
    def broken(model, example, threads=None, device="cpu", calibration=None, int8=None):
        eager = deploy.runtimes.build_eager(model, example)
        return deploy.Deployed("eager", eager.prepare, lambda x: eager.run(x) + 0.5)

    monkeypatch.setitem(deploy.RUNTIMES, "eager", deploy.runtimes.RuntimeEntry("eager", broken, "off by 0.5"))
    with pytest.raises(deploy.RuntimeParityError, match=r"eager: logits differ from eager PyTorch by up to 0.5"):
        deploy.deploy(
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)), "eager", np.zeros((2, 3, 2, 2), np.float32)
        )


def test_a_missing_package_is_a_reason_not_a_crash(monkeypatch):
    entry = deploy.RUNTIMES["openvino"]
    monkeypatch.setitem(
        deploy.RUNTIMES,
        "openvino",
        deploy.runtimes.RuntimeEntry("openvino", entry.build, entry.description, ("no_such_package_xyz",)),
    )
    assert (
        deploy.unavailable_reason("openvino")
        == "openvino needs the package(s) ['no_such_package_xyz'] (pip install no_such_package_xyz)"
    )
    assert "openvino" not in deploy.list_runtimes(available_only=True)
    with pytest.raises(deploy.RuntimeUnavailable, match="no_such_package_xyz"):
        deploy.deploy(torch.nn.Linear(3, 2), "openvino", np.zeros((1, 3), np.float32))
    with pytest.raises(KeyError, match="unknown runtime 'tensorrt'"):
        deploy.unavailable_reason("tensorrt")


def test_int8_needs_calibration_images():
    with pytest.raises(ValueError, match="int8 quantization needs calibration images"):
        deploy.deploy(torch.nn.Linear(3, 2), "onnxruntime_int8", np.zeros((1, 3), np.float32))


def test_the_int8_source_is_built_once_per_model_weights_and_images(monkeypatch):
    from deploy import runtimes

    exports = []
    monkeypatch.setattr(runtimes, "export_onnx", lambda model, example: exports.append(1) or b"graph%d" % len(exports))
    monkeypatch.setattr(runtimes, "_SOURCES", deploy.int8.BytesMemo(2**20))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    example, calibration = np.zeros((1, 3, 4, 4), np.float32), np.ones((8, 3, 4, 4), np.float32)
    settings = deploy.Int8Settings(calibration_images=8)
    first = runtimes.int8_source(model, example, calibration, settings)
    assert runtimes.int8_source(model, example, calibration, settings) == first and len(exports) == 1
    assert runtimes.int8_source(model, example, calibration * 2, settings) != first  # other images: equalized anew
    with torch.no_grad():
        model[0].bias.add_(1.0)
    assert runtimes.int8_source(model, example, calibration, settings) != first and len(exports) == 3  # other weights


def test_an_export_is_reused_only_for_the_same_structure_weights_and_input_shape_whatever_the_batch(monkeypatch):
    from deploy import runtimes

    exports = []
    monkeypatch.setattr(runtimes, "_export", lambda model, example: exports.append(1) or b"graph%d" % len(exports))
    monkeypatch.setattr(runtimes, "_EXPORTS", deploy.int8.BytesMemo(2**20))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    x = np.zeros((1, 3, 8, 8), np.float32)
    first = runtimes.export_onnx(model, x)
    assert runtimes.export_onnx(model, x) == first and len(exports) == 1
    assert runtimes.export_onnx(model, np.zeros((2, 3, 8, 8), np.float32)) == first and len(exports) == 1  # dynamic batch
    runtimes.export_onnx(model, np.zeros((1, 3, 9, 9), np.float32))  # another input shape
    strided = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU())
    strided.load_state_dict(model.state_dict())  # the same weights, another stride: another graph
    runtimes.export_onnx(strided, x)
    assert len(exports) == 3


def test_an_export_traced_at_one_batch_size_is_the_graph_of_every_batch_size():
    from helpers import TINY_SLIMNET

    from deploy.runtimes import _export

    model = models.create_model("slimnet", num_classes=5, **TINY_SLIMNET).eval()
    graphs = [_export(model, np.zeros((batch, 3, 218, 178), np.float32)) for batch in (1, 3)]
    assert graphs[0] == graphs[1]


def test_bytes_memo_drops_the_oldest_graphs_beyond_its_size():
    memo = deploy.int8.BytesMemo(10)
    built = []
    for key in "abc":
        memo.get(key, lambda key=key: built.append(key) or key.encode() * 4)  # 4 bytes each: the third evicts "a"
    assert memo.get("b", lambda: b"rebuilt") == b"bbbb" and memo.get("c", lambda: b"rebuilt") == b"cccc"
    assert memo.get("a", lambda: b"rebuilt") == b"rebuilt" and built == ["a", "b", "c"]


def test_accuracy_control_and_the_int8_runtime_quantize_once(monkeypatch):
    # accuracy control quantizes the prepared graph, the runtime's build the unprepared one: one quantization for both
    from deploy import int8

    calls = []
    real = int8._quantize_static
    monkeypatch.setattr(int8, "_QUANTIZED", int8.BytesMemo(2**26))
    monkeypatch.setattr(int8, "_quantize_static", lambda *args: calls.append(1) or real(*args))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    example = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    calibration = np.random.default_rng(1).standard_normal((8, 3, 8, 8)).astype(np.float32)
    settings = deploy.Int8Settings(calibration_images=8)
    source = deploy.int8_source(model, example, calibration, settings)
    first = int8.quantize_onnx(deploy.prepare_onnx(source), calibration, settings, prepared=True)
    assert int8.quantize_onnx(source, calibration, settings) == first and len(calls) == 1
    int8.quantize_onnx(source, calibration, dataclasses.replace(settings, per_channel=not settings.per_channel))
    assert len(calls) == 2  # other settings: quantized anew


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


@pytest.mark.parametrize(
    "interleave, order",
    [
        ("blocks", "aaaaaaaabbbbbbbb"),
        ("calls", "abababababababab"),
        ("bursts", "aaaaabbbbbaaaaabbbbb"),  # each turn: one untimed call, then BURST_CALLS timed ones
    ],
)
def test_each_interleave_mode_orders_the_calls_of_a_block_as_it_says(interleave, order):
    calls = []
    candidates = {name: (lambda x, name=name: calls.append(name), None, lambda: None) for name in "ab"}
    timer = deploy.Interleaved(candidates, min_iters=8, min_seconds=0.0, warmup=0, interleave=interleave)
    calls.clear()  # the set-up's first calls
    timer.add_block()
    assert "".join(calls) == order
    assert all(timing.iterations == 8 for timing in timer.timings().values())  # untimed calls are not samples
    with pytest.raises(ValueError, match="interleave"):
        deploy.Interleaved(candidates, interleave="rounds")


def test_interleaved_adds_blocks_and_leaves_out_busy_ones():
    class Probe:
        name = "fake"

        def __init__(self, ratios):
            self.ratios = iter(ratios)

        def ratio(self):
            return next(self.ratios)

    # Block 1 is quiet; block 2 is slow before and after its retime; block 3 is quiet.
    probe = Probe([1.0, 1.0, 2.0, 1.0, 1.0, 1.5, 1.0, 1.0])
    timer = deploy.Interleaved(
        {"a": (lambda x: time.sleep(0.001), None, lambda: None)}, min_iters=2, min_seconds=0.0, warmup=0, probes=(probe,)
    )
    for _ in range(3):
        timer.add_block()
    assert timer.block_busy == [False, True, False] and timer.retimed == 1
    assert timer.kept_blocks() == [0, 2]
    timing = timer.timings()["a"]
    assert len(timing.block_medians) == 2 and timing.busy is False and timing.load_ratio == 1.5  # the retime's


def test_bootstrap_ratio_is_the_quotient_of_the_two_figures_with_an_interval_around_it():
    base = [10.0, 10.5, 9.8, 10.2, 10.1, 9.9]
    variant = [5.0, 5.4, 4.9, 5.1, 5.0, 5.2]
    value, low, high = deploy.bootstrap_ratio(base, variant)
    assert value == np.mean(base) / np.mean(variant)  # a Timing's median_ms is the mean of its block medians
    assert low <= value <= high and high - low < 0.2
    assert deploy.bootstrap_ratio([2.0] * 4, [1.0] * 4) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="same blocks"):
        deploy.bootstrap_ratio([1.0, 2.0], [1.0])
    assert deploy.bootstrap_mean([3.0, 3.0, 3.0]) == (3.0, 3.0)
    # figures from two comparisons (different runtimes) are resampled apart: any lengths, a wider interval
    value, low, high = deploy.bootstrap_ratio(base, variant[:4], paired=False)
    assert value == np.mean(base) / np.mean(variant[:4]) and low <= value <= high


def test_a_machine_phase_that_slows_both_models_of_a_block_cancels_in_their_ratio():
    # blocks on a loud host: a phase slows both models of a block alike (1.0x-2.0x), plus +-2 % of their own
    phase = np.array([1.0, 1.6, 1.1, 2.0, 1.3, 1.8, 1.05, 1.5, 1.2, 1.7])
    own = np.array([1.02, 0.98, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01, 0.99, 1.0])
    base, variant = 2.0 * phase, 1.0 * phase * own
    value, low, high = deploy.bootstrap_ratio(variant, base)
    assert value == pytest.approx(np.sum(variant) / np.sum(base)) and abs(value - 0.5) < 0.005
    assert (high - low) / 2 / value < 0.01
    # the ratio of the two block medians, resampled alike, lets the phase through: +-2 % or more on these blocks
    index = np.random.default_rng(0).integers(0, len(base), (1000, len(base)))
    medians = np.median(variant[index], axis=1) / np.median(base[index], axis=1)
    assert (np.percentile(medians, 97.5) - np.percentile(medians, 2.5)) / 2 / 0.5 > 0.02


def test_summary_columns_take_the_fastest_exact_and_the_fastest_int8_runtime_apart():
    rows = [
        {"runtime": "onnxruntime_int8", "batch": 1, "device": "cpu", "median_ms": 1.5, "acc_mean": 88.0, "acc_delta": -0.2},
        {"runtime": "openvino_int8", "batch": 1, "device": "cpu", "median_ms": 1.0, "acc_mean": 88.1, "acc_delta": -0.1},
        {"runtime": "onnxruntime", "batch": 1, "device": "cpu", "median_ms": 2.0, "floor_ratio": 1.1},
        {"runtime": "openvino", "batch": 1, "device": "cpu", "median_ms": 2.5, "floor_ratio": 1.4},
    ]
    columns = summary_latency_columns(rows, 8)
    assert columns["runtime_b1"] == "onnxruntime" and columns["latency_b1_ms"] == 2.0 and columns["floor_ratio_b1"] == 1.1
    # the int8 column is the fastest int8 runtime, named, with the accuracy measured in it
    assert columns["runtime_int8_b1"] == "openvino_int8" and columns["latency_int8_b1_ms"] == 1.0
    assert columns["acc_mean_int8"] == 88.1 and columns["acc_int8_delta"] == -0.1
    assert "runtime_bN" not in columns  # nothing timed at batch 8


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


def test_steady_allocator_keeps_large_buffers_on_the_heap():
    """Unpinned, glibc hands a 256 MB buffer back to the system when it is freed (mmap); pinned, the pages stay
    with the process, so the next forward pass does not fault them in again."""
    import ctypes.util
    import platform

    if platform.system() != "Linux" or "libc" not in (ctypes.util.find_library("c") or ""):
        pytest.skip("glibc only")
    code = (
        "import os, sys, numpy as np\n"
        "from deploy.timing import steady_allocator\n"
        "if sys.argv[1] == 'pinned': steady_allocator()\n"
        "page = os.sysconf('SC_PAGE_SIZE')\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * page\n"
        "before = rss(); x = np.ones(1 << 25); del x\n"
        "print((rss() - before) >> 20)\n"
    )
    kept = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", code, mode],
                capture_output=True,
                text=True,
                check=True,
                cwd=os.path.dirname(os.path.dirname(__file__)),
            ).stdout
        )
        for mode in ("dynamic", "pinned")
    }
    assert kept["dynamic"] < 32 and kept["pinned"] > 200, kept
