"""What a model costs, counted: parameters, MACs and bytes on disk (its latency is the timing phase's,
``bench.study.timing_phase``)."""

from __future__ import annotations

import copy
import io
import zlib

import torch
from torch import nn

from models import count_params


def count_macs(model: nn.Module, input_size) -> int:
    """Return multiply-accumulates of one forward pass at ``input_size`` (C, H, W), batch 1.

    Counted by ptflops' aten backend (which sees every aten op, not only known module types).
    Many papers print this number as "FLOPs"; it is MACs.

    Raises:
        RuntimeError: ptflops could not count the model.
    """
    from ptflops import get_model_complexity_info

    probe = copy.deepcopy(model).cpu().eval()
    macs, _ = get_model_complexity_info(
        probe, tuple(input_size), as_strings=False, print_per_layer_stat=False, backend="aten", verbose=False
    )
    if macs is None:
        raise RuntimeError(f"ptflops could not count the MACs of {type(model).__name__}")
    return int(macs)


def disk_bytes(model: nn.Module) -> tuple[int, int]:
    """Return (bytes of ``torch.save(state_dict)``, bytes of the same file deflate-compressed, level 9)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    raw = buffer.getvalue()
    return len(raw), len(zlib.compress(raw, 9))


def cost_columns(model: nn.Module, input_size, shipped: bytes | None = None) -> dict:
    """Return a model's counted costs for its result row: ``params``, ``macs``, ``disk_bytes``, ``disk_bytes_zip``: the
    bytes of the file it ships as, ``shipped`` (a quantized model's int8 ONNX graph), else of its fp32 state dict.

    Raises:
        RuntimeError: ptflops could not count the model.
    """
    raw, zipped = (len(shipped), len(zlib.compress(shipped, 9))) if shipped is not None else disk_bytes(model)
    return {"params": count_params(model), "macs": count_macs(model, input_size), "disk_bytes": raw, "disk_bytes_zip": zipped}
