"""The compression schemes (the `quantize` option's choices): what each is, the settings both
compressors share (backends/coreml/compress.py and backends/coreai/compress.py), the ones GPTQ
calibrates (calibrate.py), and the Core ML deployment targets they need (the option table's
`needed_targets`; refused by the Core ML backend, backends/coreml/targets.py, and estimated by
the form, size_estimate.py).
"""

from __future__ import annotations

from dataclasses import dataclass


WEIGHT_THRESHOLD = 2048  # coremltools' default: weights of at most this many elements stay float
# int4's embeddings and output head: one scale per 8 input channels (6 bits per weight with the
# scales). SmolLM2-135M, GPTQ layers: its tied embedding/head at blocks of 32 costs 1.35x
# perplexity (KL 0.40, over the 4-bit bar), at 16 1.27x (KL 0.37), at 8 1.21x (KL 0.31).
EMBEDDING_BLOCK = 8
# Output channels per lookup table when the option says "auto". SmolLM2-135M, GPTQ onto the tables
# (lut_gptq.py), int8 embeddings: 4-bit tables per channel 1.17x perplexity (KL 0.13; +0.4 bits per
# weight for the tables), per 16 channels 1.44x (KL 0.25: over the 4-bit bar); 6-bit tables per 16
# channels 1.02x (KL 0.04).
LUT_GROUP = 16
LUT4_GROUP = 1
IOS18 = ("iOS18", "macOS15")  # the targets whose ops write 4-bit blocks and per-group tables
# The schemes whose text-generation layers GPTQ calibrates before capture (calibrate.py). lut8 is
# not among them: data-free 8-bit tables already keep the model (as int8 does). All of them need
# iOS18/macOS15: 4-bit blocks and per-group tables are iOS18 ops.
CALIBRATED_SCHEMES = frozenset({"int4", "mixed", "lut6", "lut4"})


@dataclass(frozen=True)
class Scheme:
    name: str
    family: str  # "linear" (int8/int4), "lut" (palettization) or "mixed"
    bits: int  # of the bulk of the weights


SCHEMES: dict[str, Scheme] = {
    "int8": Scheme("int8", "linear", 8),
    "int4": Scheme("int4", "linear", 4),
    "lut8": Scheme("lut8", "lut", 8),
    "lut6": Scheme("lut6", "lut", 6),
    "lut4": Scheme("lut4", "lut", 4),
    "mixed": Scheme("mixed", "mixed", 4),
}


def lut_group_size(options) -> int:
    """Output channels per lookup table (iOS18+): the option's, or for "auto" 16, and 1 for lut4."""
    if options.group_size is not None:
        return options.group_size
    return LUT4_GROUP if options.quantize == "lut4" else LUT_GROUP
