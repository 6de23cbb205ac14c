"""Sliding-window attention in a package longer than the window.

Gemma 2/3/4, Cohere2, GPT-OSS, SmolLM3 (some checkpoints), Ministral and others mix
sliding layers (each token sees the last `window` tokens: key position > query position −
window, transformers' `sliding_window_overlay`) with global layers; Mistral v0.1, Mixtral,
Starcoder2 and Phi-3 slide on every layer. A package gets one causal mask from its caller
(swift-transformers passes a single `causalMask` for the whole model), so each sliding
layer's banded mask is derived inside the program: the same 0/1 "masked" matrix as the
global layers', plus the keys that are `window` or more positions behind the query. The
cache keeps every position for every layer (one keyCache/valueCache, as swift-transformers
expects; Gemma 4 a pair per key shape, configs/gemma4.py); a sliding layer reads the whole
cache and its mask leaves the window, as does a Gemma 4 layer reusing a sliding layer's cache.

Why this and not a ring buffer for the sliding layers (Apple's and ANEMLL's recipes): the
two were measured on the same model, see docs/sliding-window.md.

How a model takes the masks:
- a model whose config lists `layer_types` builds a `{"full_attention": …,
  "sliding_attention": …}` mapping and uses one handed to it as-is (every transformers 5
  model with sliding layers and `layer_types` does);
- a model without `layer_types` but with a `sliding_window` slides on every layer and takes
  one mask: it gets the banded one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FULL, SLIDING = "full_attention", "sliding_attention"


@dataclass(frozen=True)
class Sliding:
    window: int
    layers: tuple[int, ...]  # the layers that slide
    layer_count: int
    by_layer_type: bool  # True: the model takes a {layer type: mask} mapping

    @property
    def every_layer(self) -> bool:
        return len(self.layers) == self.layer_count

    def describe(self) -> str:
        which = "every layer" if self.every_layer else f"{len(self.layers)} of {self.layer_count} layers"
        return f"sliding attention window of {self.window} tokens on {which}"


class UnknownLayerTypes(ValueError):
    """Sliding layers mixed with a kind of layer this module gives no mask to."""


def text_config(hf_config):
    getter = getattr(hf_config, "get_text_config", None)
    return getter() if callable(getter) else hf_config


def sliding_of(hf_config) -> Sliding | None:
    """The model's sliding layers (None: no layer slides).

    A `sliding_window` alone does not make a layer slide: SmolLM3 and Qwen2 carry one but
    list every layer as full attention in `layer_types` (their `use_sliding_window` is off)."""
    config = text_config(hf_config)
    window = getattr(config, "sliding_window", None)
    count = getattr(config, "num_hidden_layers", None)
    if not isinstance(window, int) or window <= 0 or not isinstance(count, int):
        return None
    types = getattr(config, "layer_types", None)
    if types is None:
        return Sliding(window, tuple(range(count)), count, by_layer_type=False)
    types = list(types)[:count]
    layers = tuple(i for i, kind in enumerate(types) if kind == SLIDING)
    if not layers:
        return None
    others = sorted(set(types) - {FULL, SLIDING})
    if others:
        raise UnknownLayerTypes(
            f"this model mixes sliding-window layers with {', '.join(others)} layers, whose masks a package "
            f"longer than the window ({window}) cannot give yet"
        )
    return Sliding(window, layers, count, by_layer_type=True)


def outside_window(query_positions: torch.Tensor, key_positions: torch.Tensor, window: int) -> torch.Tensor:
    """0/1 float [queries, keys]: 1 where the key is `window` or more positions behind the
    query (a sliding layer does not see it). Floats, not bools: coremltools converts no bool
    `&` or `|`."""
    return ((query_positions[:, None] - key_positions[None, :]) >= window).float()


def attention_masks(sliding: Sliding | None, full: torch.Tensor, banded: torch.Tensor | None):
    """What the model's `attention_mask` argument gets: the global layers' mask alone (no
    sliding), a {layer type: mask} mapping, or the banded mask (every layer slides)."""
    if sliding is None or banded is None:
        return full
    if sliding.by_layer_type:
        return {FULL: full, SLIDING: banded}
    return banded
