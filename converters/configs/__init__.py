"""The architecture registry: model_type (from config.json) -> its CoreMLConfig class.

To add an architecture, map its model_type to the family class it behaves like (or a
small subclass that overrides what differs), then add it to tests/models.py so every
task it serves is converted in the test suite.
"""

from __future__ import annotations

from ..errors import UnsupportedArchitecture
from .base import CoreMLConfig, InputSpec, OutputSpec, Tolerances
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
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise UnsupportedArchitecture(
            model_type,
            f"The architecture '{model_type}' is not supported yet. Supported: {', '.join(sorted(ARCHITECTURES))}. "
            "Ask for it in an issue, or add it (README: 'Adding an architecture')."
        ) from None


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
