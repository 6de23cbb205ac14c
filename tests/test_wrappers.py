"""The wrappers that make models convertible (ready-made masks, post-processing) compute
what the native transformers model computes, padding included. Torch only, no Core ML."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from converters.configs import config_class_for
from converters.options import ConversionOptions
from tests.models import MODELS

TEXT_TYPES = [m for m, (_, _, modality) in MODELS.items() if modality == "text" and m not in ("t5", "bart")]
LENGTH, VALID = 12, 9  # the last 3 positions are padding


def _padded_inputs(shape=(1, LENGTH)):
    torch.manual_seed(1)
    ids = torch.randint(7, 100, shape, dtype=torch.int32)
    mask = torch.ones(shape, dtype=torch.int32)
    mask[..., VALID:] = 0
    return ids, mask


@pytest.mark.parametrize("model_type", TEXT_TYPES)
def test_text_wrapper_matches_native_forward(model_type, tiny_model):
    folder = tiny_model(model_type)
    config = tf.AutoConfig.from_pretrained(folder)
    cls = config_class_for(model_type)
    task = "text-generation" if "text-generation" in cls.available_tasks(config) else "fill-mask"
    cfg = cls(config, task, ConversionOptions())
    model = getattr(tf, cfg.model_class_name()).from_pretrained(folder).eval()
    ids, mask = _padded_inputs()
    with torch.no_grad():
        native = model(input_ids=ids.long(), attention_mask=mask.long()).logits
        wrapped = cfg.wrap(model)(ids, mask)[0]
    if task == "fill-mask":
        native = torch.softmax(native, dim=-1)
    torch.testing.assert_close(wrapped[:, :VALID], native[:, :VALID], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_multiple_choice_wrapper_matches_native_forward(model_type, tiny_model):
    folder = tiny_model(model_type)
    config = tf.AutoConfig.from_pretrained(folder)
    cfg = config_class_for(model_type)(config, "multiple-choice", ConversionOptions())
    torch.manual_seed(0)
    model = tf.AutoModelForMultipleChoice.from_pretrained(folder).eval()
    ids, mask = _padded_inputs((1, 4, LENGTH))
    mask[0, 1, 5:] = 0  # choices of different lengths
    with torch.no_grad():
        native = torch.softmax(model(input_ids=ids.long(), attention_mask=mask.long()).logits, dim=-1)
        wrapped = cfg.wrap(model)(ids, mask)[0]
    torch.testing.assert_close(wrapped, native, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", ["t5", "bart"])
def test_seq2seq_wrappers_match_native_forward(model_type, tiny_model):
    folder = tiny_model(model_type)
    config = tf.AutoConfig.from_pretrained(folder)
    cfg = config_class_for(model_type)(config, "text2text-generation", ConversionOptions.from_strings(sequence_length=LENGTH))
    model = tf.AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    ids, mask = _padded_inputs()
    target = torch.randint(7, 100, (1, LENGTH), dtype=torch.int32)
    target_mask = torch.ones_like(target)
    with torch.no_grad():
        native = model(input_ids=ids.long(), attention_mask=mask.long(), decoder_input_ids=target.long(),
                       decoder_attention_mask=target_mask.long())
        hidden = cfg.wrap(model, "encoder")(ids, mask)[0]
        logits = cfg.wrap(model, "decoder")(target, target_mask, hidden, mask)[0]
    torch.testing.assert_close(hidden[:, :VALID], native.encoder_last_hidden_state[:, :VALID], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits, native.logits, atol=1e-5, rtol=1e-4)
