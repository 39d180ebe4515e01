"""Per-layer speed-up table (LWALM Table 1 layout): theoretical (MACs) against measured CPU time."""
from __future__ import annotations

import torch
from torch import nn

from bench.profile import measure_latency
from compress.layers import get_module, input_shape_of, per_layer_macs, record_output_shapes


def layer_speedup_table(original: nn.Module, compressed: nn.Module, report_rows: list[dict], example_input: torch.Tensor,
                        min_iters: int = 30, min_seconds: float = 0.3, threads: int | None = None) -> list[dict]:
    """Return one row per compressed layer: ``layer, kernel, method, rank, new_layer_macs, macs_before,
    macs_after, theoretical_speedup, measured_speedup, measured_over_theoretical, ms_before, ms_after,
    rel_error, norm_sum_als, norm_sum_epc`` (the norm sums only for CP / CPD-EPC layers).

    Each layer is timed in isolation (batch 1, eval, inference mode) on the activation shape it
    sees in the real forward pass of ``example_input``; the replacement is timed the same way on
    its own input shape (which differs after pruning). Medians of ``measure_latency``.
    """
    batch = example_input[:1]
    before_shapes = record_output_shapes(original, batch)
    after_shapes = record_output_shapes(compressed, batch)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    rows = []
    try:
        for row in report_rows:
            if row["status"] != "compressed":
                continue
            name = row["layer"]
            old = get_module(original, name)
            new = get_module(compressed, name)
            old_input = input_shape_of(old, before_shapes[name])
            # A factorized replacement takes the original input; a pruned layer sees fewer channels.
            new_input = old_input if isinstance(new, nn.Sequential) else input_shape_of(new, after_shapes[name])
            before = measure_latency(old, old_input[1:], 1, "cpu", min_iters, min_seconds, warmup=3)["median_ms"]
            after = measure_latency(new, new_input[1:], 1, "cpu", min_iters, min_seconds, warmup=3)["median_ms"]
            new_macs = per_layer_macs(new, new_input)
            theoretical = row["macs_before"] / max(sum(new_macs), 1)
            measured = before / after if after > 0 else float("nan")
            rows.append({
                "layer": name, "kernel": row["kernel"], "method": row["method"], "rank": row.get("rank", ""),
                "new_layer_macs": " + ".join(str(m) for m in new_macs), "macs_before": row["macs_before"],
                "macs_after": sum(new_macs), "theoretical_speedup": theoretical, "measured_speedup": measured,
                "measured_over_theoretical": measured / theoretical if theoretical else float("nan"),
                "ms_before": before, "ms_after": after, "rel_error": row.get("rel_error", ""),
                "norm_sum_als": row.get("norm_sum_als", ""), "norm_sum_epc": row.get("norm_sum_epc", ""),
            })
    finally:
        torch.set_num_threads(previous_threads)
    return rows
