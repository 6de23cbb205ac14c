"""Torch-op converters added to coremltools only while one conversion runs (Core ML backend).

coremltools 9.0 was tested up to torch 2.7; torch 2.13's exported graphs contain ops its
frontend has no converter for. Each patch maps such an op to MIL, is registered for the
duration of one conversion, and the registry is restored afterwards, so a patch cannot
leak into another model's conversion or into the user's own coremltools use.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.frontend.torch import ops as torch_ops
from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
from coremltools.converters.mil.mil import types
from coremltools.converters.mil.mil.types.type_mapping import builtin_to_string

FLOAT16_MAX = float(np.finfo(np.float16).max)


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


# Per quirk a model config declares (CoreMLConfig.quirks): the op converters it needs.
QUIRK_PATCHES = {
    "same_size_bicubic_resize": {"upsample_bicubic2d": bicubic_to_same_size, "upsample_bicubic2d.vec": bicubic_to_same_size},
}


def quirk_patches(quirks) -> dict:
    return {name: func for quirk in quirks for name, func in QUIRK_PATCHES[quirk].items()}


# Needed by every model on this toolchain: torch 2.13's export emits `alias` where older
# versions emitted nothing; it is a view of its input, i.e. the identity.
BASE_PATCHES = {"alias": torch_ops.noop}
# Needed by every float16 package (see masked_fill_finite_in_float16).
FLOAT16_PATCHES = {"masked_fill": masked_fill_finite_in_float16}


@contextmanager
def op_patches(extra: dict | None = None, float16: bool = False):
    patches = {**BASE_PATCHES, **(FLOAT16_PATCHES if float16 else {}), **(extra or {})}
    mapping = _TORCH_OPS_REGISTRY.name_to_func_mapping
    saved = {name: mapping[name] for name in patches if name in mapping}
    try:
        for name, func in patches.items():
            if name in BASE_PATCHES and name in saved:
                continue  # a newer coremltools converts this op itself: keep its converter
            mapping[name] = func
        yield
    finally:
        for name in patches:
            if name in saved:
                mapping[name] = saved[name]
            else:
                mapping.pop(name, None)
