"""The Core ML backend: coremltools turns the captured torch program into an ML Program
package, with the interface swift-transformers and exporters-era apps read (input and
output names, image inputs, classifier outputs, states, `co.huggingface.exporters.*`
metadata); validation runs the saved package in the reference executor on any OS.

coremltools' op patches live beside it (patches.py): they apply only while
coremltools converts. Compression is backends/coreml/compress.py's (coremltools.optimize); the
on-device runs, on a Mac, backends/coreml/runtime.py's.

The module stays light (no coremltools, no executor at its top): plan.py asks every backend
the options name for its refusal, and the web process asks the plan (preflight.check_options).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ...configs import ExportConfig
from ...configs.base import SEQ, InputSpec
from ...errors import ConversionError, UserInputError
from ...memory import release
from ...metadata import package_description, package_metadata
from ...options import ConversionOptions, meets
from ...package_info import describe_spec, program_summary
from ...source import ModelSource
from . import compress as compressor
from . import runtime as coreml_runtime
from . import sizes, targets
from .stitch import WEIGHT_FILE, counted_once, stitch, weight_file
from ..naming import package_filename


class CoreMLBackend:
    name = "coreml"
    label = "Core ML"
    package_words = "a Core ML package (.mlpackage folder with a Manifest.json)"
    float16_safe_norms = True  # float16 packages are captured with float16_safe.py's norms
    image_inputs = True  # ImageType applies the image processor's scale and bias
    converts_in_chunks = True  # keep_chunk + stitch (stitch.py)
    modes = None  # the reference executor: validation's exact fp32 and fp16 emulation

    def refusal(self, cfg, options) -> str | None:
        return targets.refusal(cfg, options) or sizes.refusal(cfg, options)  # what the deployment target cannot run

    def check_validation_time(self, plan, time_limit: float | None) -> None:
        pass  # the reference executor validates within minutes at any size the worker takes

    def owns(self, path: Path) -> bool:
        """An .mlpackage, or any folder with a Core ML manifest (packages of other tools)."""
        path = Path(path)
        return path.suffix == ".mlpackage" or (path / "Manifest.json").exists()

    def check_package(self, path: Path) -> None:
        if not (Path(path) / "Manifest.json").exists():
            raise UserInputError(f"{path} is not {self.package_words}.")

    # coremltools writes no stack trace into a package (its ScopeSource.EXIR_STACK_TRACE: "no
    # serialization for such debug info should be allowed yet"): the capture skips recording
    # them, 13-22 % of a tiny model's capture, the package the same byte for byte.
    keeps_source_lines = False

    def decompositions(self) -> dict:
        return {}  # coremltools converts a program in core ATen

    def own_capture(self, plan, model, part: str):
        """An image part at chosen image sizes: captured per size, or with a dynamic size (sizes.py)."""
        return sizes.capture(plan, model, part)

    def convert(self, plan, captured):
        if getattr(captured, "programs", None):  # one function per image size (sizes.py)
            cfg, part = plan.cfg, captured.part
            compress = plan.options.quantize != "none" and cfg.compresses(part)
            return sizes.convert_functions(
                plan, captured, lambda program, size: self._convert(plan, part, program, _coreml_inputs(cfg, part, plan.options, size)),
                lambda mlmodel, size: _describe(mlmodel, cfg, part, plan.source, plan.options, plan.hub_name, size),
                (lambda mlmodel: compressor.compress_coreml(plan, part, mlmodel)) if compress else None)
        return self._convert(plan, captured.part, captured.program, _coreml_inputs(plan.cfg, captured.part, plan.options, captured))

    def _convert(self, plan, part: str, program, inputs):
        import coremltools as ct

        # coremltools' op patches import coremltools' torch frontend: loaded only when a package is made
        from .pass_speedups import faster_pipelines
        from .patches import FUSED_ATTENTION_TARGETS, lut_indices_by_search, op_patches, quirk_patches

        from coremltools.converters.mil.converter import _reset_conversion_state

        cfg, options = plan.cfg, plan.options
        fused_attention = meets(options.minimum_deployment_target, FUSED_ATTENTION_TARGETS)
        # Op names count from where coremltools' counters stand, which it resets only after a
        # conversion: loading a package (validation's executor) left them advanced, and the next
        # conversion in the process named its constants differently. Named as in a fresh process:
        _reset_conversion_state()
        with op_patches(quirk_patches(cfg.quirks), float16=options.precision == "float16", fused_attention=fused_attention), \
                faster_pipelines(plan.parameters), lut_indices_by_search():
            try:
                mlmodel = ct.convert(
                    program,
                    inputs=inputs,
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
                raise ConversionError(f"coremltools could not convert the {part} of this {cfg.hf_config.model_type} model: {error}") from error
        if cfg.class_labels():
            renamed = _rename_classifier_probabilities(mlmodel)
            discard_temporary(mlmodel)
            mlmodel = renamed
        return mlmodel

    def compress(self, plan, part: str, artifact):
        if getattr(artifact, "multifunction_folder", None):  # one function per image size: compressed each (sizes.py)
            return artifact
        from .pass_speedups import faster_pipelines

        with faster_pipelines(plan.parameters):  # the cleanup pipeline after the compression passes
            return compressor.compress_coreml(plan, part, artifact)

    def compression_entry(self, plan, part: str, size_bytes: int, info: dict) -> dict | None:
        """Scheme, bits per weight (the saved program's), size before and after."""
        return compressor.finish(plan.compression[part], size_bytes, (info["program"] or {}).get("weight_bits"))

    def package_path(self, plan, part: str) -> str:
        return package_filename(plan.source.name, plan.task, plan.options, part, len(plan.parts))

    def save(self, plan, part: str, artifact, path: Path) -> None:
        _describe(artifact, plan.cfg, part, plan.source, plan.options, plan.hub_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        artifact.save(str(path))
        stitched = getattr(artifact, "stitched_weights", None)
        if stitched is not None:
            weight_file(path).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(stitched, weight_file(path))
        # coremltools also writes ExecuTorch's debug-handle map (ops -> torch.export nodes, for
        # ExecuTorch's tools) into the package: no Core ML runtime reads it, and it weighs
        # about 0.5 MB in every float package of a 135 M LLM.
        (path / "executorch_debug_handle_mapping.json").unlink(missing_ok=True)
        release(plan.parameters)

    def discard(self, artifact) -> None:
        discard_temporary(artifact)

    def keep_chunk(self, plan, part: str, artifact, scratch: Path):
        """A converted chunk set aside for `stitch`: coremltools has already written it to a
        temporary package (deleted with the MLModel), so only its in-memory program, which
        holds the weights again, is let go."""
        artifact._mil_program = None
        return artifact

    def stitch(self, plan, part: str, chunks: list, scratch: Path):
        """One package of the chunks' programs run in order (stitch.py)."""
        import coremltools as ct

        weights, empty = Path(scratch) / "stitched-weights", Path(scratch) / "no-weights"
        spec, shared = stitch([Path(chunk.package_path) for chunk in chunks], weights)
        if plan.compression.get(part):  # the chunks' summaries counted a weight they share (a tied embedding) in each
            plan.compression[part] = counted_once(plan.compression[part], shared)
            compressor.warn_float_left(plan, plan.compression[part])
        empty.mkdir()
        # coremltools copies a model's weights on every save: the stitched file (GBs) is moved
        # into the saved package instead (`save`), so the model starts with none.
        mlmodel = ct.models.MLModel(spec, weights_dir=str(empty), skip_model_load=True)
        mlmodel.stitched_weights = weights / WEIGHT_FILE
        return mlmodel

    def describe(self, path: Path) -> dict:
        """describe_package's inputs, outputs, states and metadata, and the program's summary
        (`program`: fused attention, states, bits per weight, op counts)."""
        import coremltools as ct

        spec = ct.utils.load_spec(str(path))
        if sizes.is_multifunction(spec):  # one function per image size: the default one's interface
            spec = sizes.default_view(spec)
        return {**describe_spec(spec), "program": program_summary(spec)}

    def runner(self, path: Path):
        import coremltools as ct

        from .executor import ReferenceExecutor  # coremltools and torch: loaded only to run a package

        spec = ct.utils.load_spec(str(path))
        if sizes.is_multifunction(spec):  # one executor per image size's function
            return sizes.SizedRunner(path, spec, ReferenceExecutor)
        return ReferenceExecutor(path)

    def device_runtime(self) -> tuple[bool, str]:
        return coreml_runtime.available()

    def device_runs(self, path: Path) -> list:
        spec = _spec(path)
        if sizes.is_multifunction(spec):  # Core ML runs one function per load: a load per image size
            return [sizes.SizedDeviceRun(path, spec, unit, coreml_runtime.DeviceRun) for unit in coreml_runtime.COMPUTE_UNITS]
        return [coreml_runtime.DeviceRun(path, unit) for unit in coreml_runtime.COMPUTE_UNITS]

    def unit_analysis(self, info: dict, runner) -> dict:
        from .compute_units import analyse  # Core ML's placement rules, read off the program the executor loaded

        return analyse(info, runner.op_summary)

    def validates_itself(self, plan, part: str) -> bool:
        return False  # validation's input sets and the continuation drive it as swift-transformers does

    def validate_itself(self, plan, model, part: str, path: Path, earlier: dict | None, progress=None) -> dict:
        raise NotImplementedError("a Core ML package is judged by validation's common checks")

    def validation_kind(self, on_device: bool) -> str:
        return "Core ML on this Mac and the reference executor" if on_device else "reference executor (Core ML not available here)"


def _spec(path: Path):
    import coremltools as ct

    return ct.utils.load_spec(str(path))


def discard_temporary(mlmodel) -> None:
    """Delete the temporary package coremltools keeps for an in-memory model (its weights:
    GBs for a big model). coremltools deletes them only when the process exits, and a
    worker's job process never runs its exit handlers (rq ends it with os._exit)."""
    path = getattr(mlmodel, "package_path", None)
    if path and getattr(mlmodel, "is_temp_package", False):
        shutil.rmtree(path, ignore_errors=True)
    if getattr(mlmodel, "multifunction_folder", None):  # a package of one function per image size (sizes.py)
        shutil.rmtree(mlmodel.multifunction_folder, ignore_errors=True)


def _coreml_inputs(cfg: ExportConfig, part: str, options: ConversionOptions, sized=None):
    """`sized`: one image size's (height, width), or the capture (a dynamic one lists the image sizes)."""
    import coremltools as ct

    sequence = options.sequence_length
    inputs = []
    for spec in cfg.inputs(part):
        if spec.image:
            inputs.append(
                ct.ImageType(
                    name=spec.name,
                    shape=(1, 3, *sized) if isinstance(sized, tuple) else sizes.image_shape(cfg, spec, sized),
                    scale=spec.image["scale"],
                    bias=spec.image["bias"],
                    color_layout=ct.colorlayout.RGB,
                )
            )
            continue
        dtype = {"int32": np.int32, "float16": np.float16, "float32": np.float32}[spec.dtype]
        inputs.append(ct.TensorType(name=spec.name, shape=_coreml_shape(spec, sequence, cfg.ranged_axes()), dtype=dtype))
    return inputs


def _coreml_states(cfg: ExportConfig, part: str):
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


def _classifier(cfg: ExportConfig):
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


def _describe(mlmodel, cfg: ExportConfig, part: str, source: ModelSource, options: ConversionOptions, hub_name: str,
              size: tuple[int, int] | None = None) -> None:
    """Descriptions and metadata a person (and Xcode) sees in the package (`size`: one image size's function)."""
    if getattr(mlmodel, "multifunction_folder", None) is None:  # a multifunction package's functions were described each
        for spec in cfg.inputs(part):
            sized = sizes.image_description(cfg, part, options, size) if spec.image else None  # several image sizes
            mlmodel.input_description[spec.name] = sized or spec.description
        for spec in cfg.outputs(part):
            mlmodel.output_description[spec.name] = spec.description
        if cfg.class_labels():
            mlmodel.output_description["classLabel"] = "The most likely class"
    mlmodel.short_description = package_description(source.display, cfg, part)
    mlmodel.author = "Core ML Converter"
    mlmodel.version = source.revision or ""
    license_name = getattr(cfg.hf_config, "license", None)
    if license_name:
        mlmodel.license = str(license_name)
    mlmodel.user_defined_metadata.update(
        package_metadata(
            name=hub_name,
            task=cfg.task,
            architecture=cfg.model_class_label(),
            precision=options.precision,
            options=options.to_dict(),
            part=part,
        )
    )
    mlmodel.user_defined_metadata.update(cfg.package_metadata(part))  # the family's own keys (an image-text model's logit scale)
    mlmodel.user_defined_metadata.update(sizes.metadata(cfg, part, options))  # the image sizes it takes
