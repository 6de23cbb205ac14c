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
            collected_only_when_worth_it(parameters):
        yield
