"""coremltools' pass pipelines made cheaper while one conversion runs, the program out the same.

Profiled on SmolLM2-135M (py-spy, coremltools 9.0), three costs do no work that reaches the
package:
- every pass is followed by a check of the whole program, about 100 per conversion
  (`validated_once_per_pipeline`: 10-20 s of a 135 M LLM's conversion);
- the pipeline and the transpose pass format the whole program into debug log lines with eager
  f-strings, whether debug logging is on or not (`pass_pipeline.py:474,506`,
  `optimize_repeat_ops.py:1242,1277`): about 0.5 s a print for a 135 M LLM, six prints
  (`printed_only_for_debug_logs`);
- the transpose pass infers every op's type again after it ran, even when it cancelled no
  transpose and so changed no op (`optimize_repeat_ops.py:1279-1280`): 7 s of a stateful
  135 M LLM's conversion, whose shapes are symbolic (`transposes_reinferred_only_when_moved`).
Every exit from a block's builder context (`with block:`: each pass, each op a pass adds) walks
the whole block to recompute which constexpr ops each var depends on (`Block._propagate_nonreplaceable_vars`):
5-6 % of a conversion, mostly Python overhead per var (the op's inputs rebuilt as a dict and a
list for each of its outputs, a set made for each), though nearly every set is empty
(`nonreplaceable_vars_propagated_directly`: the same sets, computed once per op, and nothing
recomputed in a program no var of which depends on a constexpr op).
And convert itself ends with a full garbage collection (`_converters_entry.py:679`), 0.1-0.3 s
in a process that has done some work, whatever the model's size: the chunked conversions of
tiny test models spent a fifth of their time there. It follows the rule of the pipeline's own
collections (converters/memory.py): only a model big enough for the memory to matter
(`collected_only_when_worth_it`).
Each is a context manager that puts coremltools back as it was when it ends.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from types import SimpleNamespace

from coremltools.converters.mil.mil.block import Block, Function
from coremltools.converters.mil.mil.passes.defs.optimize_repeat_ops import _TransposeOptimization
from coremltools.converters.mil.mil.passes.pass_pipeline import PassPipelineManager
from coremltools.converters.mil.mil.program import Program
from coremltools.converters.mil.mil.var import InternalVar

# The logger both files write those lines to (`from coremltools import _logger as logger`).
COREMLTOOLS_LOGGER = logging.getLogger("coremltools")


@contextmanager
def validated_once_per_pipeline():
    """coremltools checks the whole program after every pass of a pipeline (Program.validate:
    each op's inputs, outputs and visibility). While this is on, a pipeline checks the program
    once before its first pass (as coremltools does) and once after its last (as strictly: with
    the scope check that coremltools adds after dead-code elimination, when that is the last
    pass). A program that converts is the same either way (the checks only raise); a pass that
    broke the program is found at the pipeline's end instead of at once."""
    apply_pipeline, validate = PassPipelineManager.__dict__["apply_pipeline"], Program.validate

    def unchecked(self, check_essential_scope=False):
        return None

    def apply_checked_once(prog, pass_pipeline):
        validate(prog)
        Program.validate = unchecked
        try:
            apply_pipeline.__func__(prog, pass_pipeline)
        finally:
            Program.validate = validate
        passes = pass_pipeline.passes
        validate(prog, check_essential_scope=bool(passes) and passes[-1] == "common::dead_code_elimination")

    PassPipelineManager.apply_pipeline = staticmethod(apply_checked_once)
    try:
        yield
    finally:
        PassPipelineManager.apply_pipeline = apply_pipeline


UNPRINTED = "<the program is printed only when coremltools' debug logging is on>"


@contextmanager
def printed_only_for_debug_logs():
    """While coremltools' logger prints no debug lines, a program, function or block formats to a
    short placeholder: the only readers of that text while converting are those debug lines
    (checked in coremltools 9.0's converters/mil: no pass parses it)."""
    if COREMLTOOLS_LOGGER.isEnabledFor(logging.DEBUG):
        yield
        return
    saved = {kind: kind.__dict__["__str__"] for kind in (Program, Function, Block)}

    def placeholder(self, *args, **kwargs):
        return UNPRINTED

    for kind in saved:
        kind.__str__ = placeholder
    try:
        yield
    finally:
        for kind, method in saved.items():
            kind.__str__ = method


@contextmanager
def transposes_reinferred_only_when_moved():
    """coremltools' transpose pass (`reduce_transposes`), re-inferring the block's types only when
    it cancelled a transpose. The rest is coremltools 9.0's `apply_transform`
    (optimize_repeat_ops.py:1236-1280) as it is, less its debug drawing: it keeps the
    transposes it cannot cancel, removes the ones it can, then drops its output markers
    (identities on the block's outputs, whose types are their inputs')."""
    apply_transform = _TransposeOptimization.__dict__["apply_transform"]

    def apply_transform_when_needed(self):
        self._verify_cancellable_transposes()
        for transpose_op in self.transpose_op_to_cancel_ops:
            self._remove_transpose_ops(transpose_op)
        self.block.set_outputs([sink_op.x for sink_op in self.output_sink_ops])
        self.block.remove_ops(list(self.output_sink_ops))
        if self.transpose_op_to_cancel_ops:
            for op in self.block.operations:
                op.type_value_inference(overwrite_output=True)

    _TransposeOptimization.apply_transform = apply_transform_when_needed
    try:
        yield
    finally:
        _TransposeOptimization.apply_transform = apply_transform


def propagate_nonreplaceable_vars(block) -> None:
    """coremltools 9.0's Block._propagate_nonreplaceable_vars (block.py:941-950, var.py:184-206),
    the same sets: in the block's order, inner blocks first, each output of an op gets
    - nothing upstream after a `shape` op (metadata, not values);
    - itself, if its op is a constexpr op (a compressed weight, which must not be replaced);
    - otherwise the union of its op's inputs' sets (internal and absent inputs skipped, lists flattened),
    a set of its own each. Here the inputs are read once per op, not once per output; and a
    function's block in which no var depends on a constexpr op and none is one (every program
    before compression: nearly every call) is left as it is, since recomputing would give every
    var the empty set it holds. (An inner block may read an outer var that does: always walked.)"""
    if block.outer_op is None and not _any_constexpr_dependency(block):
        return
    _propagate(block)


def _any_constexpr_dependency(block) -> bool:
    """Whether an op of `block` (or of a block inside it) is a constexpr op or has an output whose
    set names one."""
    for op in block.operations:
        if op.op_type.startswith("constexpr_") or any(_any_constexpr_dependency(inner) for inner in op.blocks):
            return True
        for var in op.outputs or ():
            if var._nonreplaceable_vars_upstream:
                return True
    return False


def _propagate(block) -> None:
    for op in block.operations:
        for inner in op.blocks:
            _propagate(inner)
        outputs = op.outputs
        if outputs is None:
            continue
        kind = op.op_type
        if kind == "shape":
            for var in outputs:
                var._nonreplaceable_vars_upstream = set()
            continue
        if kind.startswith("constexpr_"):
            for var in outputs:
                var._nonreplaceable_vars_upstream = {var}
            continue
        upstream = set()
        for value in op._input_vars.values():
            if value is None or isinstance(value, InternalVar):
                continue
            for var in value if isinstance(value, (list, tuple)) else (value,):
                if var._nonreplaceable_vars_upstream:
                    upstream |= var._nonreplaceable_vars_upstream
        for var in outputs:
            var._nonreplaceable_vars_upstream = set(upstream)


@contextmanager
def nonreplaceable_vars_propagated_directly():
    """Block's propagation of constexpr dependencies as `propagate_nonreplaceable_vars` computes it."""
    saved = Block.__dict__["_propagate_nonreplaceable_vars"]
    Block._propagate_nonreplaceable_vars = propagate_nonreplaceable_vars
    try:
        yield
    finally:
        Block._propagate_nonreplaceable_vars = saved


@contextmanager
def collected_only_when_worth_it(parameters: int):
    """coremltools' convert collecting garbage as the pipeline does (memory.release)."""
    from coremltools.converters import _converters_entry

    from ...memory import release

    saved = _converters_entry.gc
    _converters_entry.gc = SimpleNamespace(collect=lambda *args: release(parameters))
    try:
        yield
    finally:
        _converters_entry.gc = saved


@contextmanager
def faster_pipelines(parameters: int):
    """All of the above, for one conversion of a model of `parameters` weights."""
    with validated_once_per_pipeline(), printed_only_for_debug_logs(), transposes_reinferred_only_when_moved(), \
            nonreplaceable_vars_propagated_directly(), collected_only_when_worth_it(parameters):
        yield
