"""Which decoders a stateful package's cache cannot hold yet, and why, in the user's words.

A stateful package (text.py, StatefulCausalLM) keeps two Core ML states, keyCache and
valueCache, of one shape: (layers, 1, key/value heads, context, head size). Two kinds of
decoder in transformers 5.23 do not fit that shape, and are refused before any work is done
(their default, uncached package converts):

- layers that keep a recurrent state instead of keys and values — Gated DeltaNet / linear
  attention (Qwen3-Next, OLMo-hybrid, Kimi-Linear, MiniMax; Qwen3.5, `qwen3_5_text`, is held
  with two more states, configs/qwen3_5.py), Mamba and other state
  space layers (Jamba, Bamba, Zamba, Falcon-H1, Granite-MoE-hybrid, Nemotron-H), short
  convolutions (LFM). Their cached step also needs a formulation without a loop over the
  call's tokens, which transformers' reference kernels have (a Python loop over chunks);
- layers whose keys and values differ in shape (a per-layer `head_dim` or key/value head count,
  transformers 5's `per_layer_config`), which one state shape cannot hold — except Gemma 4
  (`gemma4_text`), held with one pair of states per shape (configs/gemma4.py), which refuses
  only the Gemma 4 configs it cannot hold (more than two shapes, bidirectional attention).

The decoders whose model takes no `past_key_values` are refused too, by what they take instead:
a recurrent state (Mamba, xLSTM, RWKV, which have no `layer_types`), a cache of their own kind
(XLNet, XLM, Reformer), or none at all (openai-gpt: transformers runs it on the whole sequence at
every step).
"""

from __future__ import annotations

import inspect

from . import qwen3_5
from .gemma4 import PER_LAYER_ATTRIBUTES, LayoutRefused, cache_layout

# Layer kinds (config.layer_types) that keep a recurrent or convolution state, not keys and values.
RECURRENT_LAYER_KINDS = frozenset({"linear_attention", "mamba", "conv", "hybrid", "hybrid_sliding", "recurrent"})
# Per-layer attributes that change the shape of a layer's keys and values.
_CACHE_SHAPE_ATTRIBUTES = ("head_dim", "num_key_value_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")


def stateful_cache_refusal(hf_config) -> str | None:
    """Why a stateful package cannot hold this decoder's cache (a sentence), or None."""
    cache = _cache_argument(hf_config.model_type)
    if cache in _RECURRENT_CACHES:
        return ("its layers keep a recurrent state, not keys and values, and a stateful package holds keys and values only")
    if cache is None:
        return ("its model keeps no keys and values between calls (transformers runs it on the whole sequence at every "
                "step, with no cache), so there is no cache to keep in the package")
    if cache != "past_key_values":
        return (f"its model keeps a cache of its own kind ({cache}), not transformers' keys and values, which are what a "
                "stateful package holds")
    kinds = set(getattr(hf_config, "layer_types", None) or []) & RECURRENT_LAYER_KINDS
    try:
        if qwen3_5.cache_layout(hf_config) is not None:
            kinds -= {qwen3_5.LINEAR}  # its linear layers' states are held (configs/qwen3_5.py)
    except LayoutRefused as refused:
        return str(refused)
    kinds = sorted(kinds)
    if kinds:
        return (f"its {' and '.join(kinds)} layers keep a recurrent state, not keys and values, and a stateful package "
                "holds keys and values only")
    try:
        held = PER_LAYER_ATTRIBUTES if cache_layout(hf_config) is not None else frozenset()
    except LayoutRefused as refused:
        return str(refused)
    overridden = sorted({name for layer in _per_layer_overrides(hf_config) for name in layer
                         if name in _CACHE_SHAPE_ATTRIBUTES and name not in held})
    if overridden:
        return (f"its layers' keys and values differ in shape ({', '.join(overridden)} set per layer), and a stateful "
                "package keeps one shape for every layer")
    return None


def _per_layer_overrides(hf_config) -> list[dict]:
    """The per-layer attribute overrides of a heterogeneous config (transformers 5's
    `per_layer_config`), read from its serialised form (the attribute itself is a view)."""
    try:
        layers = (hf_config.to_dict().get("per_layer_config") or {}) if hasattr(hf_config, "to_dict") else {}
    except Exception:  # noqa: BLE001 - a config that cannot serialise has no overrides we can read
        return []
    return [value for value in layers.values() if isinstance(value, dict)]


# The arguments through which transformers' causal LM classes take a cache: keys and values
# (`past_key_values`), a recurrent state (Mamba, xLSTM: `cache_params`; RWKV: `state`), or a
# kind of their own (XLNet's `mems`, XLM's `cache`, Reformer's `past_buckets_states`).
_RECURRENT_CACHES = ("cache_params", "state")
_CACHE_ARGUMENTS = ("past_key_values", *_RECURRENT_CACHES, "mems", "cache", "past_buckets_states")


def _cache_argument(model_type: str) -> str | None:
    """How transformers' causal LM class of `model_type` takes a cache (one of _CACHE_ARGUMENTS),
    or None when it takes none (openai-gpt)."""
    import transformers  # heavy: loaded when a stateful request is checked, as generic.py's _listed loads it
    from transformers.models.auto import modeling_auto

    name = modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    model_class = getattr(transformers, name, None) if isinstance(name, str) else None
    if model_class is None:
        return "past_key_values"  # not a class we can read: the capture decides
    parameters = inspect.signature(model_class.forward).parameters
    return next((argument for argument in _CACHE_ARGUMENTS if argument in parameters), None)
