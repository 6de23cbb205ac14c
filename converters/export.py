"""The export pipeline: source -> transformers model -> wrapped module -> torch program ->
Core ML package(s) on disk, with a report of what was done.

torch.export (then the default decompositions) is tried first because it is what
coremltools supports best for current torch; torch.jit.trace is the fallback.
"""

from __future__ import annotations

import gc
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .configs import CoreMLConfig, config_class_for
from .configs.base import SEQ, InputSpec
from .errors import ConversionError
from .float16_safe import float16_safe
from .loading import load_hf_config, load_model, load_preprocessor, resolve_task
from .metadata import package_metadata, toolchain_versions
from .options import ConversionOptions
from .package_info import describe_package, directory_size
from .patches import op_patches
from .source import ModelSource, open_source
from .tasks import TASKS

Progress = Callable[[str, float, str], None]

# What torch.export raises when it cannot capture a model (its own errors derive from
# RuntimeError); anything else — a job timeout, an interrupt — must not be mistaken for one.
EXPORT_FAILURES = (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError, AttributeError, KeyError, IndexError)


@dataclass
class ConversionResult:
    report: dict
    packages: list[Path] = field(default_factory=list)


def _no_progress(stage: str, fraction: float, message: str) -> None:
    pass


def _coreml_inputs(cfg: CoreMLConfig, part: str, options: ConversionOptions):
    import coremltools as ct

    sequence = options.sequence_length
    inputs = []
    for spec in cfg.inputs(part):
        if spec.image:
            inputs.append(
                ct.ImageType(
                    name=spec.name,
                    shape=spec.shape,
                    scale=spec.image["scale"],
                    bias=spec.image["bias"],
                    color_layout=ct.colorlayout.RGB,
                )
            )
            continue
        dtype = {"int32": np.int32, "float16": np.float16, "float32": np.float32}[spec.dtype]
        inputs.append(ct.TensorType(name=spec.name, shape=_coreml_shape(spec, sequence, cfg.ranged_axes()), dtype=dtype))
    return inputs


def _coreml_states(cfg: CoreMLConfig, part: str):
    import coremltools as ct

    # Core ML keeps states in float16 only.
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=s.shape, dtype=np.float16), name=s.name) for s in cfg.states(part)]
    return states or None


def _coreml_shape(spec: InputSpec, sequence, ranged: dict[str, tuple[int, int]]):
    import coremltools as ct

    if any(d in ranged for d in spec.shape):
        return ct.Shape(tuple(ct.RangeDim(*ranged[d], default=ranged[d][0]) if d in ranged else d for d in spec.shape))
    if SEQ not in spec.shape:
        return spec.shape
    if sequence.kind == "fixed":
        return tuple(sequence.maximum if d == SEQ else d for d in spec.shape)
    if sequence.kind == "range":
        dim = ct.RangeDim(lower_bound=sequence.minimum, upper_bound=sequence.maximum, default=sequence.maximum)
        return ct.Shape(tuple(dim if d == SEQ else d for d in spec.shape))
    shapes = [tuple(size if d == SEQ else d for d in spec.shape) for size in sequence.sizes]
    return ct.EnumeratedShapes(shapes=shapes, default=shapes[-1])


def _torch_program(module, example: dict, cfg: CoreMLConfig, part: str, options: ConversionOptions, warnings_out: list[str]):
    """torch.export first; torch.jit.trace if export fails. Returns (program, exporter name)."""

    args = tuple(example.values())
    dims = {}
    if options.sequence_length.kind != "fixed":
        # torch.export cannot specialise a dimension to 0/1, so the traced range starts at 2;
        # the Core ML shape (set from the options) still admits the full range.
        dims[SEQ] = torch.export.Dim("seq", min=max(2, options.sequence_length.minimum), max=options.sequence_length.maximum)
    for name, (low, high) in cfg.ranged_axes().items():
        # A slice covering a whole cache buffer traces differently; the graph is the same for
        # it, so the traced range stops one short and Core ML's range admits the full size.
        dims[name] = torch.export.Dim(name, min=low, max=high - 1)
    dynamic = None
    if dims:
        # Per positional input, in the order of the wrapper's forward arguments.
        dynamic = tuple({i: dims[d] for i, d in enumerate(spec.shape) if d in dims} or None for spec in cfg.inputs(part))
    try:
        with torch.no_grad():
            program = torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)
            return program.run_decompositions({}), "torch.export"
    except EXPORT_FAILURES as error:
        warnings_out.append(f"torch.export failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); used torch.jit.trace instead.")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, args, strict=False), "torch.jit.trace"


def convert(
    source: str | ModelSource,
    task: str,
    output_dir: str | Path,
    options: ConversionOptions | None = None,
    token: str | None = None,
    progress: Progress | None = None,
    validate: bool = True,
    hub_name: str | None = None,
) -> ConversionResult:
    """Convert `source` (folder, Hub ID or URL) for `task` into package(s) under `output_dir`,
    then (unless `validate` is False) check them against the PyTorch model. `hub_name` is the
    repo the packages name for their tokenizer (default: the source's Hub ID or folder name)."""
    import coremltools as ct

    progress = progress or _no_progress
    options = options or ConversionOptions()
    output_dir = Path(output_dir)
    timings: dict[str, float] = {}
    report_warnings: list[str] = []
    started = time.perf_counter()

    progress("resolve", 0.0, "Reading the model")
    model_source = source if isinstance(source, ModelSource) else open_source(source, token=token)
    timings["resolve"] = time.perf_counter() - started
    hub_name = hub_name or model_source.hub_id or model_source.name

    hf_config = load_hf_config(model_source.path)
    config_cls = config_class_for(hf_config.model_type)
    resolved_task = resolve_task(task, config_cls, hf_config)
    cfg = config_cls(hf_config, resolved_task, options, load_preprocessor(model_source.path))
    cfg.check_options()
    if options.sequence_length.kind == "range" and cfg.modality == "text":
        report_warnings.append(
            "The sequence length is a range: Core ML runs models with range shapes on the CPU only. "
            "Use a fixed length or a list of lengths to let the GPU and Neural Engine run it."
        )

    progress("load", 0.1, "Loading the PyTorch model")
    mark = time.perf_counter()
    model = load_model(model_source.path, cfg, report_warnings)
    parameters = sum(p.numel() for p in model.parameters())
    timings["load"] = time.perf_counter() - mark

    packages = []
    package_reports = []
    parts = cfg.parts()
    for index, part in enumerate(parts):
        progress("convert", 0.2 + 0.7 * index / len(parts), f"Converting {part}")
        mark = time.perf_counter()
        module = cfg.wrap(model, part).eval()
        example = cfg.example_inputs(part)
        float16 = options.precision == "float16"
        with op_patches(cfg.op_patches(), float16=float16), (float16_safe(module) if float16 else nullcontext(0)) as safe_norms:
            program, exporter = _torch_program(module, example, cfg, part, options, report_warnings)
            timings[f"export_{part}"] = time.perf_counter() - mark
            mark = time.perf_counter()
            try:
                mlmodel = ct.convert(
                    program,
                    inputs=_coreml_inputs(cfg, part, options),
                    # A classifier's outputs are named by its ClassifierConfig (renamed below).
                    outputs=None if cfg.class_labels() else [ct.TensorType(name=o.name) for o in cfg.outputs(part)],
                    classifier_config=_classifier(cfg),
                    states=_coreml_states(cfg, part),
                    convert_to="mlprogram",
                    compute_precision=ct.precision.FLOAT16 if options.precision == "float16" else ct.precision.FLOAT32,
                    minimum_deployment_target=getattr(ct.target, options.minimum_deployment_target),
                    skip_model_load=True,
                )
            except Exception as error:
                raise ConversionError(f"coremltools could not convert the {part} of this {hf_config.model_type} model: {error}") from error
        del program
        if cfg.class_labels():
            mlmodel = _rename_classifier_probabilities(mlmodel)
        timings[f"convert_{part}"] = time.perf_counter() - mark

        mark = time.perf_counter()
        _describe(mlmodel, cfg, part, model_source, options, hub_name)
        path = output_dir / package_filename(model_source.name, resolved_task, options, part, len(parts))
        path.parent.mkdir(parents=True, exist_ok=True)
        mlmodel.save(str(path))
        del mlmodel
        gc.collect()
        timings[f"save_{part}"] = time.perf_counter() - mark
        packages.append(path)
        info = describe_package(path)
        package_reports.append(
            {
                "part": part,
                "path": str(path),
                "exporter": exporter,
                "float16_safe_norms": safe_norms,
                "size_bytes": directory_size(path),
                "inputs": info["inputs"],
                "outputs": info["outputs"],
                "states": info["states"],
            }
        )

    if validate:
        from .validation.validate import validate as validate_packages

        progress("validate", 0.9, "Validating against PyTorch")
        mark = time.perf_counter()
        validation = validate_packages(cfg, model, dict(zip(parts, packages)), model_source.path)
        timings["validate"] = time.perf_counter() - mark
    else:
        from .validation.validate import skipped

        validation = skipped()
        report_warnings.append("Validation was skipped: nothing checks that these packages compute what the model computes.")
    del model
    gc.collect()
    timings["total"] = time.perf_counter() - started
    progress("validate" if validate else "convert", 1.0, validation["message"])
    report = {
        "source": {"id": model_source.hub_id, "revision": model_source.revision, "path": str(model_source.path)},
        "requested_task": task,
        "task": resolved_task,
        "tokenizer_repo": hub_name,
        "architecture": {
            "model_type": hf_config.model_type,
            "class": model_class_label(cfg, hf_config),
            "parameters": parameters,
        },
        "options": options.to_dict(),
        "packages": package_reports,
        "versions": toolchain_versions(),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "warnings": report_warnings,
        "validation": validation,
    }
    return ConversionResult(report=report, packages=packages)


def model_class_label(cfg: CoreMLConfig, hf_config) -> str:
    import transformers

    auto = getattr(transformers, cfg.model_class_name())
    return auto._model_mapping[type(hf_config)].__name__


def _classifier(cfg: CoreMLConfig):
    import coremltools as ct

    labels = cfg.class_labels()
    if not labels:
        return None
    # coremltools links the last op's output (the softmax) to the classifier's dictionary.
    return ct.ClassifierConfig(labels, predicted_feature_name="classLabel", predicted_probabilities_output=None)


def _rename_classifier_probabilities(mlmodel):
    """coremltools names a classifier's dictionary output '<label>_probs'; exporters and
    Vision read 'probabilities'."""
    import coremltools as ct

    spec = mlmodel.get_spec()
    ct.utils.rename_feature(spec, "classLabel_probs", "probabilities")
    return ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)


def _describe(mlmodel, cfg: CoreMLConfig, part: str, source: ModelSource, options: ConversionOptions, hub_name: str) -> None:
    """Descriptions and metadata a person (and Xcode) sees in the package."""
    for spec in cfg.inputs(part):
        mlmodel.input_description[spec.name] = spec.description
    for spec in cfg.outputs(part):
        mlmodel.output_description[spec.name] = spec.description
    if cfg.class_labels():
        mlmodel.output_description["classLabel"] = "The most likely class"
    task = TASKS[cfg.task]
    mlmodel.short_description = (
        f"{source.display} ({cfg.hf_config.model_type}) for {cfg.task}: {task.summary}"
        + (f"; {part}" if part != "model" else "")
        + ". Converted by Core ML Converter."
    )
    mlmodel.author = "Core ML Converter"
    mlmodel.version = source.revision or ""
    license_name = getattr(cfg.hf_config, "license", None)
    if license_name:
        mlmodel.license = str(license_name)
    mlmodel.user_defined_metadata.update(
        package_metadata(
            name=hub_name,
            task=cfg.task,
            architecture=model_class_label(cfg, cfg.hf_config),
            precision=options.precision,
            options=options.to_dict(),
            part=part,
        )
    )


def package_filename(model_name: str, task: str, options: ConversionOptions, part: str, part_count: int) -> str:
    """swift-transformers: '<name>.mlpackage'; exporters: 'coreml/<task>/<precision>_model.mlpackage'."""
    if options.naming == "exporters":
        prefix = f"{part}_" if part_count > 1 else ""
        return f"coreml/{task}/{prefix}{options.precision}_model.mlpackage"
    suffix = f"-{part}" if part_count > 1 else ""
    return f"{model_name}{suffix}.mlpackage"
