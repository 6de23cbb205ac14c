"""The architecture registry: model_type (from config.json) -> its ExportConfig class.

The registry is the tested list: every entry is converted and validated in the test suite
(tests/models.py). A model type outside it still converts through the generic path
(generic.py: the family transformers says it belongs to, marked untested, with validation
deciding). To add an architecture, map its model_type to the family class it behaves like
(or a small subclass that overrides what differs), then add it to tests/models.py.
"""

from __future__ import annotations

from transformers import AutoConfig

from ..errors import UnsupportedArchitecture, UserInputError
from ..tasks import ModelTasks, automatic_task
from .base import ExportConfig, InputSpec, OutputSpec
from .depth import DepthConfig
from .detection import DetectionConfig
from .generic import generic_config_class
from .image_text import ImageTextConfig, Siglip2Config, SiglipConfig
from .seq2seq import Seq2SeqConfig
from .text import BertConfig, DebertaV2Config, DecoderConfig, DistilBertConfig, MobileBertConfig, ModernBertConfig
from .vision import SegformerConfig, VisionConfig, YolosConfig
from .whisper import WhisperExportConfig

ARCHITECTURES: dict[str, type[ExportConfig]] = {
    # decoders
    "gpt2": DecoderConfig,
    "gpt_neox": DecoderConfig,
    "gpt_bigcode": DecoderConfig,
    "llama": DecoderConfig,
    "mistral": DecoderConfig,
    "qwen2": DecoderConfig,
    "qwen3": DecoderConfig,
    "gemma": DecoderConfig,
    "gemma2": DecoderConfig,
    "phi3": DecoderConfig,
    "falcon": DecoderConfig,
    # encoders
    "bert": BertConfig,
    "distilbert": DistilBertConfig,
    "roberta": BertConfig,
    "xlm-roberta": BertConfig,
    "deberta-v2": DebertaV2Config,
    "modernbert": ModernBertConfig,
    "mobilebert": MobileBertConfig,
    # encoder-decoders
    "t5": Seq2SeqConfig,
    "bart": Seq2SeqConfig,
    # vision
    "vit": VisionConfig,
    "convnext": VisionConfig,
    "mobilevit": VisionConfig,
    "segformer": SegformerConfig,
    "yolos": YolosConfig,
    # image-text embeddings (two packages: image and text encoders)
    "clip": ImageTextConfig,
    "siglip": SiglipConfig,
    "siglip2": Siglip2Config,
    # depth
    "depth_anything": DepthConfig,
    "dpt": DepthConfig,
    # DETR-family detectors
    "detr": DetectionConfig,
    "rt_detr": DetectionConfig,
    # speech: the three packages WhisperKit loads
    "whisper": WhisperExportConfig,
}


def config_class_for(model_type: str) -> type[ExportConfig]:
    """The registry's config class, or for another model type its family's, marked untested
    (generic.py; UnsupportedArchitecture when it belongs to no family we convert)."""
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    if not model_type:
        raise UnsupportedArchitecture("", "The model's config.json has no 'model_type', so its architecture is unknown.")
    return generic_config_class(model_type)


def supported_tasks(model_type: str) -> list[str]:
    """Every task we can convert for this model type (from a default config of it)."""
    cls = config_class_for(model_type)
    return cls.available_tasks(_default_config(model_type))


def model_tasks(config, pipeline_tag: str | None = None, where: str = "The model") -> ModelTasks:
    """The tasks for a model, from its config: config.json as a dict (or the Hub's ModelInfo
    `config`, which carries model_type and architectures) or the transformers config object,
    and its own (tasks.automatic_task, from `pipeline_tag` too). Raises UnsupportedArchitecture
    for a model type we have no config for, and UserInputError when transformers offers none of
    the family's tasks for it."""
    if isinstance(config, dict):
        model_type, architectures = config.get("model_type"), config.get("architectures")
    else:
        model_type, architectures = config.model_type, getattr(config, "architectures", None)
    if not model_type:
        raise UserInputError(f"{where}'s config.json has no 'model_type', so its architecture is unknown.")
    config_cls = config_class_for(model_type)
    hf_config = _default_config(model_type) if isinstance(config, dict) else config
    available = tuple(config_cls.available_tasks(hf_config))
    if not available:
        raise UserInputError(f"{where} is a {model_type} model, but transformers offers no task we can convert for it.")
    return ModelTasks(model_type, available, automatic_task(list(available), architectures, pipeline_tag))


def _default_config(model_type: str):
    """A transformers config of this model type: which task classes exist depends on the type."""
    return AutoConfig.for_model(model_type)


__all__ = [
    "ARCHITECTURES",
    "ExportConfig",
    "InputSpec",
    "OutputSpec",
    "config_class_for",
    "model_tasks",
    "supported_tasks",
]
