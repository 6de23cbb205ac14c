"""Configs for encoder-decoder text models (T5, BART): text2text-generation is two
packages, an encoder and a decoder, as exporters laid them out."""

from __future__ import annotations

import torch

from .base import SEQ, CoreMLConfig, InputSpec, OutputKind, OutputSpec, additive_mask


class EncoderWrapper(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        return (self.encoder(input_ids=input_ids, attention_mask=additive_mask(attention_mask, causal=False)).last_hidden_state,)


class DecoderWrapper(torch.nn.Module):
    """One decoder step over the whole (padded) target so far, given the encoder's output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids, decoder_attention_mask, encoder_last_hidden_state, encoder_attention_mask):
        query_length = decoder_input_ids.shape[-1]
        result = self.model(
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=additive_mask(decoder_attention_mask, causal=True),
            encoder_outputs=(encoder_last_hidden_state,),
            attention_mask=additive_mask(encoder_attention_mask, causal=False).expand(-1, -1, query_length, -1),
            use_cache=False,
        )
        return (result.logits,)


class Seq2SeqConfig(CoreMLConfig):
    modality = "text"
    supported_tasks = ("text2text-generation", "feature-extraction")

    def parts(self) -> list[str]:
        return ["encoder", "decoder"] if self.task == "text2text-generation" else ["encoder"]

    def model_class_name(self) -> str:
        # feature-extraction is the encoder's hidden states; the seq2seq class holds both halves.
        return "AutoModelForSeq2SeqLM"

    def hidden_size(self) -> int:
        return self.attributes.hidden_size

    def fed_by(self, part: str = "encoder") -> str | None:
        return "encoder" if part == "decoder" else None

    def inputs(self, part: str = "encoder") -> list[InputSpec]:
        ids = InputSpec("input_ids", (1, SEQ), "int32", "Indices of input tokens in the vocabulary")
        mask = InputSpec("attention_mask", (1, SEQ), "int32", "1 for tokens to attend to, 0 for padding")
        if part == "encoder":
            return [ids, mask]
        # The encoder side is fixed at the longest length: pad its output and mask the padding.
        source_length = self.options.sequence_length.maximum
        return [
            InputSpec("decoder_input_ids", (1, SEQ), "int32", "Target tokens generated so far (starting with the decoder start token)"),
            InputSpec("decoder_attention_mask", (1, SEQ), "int32", "1 for target tokens, 0 for padding"),
            InputSpec(
                "encoder_last_hidden_state",
                (1, source_length, self.hidden_size()),
                "float32",
                "The encoder package's last_hidden_state, padded to the full length",
            ),
            InputSpec("encoder_attention_mask", (1, source_length), "int32", "The encoder's attention mask, padded with 0"),
        ]

    def outputs(self, part: str = "encoder") -> list[OutputSpec]:
        if part == "encoder":
            return [OutputSpec("last_hidden_state", "Hidden state of each input token at the encoder's last layer", kind=OutputKind.EMBEDDINGS)]
        return [OutputSpec("logits", "Next-token scores for each target position (before softmax)", kind=OutputKind.TOKEN_SCORES)]

    def wrap(self, model, part: str = "encoder"):
        if part == "encoder":
            return EncoderWrapper(model.get_encoder())
        return DecoderWrapper(model)

    def example_tensor(self, spec, shape, generator):
        if spec.name == "decoder_input_ids":
            start = self.attributes.decoder_start_token_id or 0
            ids = super().example_tensor(spec, shape, generator)
            ids[..., 0] = start
            return ids
        if spec.dtype.startswith("float"):
            return torch.randn(shape, generator=generator)
        return super().example_tensor(spec, shape, generator)
