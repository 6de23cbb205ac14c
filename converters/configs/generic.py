"""The generic path: a model type outside the registry gets the family transformers says it
belongs to, and validation decides whether the package is right.

transformers itself knows what kind of model each type is: which `AutoModelFor…` classes it
appears in, whether its config `is_encoder_decoder`, whether its config nests other models'
configs. From that:

- encoder-decoder text models (in the seq2seq-LM mapping)   -> the encoder-decoder family
- bidirectional text encoders (a masked-LM class, no causal) -> the encoder family
- causal language models                                   -> the decoder family
- image models (image-classification or image backbones)    -> the vision family
- depth estimators (a depth-estimation class)               -> the depth family
- detectors (an object-detection class)                     -> the DETR-style detection family
- image-and-text embedders (a zero-shot image classification class whose config nests
  exactly a text and a vision config, as CLIP's does)         -> the image-text family
- speech, video, time series, and models that nest several models' configs (image + text,
  encoder + decoder pairs) are refused with what they are: our families have no wrappers
  for their inputs.

Such a config class is the family's own with `tested = False`: the report, the form's model
summary and the card say "architecture not in the tested list", and validation (which always
runs for it) says whether the package computes what the model computes. A registry entry is
only needed for what the family does not do by itself (README: 'Adding an architecture').
"""

from __future__ import annotations

import functools

from ..errors import UnsupportedArchitecture, UserInputError
from .base import ExportConfig
from .cache_limits import stateful_cache_refusal
from .depth import DepthConfig
from .detection import DetectionConfig
from .image_text import ImageTextConfig
from .seq2seq import Seq2SeqConfig
from .text import DecoderConfig, EncoderConfig
from .vision import VisionConfig

# What a refused kind of model is, named by the transformers mappings that list it.
_OTHER_KINDS = {
    "speech or audio": (
        "MODEL_FOR_CTC_MAPPING_NAMES", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
        "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_AUDIO_FRAME_CLASSIFICATION_MAPPING_NAMES",
        "MODEL_FOR_AUDIO_XVECTOR_MAPPING_NAMES", "MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING_NAMES",
        "MODEL_FOR_TEXT_TO_SPECTROGRAM_MAPPING_NAMES",
    ),
    "image-and-text (multimodal)": (
        "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",
        "MODEL_FOR_VISUAL_QUESTION_ANSWERING_MAPPING_NAMES", "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",
        "MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES", "MODEL_FOR_DOCUMENT_QUESTION_ANSWERING_MAPPING_NAMES",
    ),
    "video": ("MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES",),
    "time-series": (
        "MODEL_FOR_TIME_SERIES_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_TIME_SERIES_PREDICTION_MAPPING_NAMES",
        "MODEL_FOR_TIME_SERIES_REGRESSION_MAPPING_NAMES",
    ),
}
_ENCODER_DECODER = ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",)
_ENCODER = ("MODEL_FOR_MASKED_LM_MAPPING_NAMES",)
_TEXT_HEADS = (
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES", "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES",
)
_DECODER = ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",)
_DEPTH = ("MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",)
_DETECTION = ("MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",)
_IMAGE_TEXT = ("MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",)
_VISION = ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_IMAGE_MAPPING_NAMES",
           "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES")


def _listed(model_type: str, mappings: tuple[str, ...]) -> bool:
    from transformers.models.auto import modeling_auto

    return any(model_type in getattr(modeling_auto, name, {}) for name in mappings)


def _untested(family: type[ExportConfig], **overrides) -> type[ExportConfig]:
    """The family's config class, marked as serving an architecture it was not tested on."""
    return type(f"Untested{family.__name__}", (family,), {"tested": False, **overrides})


# Causal-LM types whose model attends to later tokens too unless its config says is_decoder: true
# (read in transformers 5.23: BertGenerationEncoder builds a bidirectional mask otherwise). Other
# types carry is_decoder: false without reading it (GPT-NeoX-Japanese) or set it themselves (TrOCR).
DECODER_ONLY_WHEN_SAID = frozenset({"bert-generation"})


class GenericDecoderConfig(DecoderConfig):
    """The decoder family for an architecture outside the registry: it also refuses a stateful
    package for a decoder whose cache the keyCache/valueCache states cannot hold (recurrent
    layers, per-layer head sizes, no cache at all: cache_limits.py), text generation for a
    model whose config says it is no decoder (BertGeneration's encoder half), and a sequence
    longer than an attention chunk (Llama 4), before any weights load, instead of failing
    inside the capture or converting a model that computes something else."""

    def check_options(self) -> None:
        if self.task == "text-generation" and self.hf_config.model_type in DECODER_ONLY_WHEN_SAID \
                and not getattr(self.hf_config, "is_decoder", False):
            raise UserInputError(
                f"This {self.hf_config.model_type} model is not a decoder: its config.json says is_decoder: false, so "
                "each token attends to the tokens after it too, and it cannot generate text one token at a time (it is "
                "the encoder half of an encoder-decoder pair). Choose a checkpoint whose config sets is_decoder: true, "
                "or the feature-extraction task."
            )
        chunk = getattr(self.hf_config, "attention_chunk_size", None)
        chunked = "chunked_attention" in (getattr(self.hf_config, "layer_types", None) or [])
        if self.causal and chunked and isinstance(chunk, int) and 0 < chunk < self.options.sequence_length.maximum:
            raise UserInputError(
                f"Sequence length {self.options.sequence_length.maximum} is longer than this model's attention chunk "
                f"({chunk} tokens: its chunked-attention layers see only the tokens of their own chunk), whose masks a "
                f"package cannot give yet. Choose {chunk} or less."
            )
        if self.stateful:
            why = stateful_cache_refusal(self.hf_config)
            if why:
                raise UserInputError(
                    f"A stateful KV cache is not supported for {self.hf_config.model_type} yet: {why}. "
                    "Set the KV cache to none (the package then takes the whole sequence each call), or ask for it in an issue."
                )
        super().check_options()


class GenericImageTextConfig(ImageTextConfig):
    """The image-text family for a model type outside the registry: whether its text tower is
    causal is probed on the model itself (its own 2-D mask against ours), and its probability
    is the one transformers' zero-shot pipeline applies (sigmoid for a SigLIP kind, else softmax)."""

    causal_text = None

    def wrap(self, model, part="image_encoder"):
        if self.causal_text is None:
            self.causal_text = _text_is_causal(model, self)
        self.probability = "sigmoid" if "siglip" in self.hf_config.model_type else "softmax"
        return super().wrap(model, part)


def _text_is_causal(model, cfg) -> bool:
    import torch

    from .base import additive_mask, first_output

    example = cfg.example_inputs("text_encoder")
    ids, mask = example["input_ids"], example["attention_mask"].clone()
    mask[..., mask.shape[-1] // 2:] = 0  # padding, so the probe sees the mask's effect too
    with torch.no_grad():
        own = first_output(model.get_text_features(input_ids=ids.long(), attention_mask=mask.long()), "pooler_output")
        causal = first_output(model.get_text_features(input_ids=ids, attention_mask=additive_mask(mask, causal=True)), "pooler_output")
    return bool(torch.allclose(own, causal, atol=1e-4))


# Outputs and mask conventions the registry's members share but an unknown member may lack:
# the generic encoder and vision classes export no pooler (not every model has one), and a
# text model's mask convention is probed on the model itself (TextConfig.probe_mask).
GENERIC_FAMILIES: dict[str, type[ExportConfig]] = {
    "encoder-decoder": _untested(Seq2SeqConfig),
    "encoder": _untested(EncoderConfig, probe_mask=True),
    "decoder": _untested(GenericDecoderConfig, probe_mask=True),
    "vision": _untested(VisionConfig, has_pooler=False),
    "depth": _untested(DepthConfig),
    "detection": _untested(DetectionConfig),
    "image-text": _untested(GenericImageTextConfig),
}


# Decoders of transformers 5.23 the generic path cannot convert, and why (the sweep of its
# *ForCausalLM types, docs/decoder-families.md): refused before any work, saying why, instead
# of failing inside the conversion after the download.
NOT_CONVERTED = {
    "cpmant": (
        "it ignores the attention mask it is given (transformers calls it a dummy) and builds its own from the token "
        "ids inside the model: padding on the left, counted as the ids that are 0, its own prompt tokens put before the "
        "text, and every token attending to the tokens after it too; that mask takes a logical and of boolean masks, "
        "which coremltools cannot convert, and a package's right-padded input would change its answer"
    ),
}


@functools.lru_cache(maxsize=None)
def generic_config_class(model_type: str) -> type[ExportConfig]:
    """The family config class for a model type outside the registry (UnsupportedArchitecture
    saying why when there is none)."""
    family = family_of(model_type)
    if model_type in NOT_CONVERTED:
        raise UnsupportedArchitecture(
            model_type,
            f"The architecture '{model_type}' cannot be converted yet: {NOT_CONVERTED[model_type]}. "
            "Ask for it in an issue.",
        )
    return GENERIC_FAMILIES[family]


def family_of(model_type: str) -> str:
    """"decoder", "encoder", "encoder-decoder", "vision", "depth", "detection" or "image-text": what transformers says
    `model_type` is."""
    from transformers import AutoConfig

    try:
        hf_config = AutoConfig.for_model(model_type)
    except ValueError:
        raise UnsupportedArchitecture(
            model_type,
            f"transformers does not know the architecture '{model_type}'. It may be newer than the transformers "
            "this service runs, or need the repo's own code, which this service never runs (trust_remote_code). "
            "Ask for it in an issue.",
        ) from None
    nested = [name for name in getattr(hf_config, "sub_configs", {}) or {}]
    if _listed(model_type, _DEPTH):
        return "depth"
    if _listed(model_type, _DETECTION):
        return "detection"
    if _listed(model_type, _IMAGE_TEXT) and sorted(nested) == ["text_config", "vision_config"]:
        return "image-text"
    for kind, mappings in _OTHER_KINDS.items():
        if _listed(model_type, mappings):
            return _refuse(model_type, f"it is a {kind} model")
    if nested:
        return _refuse(model_type, f"its config nests other models' configs ({', '.join(nested)}): a composite model")
    if getattr(hf_config, "is_encoder_decoder", False):
        if _listed(model_type, _ENCODER_DECODER):
            return "encoder-decoder"
        return _refuse(model_type, "it is an encoder-decoder model without a text-to-text class")
    if _listed(model_type, _ENCODER) or (_listed(model_type, _TEXT_HEADS) and not _listed(model_type, _DECODER)):
        return "encoder"
    if _listed(model_type, _DECODER):
        return "decoder"
    if _listed(model_type, _VISION):
        return "vision"
    return _refuse(model_type, "transformers lists it for no task this service converts")


def _refuse(model_type: str, why: str):
    raise UnsupportedArchitecture(
        model_type,
        f"The architecture '{model_type}' cannot be converted: {why}, and this service converts text decoders, "
        "text encoders, text encoder-decoders and image models. Ask for it in an issue.",
    )
