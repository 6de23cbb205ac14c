"""Gemma 4's KV cache in a stateful package: keys and values shaped per layer, and layers that
reuse an earlier layer's.

What transformers 5.23 computes (models/gemma4/configuration_gemma4.py, modeling_gemma4.py):
- a full-attention layer's keys and values are `global_head_dim` wide (512 in the real models,
  against `head_dim` 256 for the sliding layers) with, when `attention_k_eq_v`, their own
  key/value head count `num_global_key_value_heads` (its values are then its keys, before their
  norms): `config.per_layer_config[i]` says each layer's `head_dim` and `num_key_value_heads`;
- the last `num_kv_shared_layers` layers ("reuse" in `config.kv_sharing_modes`) compute no keys
  or values and call no cache update: each attends over those of the last earlier layer of its
  own type (the "store" layer), handed over in `shared_kv_states` by that layer — after its
  cache update, so the keys of every position so far.

The package keeps a cache for the layers that compute keys and values only, one pair of states
per shape (`CacheLayout`): `keyCache`/`valueCache` for the shape of the first layer (the sliding
layers' in every Gemma 4) and `globalKeyCache`/`globalValueCache` for the wider one, each
[its layers, 1, its key/value heads, context, its head size]. Each layer writes and reads its own
slot (`LayerSlotCache`); a reusing layer writes none and reads its store layer's keys through
transformers' own `shared_kv_states`, which are that slot. Sliding layers get the banded mask
as Gemma 3's do (configs/sliding.py).

Why two pairs and not one pair padded to the widest head (docs/decoder-families.md, measured):
swift-transformers chooses its stateful path by the presence of `keyCache` and `valueCache`
(Sources/Models/LanguageModel.swift:270-276), makes the model's whole state with
`model.makeState()` (:507) and passes it to every call (:552), naming no other state, so a third
and fourth state are carried as Core ML carries every state of the package; padded, the float16
cache of Gemma 4 E2B at 2048 tokens is 60 MiB instead of 36, E4B's 192 instead of 112.

Still refused (cache_limits.py): a Gemma 4 whose layers have more than two cache shapes, or whose
attention is bidirectional (`use_bidirectional_attention: all`: a token attends to later ones,
which a cache of past tokens cannot give).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache

from .base import StateSpec

MODEL_TYPE = "gemma4_text"
# The per-layer config attributes the layout holds (cache_limits.py refuses others).
PER_LAYER_ATTRIBUTES = frozenset({"head_dim", "num_key_value_heads"})
_NAMES = (("keyCache", "valueCache"), ("globalKeyCache", "globalValueCache"))


@dataclass(frozen=True)
class CacheGroup:
    """One pair of states: the layers (by index) that keep their keys and values in it, in slot order."""

    key: str
    value: str
    layers: tuple[int, ...]
    kv_heads: int
    head_dim: int

    def shape(self, context: int) -> tuple[int, ...]:
        return (len(self.layers), 1, self.kv_heads, context, self.head_dim)


@dataclass(frozen=True)
class CacheLayout:
    groups: tuple[CacheGroup, ...]
    reuses: dict[int, int]  # a layer that keeps no cache -> the layer whose keys and values it reads
    layer_count: int

    def slot(self, layer: int) -> tuple[CacheGroup, int]:
        """The group and slot holding `layer`'s keys and values (a reusing layer: its store layer's)."""
        layer = self.reuses.get(layer, layer)
        group = next(g for g in self.groups if layer in g.layers)
        return group, group.layers.index(layer)

    def states(self, context: int) -> list[StateSpec]:
        specs = []
        for group in self.groups:
            which = f"a slot per layer for layers {', '.join(str(i) for i in group.layers)} (counted from 0)"
            specs += [StateSpec(group.key, group.shape(context), f"Attention keys of every token so far, {which}"),
                      StateSpec(group.value, group.shape(context), f"Attention values of every token so far, {which}")]
        return specs

    def cache(self, buffers: dict[str, torch.Tensor], past: int, end: int) -> "LayerSlotCache":
        slots = {}
        for group in self.groups:
            for slot, layer in enumerate(group.layers):
                slots[layer] = (buffers[group.key], buffers[group.value], slot)
        return LayerSlotCache(slots, self.layer_count, past, end)


class LayoutRefused(ValueError):
    """A layout this module does not hold (the reason, in the user's words)."""


def cache_layout(hf_config) -> CacheLayout | None:
    """The stateful cache layout of a Gemma 4 decoder (None: another model, one keyCache/valueCache
    pair with a slot per layer). Raises LayoutRefused for a Gemma 4 it cannot hold."""
    if getattr(hf_config, "model_type", None) != MODEL_TYPE:
        return None
    if getattr(hf_config, "use_bidirectional_attention", None) == "all":
        raise LayoutRefused("its attention is bidirectional (use_bidirectional_attention: all: each token attends to the "
                            "tokens after it too), which a cache of the tokens so far cannot give")
    count = hf_config.num_hidden_layers
    modes = list(hf_config.kv_sharing_modes)
    types = list(hf_config.layer_types)[:count]
    kept = [i for i in range(count) if modes[i] != "reuse"]
    # transformers' rule (Gemma4TextConfig.kv_sharing_modes): a reusing layer reads the last layer
    # before the first reusing one whose type is its own.
    reuses = {i: max(j for j in kept if types[j] == types[i]) for i in range(count) if modes[i] == "reuse"}
    shapes: dict[tuple[int, int], list[int]] = {}
    for i in kept:
        layer = hf_config.per_layer_config[i]
        shapes.setdefault((layer.num_key_value_heads, layer.head_dim), []).append(i)
    if len(shapes) > len(_NAMES):
        raise LayoutRefused(f"its layers' keys and values come in {len(shapes)} shapes, and a stateful package of it keeps "
                            f"at most {len(_NAMES)}")
    groups = tuple(CacheGroup(key, value, tuple(layers), heads, width)
                   for (key, value), ((heads, width), layers) in zip(_NAMES, shapes.items()))
    return CacheLayout(groups, reuses, count)


class LayerSlotCache(Cache):
    """text.py's SliceUpdateCache over several pairs of states: a layer's keys and values go to
    its own slot of its own pair, positions [past, end); it reads back [0, end). Exported, the
    buffers become the package's Core ML states and the writes state updates."""

    def __init__(self, slots: dict[int, tuple[torch.Tensor, torch.Tensor, int]], layer_count: int, past: int, end: int):
        super().__init__(layers=[])
        self.slots, self.layer_count, self.past, self.end = slots, layer_count, past, end

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        keys, values, slot = self.slots[layer_idx]
        keys[slot, :, :, self.past : self.end, :] = key_states
        values[slot, :, :, self.past : self.end, :] = value_states
        return keys[slot, :, :, : self.end, :], values[slot, :, :, : self.end, :]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.past

    def __len__(self) -> int:
        return self.layer_count


def cache_bytes(layout: CacheLayout, context: int, element_bytes: int = 2) -> int:
    """The states' bytes at `context` (float16: Core ML keeps states in float16)."""
    total = 0
    for spec in layout.states(context):
        count = 1
        for size in spec.shape:
            count *= size
        total += count * element_bytes
    return total
