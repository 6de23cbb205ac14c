"""coreai-opt's float32 → float16 cast pass made cheaper while one conversion runs, its program
the same tensor for tensor.

Profiled on SmolLM2-135M's float16 LLM bundle (py-spy, coreai-opt 0.x): the pass
(`cast_fp32_to_fp16`) spent a fifth of the conversion in its two per-weight helpers
(`coreai_opt/_utils/casting_utils.py`), each a handful of whole-tensor passes:
- `check_tensor_overflow_fp16` takes |w|, a mask of the finite entries, then copies the finite
  entries out by boolean indexing before their maximum (`abs_val[finite_mask]`): that copy is
  most of the time. `beyond_float16` masks in place of the copy (about 10x faster);
- `cast_tensor_to_fp16` builds two masks over the float32 weight to find entries that float16
  would flush to zero. `to_float16` casts first and looks for them among the zeros of the
  float16 result, a pass over half the bytes, the float32 masks only when there are zeros.
`faster_float16_cast` swaps them into the pass's module and puts coreai-opt's back when it ends.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

# coreai-opt's constants (casting_utils.py:25-28)
FLOAT16_MAX = 65504.0
FLOAT16_SMALLEST = 2.0 ** -24  # the smallest positive float16 (subnormal), ~5.96e-08
FLOAT32_TAKEN_AS_INFINITY = 1e38  # entries from here up stand for infinities


def beyond_float16(tensor: torch.Tensor) -> bool:
    """coreai-opt's `check_tensor_overflow_fp16`: a float32 tensor with a finite entry (|v| below
    1e38) past float16's largest; the same answer, with no copy of the finite entries."""
    if tensor.dtype != torch.float32 or tensor.numel() == 0:
        return False
    magnitude = tensor.detach().abs()
    finite = torch.where(magnitude < FLOAT32_TAKEN_AS_INFINITY, magnitude, 0.0)  # NaN, inf, >= 1e38: 0
    return bool(finite.amax() > FLOAT16_MAX)


def to_float16(tensor: torch.Tensor) -> torch.Tensor:
    """coreai-opt's `cast_tensor_to_fp16`: the tensor in float16, each nonzero entry that float16
    would flush to zero kept at ±2⁻²⁴ instead (entries from 2⁻²⁵ up already round to ±2⁻²⁴,
    so the entries to move are exactly the zeros of the cast that were not zero before)."""
    half = tensor.to(torch.float16)
    zeros = half == 0
    if not zeros.any():
        return half
    flushed = zeros & (tensor != 0)
    if not flushed.any():
        return half
    return torch.where(flushed, torch.where(tensor > 0, FLOAT16_SMALLEST, -FLOAT16_SMALLEST).to(torch.float16), half)


@contextmanager
def faster_float16_cast():
    """coreai-opt's cast pass with `beyond_float16` and `to_float16` for its per-weight helpers."""
    from coreai_opt.casting import casting

    saved = casting._check_tensor_overflow_fp16, casting._cast_tensor_to_fp16
    casting._check_tensor_overflow_fp16, casting._cast_tensor_to_fp16 = beyond_float16, to_float16
    try:
        yield
    finally:
        casting._check_tensor_overflow_fp16, casting._cast_tensor_to_fp16 = saved
