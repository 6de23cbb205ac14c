"""One normalised view of a transformers config's architecture attributes.

Families name the same thing differently (`num_hidden_layers`, `n_layer`, `num_layers`…).
The families read these through `ModelAttributes`, never through `getattr` chains of their
own, so a family can serve an architecture it has not met when its names are the usual
ones, and an architecture with a quirk is one line in `QUIRKS` (as optimum's
`NormalizedConfig.with_args(num_layers="n_layer", …)`).
"""

from __future__ import annotations

from typing import Callable

# attribute -> the config names tried in order (the first one set wins).
USUAL_NAMES: dict[str, tuple[str, ...]] = {
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_heads": ("num_attention_heads", "n_head", "num_heads"),
    "num_kv_heads": ("num_key_value_heads", "num_kv_heads"),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "head_dim": ("head_dim",),
    "vocab_size": ("vocab_size",),
    "max_positions": ("max_position_embeddings", "n_positions", "max_seq_len"),
    "sliding_window": ("sliding_window",),
    "type_vocab_size": ("type_vocab_size",),
    "image_size": ("image_size",),
    "decoder_start_token_id": ("decoder_start_token_id",),
    "eos_token_id": ("eos_token_id",),
}

# model_type -> {attribute: a config name, or a function of the config}. One line per quirk.
QUIRKS: dict[str, dict[str, str | Callable]] = {
    # multi-query attention: one key/value head shared by all query heads.
    "gpt_bigcode": {"num_kv_heads": lambda c: 1 if getattr(c, "multi_query", False) else c.n_head},
    # Falcon's old architecture is multi-query unless it says otherwise.
    # relative positions: no hard length limit, whatever n_positions says.
    "t5": {"max_positions": lambda c: None},
    "falcon": {"num_kv_heads": lambda c: c.num_kv_heads if c.new_decoder_architecture or not c.multi_query else 1},
}


class ModelAttributes:
    """`attributes.num_layers`, `.num_heads`, `.num_kv_heads`, `.head_dim`, … of one config;
    None where the config has no such thing."""

    def __init__(self, hf_config):
        self._config = hf_config
        self._quirks = QUIRKS.get(getattr(hf_config, "model_type", ""), {})

    def __getattr__(self, attribute: str):
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        source = self._quirks.get(attribute)
        if callable(source):
            return source(self._config)
        names = (source,) if source else USUAL_NAMES.get(attribute)
        if names is None:
            raise AttributeError(f"no normalised attribute '{attribute}' (add it to USUAL_NAMES)")
        for name in names:
            value = getattr(self._config, name, None)
            if value is not None:
                return value
        return self._derived(attribute)

    def _derived(self, attribute: str):
        """Values the usual configs leave implicit."""
        if attribute == "num_kv_heads":
            return self.num_heads  # plain multi-head attention
        if attribute == "head_dim" and self.hidden_size and self.num_heads:
            return self.hidden_size // self.num_heads
        return None
