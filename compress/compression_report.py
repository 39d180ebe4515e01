"""What a compression did: :class:`CompressionReport`, the one return type of every method."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CompressionReport:
    """What a compression did: one row per conv/linear layer, plus the factor groups.

    ``layers`` rows hold: ``layer, method, kernel, status ('compressed' | 'skipped'), reason,
    rank, params_before, params_after, macs_before, macs_after, rel_error`` (and method-specific
    keys such as ``norm_sum_als``/``norm_sum_epc``). ``factor_groups`` lists, per factorized
    layer, the names of its new layers (for the norm-constrained fine-tuning); ``notes`` says
    what was decided beyond the rows (a target met, a bound raised); ``warnings`` what a reader
    must see in the summary's Warnings (a target the compression did not reach).
    """

    method: str
    options: dict
    layers: list[dict] = field(default_factory=list)
    factor_groups: list[list[str]] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def compressed(self) -> list[dict]:
        """Return the rows of the layers that were changed."""
        return [row for row in self.layers if row["status"] == "compressed"]
