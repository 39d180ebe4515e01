"""The roofline (issue 32): bytes and MACs per layer against hand-computed values, the bandwidth probe against a copy of
known size, the runtime's profiled nodes traced back to the torch modules, and the floor and bound of each layer."""

import time

import numpy as np
import pytest
import torch
from torch import nn

import deploy
from deploy import roofline


def test_depthwise_pointwise_and_dense_conv_costs_by_hand():
    # depthwise 3x3 on 32 channels of 56x56: 32*56*56 outputs x 9 MACs; input, 288 weights, 32 biases, output (fp32)
    assert roofline.conv_cost((1, 32, 56, 56), (32, 1, 3, 3), (1, 32, 56, 56), bias=True) == (
        903_168,
        4 * (100_352 + 288 + 32 + 100_352),
    )
    # pointwise 32 -> 64: 64*56*56 outputs x 32 MACs
    assert roofline.conv_cost((1, 32, 56, 56), (64, 32, 1, 1), (1, 64, 56, 56), bias=False) == (
        6_422_528,
        4 * (100_352 + 2_048 + 200_704),
    )
    # dense 3x3 32 -> 64, int8: 64*56*56 outputs x 288 MACs, one byte each
    assert roofline.conv_cost((1, 32, 56, 56), (64, 32, 3, 3), (1, 64, 56, 56), bias=True, dtype_bytes=1) == (
        57_802_752,
        100_352 + 18_432 + 64 + 200_704,
    )
    # a linear layer 96 -> 40 on a batch of 8: 8*40 outputs x 96 MACs
    assert roofline.conv_cost((8, 96), (40, 96), (8, 40), bias=True) == (30_720, 4 * (768 + 3_840 + 40 + 320))


class _Three(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU())
        self.pw = nn.Conv2d(32, 64, 1, bias=False)
        self.dense = nn.Conv2d(64, 64, 3, padding=1)

    def forward(self, x):
        return self.dense(torch.relu(self.pw(self.dw(x))))


@pytest.fixture(scope="module")
def three_convs():
    model = _Three().eval()
    x = np.random.default_rng(0).standard_normal((1, 32, 56, 56)).astype(np.float32)
    return model, x, deploy.export_onnx(model, x)


def test_graph_costs_of_an_exported_model_follow_its_modules_at_the_batch_size(three_convs):
    _, _, onnx_model = three_convs
    costs = {c.layer: c for c in roofline.graph_costs(onnx_model, batch=2).values() if c.macs}
    assert costs["dw.0"].shape == "depthwise 3x3" and costs["pw"].shape == "pointwise 1x1" and costs["dense"].shape == "conv 3x3"
    assert costs["dw.0"].macs == 2 * 903_168  # the BatchNorm folded in: its bias is the conv's
    assert costs["pw"].macs == 2 * 6_422_528 and costs["pw"].bytes == 4 * (2 * 100_352 + 2_048 + 2 * 200_704)
    assert costs["dense"].macs == 2 * 64 * 56 * 56 * 576
    assert not [c for c in roofline.graph_costs(onnx_model, batch=2).values() if c.op in ("Relu", "BatchNormalization")]


def test_module_paths_of_torch_exported_node_names():
    assert roofline.module_path("/slim1/sse1/squeeze/squeeze.0/Conv") == "slim1.sse1.squeeze.0"
    assert roofline.module_path("/conv1/conv1.0/conv1.0.1/Conv") == "conv1.0.1"
    assert roofline.module_path("/fc/Gemm") == "fc"


@pytest.mark.parametrize("runtime", list(roofline.PROFILERS))
def test_each_profiled_node_is_traced_back_to_its_module(three_convs, runtime):
    _, x, onnx_model = three_convs
    rows = roofline.profile_layers(runtime, onnx_model, x, threads=1, runs=3, warmup=1)
    layers = {r["layer"] for r in rows if r["macs"]}
    assert layers == {"dw.0", "pw", "dense"}  # whatever the runtime fused and however it named the result
    costs = roofline.graph_costs(onnx_model, batch=1)
    assert sum(r["bytes"] for r in rows) <= sum(c.bytes for c in costs.values())  # each ONNX node costed once
    assert all(r["measured_ms"] > 0 for r in rows if r["macs"])


def test_the_floor_is_the_slower_roof_at_the_level_the_bytes_fit_in():
    levels = [
        {"level": "L2", "capacity": 1 << 20, "gbs": 100.0},
        {"level": "memory", "capacity": 1 << 62, "gbs": 10.0},
    ]
    rows = [
        {"macs": 1_000_000, "bytes": 500_000, "measured_ms": 0.05},  # 2 MFLOP at 200 GFLOP/s: 0.01 ms; 5 us of L2
        {"macs": 1_000, "bytes": 10_000_000, "measured_ms": 2.0},  # 1 ms of memory, 10 ns of compute
        {"macs": 0, "bytes": 0, "measured_ms": 0.01},  # a layout reorder: no floor
    ]
    compute, memory, layout = roofline.roofline_rows(rows, 200.0, levels)
    assert compute["bound"] == "compute" and compute["level"] == "L2" and compute["floor_ms"] == pytest.approx(0.01)
    assert compute["floor_ratio"] == pytest.approx(5.0) and compute["intensity"] == pytest.approx(4.0)
    assert memory["bound"] == "memory" and memory["level"] == "memory" and memory["floor_ms"] == pytest.approx(1.0)
    assert layout["floor_ms"] is None and layout["bound"] == ""


def test_stream_bandwidth_from_a_profiler_is_taken_at_its_word():
    assert roofline.stream_gbs(lambda: 0.001, 2_000_000, tries=2, min_seconds=0.001) == pytest.approx(2.0)  # 2 MB per ms


def test_the_bandwidth_probe_agrees_with_a_copy_of_known_size():
    source = np.ones(8 << 20, np.float32)  # 32 MiB, copied into another 32 MiB: 64 MiB moved
    target = np.empty_like(source)
    probed = roofline.stream_gbs(lambda: np.copyto(target, source), 2 * source.nbytes, tries=3)
    best = float("inf")
    for _ in range(5):
        tick = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - tick)
    assert probed == pytest.approx(2 * source.nbytes / best / 1e9, rel=0.5)


def test_bandwidth_levels_are_measured_smallest_first_in_every_library():
    levels = roofline.bandwidth_levels(threads=1, tries=1)
    assert [level["level"] for level in levels] == ["L2", "L3", "memory"]
    assert levels[0]["capacity"] < levels[1]["capacity"] < levels[2]["capacity"]
    assert all(level["gbs"] >= max(level["per_library"].values()) > 0 for level in levels)
    assert levels[0]["gbs"] >= levels[1]["gbs"] >= levels[2]["gbs"]  # what fits in L2 runs at least at L3 speed
    assert {"numpy", "torch", "onnxruntime", "openvino"} <= set(levels[0]["per_library"])
