import io
import zlib

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import models
from bench.profile import count_macs, count_params, disk_bytes, measure_latency


def _flop_counter_macs(model, input_size):
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model.eval()(torch.randn(1, *input_size))
    return counter.get_total_flops() / 2


@pytest.mark.parametrize("name, size", [("slimnet", (3, 218, 178)), ("resnet18", (3, 224, 224))])
def test_ptflops_macs_agree_with_torch_flop_counter(name, size):
    model = models.create_model(name)
    macs = count_macs(model, size)
    assert abs(macs - _flop_counter_macs(model, size)) / macs < 0.01


def test_slimnet_macs_and_params():
    model = models.create_model("slimnet")
    assert count_params(model) == 571_304
    assert 0.24e9 < count_macs(model, (3, 218, 178)) < 0.25e9


def test_disk_bytes_match_a_saved_file():
    model = torch.nn.Linear(10, 3)
    raw, zipped = disk_bytes(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert raw == len(buffer.getvalue())
    assert zipped == len(zlib.compress(buffer.getvalue(), 9))


def test_latency_honours_min_iters_and_leaves_model_untouched():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).train()
    result = measure_latency(model, (3, 16, 16), batch_size=2, min_iters=7, min_seconds=0.0, warmup=1)
    assert result["iters"] == 7
    assert 0 < result["min_ms"] <= result["median_ms"] <= result["p90_ms"]
    assert model.training


def test_latency_spread_rows():
    from bench.profile import latency_spread

    rows = latency_spread(torch.nn.Conv2d(3, 4, 3), (3, 16, 16), batch_sizes=(1, 2), repeats=3, min_iters=2, min_seconds=0.0, warmup=1)
    assert [r["batch"] for r in rows] == [1, 2] and all(len(r["medians_ms"]) == 3 for r in rows)
    assert all(r["spread_pct"] >= 0 and min(r["medians_ms"]) <= r["median_ms"] <= max(r["medians_ms"]) for r in rows)
