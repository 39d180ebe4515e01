import io
import zlib

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import models
from bench.study.costs import count_macs, disk_bytes
from models import count_params


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
