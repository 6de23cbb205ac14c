"""torch.export's program decomposed by a converter's table — what coremltools (`{}`: core ATen)
or coreai-torch (its own table) reads — traced once instead of twice.

The documented way, `torch.export.export(...).run_decompositions(table)`, traces the model to
torch.export's training IR and then traces that whole program again to decompose it. The second
trace is a full retrace (fake tensors and functionalization on every op): measured on this
machine, half of SmolLM2-135M's capture at fixed shapes (9.4-10.0 s; in one trace 4.6-5.2 s),
and 0.25-0.7 s of each tiny model's (with Core AI's table, 0.1-0.9 s).

torch.export still has the one-trace path it had before the training IR (`torch.export._trace._export`
with `pre_dispatch=False`, which `torch.export.export` itself calls with `pre_dispatch=True`).
With the table split as `run_decompositions` splits it
(`_split_decomp_table_to_cia_and_python_decomp`) — the CompositeImplicitAutograd ops it keeps
whole or decomposes its own way (linear, upsample, SDPA, ...) set in the same context
(`_override_composite_implicit_decomp`), the other decompositions handed to the same ATen
tracer (`_export_to_aten_ir`, which `_export` calls by name) — a program of fixed shapes comes
out the same: the same ops in the same order, less the `_assert_tensor_metadata` checks the
retrace adds and neither converter reads (tests/test_engine_units.py compares the two for both
tables). Node names may differ (a tied weight takes its first name, numbered constants their
own numbers); no package reads them.

A program with dynamic shapes (a stateful cache, a range of lengths or image sizes) keeps the
documented way: there the one trace takes some sizes from other tensors (a stateful tiny Llama:
three `shape` ops fewer of 578, a Qwen3: one more of 660), the same computation but not the
same program.

These are torch's private functions (torch is pinned, see requirements.txt). If one is missing
or the one-trace path fails, the documented way runs instead, and its own failure is the one the
caller sees.
"""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager

import torch

# What torch.export raises when it cannot capture a model (its own errors derive from
# RuntimeError); anything else — a job timeout, an interrupt — must not be mistaken for one.
EXPORT_FAILURES = (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError, AttributeError, KeyError, IndexError)

# The tracer is handed the table through a module global of torch's for the one trace: one at a time.
_TRACING = threading.Lock()


def decomposed_program(module: torch.nn.Module, args: tuple, dynamic_shapes=None, table: dict | None = None,
                       stack_traces: bool = True):
    """`torch.export.export(module, args, dynamic_shapes=..., strict=False).run_decompositions(table)`
    (`table` None: `{}`), in one trace when every shape is fixed. `stack_traces`: whether each node
    keeps the Python stack that made it (its `stack_trace`), which torch captures and formats
    for every op of every trace; a converter that writes none into its package does not need them."""
    table = {} if table is None else table
    with _stack_traces(stack_traces):
        if not dynamic_shapes:
            try:
                return _in_one_trace(module, args, table)
            except (*EXPORT_FAILURES, ImportError):  # the documented way decides: it raises what the caller expects
                pass
        return torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False).run_decompositions(table)


@contextmanager
def _stack_traces(recorded: bool):
    """torch.fx's own switch (`torch.fx.config.do_not_emit_stack_traces`), put back afterwards."""
    import torch.fx.config as fx_config

    saved = fx_config.do_not_emit_stack_traces
    fx_config.do_not_emit_stack_traces = saved or not recorded
    try:
        yield
    finally:
        fx_config.do_not_emit_stack_traces = saved


def _in_one_trace(module, args, table: dict):
    import torch.export._trace as trace
    from torch._functorch._aot_autograd.frontend_utils import _detect_attribute_assignment
    from torch.export.exported_program import _override_composite_implicit_decomp, _split_decomp_table_to_cia_and_python_decomp

    composite, others = _split_decomp_table_to_cia_and_python_decomp(dict(table))  # it takes entries out: a copy
    with _TRACING:
        to_aten = trace._export_to_aten_ir
        trace._export_to_aten_ir = functools.partial(to_aten, decomp_table=others)
        try:
            # As torch.export's own trace does: what the trace leaves in the module's attributes (a
            # cache the forward fills, LeViT's attention biases) is put back, or eager calls later
            # meet the trace's functional tensors.
            with _override_composite_implicit_decomp(composite), _detect_attribute_assignment(module):
                return trace._export(module, args, strict=False, pre_dispatch=False)
        finally:
            trace._export_to_aten_ir = to_aten
