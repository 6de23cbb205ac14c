"""Stage 4, transforms: what happens to a converted package before it is saved — the slot
for compression (weight quantization, palettization).

A transform is one function `(plan, part, artifact, backend) -> artifact`, in its own
module, chosen from the options by `transforms_for`:
- compress.py: weight compression (`quantize`: int8, int4, lut8/6/4, mixed).
"""

from __future__ import annotations

from typing import Callable

from .compress import compress as compress_weights  # not `compress`: that name is the module's

Transform = Callable[..., object]


def transforms_for(plan) -> list[Transform]:
    """The transforms the options ask for, in the order they apply."""
    transforms: list[Transform] = []
    if plan.options.quantize != "none":
        transforms.append(compress_weights)
    return transforms
