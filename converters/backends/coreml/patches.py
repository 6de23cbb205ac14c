"""Torch-op converters added to coremltools only while one conversion runs (Core ML backend),
its float16 pass made to keep finite constants finite (`finite_float16_constants`), and its
search for palettized weights' table indices (`lut_indices_by_search`). What makes its pass
pipelines cheaper is in pass_speedups.py.

coremltools 9.0 was tested up to torch 2.7; torch 2.13's exported graphs contain ops its
frontend has no converter for. Each patch maps such an op to MIL, is registered for the
duration of one conversion, and the registry is restored afterwards, so a patch cannot
leak into another model's conversion or into the user's own coremltools use.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager, nullcontext

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil._deployment_compatibility import AvailableTarget
from coremltools.converters.mil.frontend.torch import ops as torch_ops
from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
from coremltools.converters.mil.mil import types
from coremltools.converters.mil.mil.block import is_current_opset_version_compatible_with
from coremltools.converters.mil.mil.types.symbolic import is_symbolic
from coremltools.converters.mil.mil.types.type_mapping import builtin_to_string

FLOAT16_MAX = float(np.finfo(np.float16).max)
# The deployment targets (one per platform) whose programs have Core ML's fused
# `scaled_dot_product_attention` op (iOS 18 / macOS 15); older ones keep matmul + softmax.
FUSED_ATTENTION_TARGETS = ("iOS18", "macOS15")


def masked_fill_finite_in_float16(context, node):
    """masked_fill, with a fill value beyond float16's range clamped to it.

    Models mask attention with torch.finfo(float32).min, which is -inf in float16; a fully
    masked row (a padded query) then makes softmax compute -inf - -inf = NaN on the GPU and
    Neural Engine, where PyTorch in float32 gets a uniform row. -65504 keeps the row finite
    and still zeroes every masked term next to an unmasked one.
    """
    x, mask, value = torch_ops._get_inputs(context, node, expected=3)
    if value.val is not None and np.any(np.abs(value.val) > FLOAT16_MAX):
        value = mb.const(val=np.clip(value.val, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float32))
    if not types.is_bool(mask.dtype):
        mask = mb.cast(x=mask, dtype="bool")
    if value.dtype != x.dtype:
        value = mb.cast(x=value, dtype=builtin_to_string(x.dtype))
    context.add(mb.select(cond=mask, a=value, b=x, name=node.name))


# float32 constants coremltools' float16 pass takes for infinities: it casts them to ±inf
# (FP16ComputePrecision.fp16_overflow: "their exact values does not matter").
FLOAT32_TAKEN_AS_INFINITY = 1e38


def finite_in_float16(value):
    """`value` with its finite float32 entries that float16 would make ±inf (|v| >= 1e38, in
    practice torch.finfo(float32).min and max) clamped to ±65504; None when it has none."""
    value = np.asarray(value)
    if value.dtype != np.float32:
        return None
    huge = np.isfinite(value) & (np.abs(value) >= FLOAT32_TAKEN_AS_INFINITY)
    if not huge.any():
        return None
    return np.where(huge, np.sign(value) * np.float32(FLOAT16_MAX), value).astype(np.float32)


def beyond_float16(value) -> bool:
    """Whether `value` has an entry with float16_max < |v| < 1e38, coremltools' test for a
    constant float16 cannot hold (entries from 1e38 up stand for infinities); one pass over the
    values when none passes float16's range, as in almost every weight."""
    magnitude = np.abs(np.asarray(value))
    if magnitude.size == 0:
        return False
    largest = magnitude.max()
    if largest <= FLOAT16_MAX:
        return False
    return bool(np.max(magnitude[magnitude < FLOAT32_TAKEN_AS_INFINITY], initial=0.0) > FLOAT16_MAX)


@contextmanager
def finite_float16_constants():
    """coremltools' float16 pass (`common::add_fp16_cast`), clamping first each float32
    constant that would become ±inf in float16 but is finite in float32, as transformers does
    for a float16 model (torch.finfo(float16).min is -65504).

    Models build additive masks as (1 - mask) * torch.finfo(float32).min (openai-gpt, many
    encoders): in float16 that constant is -inf, and the kept positions compute 0 * -inf = NaN,
    which no float16 runtime survives. -65504 keeps every product finite, and a masked score
    (score - 65504) still gives softmax an exact 0 next to any kept one. Only constants whose
    every reader the pass casts to float16 are clamped: an op left in float32 keeps its value.
    True infinities are left as they are (they are ±inf in float32 too)."""
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    key = "common::add_fp16_cast"
    coremltools_pass = PASS_REGISTRY.passes[key]

    class add_fp16_cast_finite(coremltools_pass):
        def apply(self, prog):
            self._beyond_float16 = {}  # constant var -> has a finite entry beyond float16's range
            try:
                for function in prog.functions.values():
                    self._clamp_constants(function)
                super().apply(prog)
            finally:
                self._beyond_float16 = {}  # holds no weight past the pass

        def fp16_overflow(self, op) -> bool:
            """coremltools' check (FP16ComputePrecision.fp16_overflow: a float32 constant input
            with a finite entry beyond ±65504), each constant measured once per pass: coremltools
            measures a weight again for every op that reads it and for each of its checks, and
            takes its absolute value twice (4 s of a 135 M LLM's conversion)."""
            for inputs in op.inputs.values():
                for var in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
                    if var.op is not None and var.op.op_type == "const" and var.is_tensor_or_scalar_of(dtype="fp32"):
                        if var not in self._beyond_float16:
                            self._beyond_float16[var] = beyond_float16(var.op.val.val)
                        if self._beyond_float16[var]:
                            return True
            return False

        def _cast(self, op) -> bool:
            if not self.is_valid_op(op):
                return False
            if self.op_selector is not None:
                return bool(self.op_selector(op))
            return op.op_type not in getattr(self, "skip_ops_by_type", set())

        def _clamp_constants(self, block):
            found = []
            for op in list(block.operations):
                for inner in op.blocks:
                    self._clamp_constants(inner)
                if op.op_type != "const" or not op.outputs:
                    continue
                var = op.outputs[0]
                if var.val is None or var in block.outputs or not var.child_ops:
                    continue
                clamped = finite_in_float16(var.val)
                if clamped is not None and all(self._cast(child) for child in var.child_ops):
                    found.append((op, clamped))
            if not found:
                return
            # One `with block` for all: leaving it walks the whole block (coremltools'
            # nonreplaceable-var check), 3 s of a 135 M LLM's conversion when done per constant.
            with block:
                for op, clamped in found:
                    var = op.outputs[0]
                    finite = mb.const(val=clamped if clamped.ndim else np.float32(clamped), name=f"{op.name}_finite_in_float16",
                                      before_op=op)
                    block.replace_uses_of_var_after_op(anchor_op=op, old_var=var, new_var=finite)
            block.remove_ops([op for op, _ in found])

    PASS_REGISTRY.passes[key] = add_fp16_cast_finite
    try:
        yield
    finally:
        PASS_REGISTRY.passes[key] = coremltools_pass


def bicubic_to_same_size(context, node):
    """YOLOS resizes its position embeddings bicubically to the image's patch grid; at the
    configured image size that is a resize to the same size, i.e. the identity (Core ML
    has no bicubic resize). Any other size is refused rather than approximated."""
    inputs = torch_ops._get_inputs(context, node)
    x, size = inputs[0], inputs[1]
    target = None if size is None or size.val is None else tuple(int(v) for v in size.val)
    if target != tuple(x.shape[2:]):
        raise NotImplementedError(f"bicubic resize from {tuple(x.shape[2:])} to {target} has no Core ML equivalent")
    context.add(mb.identity(x=x, name=node.name))


# coremltools' own converter of torch's scaled_dot_product_attention, which the patch below calls.
_COREMLTOOLS_SDPA = torch_ops.scaled_dot_product_attention
# torch's positional arguments of aten::scaled_dot_product_attention
# (query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa).
_SDPA_SCALE, _SDPA_ENABLE_GQA = 6, 7


def sdpa_fused_with_any_scale(context, node):
    """scaled_dot_product_attention as Core ML's fused op (iOS 18+), whatever its scale.

    coremltools 9 emits the fused `scaled_dot_product_attention` MIL op only when torch's
    call has no `scale`; transformers always passes one (`module.scaling`, usually
    1/sqrt(head_dim)), so coremltools decomposes every attention into matmul + softmax. The
    MIL op always scales by 1/sqrt(E): a scale equal to that is dropped, any other constant
    one (T5: 1) is folded into the query (query * scale * sqrt(E)), and `enable_gqa` key/value
    heads are repeated as transformers' repeat_kv does (the MIL op has no head broadcasting).
    Anything else (a scale that is not a constant, a symbolic head size, dropout, targets
    below iOS 18) goes to coremltools' converter unchanged."""
    _COREMLTOOLS_SDPA(context, _fusable(context, node) or node)


def _sdpa_argument(node, index: int, keyword: str):
    """A torch argument's binding: (value or var name) from the keyword or the position, or None."""
    if node.kwinputs and node.kwinputs.get(keyword):
        return node.kwinputs[keyword][0]
    return node.inputs[index] if len(node.inputs) > index else None


def _constant(context, binding):
    """A literal (torch.export), or a constant node's value by name (TorchScript); anything
    else is returned as it is (and then not rewritten)."""
    if binding is None or isinstance(binding, (bool, int, float)):
        return binding
    if isinstance(binding, str) and binding in context:
        value = context[binding].val
        if isinstance(value, (np.ndarray, np.generic)) and np.size(value) == 1:
            return value.item()
        return value
    return binding


def _fusable(context, node):
    """`node` rewritten so coremltools emits the fused op (no scale, no enable_gqa); None
    when it cannot be (or need not be) rewritten."""
    if node.kind != "scaled_dot_product_attention" or not is_current_opset_version_compatible_with(AvailableTarget.iOS18):
        return None
    scale = _constant(context, _sdpa_argument(node, _SDPA_SCALE, "scale"))
    gqa = _constant(context, _sdpa_argument(node, _SDPA_ENABLE_GQA, "enable_gqa"))
    if scale is None and not gqa:
        return None  # coremltools fuses it as it is
    if not isinstance(scale, (int, float, type(None))) or not isinstance(gqa, (bool, int, type(None))):
        return None  # not constants
    query, key, value = (context[name] for name in node.inputs[:3])
    if is_symbolic(query.shape[-1]):
        return None
    if gqa and (query.rank < 3 or any(is_symbolic(v.shape[-3]) or sum(map(is_symbolic, v.shape)) > 1 for v in (query, key, value))):
        return None  # the heads to repeat must be known (and a reshape takes one unknown size)
    inputs = list(node.inputs)
    if scale is not None:
        factor = float(scale) * math.sqrt(query.shape[-1])
        if not math.isclose(factor, 1.0, rel_tol=1e-6):
            dtype = types.nptype_from_builtin(query.dtype)
            scaled = mb.mul(x=query, y=dtype(factor), name=f"{node.name}_query_scaled")
            context.add(scaled)
            inputs[0] = scaled.name
    if gqa:
        for index, var, role in ((1, key, "key"), (2, value, "value")):
            repeats = query.shape[-3] // var.shape[-3]
            if repeats > 1:
                repeated = _repeat_heads(var, repeats, f"{node.name}_{role}_heads")
                context.add(repeated)
                inputs[index] = repeated.name
    rewritten = copy.copy(node)
    rewritten.inputs = tuple(inputs[:_SDPA_SCALE])
    rewritten.kwinputs = {k: v for k, v in (node.kwinputs or {}).items() if k not in ("scale", "enable_gqa")} or None
    return rewritten


def _repeat_heads(x, repeats: int, name: str):
    """[..., kv_heads, S, E] -> [..., kv_heads * repeats, S, E], each head `repeats` times in a
    row (transformers' repeat_kv, torch's enable_gqa)."""
    shape = list(x.shape)
    axis = x.rank - 3
    expanded = mb.expand_dims(x=x, axes=[axis + 1])
    reps = [1] * (x.rank + 1)
    reps[axis + 1] = repeats
    tiled = mb.tile(x=expanded, reps=reps)
    shape[axis] *= repeats
    return mb.reshape(x=tiled, shape=[-1 if is_symbolic(d) else d for d in shape], name=name)


_COREMLTOOLS_CUMSUM = torch_ops.cumsum


def cumsum_any_axis(context, node):
    """torch.cumsum (and logcumsumexp) along any axis: coremltools 9.0's MIL cumsum takes -1 as
    its only negative axis, and Bamba's and Falcon-H1's Mamba-2 mixers sum along -2. Its own
    converter runs, with the axis counted from the front."""
    builder_cumsum = mb.cumsum

    def cumsum(x, axis=0, **kwargs):
        value = axis.val if hasattr(axis, "val") else axis
        return builder_cumsum(x=x, axis=value + x.rank if value is not None and value < -1 else axis, **kwargs)

    mb.cumsum = cumsum
    try:
        _COREMLTOOLS_CUMSUM(context, node)
    finally:
        mb.cumsum = builder_cumsum


@contextmanager
def scalar_results_folded_as_arrays():
    """coremltools 9.0 folds an elementwise op of two scalar constants into a Python float, which
    its float type refuses ("Types should have zero-rank ndarray input"): DiffLlama's λ, a
    difference of two exp(sum(...)) of the layer's own parameters. The folded value is handed
    on as a zero-rank array, which the type takes (and stores as the same number)."""
    from coremltools.converters.mil.mil.ops.defs.iOS15.elementwise_binary import elementwise_binary

    fold = elementwise_binary.__dict__["_cast_check_value_inferene"]

    def folded(self, a, b):
        result = fold(self, a, b)
        return np.array(result) if isinstance(result, float) and not isinstance(result, np.generic) else result

    elementwise_binary._cast_check_value_inferene = folded
    try:
        yield
    finally:
        elementwise_binary._cast_check_value_inferene = fold


_COREMLTOOLS_SCATTER = torch_ops.scatter


def scatter_value_any_length(context, node):
    """torch.scatter of one value (`scatter.value`) into a tensor whose length is only known
    when the package runs: coremltools 9.0 fills the updates with `fill(shape=indices.shape)`,
    which cannot take a ranged dimension (PhiMoE's router, in a stateful package, scatters -inf
    over each token's first expert). The updates then take the indices' shape as the program
    computes it; anything else goes to coremltools' converter."""
    inputs = torch_ops._get_inputs(context, node, expected=(4, 5))
    data, indices, value = inputs[0], inputs[2], inputs[3]
    if len(inputs) > 4 or not types.is_scalar(value.sym_type) or not any(is_symbolic(d) for d in indices.shape) \
            or value.val is None or inputs[1].val is None:
        _COREMLTOOLS_SCATTER(context, node)
        return
    dtype = types.nptype_from_builtin(data.dtype)
    updates = mb.fill(shape=mb.shape(x=indices), value=dtype(value.val))
    context.add(mb.scatter_along_axis(data=data, indices=indices, updates=updates, axis=int(inputs[1].val), mode="update",
                                      name=node.name))


# Per quirk a model config declares (ExportConfig.quirks): the op converters it needs.
QUIRK_PATCHES = {
    "same_size_bicubic_resize": {"upsample_bicubic2d": bicubic_to_same_size, "upsample_bicubic2d.vec": bicubic_to_same_size},
}


def quirk_patches(quirks) -> dict:
    return {name: func for quirk in quirks for name, func in QUIRK_PATCHES[quirk].items()}


# Needed by every model on this toolchain: torch 2.13's export emits `alias` where older
# versions emitted nothing; it is a view of its input, i.e. the identity.
BASE_PATCHES = {"alias": torch_ops.noop}
# Fixes of coremltools' own converters, over them whatever its version (see each).
FIXED_CONVERTERS = {**{name: cumsum_any_axis for name in ("cumsum", "logcumsumexp", "_logcumsumexp")},
                    "scatter.value": scatter_value_any_length}
# Needed by every float16 package (see masked_fill_finite_in_float16; and finite_float16_constants).
FLOAT16_PATCHES = {"masked_fill": masked_fill_finite_in_float16}


# Needed by every package for iOS 18 / macOS 15 or newer (see sdpa_fused_with_any_scale).
FUSED_ATTENTION_PATCHES = {"scaled_dot_product_attention": sdpa_fused_with_any_scale}


@contextmanager
def op_patches(extra: dict | None = None, float16: bool = False, fused_attention: bool = False):
    patches = {
        **BASE_PATCHES,
        **FIXED_CONVERTERS,
        **(FLOAT16_PATCHES if float16 else {}),
        **(FUSED_ATTENTION_PATCHES if fused_attention else {}),
        **(extra or {}),
    }
    mapping = _TORCH_OPS_REGISTRY.name_to_func_mapping
    saved = {name: mapping[name] for name in patches if name in mapping}
    convert_single_node = torch_ops.convert_single_node
    with finite_float16_constants() if float16 else nullcontext(), scalar_results_folded_as_arrays():
        try:
            for name, func in patches.items():
                if name in BASE_PATCHES and name in saved:
                    continue  # a newer coremltools converts this op itself: keep its converter
                mapping[name] = func
            torch_ops.convert_single_node = _naming_failing_node(convert_single_node)
            yield
        finally:
            torch_ops.convert_single_node = convert_single_node
            for name in patches:
                if name in saved:
                    mapping[name] = saved[name]
                else:
                    mapping.pop(name, None)


def _naming_failing_node(convert_single_node):
    """coremltools names the op that failed only in a log line: keep the node on the exception
    (`coreml_node`), so the message can say which op and which layer (converters/diagnose.py)."""

    def convert(context, node):
        try:
            convert_single_node(context, node)
        except Exception as error:
            if getattr(error, "coreml_node", None) is None:
                try:
                    error.coreml_node = node
                except AttributeError:  # an exception type that takes no attributes
                    pass
            raise

    return convert


@contextmanager
def lut_indices_by_search():
    """coremltools' torch frontend finds a GPTQ-palettized weight's table indices with its own
    `find_indices_for_lut` (an array 2**bits times the weight); scalar tables take
    lut_indices.nearest_lut_indices instead (the same indices, in the weight's own memory).
    Vector tables and small weights keep coremltools' function."""
    from coremltools.optimize import _utils as optimize_utils

    from .lut_indices import nearest_lut_indices

    find = optimize_utils.find_indices_for_lut

    def find_indices(data, lut, vector_axis=None):
        if lut.shape[-1] != 1 or len(lut.shape) != len(data.shape) + 2 or data.size * lut.shape[-2] < SEARCHED_FROM:
            return find(data, lut, vector_axis)
        return nearest_lut_indices(data, lut)

    optimize_utils.find_indices_for_lut = find_indices
    try:
        yield
    finally:
        optimize_utils.find_indices_for_lut = find


SEARCHED_FROM = 2**22  # weight elements x table entries below which coremltools' own search is as quick
