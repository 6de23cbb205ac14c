"""`ExportConfig`: everything the export pipeline needs to know about one architecture
family, whatever the output format. It is named as optimum names its base
(exporters/base.py), where `OnnxConfig` is the format-specific subclass; here no family is
tied to a format: the formats live in `converters/backends/`.

A config answers, for a model config + task + options:
- which packages to build (`parts`: one, or encoder and decoder),
- each package's inputs and outputs (names, shapes, dtypes, descriptions, post-processing),
- how to wrap the transformers model so its forward takes exactly those inputs,
- example inputs for tracing, quirks a backend must handle, its element-wise validation
  thresholds (`tolerances`: plain data that validation reads; the checks live in validation/).
Subclasses override the small hooks; the pipeline in `converters/export.py` does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from ..errors import UserInputError
from ..options import TOLERANCES, ConversionOptions, meets
from ..tasks import TASKS
from ..tolerances import Tolerances
from .attributes import ModelAttributes

SEQ = "seq"  # marks the sequence-length axis in a shape (fixed, enumerated or a range, per options)
QUERY, END = "query", "end"  # stateful decoders: new tokens, and cache slots in use (always ranged)
ROWS = "rows"  # stateful decoders: the causal mask's rows (1 from swift-transformers, query from others)
MASK_VALUE = -1e4  # additive mask value: large enough to zero a softmax term, safe in float16
CLASSIFIER_TASKS = ("text-classification", "image-classification")  # packages with a classLabel


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple  # ints, with SEQ where the sequence length goes
    dtype: str  # "int32", "float16", "float32"
    description: str
    image: dict | None = None  # for image inputs: scale, bias, color layout


@dataclass(frozen=True)
class StateSpec:
    name: str
    shape: tuple[int, ...]
    description: str


class OutputKind(str, Enum):
    """What an output holds; validation picks its metrics by kind, never by name."""

    TOKEN_SCORES = "token_scores"  # scores over a vocabulary or labels per token: top-1 per position
    CLASS_PROBABILITIES = "class_probabilities"  # a classifier's probabilities: label agreement
    EMBEDDINGS = "embeddings"  # hidden states, pooled features: cosine similarity
    LABEL_MAP = "label_map"  # a class index per pixel: label agreement
    DEPTH_MAP = "depth_map"  # a value per pixel (depth): PSNR and relative error
    CLASS_SCORES = "class_scores"  # a detector's per-query class probabilities: the best class agrees
    BOXES = "boxes"  # a detector's per-query boxes (cx, cy, w, h): IoU with PyTorch's
    VALUES = "values"  # anything else (span logits, boxes, choice scores): difference and PSNR only
    # A step's keys and values for a cache kept outside the package (Whisper's TextDecoder): difference
    # and PSNR when float; compressed, judged by the decoding they feed (validation/whisperkit.py)
    CACHE_UPDATE = "cache_update"


@dataclass(frozen=True)
class OutputSpec:
    name: str
    description: str
    postprocess: str | None = None  # "softmax" or "argmax", applied inside the package
    kind: OutputKind = OutputKind.VALUES


class ExportConfig:
    modality = "text"
    family = ""  # "decoder", "encoder", "encoder-decoder", "vision": the wrappers it uses
    tested = True  # False: an architecture outside the registry, served by its family (generic.py)
    supports_kv_cache = False  # True for decoders that can export a stateful KV cache
    # The tasks this family can serve; those transformers has no model class for are dropped.
    supported_tasks: tuple[str, ...] = ()
    # Element-wise validation thresholds, as data: validation (and the form) read them; the
    # type sits on the shared floor (converters/tolerances.py) since configs import nothing
    # above them. Compressed packages are judged by their scheme's bar instead (validation/).
    tolerances = Tolerances()
    # Graph features a backend must handle specially, by name (a backend maps each to its own
    # fix: the Core ML backend to op converters in backends/coreml/patches.py).
    quirks: tuple[str, ...] = ()
    # Set on a copy while one chunk of a big decoder's layers converts (chunks.py): the
    # decoder family then adds the hidden state to the chunk's inputs and outputs.
    chunk = None

    def __init__(self, hf_config, task: str, options: ConversionOptions | None = None, preprocessor: dict | None = None):
        self.hf_config = hf_config
        self.attributes = ModelAttributes(hf_config)
        self.task = task
        # An auto sequence length becomes this model's (options.SequenceLength.for_model).
        self.options = (options or ConversionOptions()).for_model(self.max_sequence_length())
        self.preprocessor = preprocessor or {}

    # --- what is available -------------------------------------------------------------

    @classmethod
    def available_tasks(cls, hf_config) -> list[str]:
        """Supported tasks that transformers can actually build for this model type."""
        return [t for t in cls.supported_tasks if task_has_model_class(t, hf_config)]

    # --- packages ----------------------------------------------------------------------

    def parts(self) -> list[str]:
        """Names of the packages to build; "model" unless the task needs several."""
        return ["model"]

    def inputs(self, part: str = "model") -> list[InputSpec]:
        raise NotImplementedError

    def outputs(self, part: str = "model") -> list[OutputSpec]:
        raise NotImplementedError

    def wrap(self, model: torch.nn.Module, part: str = "model") -> torch.nn.Module:
        """A module whose forward takes the inputs in order and returns the outputs in order."""
        raise NotImplementedError

    def fed_by(self, part: str = "model") -> str | None:
        """The part whose outputs feed this part's inputs (a seq2seq decoder: the encoder)."""
        return None

    def states(self, part: str = "model") -> list[StateSpec]:
        """Core ML states the package keeps between predictions (none by default)."""
        return []

    def compresses(self, part: str = "model") -> bool:
        """Whether weight compression applies to this part (all parts by default)."""
        return True

    def companion_files(self) -> tuple[str, ...]:
        """The source's files that go beside the packages, in their folder (none by default)."""
        return ()

    def ranged_axes(self) -> dict[str, tuple[int, int]]:
        """Axes other than SEQ that are always a range: symbol -> (min, max)."""
        return {}

    def example_sizes(self) -> dict[str, int]:
        """Sizes of the ranged axes used for tracing (distinct, so none is specialised)."""
        return {}

    def reference_module(self, model: torch.nn.Module, part: str = "model") -> torch.nn.Module:
        """What validation compares the package with; the wrapper itself unless the package
        computes the same thing another way (e.g. incrementally, with a cache)."""
        return self.wrap(model, part)

    def package_metadata(self, part: str = "model") -> dict[str, str]:
        """Metadata keys of the family's own that each package carries (none by default)."""
        return {}

    def class_labels(self) -> list[str] | None:
        """Labels for classifier packages (Core ML's classLabel output), else None."""
        if self.task not in CLASSIFIER_TASKS:
            return None
        id2label = getattr(self.hf_config, "id2label", None) or {}
        return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(len(id2label))]


    def max_sequence_length(self) -> int | None:
        value = self.attributes.max_positions
        return value if isinstance(value, int) and value > 0 else None

    def validation_tolerances(self) -> Tolerances:
        """This architecture's thresholds, scaled by the user's tolerance option."""
        return self.tolerances.scaled(TOLERANCES[self.options.tolerance])

    def check_options(self) -> None:
        """Refuse options this family cannot honour for this model, before any work is done
        (plan.check_request runs this among every refusal of a request)."""
        if self.options.kv_cache != "none" and not self.supports_kv_cache:
            raise UserInputError(
                f"A stateful KV cache is for decoder (text-generation) models; {self.hf_config.model_type} has none. "
                "Set the KV cache to none."
            )
        sequence = self.options.sequence_length
        limit = self.max_sequence_length()
        wanted = sequence.maximum
        if self.modality == "text" and limit and wanted > limit:
            raise UserInputError(
                f"Sequence length {wanted} is beyond this model's maximum of {limit} tokens "
                f"({self.hf_config.model_type}). Choose {limit} or less."
            )

    def model_kwargs(self) -> dict:
        """Config overrides when loading the model for this task."""
        kwargs = {}
        # A span-extraction head always has two outputs (start, end), whatever labels the
        # checkpoint's config lists for another task.
        if self.task == "question-answering":
            kwargs["num_labels"] = 2
        # iOS 18 / macOS 15 programs run attention as Core ML's fused op, which coremltools
        # makes from torch's scaled_dot_product_attention only: load the model with the
        # "sdpa" attention even if its config.json asks for "eager" (families that cannot,
        # e.g. Gemma 2 with its soft-capped scores, keep their own and get matmul + softmax).
        if self._fused_attention_target() and self._model_class_supports_sdpa():
            kwargs["attn_implementation"] = "sdpa"
        return kwargs

    def _fused_attention_target(self) -> bool:
        return meets(self.options.minimum_deployment_target, ("iOS18", "macOS15"))

    def _model_class_supports_sdpa(self) -> bool:
        return bool(getattr(self.model_class(), "_supports_sdpa", False))

    def model_class_name(self) -> str:
        return TASKS[self.task].auto_class

    def model_class_label(self) -> str:
        """The transformers class the checkpoint loads as for this task (LlamaForCausalLM)."""
        return self.model_class().__name__

    def model_class(self):
        """That class (None if transformers has none). Where the Auto class maps a config to
        several (DeiT: with and without a distillation head), the one config.json's
        `architectures` names, as from_pretrained picks it; else the first."""
        import transformers

        auto = getattr(transformers, self.model_class_name())
        found = auto._model_mapping.get(type(self.hf_config), None)
        if not isinstance(found, (tuple, list)):
            return found
        named = set(getattr(self.hf_config, "architectures", None) or [])
        return next((cls for cls in found if cls.__name__ in named), found[0])

    # --- example inputs ------------------------------------------------------------------

    def example_inputs(self, part: str = "model", sequence_length: int | None = None) -> dict[str, torch.Tensor]:
        """Deterministic inputs shaped like the package's, used for tracing."""
        length = sequence_length or self.options.sequence_length.maximum
        generator = torch.Generator().manual_seed(0)
        tensors = {}
        sizes = {SEQ: length, **self.example_sizes()}
        for spec in self.inputs(part):
            shape = [sizes.get(d, d) for d in spec.shape]
            tensors[spec.name] = self.example_tensor(spec, shape, generator)
        return tensors

    def example_tensor(self, spec: InputSpec, shape: list[int], generator: torch.Generator) -> torch.Tensor:
        if spec.dtype == "int32":
            if "mask" in spec.name.lower():
                return torch.ones(shape, dtype=torch.int32)
            if "type" in spec.name:
                return torch.zeros(shape, dtype=torch.int32)
            high = max(self.attributes.vocab_size or 100, 4)
            return torch.randint(3, high, shape, generator=generator, dtype=torch.int32)
        return torch.rand(shape, generator=generator)


def task_has_model_class(task: str, hf_config) -> bool:
    """Whether transformers has a model class for (task, model type)."""
    import transformers

    auto = getattr(transformers, TASKS[task].auto_class)
    return type(hf_config) in auto._model_mapping


def additive_mask(attention_mask: torch.Tensor, causal: bool, query_length: int | None = None) -> torch.Tensor:
    """A ready-made 4-D additive mask [batch, 1, query, key] from a 0/1 padding mask.

    transformers 5 builds its own masks with ops coremltools cannot convert (`new_ones`,
    bool `__and__`); a 4-D float mask is used as-is, so the package computes it here from
    plain arithmetic instead.
    """
    key_length = attention_mask.shape[-1]
    padding = (1.0 - attention_mask.to(torch.float32))[:, None, None, :] * MASK_VALUE
    if not causal:
        return padding
    query_length = query_length or key_length
    causal_part = torch.triu(torch.full((query_length, key_length), MASK_VALUE), diagonal=1 + key_length - query_length)
    return padding + causal_part[None, None]


def first_output(outputs, key: str):
    """A field of a transformers ModelOutput, by name."""
    value = outputs[key] if isinstance(outputs, dict) else getattr(outputs, key)
    if value is None:
        raise RuntimeError(f"the model returned no '{key}'")
    return value
