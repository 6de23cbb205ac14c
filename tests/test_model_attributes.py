"""The normalised view of config attributes (converters/configs/attributes.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import transformers as tf

from converters.configs import ARCHITECTURES
from converters.configs.attributes import ModelAttributes
from converters.configs.text import DecoderConfig
from tests.models import MODELS


@pytest.mark.parametrize("model_type", [m for m, cls in ARCHITECTURES.items() if issubclass(cls, DecoderConfig)])
def test_every_decoder_family_reads_its_cache_shape_attributes(model_type):
    config = MODELS[model_type][0]()
    model = MODELS[model_type][1](config)
    attention = next(m for name, m in model.named_modules() if name.endswith("attn") or name.endswith("attention") or name.endswith("self_attention"))
    a = ModelAttributes(config)
    assert a.num_layers == len([m for m in model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block", "Layer")) and hasattr(m, "mlp")])
    assert a.head_dim * a.num_heads >= a.hidden_size // 2
    assert 1 <= a.num_kv_heads <= a.num_heads, attention


def test_multi_query_quirks():
    bigcode = ModelAttributes(tf.GPTBigCodeConfig(n_head=4, n_embd=32, multi_query=True))
    assert (bigcode.num_heads, bigcode.num_kv_heads, bigcode.head_dim) == (4, 1, 8)
    assert ModelAttributes(tf.GPTBigCodeConfig(n_head=4, n_embd=32, multi_query=False)).num_kv_heads == 4
    falcon_old = ModelAttributes(tf.FalconConfig(num_attention_heads=4, hidden_size=32, multi_query=True, new_decoder_architecture=False))
    assert falcon_old.num_kv_heads == 1
    falcon_new = ModelAttributes(tf.FalconConfig(num_attention_heads=4, hidden_size=32, num_kv_heads=2, new_decoder_architecture=True))
    assert falcon_new.num_kv_heads == 2


def test_an_unknown_architecture_with_usual_names_is_read():
    config = SimpleNamespace(model_type="brand-new", n_layer=3, n_head=4, n_embd=64, n_positions=256, vocab_size=10)
    a = ModelAttributes(config)
    assert (a.num_layers, a.num_heads, a.num_kv_heads, a.head_dim, a.max_positions) == (3, 4, 4, 16, 256)
    assert a.sliding_window is None
    with pytest.raises(AttributeError, match="no normalised attribute 'colour'"):
        a.colour


def test_t5_has_no_length_limit():
    assert ModelAttributes(tf.T5Config(n_positions=512)).max_positions is None
