"""Per-layer speed-up table (LWALM Table 1 layout): theoretical (MACs) against measured time, per runtime.

Each compressed layer and its replacement are built alone in each runtime (ONNX Runtime: each
exported on its own), fed the activation shape they see in the real forward pass, and timed
interleaved. A measured speed-up more than ``CONFIRM_FACTOR`` times the theoretical one is
suspicious (load, caches), so it is retimed with twice the blocks; the row says whether it was
retimed and whether the retime confirmed it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import deploy
from compress.layers import get_module, per_layer_macs, record_shapes

# A measured speed-up this many times the theoretical one is suspicious (load, caches): it is retimed with twice the blocks.
CONFIRM_FACTOR = 1.5


def _timed(before: deploy.Deployed, after: deploy.Deployed, x_before, x_after, timing: dict, blocks: int):
    return deploy.compare(
        {"before": before.timed(x_before), "after": after.timed(x_after)},
        blocks,
        timing["min_iters"],
        timing["min_seconds"],
        probe=timing.get("probe"),
    )


def _measured_row(old: nn.Module, new: nn.Module, x_old, x_new, runtime: str, theoretical: float, timing: dict) -> dict | None:
    """Return the measured columns of one layer in one runtime (None when the runtime is unavailable here)."""
    try:
        before = deploy.deploy(old, runtime, x_old, threads=timing["threads"])
        after = deploy.deploy(new, runtime, x_new, threads=timing["threads"])
    except deploy.RuntimeUnavailable:
        return None
    timings = _timed(before, after, x_old, x_new, timing, timing["blocks"])
    measured = timings["before"].median_ms / timings["after"].median_ms
    retimed = confirmed = False
    if measured > CONFIRM_FACTOR * theoretical:
        timings = _timed(before, after, x_old, x_new, timing, 2 * timing["blocks"])
        measured = timings["before"].median_ms / timings["after"].median_ms
        retimed, confirmed = True, measured > CONFIRM_FACTOR * theoretical
    return {
        "runtime": runtime,
        "measured_speedup": measured,
        "measured_over_theoretical": measured / theoretical if theoretical else float("nan"),
        "ms_before": timings["before"].median_ms,
        "ms_after": timings["after"].median_ms,
        "busy": timings["before"].busy,
        "retimed": retimed,
        "confirmed": confirmed,
    }


def layer_speedup_table(
    original: nn.Module, compressed: nn.Module, report_rows: list[dict], example_input: torch.Tensor, timing: dict | None = None
) -> list[dict]:
    """Return one row per compressed layer and runtime (one row with an empty runtime and no measured columns without
    ``timing``): ``layer, kernel, method, rank, runtime, new_layer_macs, macs_before, macs_after, theoretical_speedup,
    measured_speedup, measured_over_theoretical, ms_before, ms_after, busy, retimed, confirmed, rel_error`` and the CP
    columns (``norm_sum_als``, ``norm_sum_epc``, ``als_iters_run``, ``decompose_seconds``) and ``note`` (a setting the
    engine changed) when present.

    ``timing`` is ``TimingSettings.layer_timing()`` (``runtimes``, ``blocks``, ``min_iters``, ``min_seconds``, ``threads``)
    with an optional load ``probe``; timings are batch 1; the replacement of a factorized layer takes the original's
    input, a pruned layer its own (fewer channels).

    Raises:
        deploy.RuntimeParityError: a layer's runtime build broke parity with eager PyTorch.
    """
    batch = example_input[:1]
    before_inputs, _ = record_shapes(original, batch)
    after_inputs, _ = record_shapes(compressed, batch)
    runtimes = timing["runtimes"] if timing else ()
    rows = []
    with deploy.torch_threads(timing["threads"] if timing else None):
        for row in (r for r in report_rows if r["status"] == "compressed"):
            name = row["layer"]
            old, new = get_module(original, name), get_module(compressed, name)
            old_shape = before_inputs[name]
            new_shape = old_shape if isinstance(new, nn.Sequential) else after_inputs[name]
            rng = np.random.default_rng(0)
            x_old = rng.standard_normal(old_shape).astype(np.float32)
            x_new = x_old if new_shape == old_shape else rng.standard_normal(new_shape).astype(np.float32)
            new_macs = per_layer_macs(new, new_shape)
            theoretical = row["macs_before"] / max(sum(new_macs), 1)
            common = {
                "layer": name,
                "kernel": row["kernel"],
                "method": row["method"],
                "rank": row.get("rank", ""),
                "new_layer_macs": " + ".join(str(m) for m in new_macs),
                "macs_before": row["macs_before"],
                "macs_after": sum(new_macs),
                "theoretical_speedup": theoretical,
                "rel_error": row.get("rel_error", ""),
                **{k: row[k] for k in ("norm_sum_als", "norm_sum_epc", "als_iters_run", "decompose_seconds", "note") if k in row},
            }
            if not runtimes:
                rows.append({**common, "runtime": ""})
            measured = (_measured_row(old, new, x_old, x_new, runtime, theoretical, timing) for runtime in runtimes)
            rows += [{**common, **m} for m in measured if m is not None]
    return rows
