"""GPTQ's sweeps for coremltools' LayerwiseCompressor: int4 per block (coremltools' GPTQ, faster)
and onto lookup tables (calibrated palettization: lut8/lut6/lut4).

Why our own algorithms: data-free k-means palettization fits each table to the weights alone,
and on a real 135 M LLM (SmolLM2-135M) 4-bit tables cost 13.6x perplexity — the model is gone.
coremltools.optimize.torch has no calibrated method that writes a per-grouped-channel table:
its GPTQ palettizes only onto fixed normal-float levels with a scale per block (and its
converter cannot write that form yet), and SKM needs gradients. For int4 it has GPTQ, whose
weights we keep bit for bit (tested), but which spends most of a calibration in Python steps
per column and per layer (SmolLM2-135M int4: 55 of 88 s in its sweep). This module registers
two algorithms in the LayerwiseCompressor's registry ("gptq_lut", "gptq_blocks"), so the layer
walk and input caching stay coremltools'; the Hessians and sweeps are ours:

1. Shared Hessians: linear layers fed the very same activations (a decoder layer's query/key/
   value projections; its gate and up projections) have the same Hessian, so the same inverse:
   the first of them accumulates it for all (`SharedInput`), and the first to be compressed
   sweeps all their rows at once, stacked. GPTQ's update is row by row, so each row gets what
   its layer would get alone (tested: the same weights and tables) with 4 Hessians, Cholesky
   solves and column sweeps per decoder layer instead of 7.
2. The sweep itself: GPTQ's lazy-batch form (processing groups of 128 columns, the rest of the
   matrix updated once per group), one fused rank-1 update per column, scalars as Python
   floats, nothing per column but the rounding and the update (coremltools' also computes a
   loss per column, a block's scale through a general quantizer, and runs the layer once more
   to log its error), on one thread (`one_thread`), each stretch of columns one TorchScript
   call (`_sweep_columns`: no Python and no GIL between a column's ops).
3. The grid a column is rounded onto:
   - int4 (`BlockGPTQ`): coremltools' GPTQ grid, a symmetric scale per block of input
     channels computed when the sweep reaches the block, from the weights as they stand at
     the start of its processing group — as coremltools computes them, so the very weights
     and scales of coremltools' GPTQ (tested); or, for a Core AI program, coreai-opt's grid
     (`grid="coreai_opt"`: its scale formula and 15 levels, so its data-free pass after
     conversion keeps GPTQ's weights as they are: COREAI_OPT_GRID);
   - tables (`LutGPTQ`): per group of `group_size` output channels, a 2**bits-entry k-means of
     the group's weights, each weight counted by its input's mean square on the calibration
     text (the Hessian's diagonal: a weight fed by a large activation matters more); columns
     in order of importance, each weight rounded to the nearest entry of its row's table.

SmolLM2-135M, int8 embeddings, perplexity ratio on the evaluation passage (torch-level): 4-bit
tables per 16 channels, data-free 125x, importance-weighted 1.87x. Through the pipeline, with the
GPTQ sweep: lut4 (a table per channel) 1.17x, KL 0.13, top-1 74 %; lut6 (per 16 channels) 1.02x,
KL 0.04, top-1 88 %.

The weights leave on their grid, registered as compression metadata: int4's scales and zero
points (coremltools' GPTQ's own), or the tables (`_COREML_/weight/lut`, [groups, 1, 2**bits, 1]);
coremltools' converter writes them as `constexpr_blockwise_shift_scale` or `constexpr_lut_to_dense`
with exactly these grids.
"""

# No `from __future__ import annotations`: cattrs reads the config's field types at run time.
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import List, Optional

import torch
from attr import define, field, validators
from coremltools.optimize.torch._utils.metadata_utils import CompressionMetadata
from coremltools.optimize.torch.layerwise_compression.algorithms import (
    GPTQ,
    LayerwiseCompressionAlgorithm,
    LayerwiseCompressionAlgorithmConfig,
    ModuleGPTQConfig,
    OBSCompressionAlgorithm,
    QuantizationGranularity,
)
from coremltools.optimize.torch.quantization.quantization_config import QuantizationScheme

from .kmeans import assign, boundaries, weighted_tables

ALGORITHM = "gptq_lut"
BLOCKS_ALGORITHM = "gptq_blocks"


@LayerwiseCompressionAlgorithmConfig.register(ALGORITHM)
@define
class ModuleLutGPTQConfig(LayerwiseCompressionAlgorithmConfig):
    """One layer's settings: table size (`bits`), output channels per table (`group_size`)."""

    bits: int = field(default=4, validator=validators.in_([1, 2, 3, 4, 6, 8]))
    group_size: int = field(default=1, validator=validators.instance_of(int))
    hessian_dampening: float = field(default=0.01, validator=validators.instance_of(float))
    processing_group_size: int = field(default=128, validator=validators.instance_of(int))
    algorithm: str = field(default=ALGORITHM, validator=validators.in_([ALGORITHM]))

    @classmethod
    def from_dict(cls, config_dict):
        import cattrs

        return cattrs.Converter(forbid_extra_keys=True).structure_attrs_fromdict(config_dict, cls)


@LayerwiseCompressionAlgorithmConfig.register(BLOCKS_ALGORITHM)
@define
class ModuleBlockGPTQConfig(ModuleGPTQConfig):
    """coremltools' GPTQ settings (per block, in input-channel order), for `BlockGPTQ`; `grid`: the
    levels and scale a block's weights are rounded onto (COREMLTOOLS_GRID or COREAI_OPT_GRID)."""

    algorithm: str = field(default=BLOCKS_ALGORITHM, validator=validators.in_([BLOCKS_ALGORITHM]))
    grid: str = field(default="coremltools", validator=validators.in_(["coremltools", "coreai_opt"]))


# The grids of int4 per block (`_Blocks`):
# - coremltools' GPTQ's: scale (max - min) / 15 of the block (symmetric: max = |the largest|,
#   min = -max), 16 levels -8 ... 7, the zero point 8; coremltools' converter writes it as it is;
# - coreai-opt's (quantize_weights(INT4, SYMMETRIC, PER_BLOCK), which re-derives every scale from
#   the weights it is given: coreai_opt/coreai_utils/_utils/quantize_utils.py, _quantize_data_by_dtype):
#   scale (2 max|w| + 1e-6) / 14, 15 levels -7 ... 7 (no -8). GPTQ onto it, with each block's
#   largest weight kept at ±7 (`_block_columns`), leaves weights coreai-opt's pass maps onto
#   themselves: its scale from them is the sweep's, and each weight divides back to its level.
#   Stored as uint4 with the zero point 8 (levels 1 ... 15), the grid is also one coremltools writes.
COREMLTOOLS_GRID = "coremltools"
COREAI_OPT_GRID = "coreai_opt"
COREAI_OPT_EPSILON = 1e-6  # quantize_utils.py: `epsilon = 1e-6`, added to a block's range


class _SharedGPTQ:
    """What both sweeps share: a Hessian per input (`SharedInput`), accumulated sample by sample
    as coremltools' GPTQ does, and a compression that pops this layer's part of the stacked sweep."""

    # The latest batch seen by any of them: (input tensor, its SharedInput). The layers of one
    # forward call read one input after another, so one entry is enough. (Nothing writes into
    # a layer's input in place between its readers in transformers' models.)
    _latest: tuple | None = None
    # The inputs seen since the last sweep: one decoder layer's, whose Hessians are all complete
    # when its first linear layer is compressed (coremltools' walk runs the layer, then compresses).
    _unswept: list = []

    def _init_layer(self, layer: torch.nn.Module, config) -> None:
        """OBSCompressionAlgorithm.__init__'s fields, but no Hessian of zeros: only the first
        reader of an input needs one, and its first batch writes it (`_compute_hessian`)."""
        if not isinstance(layer, torch.nn.Linear):
            raise ValueError("only torch.nn.Linear weights are calibrated here")
        self._layer, self._config, self._device = layer, config, layer.weight.device
        self._dim, (self._rows, self._columns) = 2, layer.weight.shape
        self._nsamples, self._hessian = 0, None
        self._shared: SharedInput | None = None
        self._part: dict = {}  # this layer's results of the stacked sweep

    def _compute_hessian(self, inp: torch.Tensor, out: torch.Tensor | None):
        """coremltools' running mean of 2 x xᵀ per sample (OBSCompressionAlgorithm._compute_hessian,
        bit for bit), its first batch written rather than added to zeros."""
        samples = inp.shape[0] if inp.dim() == 3 else 1
        inp = inp.reshape(-1, inp.shape[-1]).t()
        if self._hessian is not None:
            self._hessian *= self._nsamples / (self._nsamples + samples)
        self._nsamples += samples
        inp = math.sqrt(2 / self._nsamples) * inp.float()
        if self._hessian is None:
            self._hessian = inp.matmul(inp.t())
        else:
            self._hessian += inp.matmul(inp.t())

    @property
    def _settings(self) -> tuple:
        raise NotImplementedError

    def add_batch(self, inp: torch.Tensor, out: torch.Tensor):
        latest = _SharedGPTQ._latest
        if latest is not None and _same_tensor(latest[0], inp) and latest[1].settings == self._settings:
            latest[1].join(self)  # the first reader of this input has added it to the Hessian already
            return
        if self._shared is not None and self._shared.owner is not self:
            raise RuntimeError("a layer that shared its input with another got a different one")
        if self._shared is None:
            self._shared = SharedInput(self)
            _SharedGPTQ._unswept.append(self._shared)
        # One sample at a time, as coremltools' walk feeds them: its running mean bit for bit
        # (one product over the batch is the same sum in another order: see INNER_GROUP)
        for sample in (inp.split(1) if inp.dim() == 3 else (inp,)):
            self._compute_hessian(sample, None)
        _SharedGPTQ._latest = (inp, self._shared)

    @classmethod
    def forget_inputs(cls) -> None:
        """Let go of the latest input and of any unswept one (the calibration is over)."""
        _SharedGPTQ._latest = None
        _SharedGPTQ._unswept = []

    def _compress_impl(self):
        shared = self._shared or SharedInput(self)
        if not shared.swept:
            layer_inputs = [shared] + [other for other in _SharedGPTQ._unswept if other is not shared and not other.swept]
            _SharedGPTQ._unswept = []
            sweep_side_by_side(layer_inputs)
        self._part = shared.parts.pop(self)
        self._layer.weight.data = self._part.pop("weight").to(self._layer.weight.dtype)
        self._hessian = None


@LayerwiseCompressionAlgorithm.register(BLOCKS_ALGORITHM)
class BlockGPTQ(_SharedGPTQ, GPTQ):
    """coremltools' GPTQ (symmetric or affine scales per block of input channels, no activation
    order), its weights and scales bit for bit (tested), with shared Hessians and our sweep."""

    def __init__(self, layer: torch.nn.Module, config: ModuleBlockGPTQConfig):
        if config.granularity != QuantizationGranularity.per_block or config.use_activation_order_heuristic \
                or config.enable_normal_float:
            raise ValueError("GPTQ's sweep here quantizes per block, in input-channel order, onto an integer grid")
        self._init_layer(layer, config)
        self._init_parameters(config)  # GPTQ's (checks that the blocks divide the input channels)
        self._symmetric = config.quantization_scheme == QuantizationScheme.symmetric
        self._grid_name = config.grid
        if self._grid_name == COREAI_OPT_GRID and not self._symmetric:
            raise ValueError("coreai-opt's grid here is its symmetric one")

    @property
    def _settings(self) -> tuple:
        return (BlockGPTQ, self._weight_n_bits, self._block_size, self._symmetric, self._hessian_dampening,
                self._processing_group_size, self._columns, self._grid_name)

    def _grid(self, weights: list[torch.Tensor], importance: torch.Tensor) -> "_Blocks":
        return _Blocks(self._weight_n_bits, self._block_size, self._symmetric, self._grid_name)

    def _compress_impl(self):
        super()._compress_impl()
        self._scale, self._zero_point = [self._part["scale"]], [self._part["zero_point"]]


@LayerwiseCompressionAlgorithm.register(ALGORITHM)
class LutGPTQ(_SharedGPTQ, OBSCompressionAlgorithm):
    """GPTQ's sweep onto per-group k-means tables, for one torch.nn.Linear."""

    def __init__(self, layer: torch.nn.Module, config: ModuleLutGPTQConfig):
        self._init_layer(layer, config)
        self._init_parameters(config)

    def _init_parameters(self, config: ModuleLutGPTQConfig):
        if self._rows % config.group_size:
            # The compressor skips the layer (logged); the data-free transform palettizes it after conversion.
            raise ValueError(f"{self._rows} output channels do not divide into groups of {config.group_size}")
        self._bits = config.bits
        self._group_size = config.group_size
        self._hessian_dampening = config.hessian_dampening
        self._processing_group_size = config.processing_group_size

    @property
    def _settings(self) -> tuple:
        return LutGPTQ, self._bits, self._group_size, self._hessian_dampening, self._processing_group_size, self._columns

    def _grid(self, weights: list[torch.Tensor], importance: torch.Tensor) -> "_Tables":
        """The members' tables, fitted to their weights counted by their inputs' importance: one
        k-means over all their groups at once (each group's own, as alone: tested)."""
        groups = [len(weight) // self._group_size for weight in weights]
        tables = weighted_tables(torch.cat(weights), importance.clamp_min(1e-12), self._bits, self._group_size)
        return _Tables(tables, self._group_size, groups)

    def _get_compression_metadata(self, param_name, param):
        lut = self._part["tables"]
        metadata = CompressionMetadata(param_name)
        metadata.compression_type = ["palettization"]
        metadata.lut = lut.reshape(lut.shape[0], 1, lut.shape[1], 1)  # [groups, 1, entries, 1]
        return metadata


class SharedInput:
    """The layers that read one input, its Hessian (accumulated by the first, `owner`) and, once
    swept, each layer's results (`parts`: its rounded weight and grid)."""

    def __init__(self, owner: _SharedGPTQ):
        self.owner, self.members = owner, [owner]
        self.settings = owner._settings
        self.swept = False
        self.parts: dict = {}

    def join(self, member: _SharedGPTQ) -> None:
        if member not in self.members:
            if member._shared is not None:
                raise RuntimeError("a layer that read its own input got another layer's")
            member._shared = self
            self.members.append(member)

    def sweep(self) -> None:
        """GPTQ over the rows of every member at once: their weights stacked, each row rounded
        onto its own grid, columns in the order the grid takes them."""
        owner = self.owner
        hessian = owner._hessian
        importance = torch.diag(hessian).clone()
        dead = importance == 0  # inputs that were always zero: their weights never matter
        hessian[dead, dead] = 1
        weights = []
        for member in self.members:
            weight = member._layer.weight.data.float().clone()
            weight[:, dead] = 0
            weights.append(weight)
        grid = owner._grid(weights, importance)
        rounded = _gptq_sweep(torch.cat(weights), hessian, grid.order(importance), grid,
                              owner._hessian_dampening, owner._processing_group_size)
        rows = [len(w) for w in weights]
        for member, weight, part in zip(self.members, rounded.split(rows), grid.split(rows)):
            self.parts[member] = {**part, "weight": weight}
            member._hessian = None
        self.swept = True


def sweep_side_by_side(layer_inputs: list[SharedInput]) -> None:
    """Sweep one decoder layer's inputs (query/key/value, output, gate/up, down: independent
    Hessians and weights), each on one thread, as many at a time as there are cores: a sweep is
    a long chain of small steps that one core runs best, so the second core takes another chain.
    Each sweep's arithmetic is the same as alone (one thread each), so the weights are too."""
    with one_thread():
        if len(layer_inputs) == 1 or SWEEPS_AT_ONCE == 1:
            for layer_input in layer_inputs:
                layer_input.sweep()
            return
        with ThreadPoolExecutor(max_workers=SWEEPS_AT_ONCE) as pool:
            for done in [pool.submit(_sweep_on_one_thread, layer_input) for layer_input in layer_inputs]:
                done.result()  # raises a sweep's error here


def _sweep_on_one_thread(layer_input: SharedInput) -> None:
    torch.set_num_threads(1)  # OpenMP's thread count is each thread's own: a new thread starts at the default
    layer_input.sweep()


# Sweeps run side by side: the cores this process may use (a worker's cores), at most 2 — a
# third sweep's memory (its stacked weights, Hessian and inverse) buys little on this machine.
SWEEPS_AT_ONCE = max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


@contextmanager
def one_thread():
    """torch on one thread while it sweeps: a column's steps are too small to share between
    cores, and on a busy machine every step's hand-off to a second thread waits for that thread
    to be scheduled (SmolLM2-135M's tables, 2 threads on a loaded 2-core machine: most of the
    sweep's time). Cholesky's inverse too (MKL's, 1536 channels: 0.2 s on one thread, 1-6 s on
    two of a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same values in the same memory (`a` is held, so its memory is not reused meanwhile)."""
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype


class _Tables:
    """Each row's sorted table; the sweep takes columns by importance."""

    def __init__(self, tables: torch.Tensor, group_size: int, groups: list[int]):
        self.tables, self.groups = tables, groups
        self.row_tables = tables.repeat_interleave(group_size, dim=0)  # [rows, 2**bits], sorted
        self.midpoints = boundaries(self.row_tables)  # once: every column is rounded onto the same tables

    def order(self, importance: torch.Tensor) -> torch.Tensor | None:
        return torch.argsort(importance, descending=True)  # GPTQ's activation-order heuristic

    def start_group(self, columns: torch.Tensor, start: int, end: int) -> None:
        pass

    def columns(self, work: torch.Tensor, rounded: torch.Tensor, errors: torch.Tensor, inverse: torch.Tensor,
                pivots: list[float], first: int, last: int) -> None:
        _sweep_columns()["tables"](work, rounded, errors, inverse, pivots, first, last, self.row_tables, self.midpoints)

    def split(self, rows: list[int]) -> list[dict]:
        return [{"tables": tables} for tables in self.tables.split(self.groups)]


class _Blocks:
    """coremltools' GPTQ grid per block of `block` input channels, columns in their order: a block's
    scale (and zero point) from its weights as they stand when the sweep's processing group that
    reaches it starts (coremltools' Quantizer.find_params on the matrix it updates once per group)."""

    def __init__(self, bits: int, block: int, symmetric: bool, grid: str = COREMLTOOLS_GRID):
        self.max_q, self.block, self.symmetric = 2**bits - 1, block, symmetric
        self.scales = self.zeros = None  # [blocks, rows]: a block's row contiguous
        self.coreai_opt = grid == COREAI_OPT_GRID
        self.extreme = self.extreme_level = None  # coreai-opt's grid: each block's largest weight, [blocks, rows]

    def order(self, importance: torch.Tensor) -> None:
        return None

    def start_group(self, columns: torch.Tensor, start: int, end: int) -> None:
        """`columns`: the weight transposed, [columns, rows]."""
        rows = columns.shape[1]
        if self.scales is None:
            self.scales = columns.new_empty(len(columns) // self.block, rows)
            self.zeros, self.low, self.high = (torch.empty_like(self.scales) for _ in range(3))
        first, last = -(-start // self.block), -(-end // self.block)  # the blocks that start in [start, end)
        if first == last:
            return
        values = columns[first * self.block:last * self.block].reshape(last - first, self.block, rows)
        if self.coreai_opt:
            self._coreai_opt_blocks(values, first, last)
            return
        zero = torch.zeros(())
        low = torch.minimum(values.amin(dim=1), zero)
        high = torch.maximum(values.amax(dim=1), zero)
        if self.symmetric:
            high = torch.maximum(low.abs(), high)
            low = torch.where(low < 0, -high, low)
        empty = (low == 0) & (high == 0)
        low, high = low.masked_fill(empty, -1), high.masked_fill(empty, 1)
        scale = (high - low) / self.max_q
        zeros = torch.full_like(scale, (self.max_q + 1) / 2) if self.symmetric else torch.round(-low / scale)
        self.scales[first:last], self.zeros[first:last] = scale, zeros
        # round(w / scale) + zero clamped to [0, max_q], less zero: the zero is a whole number, so
        # the same as round(w / scale) clamped to [-zero, max_q - zero], with two steps fewer
        self.low[first:last], self.high[first:last] = -zeros, self.max_q - zeros

    def _coreai_opt_blocks(self, values: torch.Tensor, first: int, last: int) -> None:
        """coreai-opt's symmetric int4 grid for blocks first ... last - 1 (`values` [blocks, block,
        rows]): its scale to the bit (float32: (|w|max + |w|max + 1e-6) / 14), levels -7 ... 7,
        and where each row's largest weight of the block lies, with its level (±7)."""
        if self.extreme is None:
            self.extreme = torch.empty_like(self.scales, dtype=torch.long)
            self.extreme_level = torch.empty_like(self.scales)
        magnitude = values.abs()
        largest, where = magnitude.max(dim=1)
        half = self.max_q // 2  # 7
        self.scales[first:last] = (largest + largest + COREAI_OPT_EPSILON) / (2 * half)
        self.zeros[first:last] = half + 1  # 8: the levels stored as uint4 1 ... 15
        self.low[first:last], self.high[first:last] = -half, half
        self.extreme[first:last] = where
        sign = torch.gather(values, 1, where.unsqueeze(1)).squeeze(1).sign()
        self.extreme_level[first:last] = sign * half

    def columns(self, work: torch.Tensor, rounded: torch.Tensor, errors: torch.Tensor, inverse: torch.Tensor,
                pivots: list[float], first: int, last: int) -> None:
        _sweep_columns()["blocks"](work, rounded, errors, inverse, pivots, first, last, self.scales, self.low, self.high,
                                   self.block, self.extreme if self.coreai_opt else None, self.extreme_level)

    def split(self, rows: list[int]) -> list[dict]:
        """Each member's scales and zero points, [rows, blocks] as coremltools' GPTQ stores them."""
        return [{"scale": scale.T.contiguous(), "zero_point": zero.T.contiguous()}
                for scale, zero in zip(self.scales.split(rows, dim=1), self.zeros.split(rows, dim=1))]


# Columns per rank-1 stretch inside a processing group (`_gptq_sweep`): 128, coremltools' order of
# sums. 32 spends half the sweep's time, but on SmolLM2-135M, whose weights already sit on a 4-bit
# grid (a dequantized Q4_1 file), many weights lie on a tie between two levels, and any change in
# the order of float sums tips some of them, and GPTQ carries each tip on down the row and into
# the next layers: int4's perplexity ratio on the evaluation passage was 1.126 (coremltools' GPTQ),
# 1.132 (this sweep, one thread: MKL's sums differ from two threads'), 1.25-1.29 (32 columns, or one
# Hessian product over the batch), top-1 74-82 %. We keep coremltools' order and Hessian sums.
INNER_GROUP = 128


def _gptq_sweep(weight: torch.Tensor, hessian: torch.Tensor, order: torch.Tensor | None, grid,
                dampening: float, step: int, inner: int | None = None) -> torch.Tensor:
    """GPTQ's sweep: columns in `order` (or as they are), each rounded onto `grid`, the error
    folded into the columns not yet rounded. Returns the rounded weight.

    The error of a column reaches the next columns of its stretch of `inner` by a rank-1 update,
    the rest of its processing group (`step` columns) by one product per stretch, and the columns
    after the group by one product per group (GPTQ's lazy batch, nested once more when `inner` <
    `step`: the same sums in another order, tested). With `inner` = `step` (the default,
    INNER_GROUP) it is coremltools' GPTQ's arithmetic, bit for bit (tested). The weight is held
    transposed, so a column is contiguous."""
    columns, inner = weight.shape[1], inner or INNER_GROUP
    if order is not None:
        # index_select: the same values as hessian[order][:, order], 4x faster (1536 channels: 16 -> 4 ms)
        weight, hessian = weight.index_select(1, order), hessian.index_select(0, order).index_select(1, order)
    diagonal = torch.arange(columns)
    hessian[diagonal, diagonal] += dampening * torch.mean(torch.diag(hessian))
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    pivots = inverse.diagonal().tolist()  # Python floats: a scalar divide per column, not a tensor op

    work = weight.T.contiguous()  # [columns, rows]
    rounded, errors = torch.empty_like(work), torch.empty_like(work)
    for start in range(0, columns, step):
        end = min(start + step, columns)
        grid.start_group(work, start, end)
        for first in range(start, end, inner):
            last = min(first + inner, end)
            grid.columns(work, rounded, errors, inverse, pivots[first:last], first, last)
            if last < end:
                work[last:end] -= (errors[first:last].T @ inverse[first:last, last:end]).T
        if end < columns:
            work[end:] -= (errors[start:end].T @ inverse[start:end, end:]).T  # coremltools' product, bit for bit
    rounded = rounded.T
    return rounded if order is None else rounded.index_select(1, torch.argsort(order))


def _table_columns(work: torch.Tensor, rounded: torch.Tensor, errors: torch.Tensor, inverse: torch.Tensor,
                   pivots: List[float], first: int, last: int, row_tables: torch.Tensor, midpoints: torch.Tensor):
    """Columns first ... last - 1 of a sweep onto tables: each weight to its row's nearest entry,
    the error over the column's pivot, folded into the stretch's later columns."""
    for i in range(first, last):
        column = work[i]
        index = torch.searchsorted(midpoints, column.unsqueeze(1))
        nearest = torch.gather(row_tables, 1, index, out=rounded[i].unsqueeze(1)).squeeze(1)
        error = torch.sub(column, nearest, out=errors[i]).div_(pivots[i - first])
        if i + 1 < last:  # the rank-1 update, rounded as coremltools' (a fused addr_ is not)
            work[i + 1:last] -= torch.outer(inverse[i, i + 1:last], error)


def _block_columns(work: torch.Tensor, rounded: torch.Tensor, errors: torch.Tensor, inverse: torch.Tensor,
                   pivots: List[float], first: int, last: int, scales: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
                   block: int, extreme: Optional[torch.Tensor], extreme_level: Optional[torch.Tensor]):
    """Columns first ... last - 1 of a sweep onto `_Blocks`' grid: round(w / scale) clamped to the
    block's levels (coreai-opt's grid: each row's largest weight of the block at its ±7), times the
    scale; the error folded on as `_table_columns` does."""
    for i in range(first, last):
        column, index = work[i], i // block
        scale = scales[index]
        level = torch.div(column, scale, out=rounded[i]).round_().clamp_(low[index], high[index])
        if extreme is not None and extreme_level is not None:
            # The row's largest weight of the block stays at ±7 (GPTQ folds the difference on), so
            # the block's largest after the sweep is 7 scales and coreai-opt derives the same scale
            torch.where(extreme[index] == i % block, extreme_level[index], level, out=level)
        nearest = level.mul_(scale)
        error = torch.sub(column, nearest, out=errors[i]).div_(pivots[i - first])
        if i + 1 < last:
            work[i + 1:last] -= torch.outer(inverse[i, i + 1:last], error)


def _sweep_columns() -> dict:
    """The column loops compiled by TorchScript (once, on first use): the same ATen ops in the
    same order as in Python, so the same weights bit for bit (tested against coremltools' GPTQ),
    but run without Python between them — and without the GIL, for which the two sweeps side by
    side otherwise wait at every op (9 % of their time on SmolLM2-135M's tables): TorchScript's
    interpreter releases it for the whole call. (torch.compile would need a C++ compiler and
    minutes of compiling; these loops are a few dozen ops.)"""
    with _scripting:
        if not _scripted:
            _scripted.update(tables=torch.jit.script(_table_columns), blocks=torch.jit.script(_block_columns))
    return _scripted


_scripted: dict = {}
_scripting = threading.Lock()


def nearest_entries(column: torch.Tensor, row_tables: torch.Tensor, midpoints: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's weight in `column` [rows] moved to the nearest entry of that row's table."""
    index = assign(column.unsqueeze(1), row_tables, midpoints)
    return row_tables.gather(1, index).squeeze(1)
