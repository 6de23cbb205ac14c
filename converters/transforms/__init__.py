"""Stage 4, transforms: what happens to a converted package before it is saved — the slot
for compression (weight quantization, palettization).

A transform is one function `(plan, part, artifact, backend) -> artifact`, in its own
module, chosen from the options by `transforms_for`:
- `compress_weights`: weight compression (`quantize`: int8, int4, lut8/6/4, mixed), which the
  backend does with its own compressor (`Backend.compress`: backends/coreml/compress.py,
  backends/coreai/compress.py). What a scheme is (schemes.py) and GPTQ's calibration
  (calibrate.py, lut_gptq.py, calibrate_chunks.py, kmeans.py) are the same for every format.
"""

from __future__ import annotations

from typing import Callable

Transform = Callable[..., object]


def compress_weights(plan, part: str, artifact, backend):
    """The compression transform: the package's weights compressed by its backend's own
    compressor; what it did goes to `plan.compression[part]` for the report. A part its family
    keeps whole (Whisper's MelSpectrogram: its DFT and mel filters) is left as it is."""
    if not plan.cfg.compresses(part):
        return artifact
    return backend.compress(plan, part, artifact)


def transforms_for(plan) -> list[Transform]:
    """The transforms the options ask for, in the order they apply."""
    transforms: list[Transform] = []
    if plan.options.quantize != "none":
        transforms.append(compress_weights)
    return transforms
