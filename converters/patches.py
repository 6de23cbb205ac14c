"""Torch-op converters added to coremltools only while one conversion runs.

coremltools 9.0 was tested up to torch 2.7; torch 2.13's exported graphs contain ops its
frontend has no converter for. Each patch maps such an op to MIL, is registered for the
duration of one conversion, and the registry is restored afterwards, so a patch cannot
leak into another model's conversion or into the user's own coremltools use.
"""

from __future__ import annotations

from contextlib import contextmanager

from coremltools.converters.mil.frontend.torch import ops as torch_ops
from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

# Needed by every model on this toolchain: torch 2.13's export emits `alias` where older
# versions emitted nothing; it is a view of its input, i.e. the identity.
BASE_PATCHES = {"alias": torch_ops.noop}


@contextmanager
def op_patches(extra: dict | None = None):
    patches = {**BASE_PATCHES, **(extra or {})}
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
