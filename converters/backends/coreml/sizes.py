"""A Core ML vision package at the image sizes chosen (the `image_size` option; which design a
model gets is configs/image_sizes.py's decision):

- one size: the model captured at it, its position embeddings made constant for it;
- enumerated: one program captured with a dynamic height and width, its image input listing the
  sizes (`ct.EnumeratedShapes`, default the model's own size);
- functions: one program per size, each converted alone and saved as a function of one
  multifunction package (`ct.utils.MultiFunctionDescriptor` + `ct.utils.save_multifunction`, an
  iOS 18 / macOS 15 feature: coremltools/models/utils.py), named `image_<side>`, the model's own
  size the default function. The functions' identical weights are stored once.
  An app picks a size with `MLModelConfiguration.functionName` (iOS 18+).

Validation runs each size: the reference executor of the function whose image input has the
size (`SizedRunner`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from ...configs import image_sizes
from ...decompose import decomposed_program
from ...float16_safe import float16_safe
from ...options import ConversionOptions, meets
from ...transforms.schemes import IOS18

METADATA_SIZES = "co.huggingface.exporters.image_sizes"  # "224,384": the sides the package takes
METADATA_FUNCTIONS = "co.huggingface.exporters.functions"  # {"image_224": [224, 224], ...}: a multifunction package's


@dataclass
class SizedCapture:
    """capture.Captured's fields, with a program per size (`programs`) or one with a dynamic size."""

    part: str
    program: object  # the default size's (or the dynamic) program
    exporter: str
    float16_safe_norms: int
    seconds: float
    programs: dict = field(default_factory=dict)  # (height, width) -> program: one function each
    dynamic: bool = False


def applies(plan, part: str) -> bool:
    """Whether this part is captured here: an image part when image sizes are chosen."""
    return not plan.options.image_size.auto and part in image_sizes.image_parts(plan.cfg)


def refusal(cfg, options: ConversionOptions) -> str | None:
    """Several sizes as functions need a multifunction package (iOS 18 / macOS 15)."""
    if options.image_size.auto or image_sizes.design(cfg) != image_sizes.FUNCTIONS:
        return None
    if not meets(options.minimum_deployment_target, IOS18):
        return (f"Several image sizes ({options.image_size}) for this {cfg.hf_config.model_type} model make one function per "
                "size in one Core ML package, which needs minimum deployment target iOS18 or macOS15. "
                "Choose iOS18/macOS15, or type one size.")
    return None


def capture(plan, model, part: str) -> SizedCapture | None:
    """The part's program(s) at the chosen sizes (None: not an image part with sizes chosen)."""
    import torch  # heavy: loaded only to capture

    if not applies(plan, part):
        return None
    started = time.perf_counter()
    cfg = plan.cfg
    module = cfg.wrap(model, part).eval()
    sizes = cfg.image_sizes()
    design = image_sizes.design(cfg)
    float16 = plan.options.precision == "float16"
    generator = torch.Generator().manual_seed(0)
    programs = {}
    with float16_safe(module) if float16 else nullcontext(0) as safe_norms:
        for size in ([cfg.image_size()] if design == image_sizes.ENUMERATED else sizes):
            example = (torch.rand(1, 3, *size, generator=generator),)
            with image_sizes.constant_position_embeddings(module, example), torch.no_grad():
                dynamic = None
                if design == image_sizes.ENUMERATED:
                    # torch.export's own dynamic dimensions: a range given by hand draws guards a stride-32 network breaks
                    dynamic = ({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC},)
                program = decomposed_program(module, example, dynamic, stack_traces=False)
            programs[size] = program
    default = programs.get(cfg.image_size()) or next(iter(programs.values()))
    return SizedCapture(part, default, "torch.export", safe_norms, time.perf_counter() - started,
                        programs if design == image_sizes.FUNCTIONS else {}, design == image_sizes.ENUMERATED)


def image_shape(cfg, spec, captured):
    """The image input's shape for coremltools: the listed sizes for a dynamic program, else the spec's."""
    import coremltools as ct

    if not getattr(captured, "dynamic", False):
        return spec.shape
    shapes = [(1, 3, *size) for size in cfg.image_sizes()]
    return ct.EnumeratedShapes(shapes=shapes, default=(1, 3, *cfg.image_size()))


def convert_functions(plan, captured: SizedCapture, convert_one, describe, compress=None):
    """One multifunction package of the programs, each converted alone by `convert_one(program,
    size)`, compressed by `compress(mlmodel)` when the options ask (a saved multifunction package
    has no program left to compress) and described by `describe(mlmodel, size)`; the model's own
    size is the default."""
    import coremltools as ct

    scratch = Path(tempfile.mkdtemp(prefix="sizes-"))
    try:
        descriptor = ct.utils.MultiFunctionDescriptor()
        for size, program in captured.programs.items():
            mlmodel = convert_one(program, size)
            if compress is not None:
                compressed = compress(mlmodel)
                if compressed is not mlmodel:
                    _discard(mlmodel)
                mlmodel = compressed
            describe(mlmodel, size)
            path = scratch / f"{image_sizes.function_name(size)}.mlpackage"
            mlmodel.save(str(path))
            _discard(mlmodel)
            descriptor.add_function(str(path), src_function_name="main", target_function_name=image_sizes.function_name(size))
        descriptor.default_function_name = image_sizes.function_name(plan.cfg.image_size())
        combined = Path(tempfile.mkdtemp(prefix="multifunction-")) / "model.mlpackage"
        ct.utils.save_multifunction(descriptor, str(combined))
        plan.warnings[:] = list(dict.fromkeys(plan.warnings))  # each function's compression said the same
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mlmodel = ct.models.MLModel(str(combined), skip_model_load=True)
    mlmodel.multifunction_folder = combined.parent  # deleted with the artifact (backend.discard_temporary)
    return mlmodel


def metadata(cfg, part: str, options: ConversionOptions) -> dict[str, str]:
    """The sizes an image part takes (and a multifunction package's functions), for the app and the card."""
    if options.image_size.auto or part not in image_sizes.image_parts(cfg):
        return {}
    sizes = cfg.image_sizes()
    values = {METADATA_SIZES: ",".join(str(h) if h == w else f"{h}x{w}" for h, w in sizes)}
    if image_sizes.design(cfg) == image_sizes.FUNCTIONS:
        values[METADATA_FUNCTIONS] = json.dumps({image_sizes.function_name(size): list(size) for size in sizes})
    return values


def image_description(cfg, part: str, options: ConversionOptions, size: tuple[int, int] | None = None) -> str | None:
    """The image input's description when the package takes several sizes (None: the spec's own):
    the sizes of an enumerated input, or which function this is of a multifunction package."""
    sizes = cfg.image_sizes() if not options.image_size.auto and part in image_sizes.image_parts(cfg) else []
    if len(sizes) < 2:
        return None
    if size is None:
        default = cfg.image_size()
        return "RGB image: " + ", ".join(f"{w}x{h}" + (" (default)" if (h, w) == default else "") for h, w in sizes)
    others = ", ".join(f"{image_sizes.function_name(other)} ({other[1]}x{other[0]})" for other in sizes if other != size)
    return f"RGB image, {size[1]}x{size[0]} (function {image_sizes.function_name(size)}; other sizes: {others})"


def is_multifunction(spec) -> bool:
    return len(spec.description.functions) > 0


def default_view(spec):
    """A multifunction spec with the default function's inputs and outputs as the model's own
    (what a reader of one interface — the report, Try it — sees: the package's default size)."""
    functions = {f.name: f for f in spec.description.functions}
    default = functions.get(spec.description.defaultFunctionName)
    if default is None:
        return spec
    view = type(spec)()
    view.CopyFrom(spec)
    for name in ("input", "output", "state"):
        getattr(view.description, name).extend(getattr(default, name))
    return view


def _by_size(spec, make) -> tuple[dict, object]:
    """{(height, width): make(function name)} for each function of a multifunction package with
    an image input, and the default function's."""
    by_size, default = {}, None
    for function in spec.description.functions:
        image = next((f.type.imageType for f in function.input if f.type.WhichOneof("Type") == "imageType"), None)
        if image is None:
            continue
        made = make(function.name)
        by_size[(image.height, image.width)] = made
        if function.name == spec.description.defaultFunctionName or default is None:
            default = made
    return by_size, default


def _size_of(inputs: dict):
    image = next((value for value in inputs.values() if getattr(value, "ndim", 0) == 4), None)
    return tuple(image.shape[-2:]) if image is not None else None


class SizedRunner:
    """A multifunction package's reference executors, one per function, each run on the inputs
    of its size; otherwise the default function's (its op summary, states, names)."""

    def __init__(self, path, spec, executor_class):
        self.by_size, self.default = _by_size(spec, lambda name: executor_class(path, function=name))

    def __getattr__(self, name):
        return getattr(self.__dict__["default"], name)

    def predict(self, inputs, mode: str = "fp32", state=None):
        return self.by_size.get(_size_of(inputs), self.default).predict(inputs, mode=mode, state=state)

    def close(self) -> None:
        for executor in self.by_size.values():
            getattr(executor, "close", lambda: None)()


class SizedDeviceRun:
    """A multifunction package on one compute unit of a Mac: Core ML loads one function at a time
    (`MLModelConfiguration.functionName`), so one load per function, each predicting the feeds of
    its size; the unit's mode, words and placement are the default function's."""

    def __init__(self, path, spec, unit: str, device_run_class):
        self.by_size, self.default = _by_size(spec, lambda name: device_run_class(path, unit, function=name))

    def __getattr__(self, name):
        return getattr(self.__dict__["default"], name)

    def predict(self, feeds: list[dict], stateful: bool) -> list[dict]:
        return self.by_size.get(_size_of(feeds[0]) if feeds else None, self.default).predict(feeds, stateful)


def _discard(mlmodel) -> None:
    path = getattr(mlmodel, "package_path", None)
    if path and getattr(mlmodel, "is_temp_package", False):
        shutil.rmtree(path, ignore_errors=True)
