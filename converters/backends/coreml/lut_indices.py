"""The index of each weight's nearest table entry, for coremltools' torch frontend.

A weight GPTQ left on a k-means table (transforms/lut_gptq.py) reaches coremltools as its
dequantized values plus the table; coremltools finds each value's index again with
`find_indices_for_lut`, which measures every value against every entry at once: an array
2**bits times the weight's size (64 floats per weight element for 6 bits — 11 GB for one
4096 x 11008 matrix) and, on SmolLM2-135M's lut6, 20 of its 50 s of conversion. Here each
group's table is sorted once and every value finds its place by binary search
(torch.searchsorted, batched over the groups): the same nearest entry, ties to the lowest
index as numpy's argmin gives them, in memory the size of the weight.
"""

from __future__ import annotations

import math

import numpy as np


def nearest_lut_indices(data: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """find_indices_for_lut's answer for a scalar table: `lut` [b1, ..., bK, 2**bits, 1] with
    each data axis a multiple of its b (block j of axis i covers that axis's j-th equal part)."""
    import torch
    from coremltools.converters.mil.mil import types

    rank, entries = data.ndim, lut.shape[-2]
    blocks = lut.shape[:rank]
    dtype = np.result_type(data, lut)
    grouped = _blocks_first(np.asarray(data, dtype), blocks)  # [groups, values per group]
    tables = np.asarray(lut, dtype).reshape(-1, entries)
    order = np.argsort(tables, axis=1, kind="stable")  # equal entries keep their order: lowest index first
    ordered = torch.from_numpy(np.ascontiguousarray(np.take_along_axis(tables, order, axis=1)))
    values = torch.from_numpy(np.ascontiguousarray(grouped))
    above = torch.searchsorted(ordered, values).clamp_(max=entries - 1)  # the first entry >= the value
    below = (above - 1).clamp_(min=0)
    # The entry below may repeat further down: its first copy is the one argmin names.
    below = torch.searchsorted(ordered, torch.gather(ordered, 1, below))
    order = torch.from_numpy(order)
    first, second = torch.gather(order, 1, below), torch.gather(order, 1, above)
    near_first = (values - torch.gather(ordered, 1, below)).abs()
    near_second = (values - torch.gather(ordered, 1, above)).abs()
    chosen = torch.where(near_first < near_second, first,
                         torch.where(near_second < near_first, second, torch.minimum(first, second)))
    indices = _blocks_back(chosen.numpy(), blocks, data.shape)
    bits = int(math.log2(entries))
    return indices.astype(types.nptype_from_builtin(types.string_to_builtin(f"uint{bits}")))


def _split_shape(shape, blocks) -> list[int]:
    return [size for dim, count in zip(shape, blocks) for size in (count, dim // count)]


def _blocks_first(data: np.ndarray, blocks) -> np.ndarray:
    rank = data.ndim
    split = data.reshape(_split_shape(data.shape, blocks))
    axes = list(range(0, 2 * rank, 2)) + list(range(1, 2 * rank, 2))
    return split.transpose(axes).reshape(int(np.prod(blocks)), -1)


def _blocks_back(grouped: np.ndarray, blocks, shape) -> np.ndarray:
    rank = len(shape)
    inner = [dim // count for dim, count in zip(shape, blocks)]
    split = grouped.reshape(list(blocks) + inner)
    axes = [axis for pair in zip(range(rank), range(rank, 2 * rank)) for axis in pair]
    return split.transpose(axes).reshape(shape)
