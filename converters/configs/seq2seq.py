"""Configs for encoder-decoder text models (T5, BART): text2text-generation is two
packages, an encoder and a decoder, as exporters laid them out; feature-extraction is the
encoder; text-classification and question-answering are one package each, running both
halves over the text (the decoder reads it shifted right, as transformers' heads do)."""

from __future__ import annotations

import torch

from .base import SEQ, ExportConfig, InputSpec, OutputKind, OutputSpec, additive_mask
from .text import _TASK_OUTPUTS


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


class Seq2SeqHeadWrapper(torch.nn.Module):
    """A T5/BART classification or span head on the text: encoder over the text, decoder over
    the text shifted right (decoder start token first), as transformers' heads run it.

    transformers' sequence classifier picks the last <eos> token's state with a boolean index
    (a data-dependent shape torch.export cannot capture); the same token is picked here as the
    highest position holding <eos>, by arithmetic."""

    def __init__(self, model, task: str, start_token: int, eos_token: int):
        super().__init__()
        self.model = model
        self.task = task
        self.start_token = start_token
        self.eos_token = eos_token

    def forward(self, input_ids, attention_mask):
        length = input_ids.shape[-1]
        start = torch.full_like(input_ids[:, :1], self.start_token)
        decoder_input_ids = torch.cat([start, input_ids[:, :-1]], dim=1)
        masks = dict(
            attention_mask=additive_mask(attention_mask, causal=False).expand(-1, -1, length, -1),
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=additive_mask(torch.ones_like(attention_mask), causal=True),
            use_cache=False,
        )
        if self.task == "question-answering":
            result = self.model(input_ids=input_ids, **masks)
            return result.start_logits, result.end_logits
        hidden = self.model.base_model(input_ids=input_ids, **masks)[0]
        positions = torch.arange(length, device=input_ids.device)
        last_eos = ((input_ids == self.eos_token).to(torch.int32) * (positions + 1)).argmax(dim=-1)
        sentence = hidden[torch.arange(hidden.shape[0]), last_eos]
        return (torch.softmax(self.model.classification_head(sentence).float(), dim=-1),)


class Seq2SeqConfig(ExportConfig):
    modality = "text"
    family = "encoder-decoder"
    supported_tasks = ("text2text-generation", "feature-extraction", "text-classification", "question-answering")
    HEADS = ("text-classification", "question-answering")

    def parts(self) -> list[str]:
        if self.task in self.HEADS:
            return ["model"]
        return ["encoder", "decoder"] if self.task == "text2text-generation" else ["encoder"]

    def model_class_name(self) -> str:
        if self.task in self.HEADS:
            return super().model_class_name()
        # feature-extraction is the encoder's hidden states; the seq2seq class holds both halves.
        return "AutoModelForSeq2SeqLM"

    def hidden_size(self) -> int:
        return self.attributes.hidden_size

    def fed_by(self, part: str = "encoder") -> str | None:
        return "encoder" if part == "decoder" else None

    def inputs(self, part: str = "encoder") -> list[InputSpec]:
        ids = InputSpec("input_ids", (1, SEQ), "int32", "Indices of input tokens in the vocabulary")
        mask = InputSpec("attention_mask", (1, SEQ), "int32", "1 for tokens to attend to, 0 for padding")
        if part in ("encoder", "model"):
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
        if self.task in self.HEADS:
            return list(_TASK_OUTPUTS[self.task])
        if part == "encoder":
            return [OutputSpec("last_hidden_state", "Hidden state of each input token at the encoder's last layer", kind=OutputKind.EMBEDDINGS)]
        return [OutputSpec("logits", "Next-token scores for each target position (before softmax)", kind=OutputKind.TOKEN_SCORES)]

    def wrap(self, model, part: str = "encoder"):
        if self.task in self.HEADS:
            a = self.attributes
            return Seq2SeqHeadWrapper(model, self.task, a.decoder_start_token_id or 0, a.eos_token_id)
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
