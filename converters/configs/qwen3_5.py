"""Qwen3.5's cache in a stateful package: keys and values for its full-attention layers, a
convolution window and a recurrent matrix for its Gated DeltaNet (linear-attention) layers.

What transformers 5.23 computes (models/qwen3_5/modeling_qwen3_5.py, Qwen3_5GatedDeltaNet and
cache_utils.LinearAttentionLayer): a linear-attention layer projects each token to mixed
query/key/value channels, runs a depthwise causal convolution of `linear_conv_kernel_dim` taps
over them (SiLU after), and folds the tokens into a recurrent state with the gated delta rule;
its cache keeps the convolution's last inputs (zeros before the first call: a fresh cache's
prefill pads with zeros) and the recurrent state (none before the first call: zeros).

The package keeps (`HybridLayout.states`):
- `keyCache`/`valueCache` [attention layers, 1, key/value heads, context, head size]: a slot per
  full-attention layer, written and read as every stateful package's (gemma4.LayerSlotCache);
- `convState` [linear layers, 1, conv channels, kernel − 1]: the last kernel − 1 inputs of each
  linear layer's convolution (all the next token's output needs of them);
- `recurrentState` [linear layers, 1, value heads, key size, value size]: each linear layer's
  state after the tokens so far.
A fresh `makeState()` (zeros) is transformers' empty cache for all four. swift-transformers
carries the two extra states unread, as Core ML carries every state of a package.

The linear layers' forward is replaced, inside the export wrapper only and for the duration of
one call (`stateful_linear_layers`), by `_stateful_forward`: transformers' own projections,
gated RMSNorm and output projection around the convolution over [conv state, this call's
tokens] and `gated_delta.gated_delta_call` with the recurrent state carried in; the new states
are written into the registered buffers in place, which the export turns into state updates.
They take no positions and no mask: swift-transformers' first mask, one slot longer than the
prompt, concerns the attention layers only (text.py, StatefulCausalLM).

Call length: the gated delta rule's inverse is exact for calls up to the longest the program
admits, the package's context (its `inputIds` range), in ⌈log₂ context⌉ levels of 2·n³
multiply-adds per value head for an n-token call (gated_delta.py). A prompt of n tokens costs
that in every linear layer: at 2048 tokens and 11 levels about 1.9e11 per head per layer, so a
long prompt's prefill is slow; a one-token step is cheap (1 × 1 matrices).

Precision: Core ML keeps states in float16, so both linear states are rounded to float16 between
calls. Measured in PyTorch on the test's tiny model with its values scaled to O(1) states: logits
within 5e-4 (32 tokens) and 7e-4 (256 tokens) of their largest, float16's own rounding, not growing
with the calls; float16 states are enough there (real weights not yet measured:
docs/decoder-families.md).

Still refused (cache_limits.py): Qwen3-Next (`qwen3_next`: its linear layers project query,
key, value and gate in one interleaved matrix, a forward this module does not replace) and every
other recurrent layer kind.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .base import StateSpec
from .gated_delta import gated_delta_call
from .gemma4 import CacheGroup, LayerSlotCache, LayoutRefused

MODEL_TYPE = "qwen3_5_text"
FULL, LINEAR = "full_attention", "linear_attention"
CONV_STATE, RECURRENT_STATE = "convState", "recurrentState"


@dataclass(frozen=True)
class LinearGroup:
    """The linear-attention layers (by index, in slot order) and their states' sizes."""

    layers: tuple[int, ...]
    conv_channels: int
    conv_window: int  # kernel − 1
    value_heads: int
    key_size: int
    value_size: int


@dataclass(frozen=True)
class HybridLayout:
    """gemma4.CacheLayout's interface (groups, reuses, slot, states, cache) for Qwen3.5."""

    attention: CacheGroup
    linear: LinearGroup
    layer_count: int

    @property
    def groups(self) -> tuple[CacheGroup, ...]:
        return (self.attention,)

    @property
    def reuses(self) -> dict[int, int]:
        return {}

    def slot(self, layer: int) -> tuple[CacheGroup, int]:
        """The attention slot of `layer`, or for a linear layer of the next attention layer (the
        last one if none follows): the slot StatefulCausalLM's probe reads for written positions."""
        layers = self.attention.layers
        after = [i for i in layers if i >= layer]
        return self.attention, layers.index(after[0] if after else layers[-1])

    def states(self, context: int) -> list[StateSpec]:
        attention, linear = self.attention, self.linear
        which = ", ".join(str(i) for i in attention.layers)
        linear_which = ", ".join(str(i) for i in linear.layers)
        return [
            StateSpec(attention.key, attention.shape(context),
                      f"Attention keys of every token so far, a slot per full-attention layer ({which}, counted from 0)"),
            StateSpec(attention.value, attention.shape(context),
                      f"Attention values of every token so far, a slot per full-attention layer ({which}, counted from 0)"),
            StateSpec(CONV_STATE, (len(linear.layers), 1, linear.conv_channels, linear.conv_window),
                      f"The last {linear.conv_window} inputs of each linear-attention layer's convolution (layers "
                      f"{linear_which})"),
            StateSpec(RECURRENT_STATE, (len(linear.layers), 1, linear.value_heads, linear.key_size, linear.value_size),
                      f"Each linear-attention layer's recurrent state after the tokens so far (layers {linear_which})"),
        ]

    def cache(self, buffers: dict[str, torch.Tensor], past: int, end: int) -> "HybridCache":
        keys, values = buffers[self.attention.key], buffers[self.attention.value]
        slots = {layer: (keys, values, slot) for slot, layer in enumerate(self.attention.layers)}
        linear = {layer: slot for slot, layer in enumerate(self.linear.layers)}
        return HybridCache(slots, self.layer_count, past, end, buffers[CONV_STATE], buffers[RECURRENT_STATE], linear,
                           max_call=keys.shape[3])

    @contextmanager
    def bound(self, model, cache: "HybridCache"):
        """The model's linear layers computing from and into `cache`'s states for one call."""
        with stateful_linear_layers(model, cache):
            yield


class HybridCache(LayerSlotCache):
    """LayerSlotCache for the attention layers, plus the linear layers' state buffers."""

    def __init__(self, slots, layer_count, past, end, conv_state: torch.Tensor, recurrent_state: torch.Tensor,
                 linear_slots: dict[int, int], max_call: int):
        super().__init__(slots, layer_count, past, end)
        self.conv_state, self.recurrent_state, self.linear_slots, self.max_call = conv_state, recurrent_state, linear_slots, max_call


def cache_layout(hf_config) -> HybridLayout | None:
    """The stateful layout of a Qwen3.5 decoder (None: another model). Raises LayoutRefused for a
    Qwen3.5 whose layers are of another kind."""
    if getattr(hf_config, "model_type", None) != MODEL_TYPE:
        return None
    count = hf_config.num_hidden_layers
    types = list(hf_config.layer_types)[:count]
    other = sorted(set(types) - {FULL, LINEAR})
    if other:
        raise LayoutRefused(f"its {' and '.join(other)} layers keep a state a stateful package does not hold yet")
    attention = tuple(i for i in range(count) if types[i] == FULL)
    linear = tuple(i for i in range(count) if types[i] == LINEAR)
    if not attention:
        raise LayoutRefused("it has no full-attention layer, whose cache tells a stateful package the tokens so far")
    c = hf_config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    key_dim = c.linear_num_key_heads * c.linear_key_head_dim
    channels = 2 * key_dim + c.linear_num_value_heads * c.linear_value_head_dim
    return HybridLayout(
        CacheGroup("keyCache", "valueCache", attention, c.num_key_value_heads, head_dim),
        LinearGroup(linear, channels, c.linear_conv_kernel_dim - 1, c.linear_num_value_heads, c.linear_key_head_dim,
                    c.linear_value_head_dim),
        count,
    )


def _is_linear_layer(module) -> bool:
    return type(module).__name__ == "Qwen3_5GatedDeltaNet"


@contextmanager
def stateful_linear_layers(model, cache: HybridCache):
    """Each Qwen3.5 linear-attention module of `model` runs `_stateful_forward` against `cache`
    until the block ends (an instance attribute over the class's forward, removed after: the model
    stays transformers' own for the reference and for any other caller)."""
    swapped = []
    for module in model.modules():
        if _is_linear_layer(module):
            module.forward = _bound(module, cache)
            swapped.append(module)
    try:
        yield
    finally:
        for module in swapped:
            del module.forward


def _bound(module, cache):
    def forward(hidden_states, cache_params=None, attention_mask=None, **kwargs):
        return _stateful_forward(module, hidden_states, cache)

    return forward


def _stateful_forward(layer, hidden_states: torch.Tensor, cache: HybridCache) -> torch.Tensor:
    """Qwen3_5GatedDeltaNet.forward for one call of n tokens with its states in `cache`."""
    import torch.nn.functional as F
    from transformers.activations import ACT2FN

    slot = cache.linear_slots[layer.layer_idx]
    batch, n, _ = hidden_states.shape
    mixed = layer.in_proj_qkv(hidden_states).transpose(1, 2)  # [1, channels, n]
    z = layer.in_proj_z(hidden_states).reshape(batch, n, -1, layer.head_v_dim)
    b, a = layer.in_proj_b(hidden_states), layer.in_proj_a(hidden_states)

    # The convolution over the kept inputs then this call's: n outputs, no padding (the fresh
    # state's zeros are transformers' own left padding of a first prefill).
    window = layer.conv_kernel_size - 1
    inputs = torch.cat([cache.conv_state[slot].to(mixed.dtype), mixed], dim=-1)  # [1, channels, window + n]
    cache.conv_state[slot, :, :, :] = inputs[:, :, -window:]
    mixed = F.conv1d(inputs, layer.conv1d.weight, layer.conv1d.bias, groups=layer.conv_dim)
    mixed = ACT2FN[layer.activation](mixed).transpose(1, 2)

    query, key, value = torch.split(mixed, [layer.key_dim, layer.key_dim, layer.value_dim], dim=-1)
    query = query.reshape(batch, n, -1, layer.head_k_dim)
    key = key.reshape(batch, n, -1, layer.head_k_dim)
    value = value.reshape(batch, n, -1, layer.head_v_dim)
    beta = b.sigmoid()
    g = -layer.A_log.float().exp() * F.softplus(a.float() + layer.dt_bias)

    output, state = gated_delta_call(query, key, value, g, beta, cache.recurrent_state[slot], use_qk_l2norm_in_kernel=True,
                                     max_length=cache.max_call)
    cache.recurrent_state[slot, :, :, :, :] = state

    output = layer.norm(output.reshape(-1, layer.head_v_dim), z.reshape(-1, layer.head_v_dim))
    return layer.out_proj(output.reshape(batch, n, -1))
