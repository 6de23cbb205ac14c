"""`Tolerances`: a family's element-wise validation thresholds, per effective precision.

Validation judges with them (converters/validation); each family declares its own
(`ExportConfig.tolerances`, a class attribute); the form shows them (ui/models.py). The type
sits on the shared floor, below both, because a family holds an instance as plain data and
configs/ must import nothing above it: the checks that use these numbers, and the quality
bars of compressed packages (validation/quality_bars.py, per scheme, not per family), live
in validation/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Tolerances:
    """Validation thresholds, per effective precision: "float32" (an fp32 package run
    exactly) or "float16" (fp16 weights or fp16 device emulation). A compressed package is
    judged instead by its scheme's quality bar (validation/quality_bars.py) in both modes.

    atol is relative to the output's scale: |diff| <= atol * max(1, max|reference|).
    """

    atol: dict = field(default_factory=lambda: {"float32": 1e-3, "float16": 5e-2})
    min_psnr: dict = field(default_factory=lambda: {"float32": 60.0, "float16": 30.0})
    min_top1: dict = field(default_factory=lambda: {"float32": 1.0, "float16": 0.95})
    min_cosine: dict = field(default_factory=lambda: {"float32": 0.9999, "float16": 0.995})
    min_label_agreement: dict = field(default_factory=lambda: {"float32": 0.99, "float16": 0.95})

    def scaled(self, factor: float) -> "Tolerances":
        """Thresholds `factor` times as permissive in max difference, with the PSNR floor moved
        by the same ratio in dB; agreement and similarity floors stay (they are not scales)."""
        if factor == 1.0:
            return self
        shift = 20 * math.log10(factor)
        return replace(
            self,
            atol={k: v * factor for k, v in self.atol.items()},
            min_psnr={k: v - shift for k, v in self.min_psnr.items()},
        )
