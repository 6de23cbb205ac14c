"""The Core AI backend: Apple's coreai-torch turns the captured torch program into an
`.aimodel` (iOS/macOS 27), with the same interface as the Core ML package — the wrapper's
input and output names, `keyCache`/`valueCache` runtime state for a stateful decoder, and
the `co.huggingface.exporters.*` keys as creator-defined metadata. Validation runs the saved
model in coreai-core's own runtime, which executes it on this machine's CPU
(backends/coreai/runtime.py): real execution, not emulation.

Why these calls (shared/reference/core-ai-facts.md): coreai-torch needs the program
decomposed with its own table (it keeps SDPA whole); float16 is coreai-opt's FP32 -> FP16
pass over the program, with the norms kept in float32 (`_inside_a_norm`); the only minimum
OS is 27. What Core AI cannot take from this converter is refused at plan time
(`refusal`, which plan.py asks), with the reason; a float16 validation too slow for a job's
limit before any weights load (`check_validation_time`). Compression is coreai-opt's
(backends/coreai/compress.py).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ...chunks import stored_elements
from ...configs import gemma4, image_sizes, qwen3_5
from ...configs.base import SEQ
from ...errors import ConversionError, UserInputError
from ...metadata import package_description, package_metadata, package_version
from . import compress as compressor
from .cast_speedups import faster_float16_cast
from .decompositions import decomposition_table
from .runtime import (MODE, SPEED, CoreAILanguageModelEngine, CoreAIRunner, bundle_folder, described,
                                        validation_seconds)
from . import bundle
from . import static_bundle
from ..naming import package_filename

# (model type, task) pairs of the registry Core AI does not take, and why (tests/test_coreai_registry.py).
NOT_CONVERTED = {
    ("modernbert", "multiple-choice"): "torch.export cannot capture it (ModernBERT unpads by the mask's values, "
                                       "a data-dependent shape), and coreai-torch converts torch.export programs only",
    ("whisper", "automatic-speech-recognition"): "WhisperKit, which runs Whisper in Swift apps, loads Core ML packages "
                                                 "(docs/whisperkit.md)",
    ("rt_detr", "object-detection"): "coreai-torch has no conversion for grid_sampler_2d, the sampling of its deformable "
                                     "attention (docs/vision-kinds.md)",
    # modeling_conditional_detr.py:670-678 concatenates each head's query and key with their position
    # embeddings; coreai-torch's attention asserts "Result type and query type must be identical" (measured).
    ("conditional_detr", "object-detection"): "coreai-torch's attention takes values as wide as the queries, and "
                                              "Conditional DETR's cross-attention doubles its queries and keys (their "
                                              "position embeddings concatenated) (docs/vision-kinds.md)",
}
# Multi-scale deformable attention (its config names `decoder_n_points`: Deformable DETR, RT-DETR v1/v2,
# D-FINE, Grounding DINO, RF-DETR, …) samples its feature maps with grid_sampler_2d, which coreai-torch
# does not convert (measured on RT-DETR: "unsupported ATen ops: aten.grid_sampler_2d").
DEFORMABLE = ("coreai-torch has no conversion for grid_sampler_2d, the sampling of its multi-scale deformable attention "
              "(docs/vision-kinds.md)")


def refusal(cfg, options) -> str | None:
    """Why this model and these options cannot become an .aimodel here, or None (asked at plan
    time: plan.check_request)."""
    reason = NOT_CONVERTED.get((cfg.hf_config.model_type, cfg.task))
    if reason is None and getattr(cfg.hf_config, "decoder_n_points", None) is not None:
        reason = DEFORMABLE
    if reason:
        return f"Core AI output is not available for {cfg.hf_config.model_type} {cfg.task}: {reason}. Choose the Core ML format."
    if bundle.applies(cfg) and (reason := _uneven_cache(cfg)):
        return f"Core AI output is not available for this {cfg.hf_config.model_type} model: {reason}. Choose the Core ML format."
    if options.sequence_length.kind == "enumerated":
        return ("Core AI output takes one sequence length or a range (1-512); a list of lengths is Core ML's "
                "enumerated shapes. Give one number or a range.")
    if len(options.image_size.sizes) > 1:
        return (f"Core AI output takes one image size; several ({options.image_size}) are a Core ML package's "
                "(enumerated shapes, or one function per size). Type one size, or choose the Core ML format.")
    if image_sizes.other_than_own(cfg):
        return (f"Core AI output takes this {cfg.hf_config.model_type} model at its own image size (auto): another size "
                "resizes its position embeddings, which is made for Core ML packages only so far. Choose the Core ML format.")
    if options.llm_bundle == "ios":
        if not bundle.applies(cfg):
            return (f"The iOS Core AI LLM bundle is for text generation by a decoder with a KV cache, not "
                    f"{cfg.hf_config.model_type} {cfg.task}; keep the macOS choice.")
        return static_bundle.refusal(cfg, options)
    return None


def is_ios(plan) -> bool:
    """Whether this conversion makes the iOS static-shape LLM bundle (static_bundle.py)."""
    return bundle.applies(plan.cfg) and plan.options.llm_bundle == "ios"


def check_validation_time(plan, parameters: int, time_limit: float | None) -> None:
    """A float16 .aimodel validates slowly on Linux (runtime.SPEED): refuse, before any
    work, what would not finish within `time_limit` seconds (a job's limit); else say so, with
    the float32 alternative, when it takes more than a few minutes."""
    seconds = validation_seconds(plan.cfg, parameters, bundle=bundle.applies(plan.cfg), static=is_ios(plan))
    if plan.options.precision != "float16" or seconds <= 300:
        return
    faster = seconds * SPEED["float16"] / SPEED["float32"]
    why = (f"Validating the float16 .aimodel takes about {seconds / 60:.0f} minutes here: Apple's Linux runtime computes "
           f"float16 in software")
    if time_limit and seconds > 0.8 * time_limit:
        raise UserInputError(
            f"{why}, beyond this worker's {time_limit / 60:.0f}-minute job limit. Choose float32 (its .aimodel validates in "
            f"about {max(1, round(faster / 60))} minute(s)), a stateful KV cache (one token per call), or the Core ML format.")
    plan.warnings.append(f"{why}. A float32 .aimodel validates in about {max(1, round(faster / 60))} minute(s).")


def _uneven_cache(cfg) -> str | None:
    """Why Apple's LLM bundle cannot hold this decoder's cache: CoreAILanguageModel keeps one key and
    one value cache of one shape for every layer (docs/core-ai.md), and a Gemma 4's layers differ
    in key/value shape or reuse another layer's (configs/gemma4.py), a Qwen3.5's linear layers keep
    other states (configs/qwen3_5.py); the Core ML package holds them."""
    try:
        layout = gemma4.cache_layout(cfg.hf_config)
        hybrid = qwen3_5.cache_layout(cfg.hf_config)
    except gemma4.LayoutRefused as error:
        return str(error)
    if hybrid is not None:  # the Core ML package holds its linear layers' states (configs/qwen3_5.py)
        return ("its linear-attention layers keep a convolution window and a recurrent state, not keys and values, and "
                "Apple's LLM bundle keeps a key and a value cache only")
    if layout is not None and (len(layout.groups) > 1 or layout.reuses):
        return ("its layers' keys and values differ in shape, or some layers reuse another layer's, and Apple's LLM bundle "
                "keeps one cache shape for every layer")
    return None


class CoreAIBackend:
    name = "coreai"
    label = "Core AI"
    package_words = "a Core AI model (.aimodel folder with a main.mlirb)"
    converts_in_chunks = False  # an AIProgram converts whole
    modes = (MODE,)  # its runtime executes the package as it is: one mode, no emulation
    # float16: every op inside a norm module stays float32 (`_inside_a_norm`), so float16_safe.py's
    # scaled form is not needed — and it would hurt: its eps / s² (1e-6 and less) is a float16
    # subnormal, which the Core AI runtime flushes to zero, so a row of zeros (a padding token's
    # embedding) became rsqrt(0) = inf and NaN logits (measured).
    float16_safe_norms = False
    image_inputs = False  # pixel tensors: the program scales them (capture.ScaledImageInputs)
    keeps_source_lines = True  # coreai-torch's default (debug) mode writes them as the ops' locations

    def decompositions(self) -> dict:
        # coreai-torch's own table only: decomposed to core ATen first as well, the program was
        # traced twice more (the sweep of every registry pair spent two thirds of its time there).
        return decomposition_table()

    def refusal(self, cfg, options) -> str | None:
        return refusal(cfg, options)

    def check_validation_time(self, plan, time_limit: float | None) -> None:
        check_validation_time(plan, stored_elements(plan.source.path), time_limit)

    def owns(self, path: Path) -> bool:
        return Path(path).suffix == ".aimodel"

    def check_package(self, path: Path) -> None:
        if not (Path(path) / "main.mlirb").exists():
            raise UserInputError(f"{path} is not {self.package_words}.")

    def compress(self, plan, part: str, artifact):
        return compressor.compress_coreai(plan, part, artifact)

    def compression_entry(self, plan, part: str, size_bytes: int, info: dict) -> dict | None:
        """Scheme, bits per weight (the float width scaled by the saved size), size before and after."""
        return compressor.finish(plan.compression.pop(part), size_bytes)

    def own_capture(self, plan, model, part: str):
        """Text generation: the LLM bundle's own program (bundle.py), or the iOS bundle's four
        (static_bundle.py), captured here instead of the Core ML package's interface; None: the shared capture."""
        if is_ios(plan):
            return static_bundle.capture(plan, model, part)
        return bundle.capture(plan, model, part) if bundle.applies(plan.cfg) else None

    def convert(self, plan, captured):
        if isinstance(captured, static_bundle.StaticCapture):
            return _quiet(lambda: static_bundle.convert(plan, captured))
        if isinstance(captured, bundle.BundleCapture):
            return _quiet(lambda: _to_coreai(plan, captured, bundle.INPUT_NAMES, bundle.OUTPUT_NAMES, bundle.STATE_NAMES))
        if captured.exporter != "torch.export":
            raise ConversionError("coreai-torch converts torch.export programs only, and torch.export could not "
                                  "capture it (it was traced instead, which Core ML alone converts); choose the Core ML format")
        cfg, part = plan.cfg, captured.part
        return _quiet(lambda: _to_coreai(plan, captured, [spec.name for spec in cfg.inputs(part)],
                                         [spec.name for spec in cfg.outputs(part)], None))

    def package_path(self, plan, part: str) -> str:
        name = package_filename(plan.source.name, plan.task, plan.options, part, len(plan.parts))
        if plan.options.naming == "exporters":  # coreml/<task>/... -> coreai/<task>/...
            name = "coreai/" + name.split("/", 1)[1]
        stem = name.removesuffix(".mlpackage")
        if bundle.applies(plan.cfg):  # the LLM bundle's folder, its .aimodel inside (export/pipeline.py:316-319)
            folder, _, last = stem.rpartition("/")
            return (folder + "/" if folder else "") + bundle.bundle_path(last)
        return stem + ".aimodel"

    def save(self, plan, part: str, artifact, path: Path) -> None:
        from coreai.authoring.asset import AIModelAssetMetadata

        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = AIModelAssetMetadata()
        metadata.author = "Core ML Converter"
        cfg = plan.cfg
        license_name = getattr(cfg.hf_config, "license", None)
        if license_name:
            metadata.license = str(license_name)
        metadata.model_description = package_description(plan.source.display, cfg, part)
        for key, value in self.metadata(plan, part).items():
            metadata.set_custom(key, value)
        artifact.save_asset(Path(path), metadata=metadata)
        if bundle.applies(cfg):
            bundle.write(plan, Path(path), static_bundle.context_for(cfg) if is_ios(plan) else None)

    @staticmethod
    def metadata(plan, part: str) -> dict[str, str]:
        """The Core ML package's metadata keys, plus what only an .aimodel needs: the
        coreai-* versions and the interface a reader cannot get from the file (the bounds
        of a flexible axis, the class labels)."""
        cfg, options = plan.cfg, plan.options
        values = package_metadata(name=plan.hub_name, task=cfg.task, architecture=cfg.model_class_label(),
                                  precision=options.precision, options=options.to_dict(), part=part)
        values.pop("coremltools_version", None)
        values.update(cfg.package_metadata(part))  # the family's own keys (an image-text model's logit scale)
        values["coreai_torch_version"] = package_version("coreai-torch")
        values["coreai_core_version"] = package_version("coreai-core")
        if is_ios(plan):  # every function's shapes are fixed: nothing to bound
            interface = {}
        elif bundle.applies(cfg):
            interface = bundle.interface(cfg)
        else:
            interface = {spec.name: _bounds(spec.shape, options, cfg.ranged_axes()) for spec in cfg.inputs(part)}
        values["coreml_converter_input_shapes"] = json.dumps(interface)
        labels = cfg.class_labels()
        if labels:
            values["coreml_converter_class_labels"] = json.dumps(list(labels))
        return values

    def discard(self, artifact) -> None:
        pass  # an AIProgram lives in memory only

    def keep_chunk(self, plan, part: str, artifact, scratch: Path):
        raise ConversionError("Core AI output converts a model whole; chunked conversion is Core ML's.")

    def stitch(self, plan, part: str, chunks: list, scratch: Path):
        raise ConversionError("Core AI output converts a model whole; chunked conversion is Core ML's.")

    def describe(self, path: Path) -> dict:
        """Inputs, outputs, states and metadata as saved, in describe_spec's shape: a `?`
        axis takes its bounds from the package's own metadata (the .aimodel keeps none). The iOS
        bundle is described by its decode function at the largest context (what an app calls most)."""
        if static_bundle.is_static(path):
            folder = bundle_folder(path)
            context = bundle.read(folder)["language"]["max_context_length"] if folder else static_bundle.MIN_CONTEXT
            return described(path, f"{static_bundle.EXTEND}_{context}_{static_bundle.QUERIES[0]}")
        return described(path)

    def runner(self, path: Path):
        if static_bundle.is_static(path):
            raise UserInputError("The iOS Core AI LLM bundle is driven by its own engine (validation drives it as "
                                 "StaticShapeEngine does); running it here one call at a time is not available yet.")
        folder = bundle_folder(path)
        if folder is not None:  # an LLM bundle's program runs as Apple's engine runs it
            return CoreAILanguageModelEngine(path, bundle.read(folder)["language"]["max_context_length"])
        return CoreAIRunner(path)

    def validates_itself(self, plan, part: str) -> bool:
        """An LLM bundle is validated as the app drives it (bundle.validate), not with the
        Core ML package's input sets."""
        return bundle.applies(plan.cfg)

    def validate_itself(self, plan, model, part: str, path: Path, earlier: dict | None, progress=None) -> dict:
        if static_bundle.is_static(path):  # decided by the file: validate_package reads no options
            return static_bundle.validate(plan, model, part, path, earlier, STATIC_KIND, progress)
        return bundle.validate(plan, model, part, path, earlier, BUNDLE_KIND, progress)

    def device_runtime(self) -> tuple[bool, str]:
        return False, ""  # its runtime's run is the runner's: no separate on-device rows

    def device_runs(self, path: Path) -> list:
        return []

    def unit_analysis(self, info: dict, runner) -> None:
        return None  # no per-unit placement rules are published for Core AI programs

    def validation_kind(self, on_device: bool) -> str:
        return "the Core AI runtime (the .aimodel executed on this machine's CPU)"


BUNDLE_KIND = ("the Core AI runtime (the LLM bundle's .aimodel executed on this machine's CPU, driven as "
               "CoreAILanguageModel drives it)")
STATIC_KIND = ("the Core AI runtime (the iOS LLM bundle's .aimodel executed on this machine's CPU, driven as "
               "StaticShapeEngine drives it)")


def _to_coreai(plan, captured, input_names, output_names, state_names):
    import coreai_torch

    cfg, part = plan.cfg, captured.part
    program = captured.program  # decomposed by decompositions() as it was captured
    if plan.options.precision == "float16":
        from coreai_opt.casting import cast_fp32_to_fp16

        with faster_float16_cast():
            program = cast_fp32_to_fp16(program, ignored_ops=_inside_a_norm)
    converter = coreai_torch.TorchConverter().add_exported_program(
        program,
        input_names=list(input_names),
        output_names=list(output_names),
        state_names=list(state_names) if state_names else (_state_names(program, cfg, part) or None),
    )
    try:
        result = converter.to_coreai()
    except Exception as error:  # coreai-torch raises plain exceptions for ops it lacks
        raise ConversionError(f"coreai-torch could not convert the {part} of this {cfg.hf_config.model_type} model: "
                              f"{str(error).splitlines()[0][:300]}") from error
    return result


def _inside_a_norm(node) -> bool:
    """An op of a norm module (RMSNorm, LayerNorm, ...), which coreai-opt's float16 pass keeps
    in float32. transformers' norms are element ops (x.pow(2).mean() ...), not the composite
    norm coreai-torch computes in float32 itself, and a real LLM's massive activations square
    past float16's 65504: SmolLM2-135M's float16 program gave garbage (logits 29 off, top-1 0 %)
    and with its norms in float32 matches (0.12, top-1 100 %)."""
    stack = node.meta.get("nn_module_stack") or {}
    return any("Norm" in str(module_type) for _, module_type in stack.values())


def _state_names(program, cfg, part: str) -> list[str]:
    """The Core ML states' names (keyCache, valueCache) for the buffers the program mutates,
    in coreai-torch's order (its placeholders'); the buffers carry those names already."""
    wanted = {spec.name for spec in cfg.states(part)}
    if not wanted:
        return []
    mutated = set(program.graph_signature.buffers_to_mutate.values())
    names = [spec.target for spec in program.graph_signature.input_specs
             if spec.kind.name == "BUFFER" and spec.target in mutated]
    if set(names) != wanted:
        raise ConversionError(f"the {part}'s program mutates {sorted(names)}, not its states {sorted(wanted)}")
    return names


def _bounds(shape: tuple, options, ranged: dict) -> list:
    """An input's shape with each flexible axis as [low, high]."""
    sequence = options.sequence_length
    out = []
    for dim in shape:
        if dim in ranged:
            out.append(list(ranged[dim]))
        elif dim == SEQ:
            out.append(sequence.maximum if sequence.kind == "fixed" else [sequence.minimum, sequence.maximum])
        else:
            out.append(dim)
    return out


def _quiet(convert):
    """coreai-torch prints a progress bar and warns about torch's local-build suffix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert()
