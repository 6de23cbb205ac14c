"""torch.export's program in core ATen — what coremltools reads — traced once instead of twice.

The documented way, `torch.export.export(...).run_decompositions({})`, traces the model to
torch.export's training IR and then traces that whole program again to decompose it. The second
trace is a full retrace (fake tensors and functionalization on every op): measured on this
machine, half of SmolLM2-135M's capture at fixed shapes (9.4-10.0 s; in one trace 4.6-5.2 s),
and 0.25-0.7 s of each tiny model's.

torch.export still has the one-trace path it had before the training IR (`torch.export._trace._export`
with `pre_dispatch=False`, which `torch.export.export` itself calls with `pre_dispatch=True`).
Inside the same context `run_decompositions({})` uses — each CompositeImplicitAutograd op it
would keep (linear, upsample, ...) kept whole (`_override_composite_implicit_decomp` with the
table `_split_decomp_table_to_cia_and_python_decomp({})` gives) — a program of fixed shapes
comes out the same: the same ops in the same order, less the `_assert_tensor_metadata` checks
the retrace adds and coremltools skips (tests/test_engine_units.py compares the two). Node names
may differ (a tied weight takes its first name, numbered constants their own numbers); no package
reads them.

A program with dynamic shapes (a stateful cache, a range of lengths or image sizes) keeps the
documented way: there the one trace takes some sizes from other tensors (a stateful tiny Llama:
three `shape` ops fewer of 578, a Qwen3: one more of 660), the same computation but not the
same program.

Both are torch's private functions (torch is pinned, see requirements.txt). If either is missing
or the one-trace path fails, the documented way runs instead, and its own failure is the one the
caller sees.
"""

from __future__ import annotations

import torch

# What torch.export raises when it cannot capture a model (its own errors derive from
# RuntimeError); anything else — a job timeout, an interrupt — must not be mistaken for one.
EXPORT_FAILURES = (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError, AttributeError, KeyError, IndexError)


def core_aten_program(module: torch.nn.Module, args: tuple, dynamic_shapes=None):
    """`torch.export.export(module, args, dynamic_shapes=..., strict=False).run_decompositions({})`,
    in one trace when every shape is fixed."""
    if not dynamic_shapes:
        try:
            return _in_one_trace(module, args)
        except (*EXPORT_FAILURES, ImportError):  # the documented way decides: it raises what the caller expects
            pass
    return torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False).run_decompositions({})


def _in_one_trace(module, args):
    from torch.export._trace import _export
    from torch.export.exported_program import _override_composite_implicit_decomp, _split_decomp_table_to_cia_and_python_decomp

    kept_whole, _ = _split_decomp_table_to_cia_and_python_decomp({})
    with _override_composite_implicit_decomp(kept_whole):
        return _export(module, args, strict=False, pre_dispatch=False)
