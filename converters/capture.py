"""Stage 2, capture: load the PyTorch model, wrap it to the package's interface and capture
one torch program per part — shared by every backend.

torch.export (decomposed in one trace where it can, decompose.py) is tried first because it is what
coremltools supports best for current torch; torch.jit.trace is the fallback. float16
packages are captured with float16-safe norms (float16_safe.py); a mixture-of-experts model's
experts are captured evaluated densely, in ops Core ML has (configs/moe.py); a rotary
embedding in complex numbers, in real arithmetic (configs/complex_rotary.py).
"""

from __future__ import annotations

import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .configs.base import SEQ
from .decompose import EXPORT_FAILURES, decomposed_program
from .float16_safe import float16_safe
from .loading import load_model
from .configs.complex_rotary import real_rotary
from .configs.moe import dense_experts
from .plan import Plan


@dataclass
class Captured:
    part: str
    program: object  # a torch.export.ExportedProgram, or a TorchScript module from tracing
    exporter: str  # "torch.export" or "torch.jit.trace"
    float16_safe_norms: int  # norms rewritten in their float16-safe form
    seconds: float


def load(plan: Plan) -> torch.nn.Module:
    """The transformers model for the task, from safetensors only, in float32."""
    return load_model(plan.source.path, plan.cfg, plan.warnings)


def capture(plan: Plan, model: torch.nn.Module, part: str, module: torch.nn.Module | None = None,
            safe_norms: bool = True, image_inputs: bool = True, table: dict | None = None,
            source_lines: bool = True) -> Captured:
    """One part's torch program: of `module` if given (a chunk of layers, chunks.py), else of
    the architecture's wrapper around `model`. `safe_norms`: whether a float16 capture takes
    the float16-safe norms (a backend whose converter keeps norms whole in float32 says no).
    `image_inputs`: whether the backend's image inputs apply their scale and bias (Core ML's
    do); if not, the program applies them to a plain pixel tensor itself. `table`: the
    decompositions the backend's converter reads the program in (None: core ATen, coremltools').
    `source_lines`: whether its ops keep the Python line that made them (a backend whose package
    has no use for them says no: torch records a stack trace for every op otherwise)."""
    started = time.perf_counter()
    cfg = plan.cfg
    module = (module if module is not None else cfg.wrap(model, part)).eval()
    specs = cfg.inputs(part)
    if not image_inputs and any(spec.image for spec in specs):
        module = ScaledImageInputs(module, specs).eval()
    float16 = plan.options.precision == "float16" and safe_norms
    with float16_safe(module) if float16 else nullcontext(0) as safe_norms, dense_experts(model), real_rotary(model):
        program, exporter = torch_program(module, cfg.example_inputs(part), plan, part, table, source_lines)
    return Captured(part, program, exporter, safe_norms, time.perf_counter() - started)


class ScaledImageInputs(torch.nn.Module):
    """An image input's scale and bias (what Core ML applies to a pixel buffer before the
    program runs) as the program's first ops, for a backend whose inputs are plain tensors of
    0..255 pixels: the same pixels then give the same numbers as the Core ML package."""

    def __init__(self, module: torch.nn.Module, specs):
        super().__init__()
        self.module = module
        self.scales = [spec.image["scale"] if spec.image else None for spec in specs]
        for index, spec in enumerate(specs):
            if spec.image:
                self.register_buffer(f"bias{index}", torch.tensor(spec.image["bias"], dtype=torch.float32).reshape(1, 3, 1, 1),
                                     persistent=False)

    def forward(self, *inputs):
        scaled = [value if scale is None else value * scale + getattr(self, f"bias{index}")
                  for index, (value, scale) in enumerate(zip(inputs, self.scales))]
        return self.module(*scaled)


def torch_program(module, example: dict, plan: Plan, part: str, table: dict | None = None, source_lines: bool = True):
    """torch.export first, decomposed by `table` (None: to core ATen); torch.jit.trace if export
    fails. Returns (program, exporter name)."""
    cfg, options = plan.cfg, plan.options
    args = tuple(example.values())
    dims = {}
    if options.sequence_length.kind != "fixed":
        # torch.export cannot specialise a dimension to 0/1, so the traced range starts at 2;
        # the package's shape (set from the options) still admits the full range.
        dims[SEQ] = torch.export.Dim("seq", min=max(2, options.sequence_length.minimum), max=options.sequence_length.maximum)
    for name, (low, high) in cfg.ranged_axes().items():
        # A slice covering a whole cache buffer traces differently; the graph is the same for
        # it, so the traced range stops one short and the package's range admits the full size.
        dims[name] = torch.export.Dim(name, min=low, max=high - 1)
    dynamic = None
    if dims:
        # Per positional input, in the order of the wrapper's forward arguments.
        dynamic = tuple({i: dims[d] for i, d in enumerate(spec.shape) if d in dims} or None for spec in cfg.inputs(part))
    try:
        with torch.no_grad():
            return decomposed_program(module, args, dynamic, table, source_lines), "torch.export"
    except EXPORT_FAILURES as error:
        plan.warnings.append(f"torch.export failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); used torch.jit.trace instead.")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, args, strict=False), "torch.jit.trace"
