"""The architecture registry: model_type (from config.json) -> its CoreMLConfig class.

The registry is the tested list: every entry is converted and validated in the test suite
(tests/models.py). A model type outside it still converts through the generic path
(generic.py: the family transformers says it belongs to, marked untested, with validation
deciding). To add an architecture, map its model_type to the family class it behaves like
(or a small subclass that overrides what differs), then add it to tests/models.py.
"""

from __future__ import annotations

from ..errors import UnsupportedArchitecture
from .base import CoreMLConfig, InputSpec, OutputSpec, Tolerances
from .generic import generic_config_class
from .seq2seq import Seq2SeqConfig
from .text import BertConfig, DebertaV2Config, DecoderConfig, DistilBertConfig, MobileBertConfig, ModernBertConfig
from .vision import SegformerConfig, VisionConfig, YolosConfig

ARCHITECTURES: dict[str, type[CoreMLConfig]] = {
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
}


def config_class_for(model_type: str) -> type[CoreMLConfig]:
    """The registry's config class, or for another model type its family's, marked untested
    (generic.py; UnsupportedArchitecture when it belongs to no family we convert)."""
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    if not model_type:
        raise UnsupportedArchitecture("", "The model's config.json has no 'model_type', so its architecture is unknown.")
    return generic_config_class(model_type)


def supported_tasks(model_type: str) -> list[str]:
    """Every task we can convert for this model type (from a default config of it)."""
    from transformers import AutoConfig

    cls = config_class_for(model_type)
    return cls.available_tasks(AutoConfig.for_model(model_type))


__all__ = [
    "ARCHITECTURES",
    "CoreMLConfig",
    "InputSpec",
    "OutputSpec",
    "Tolerances",
    "config_class_for",
    "supported_tasks",
]
