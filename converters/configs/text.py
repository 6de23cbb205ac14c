"""Configs for text models: encoders (BERT family) and decoders (GPT / Llama family)."""

from __future__ import annotations

import torch

from .base import SEQ, CoreMLConfig, InputSpec, OutputSpec, additive_mask, first_output

NUM_CHOICES = 4  # multiple-choice packages score this many candidate texts at once

# Which model output feeds each package output, per task (output name -> ModelOutput field).
_TASK_OUTPUTS = {
    "fill-mask": [OutputSpec("token_scores", "Probability of each vocabulary token at each position (after softmax)", "softmax")],
    "text-classification": [OutputSpec("probabilities", "Probability of each class (after softmax)", "softmax")],
    "token-classification": [OutputSpec("token_scores", "Probability of each label for each token (after softmax)", "softmax")],
    "question-answering": [
        OutputSpec("start_logits", "Score of each token being the start of the answer"),
        OutputSpec("end_logits", "Score of each token being the end of the answer"),
    ],
    "multiple-choice": [OutputSpec("probabilities", "Probability of each choice (after softmax)", "softmax")],
    "text-generation": [OutputSpec("logits", "Next-token scores for each position (before softmax)")],
}
_SOURCE_FIELD = {
    "token_scores": "logits",
    "probabilities": "logits",
    "start_logits": "start_logits",
    "end_logits": "end_logits",
    "logits": "logits",
    "last_hidden_state": "last_hidden_state",
    "pooler_output": "pooler_output",
}


class TextModelWrapper(torch.nn.Module):
    """Calls a transformers text model with a ready-made mask and returns the package's outputs.

    Inputs arrive positionally in the order of the config's `inputs()`: ids, 0/1 mask and
    optionally token type ids. Softmax post-processing happens here so it is in the package.
    """

    def __init__(self, model, outputs: list[OutputSpec], causal: bool, native_mask: bool, flatten_choices: bool):
        super().__init__()
        self.model = model
        self.outputs = outputs
        self.causal = causal
        self.native_mask = native_mask
        self.flatten_choices = flatten_choices

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.causal:
            kwargs["use_cache"] = False
        if self.native_mask:
            kwargs["attention_mask"] = attention_mask
            result = self.model(**kwargs)
        elif self.flatten_choices:
            result = self._forward_choices(kwargs, attention_mask)
        else:
            kwargs["attention_mask"] = additive_mask(attention_mask, self.causal)
            result = self.model(**kwargs)
        values = []
        for spec in self.outputs:
            value = first_output(result, _SOURCE_FIELD[spec.name])
            if spec.postprocess == "softmax":
                value = torch.softmax(value.float(), dim=-1)
            values.append(value)
        return tuple(values)

    def _forward_choices(self, kwargs: dict, attention_mask):
        """Multiple-choice heads flatten [1, choices, seq] to [choices, seq] themselves and
        would flatten a 4-D mask too; hand the ready-made mask to the inner encoder instead."""
        flat = attention_mask.reshape(-1, attention_mask.shape[-1])
        mask = additive_mask(flat, self.causal)

        def use_mask(module, args, module_kwargs):
            return args, {**module_kwargs, "attention_mask": mask}

        handle = self.model.base_model.register_forward_pre_hook(use_mask, with_kwargs=True)
        try:
            return self.model(**kwargs)
        finally:
            handle.remove()


class TextConfig(CoreMLConfig):
    modality = "text"
    causal = False
    native_mask = False  # True: pass the 0/1 mask through (models that build their own)
    has_pooler = False  # feature-extraction also exports pooler_output

    def inputs(self, part: str = "model") -> list[InputSpec]:
        shape = (1, NUM_CHOICES, SEQ) if self.task == "multiple-choice" else (1, SEQ)
        ids, mask = self.input_names()
        specs = [
            InputSpec(ids, shape, "int32", "Indices of input tokens in the vocabulary"),
            InputSpec(mask, shape, "int32", "1 for tokens to attend to, 0 for padding"),
        ]
        if self.task == "multiple-choice" and (getattr(self.hf_config, "type_vocab_size", 0) or 0) > 1:
            specs.append(InputSpec("token_type_ids", shape, "int32", "0 for the first text (context), 1 for the second (choice)"))
        return specs

    def input_names(self) -> tuple[str, str]:
        return "input_ids", "attention_mask"

    def outputs(self, part: str = "model") -> list[OutputSpec]:
        if self.task == "feature-extraction":
            specs = [OutputSpec("last_hidden_state", "Hidden state of each token at the last layer")]
            if self.has_pooler:
                specs.append(OutputSpec("pooler_output", "Pooled summary of the sequence (first token, after the pooler)"))
            return specs
        return list(_TASK_OUTPUTS[self.task])

    def wrap(self, model, part: str = "model"):
        return TextModelWrapper(
            model,
            self.outputs(part),
            causal=self.causal,
            native_mask=self.native_mask,
            flatten_choices=self.task == "multiple-choice",
        )


class EncoderConfig(TextConfig):
    supported_tasks = (
        "feature-extraction",
        "fill-mask",
        "text-classification",
        "token-classification",
        "question-answering",
        "multiple-choice",
    )


class DecoderConfig(TextConfig):
    causal = True
    supported_tasks = (
        "text-generation",
        "feature-extraction",
        "text-classification",
        "token-classification",
        "question-answering",
    )

    def input_names(self) -> tuple[str, str]:
        # swift-transformers' LanguageModel reads inputIds/attentionMask; exporters used snake case.
        if self.task == "text-generation" and self.options.naming == "swift-transformers":
            return "inputIds", "attentionMask"
        return "input_ids", "attention_mask"

    def check_options(self) -> None:
        super().check_options()
        window = getattr(self.hf_config, "sliding_window", None)
        wanted = self.options.sequence_length.maximum
        if isinstance(window, int) and 0 < window < wanted:
            from ..errors import UserInputError

            raise UserInputError(
                f"Sequence length {wanted} is longer than this model's sliding attention window ({window}); "
                f"packages longer than the window are not supported yet. Choose {window} or less."
            )


class BertConfig(EncoderConfig):
    has_pooler = True


class DebertaV2Config(EncoderConfig):
    # DeBERTa builds its relative-position mask from the 0/1 mask itself and changes
    # meaning when handed an additive one (checked in tests/test_wrappers.py).
    native_mask = True


class DistilBertConfig(EncoderConfig):
    pass


class MobileBertConfig(EncoderConfig):
    has_pooler = True


class ModernBertConfig(EncoderConfig):
    pass
