"""Weight compression of an .aimodel with coreai-opt, Apple's compression library for Core
AI: the `quantize` option's choices mapped onto its data-free passes over the converted
program (coreai_opt.coreai_utils), with the same granularity as the Core ML schemes and the
same floor (weights of at most WEIGHT_THRESHOLD elements stay float):

- `int8`: symmetric int8, one scale per output channel;
- `int4`: symmetric int4, one scale per `block_size` input channels (an LLM's embeddings and
  output head per EMBEDDING_BLOCK);
- `lut8`, `lut6`, `lut4`: k-means palettization, one table per `lut_group_size` output channels
  (lut4: an LLM's embeddings and output head int8 per channel).

- `mixed`: int4 per block, an LLM's embeddings and output head int8 per channel.

For text generation the
4-bit schemes' decoder layers are GPTQ-calibrated before capture, as for Core ML
(transforms/calibrate.py): the program's weights then already sit on a 4-bit grid. coreai-opt's
passes take no given grid: quantize_weights re-derives each block's scale from the weights it
finds (coreai_opt/coreai_utils/_utils/quantize_utils.py, _quantize_data_by_dtype: (2 max|w| + 1e-6)
/ 14, levels -7 ... 7) and rounds them again. So for an .aimodel alone, int4's GPTQ rounds onto
that very grid (calibrate.int4_grid, lut_gptq.COREAI_OPT_GRID), each block's largest weight kept
at ±7: the pass then writes GPTQ's own levels (tested). With `both` GPTQ keeps coremltools' grid
for the Core ML package, and this pass rounds its weights again.

The report's sizes: the program saved with its float weights is measured once (a temporary
save, without the package's metadata), so "before" is a real file size, not an estimate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ...package_info import directory_size
from ...transforms.schemes import EMBEDDING_BLOCK, SCHEMES, WEIGHT_THRESHOLD, lut_group_size

_FLOAT_BITS = {"float16": 16, "float32": 32}


def compress_coreai(plan, part: str, program):
    """The transform for the Core AI backend: the program with its weights compressed as
    `plan.options` asks; what it did goes to `plan.compression[part]`."""
    from coreai_opt.coreai_utils import CompressionGranularity, DType, palettize_weights, quantize_weights

    options = plan.options
    scheme = SCHEMES[options.quantize]
    size_before = _saved_size(program)
    program, head = _embeddings_and_head_first(plan, program, scheme)
    if scheme.family in ("linear", "mixed"):
        if scheme.bits == 8:
            compressed = quantize_weights(program, DType.INT8, granularity=CompressionGranularity.PER_CHANNEL,
                                          weight_num_threshold=WEIGHT_THRESHOLD)
            granularity = "per channel"
        else:
            # An .aimodel alone: GPTQ's levels, which sit on this pass's grid, are written as they
            # are (calibrate.int4_grid); with `both` GPTQ's coremltools grid is rounded again
            # (SmolLM2-135M: docs/core-ai.md).
            compressed = quantize_weights(program, DType.INT4, granularity=CompressionGranularity.PER_BLOCK,
                                          block_size=options.block_size, weight_num_threshold=WEIGHT_THRESHOLD)
            granularity = f"per block ({options.block_size})" + head
        method = "linear symmetric quantization (coreai-opt)"
    else:
        group = lut_group_size(options)
        per_channel = group == 1
        compressed = palettize_weights(
            program, None, n_bits=scheme.bits,
            granularity=CompressionGranularity.PER_CHANNEL if per_channel else CompressionGranularity.PER_GROUPED_CHANNEL,
            group_size=group, num_kmeans_workers=1, weight_num_threshold=WEIGHT_THRESHOLD)
        granularity = ("per channel" if per_channel else f"per grouped channel (group {group})") + head
        method = "palettization (k-means LUT, coreai-opt)"
    plan.compression[part] = {
        "scheme": scheme.name,
        "method": method,
        "granularity": granularity,
        "size_before_bytes": size_before,
        "float_bits": _FLOAT_BITS[options.precision],
    }
    return compressed


def _embeddings_and_head_first(plan, program, scheme):
    """As the Core ML schemes do (compress.py): an LLM's embeddings and output head — the weights
    of vocabulary × hidden elements, larger than any layer's — take int4 per EMBEDDING_BLOCK for
    int4 and int8 per channel for lut4 and mixed, before the scheme compresses the rest (a compressed weight
    is no longer a plain constant, so the second pass leaves it). coreai-opt compresses by size
    only, so the size is how they are picked. SmolLM2-135M, GPTQ layers, int4: perplexity 1.40x
    with its tied embedding/head at blocks of 32."""
    from coreai_opt.coreai_utils import CompressionGranularity, DType, quantize_weights

    attributes = plan.cfg.attributes
    if plan.task != "text-generation" or scheme.bits != 4 or not (attributes.vocab_size and attributes.hidden_size):
        return program, ""
    threshold = attributes.vocab_size * attributes.hidden_size - 1
    if scheme.family == "linear":  # int4
        block = min(plan.options.block_size, EMBEDDING_BLOCK)
        return (quantize_weights(program, DType.INT4, granularity=CompressionGranularity.PER_BLOCK, block_size=block,
                                 weight_num_threshold=threshold), f"; embeddings and output head per block ({block})")
    return (quantize_weights(program, DType.INT8, granularity=CompressionGranularity.PER_CHANNEL, weight_num_threshold=threshold),
            "; embeddings and output head int8 per channel")  # lut4 and mixed


def _saved_size(program) -> int:
    """The bytes of the program saved as an .aimodel (its float weights inline)."""
    with tempfile.TemporaryDirectory(prefix="coreai-size-") as scratch:
        path = Path(scratch) / "float.aimodel"
        program.save_asset(path)
        return directory_size(path)


def finish(summary: dict, size_bytes: int) -> dict:
    """The compression entry with the saved package's size and bits per weight: the float
    width scaled by how much smaller the compressed file is than the float one."""
    before = summary["size_before_bytes"]
    ratio = size_bytes / before if before else None
    return {**{k: v for k, v in summary.items() if k != "float_bits"},
            "bits_per_weight": round(summary["float_bits"] * ratio, 3) if ratio else None,
            "size_after_bytes": size_bytes, "size_ratio": round(ratio, 4) if ratio else None}
