"""Configs for text models: encoders (BERT family) and decoders (GPT / Llama family)."""

from __future__ import annotations

import contextlib

import torch
from transformers.cache_utils import Cache

from ..chunks import hidden_name
from ..errors import UserInputError
from .base import END, MASK_VALUE, QUERY, ROWS, SEQ, ExportConfig, InputSpec, OutputKind, OutputSpec, StateSpec, additive_mask, first_output
from . import qwen3_5
from .gemma4 import CacheLayout, cache_layout
from .sliding import Sliding, UnknownLayerTypes, attention_masks, outside_window, sliding_of

TOKENS = OutputKind.TOKEN_SCORES
NUM_CHOICES = 4  # multiple-choice packages score this many candidate texts at once

# Each task's package outputs (the ModelOutput field feeding each is in _SOURCE_FIELD).
_TASK_OUTPUTS = {
    "fill-mask": [OutputSpec("token_scores", "Probability of each vocabulary token at each position (after softmax)", "softmax", TOKENS)],
    "text-classification": [OutputSpec("probabilities", "Probability of each class (after softmax)", "softmax", OutputKind.CLASS_PROBABILITIES)],
    "token-classification": [OutputSpec("token_scores", "Probability of each label for each token (after softmax)", "softmax", TOKENS)],
    "question-answering": [
        OutputSpec("start_logits", "Score of each token being the start of the answer"),
        OutputSpec("end_logits", "Score of each token being the end of the answer"),
    ],
    "multiple-choice": [OutputSpec("probabilities", "Probability of each choice (after softmax)", "softmax")],
    "text-generation": [OutputSpec("logits", "Next-token scores for each position (before softmax)", kind=TOKENS)],
}
_SOURCE_FIELD = {
    "token_scores": "logits",
    "probabilities": "logits",
    "start_logits": "start_logits",
    "end_logits": "end_logits",
    "logits": "logits",
    "last_hidden_state": "last_hidden_state",
    "pooler_output": "pooler_output",
    "sentence_embedding": "last_hidden_state",  # pooled in the wrapper (sentence-transformers' recipe)
}


class TextModelWrapper(torch.nn.Module):
    """Calls a transformers text model with a ready-made mask and returns the package's outputs.

    Inputs arrive positionally in the order of the config's `inputs()`: ids, 0/1 mask and
    optionally token type ids. Softmax post-processing happens here so it is in the package.
    """

    def __init__(self, model, outputs: list[OutputSpec], causal: bool, native_mask: bool, flatten_choices: bool,
                 pooling: dict | None = None, sliding: Sliding | None = None):
        super().__init__()
        self.model = model
        self.sliding = sliding  # set when the package is longer than the window: sliding layers get a banded mask
        self.outputs = outputs
        self.causal = causal
        self.native_mask = native_mask
        self.flatten_choices = flatten_choices
        self.pooling = pooling or {}  # sentence_embedding's recipe (loading.sentence_pooling)

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
            mask = additive_mask(attention_mask, self.causal)
            banded = None
            if self.sliding is not None:  # right-padded: a token's position is its index
                index = torch.arange(attention_mask.shape[-1])
                banded = mask + (outside_window(index, index, self.sliding.window) * MASK_VALUE)[None, None]
            kwargs["attention_mask"] = attention_masks(self.sliding, mask, banded)
            result = self.model(**kwargs)
        values = []
        for spec in self.outputs:
            value = first_output(result, _SOURCE_FIELD[spec.name])
            if spec.name == "sentence_embedding":
                value = sentence_embedding(value, attention_mask, self.pooling)
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


def sentence_embedding(hidden: torch.Tensor, mask: torch.Tensor, pooling: dict) -> torch.Tensor:
    """sentence-transformers' Pooling (+ Normalize) over the text's own tokens (mask 1).
    The norm is taken of x / max|x| (the same direction): a plain sum of squares can pass
    float16's 65504 for a large embedding."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    mode = pooling.get("mode", "mean")
    if mode == "cls":
        pooled = hidden[:, 0]
    elif mode == "max":
        pooled = hidden.masked_fill(weights == 0, -1e4).amax(dim=1)
    else:
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    if pooling.get("normalize"):
        scaled = pooled / pooled.abs().amax(dim=-1, keepdim=True).clamp(min=1e-6)
        pooled = scaled / torch.sqrt((scaled * scaled).sum(dim=-1, keepdim=True))
    return pooled


def _real_tokens(value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`value` at the tokens the 0/1 mask keeps, when it has a token axis (else all of it)."""
    if mask.dim() == 2 and value.dim() >= 2 and value.shape[1] == mask.shape[-1]:
        return value[:, mask[0].bool()]
    return value


class SliceUpdateCache(Cache):
    """A KV cache that writes each step's keys/values into two preallocated buffers in
    place; exported, the buffers become Core ML states and the writes state updates.

    Holds positions [0, end); this call's tokens go to [end - query, end)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, past: int, end: int):
        super().__init__(layers=[])
        self.keys, self.values, self.past, self.end = keys, values, past, end

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        self.keys[layer_idx, :, :, self.past : self.end, :] = key_states
        self.values[layer_idx, :, :, self.past : self.end, :] = value_states
        return self.keys[layer_idx, :, :, : self.end, :], self.values[layer_idx, :, :, : self.end, :]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.past

    def __len__(self) -> int:
        return self.keys.shape[0]


class StatefulCausalLM(torch.nn.Module):
    """swift-transformers' stateful layout: inputIds [1, query] and an additive causalMask
    [1, 1, rows, end] in, logits [1, query, vocab] out; keyCache/valueCache (layers, 1,
    kv_heads, context, head_dim) are states, so prefill and one-token extends both work.

    Callers disagree on the mask: swift-transformers sends zeros [1, 1, 1, T + 1] (one slot
    more than the T tokens so far, one row, no causality), Apple's recipe a -inf upper
    triangle [1, 1, n, n] at prefill and zeros [1, 1, 1, T] per step. So nothing here hangs
    on one convention:
    - this call's tokens go to the cache slots [end - query, end), end = the mask's length;
    - slots before them that were never written (still the zeros of a fresh state — the
      slot swift-transformers' longer mask leaves empty) are masked, and token positions
      count written slots only, so both conventions give the same positions and logits;
    - causality inside the call is applied here; the caller's last mask row (padding, if
      any) is added on top.
    A package longer than the model's sliding window (`sliding`, configs/sliding.py) gives
    its sliding layers the same mask with the slots `window` or more behind each query
    masked too: the unwritten slots are a prefix (none, or swift-transformers' first), so
    slot distances are position distances.

    A model whose layers' keys and values differ in shape (`layout`, configs/gemma4.py) keeps
    one pair of states per shape, each layer its own slot; keyCache holds layer 0's. Qwen3.5's
    layout (configs/qwen3_5.py) keeps keys and values for its full-attention layers and two more
    states for its linear ones, which run against them for the call (`layout.bound`)."""

    def __init__(self, model, cache_shape: tuple[int, ...], probe_layer: int = 0, sliding: Sliding | None = None,
                 layout: CacheLayout | None = None, states: list | None = None):
        super().__init__()
        self.model = model
        self.sliding = sliding
        self.layout = layout
        # The layer whose keys tell written slots from fresh ones: one this call has not
        # written yet (a chunk of layers, chunks.py, runs after earlier chunks wrote theirs).
        self.probe_state, self.probe_layer = (layout.slot(probe_layer)[0].key, layout.slot(probe_layer)[1]) if layout \
            else ("keyCache", probe_layer)
        for spec in states or ():
            self.register_buffer(spec.name, torch.zeros(spec.shape))
        if not states:
            self.register_buffer("keyCache", torch.zeros(cache_shape))
            self.register_buffer("valueCache", torch.zeros(cache_shape))

    def forward(self, input_ids, causal_mask):
        query, end = input_ids.shape[-1], causal_mask.shape[-1]
        past = end - query
        slots = torch.arange(end)
        # A written key is never exactly zero (a projection of a real token); fresh state is.
        # (0/1 floats, not bools: coremltools converts no bool `&` or `|`.)
        written = (getattr(self, self.probe_state)[self.probe_layer, :, :, :end, :].abs().amax(dim=(0, 1, 3)) > 0).float()
        unwritten_before = (slots < past).float() * (1.0 - written)
        positions = torch.arange(query) + past - unwritten_before.sum().long()
        query_slots = torch.arange(query) + past
        future = (slots[None, :] > query_slots[:, None]).float()
        masked = (future + unwritten_before[None, :]).clamp(max=1.0)
        row = causal_mask[:, :, -1:, :].float()
        mask = (masked * MASK_VALUE)[None, None] + row
        banded = None
        if self.sliding is not None:
            far = outside_window(query_slots, slots, self.sliding.window)
            banded = ((masked + far).clamp(max=1.0) * MASK_VALUE)[None, None] + row
        if self.layout is not None:
            cache = self.layout.cache(dict(self.named_buffers(recurse=False)), past, end)
        else:
            cache = SliceUpdateCache(self.keyCache, self.valueCache, past, end)
        # Layers that keep states other than keys and values (Qwen3.5's linear ones) run against them.
        bound = getattr(self.layout, "bound", None)
        with bound(self.model, cache) if bound else contextlib.nullcontext():
            result = self.model(
                input_ids=input_ids, attention_mask=attention_masks(self.sliding, mask, banded), past_key_values=cache,
                position_ids=positions[None], use_cache=True,
            )
        return (result.logits,)


class TextConfig(ExportConfig):
    modality = "text"
    causal = False
    native_mask = False  # True: pass the 0/1 mask through (models that build their own)
    probe_mask = False  # True (untested architectures): try the model with each mask (mask_convention)
    has_pooler = False  # feature-extraction also exports pooler_output
    _probed_native_mask: bool | None = None

    def mask_convention(self, model) -> bool:
        """Whether the model gets the 0/1 mask as-is (True) or a ready-made additive one.

        An architecture we have not tested may build its mask in a way that rejects or
        ignores a ready-made one. Both are run on a right-padded example; the additive mask
        (which converts to fewer ops) is kept when it gives what the model gives with its own
        0/1 mask on the real tokens."""
        if not self.probe_mask:
            return self.native_mask
        if self._probed_native_mask is None:
            self._probed_native_mask = self._additive_mask_differs(model)
        return self._probed_native_mask

    def _additive_mask_differs(self, model) -> bool:
        generator = torch.Generator().manual_seed(0)
        # The plain (uncached) interface, also for a stateful decoder's reference.
        example = [self.example_tensor(spec, [8 if d == SEQ else d for d in spec.shape], generator)
                   for spec in TextConfig.inputs(self)]
        mask = example[1].clone()
        mask[..., -3:] = 0
        args = [example[0], mask, *example[2:]]
        with torch.no_grad():
            own = self._text_wrapper(model, native_mask=True)(*args)
            try:
                additive = self._text_wrapper(model, native_mask=False)(*args)
            except Exception:  # noqa: BLE001 - a model that refuses a 4-D mask builds its own
                return True
        for mine, theirs in zip(own, additive):
            mine, theirs = _real_tokens(mine.float(), mask), _real_tokens(theirs.float(), mask)
            scale = max(1.0, float(mine.abs().max()))
            if mine.shape != theirs.shape or not torch.allclose(mine, theirs, rtol=1e-3, atol=1e-4 * scale):
                return True
        return False

    def _text_wrapper(self, model, native_mask: bool, part: str = "model") -> "TextModelWrapper":
        return TextModelWrapper(
            model,
            self.package_outputs(part),
            causal=self.causal,
            native_mask=native_mask,
            flatten_choices=self.task == "multiple-choice",
            pooling=self.sentence_pooling,
            sliding=self.sliding_beyond_window(),
        )

    def inputs(self, part: str = "model") -> list[InputSpec]:
        shape = (1, NUM_CHOICES, SEQ) if self.task == "multiple-choice" else (1, SEQ)
        ids, mask = self.input_names()
        specs = [
            InputSpec(ids, shape, "int32", "Indices of input tokens in the vocabulary"),
            InputSpec(mask, shape, "int32", "1 for tokens to attend to, 0 for padding"),
        ]
        if self.task == "multiple-choice" and (self.attributes.type_vocab_size or 0) > 1:
            specs.append(InputSpec("token_type_ids", shape, "int32", "0 for the first text (context), 1 for the second (choice)"))
        return specs

    def input_names(self) -> tuple[str, str]:
        return "input_ids", "attention_mask"

    def outputs(self, part: str = "model") -> list[OutputSpec]:
        return self.package_outputs(part)

    def package_outputs(self, part: str = "model") -> list[OutputSpec]:
        """What the package returns (a chunk of a big decoder's layers returns its hidden state instead)."""
        if self.task == "feature-extraction":
            specs = [OutputSpec("last_hidden_state", "Hidden state of each token at the last layer", kind=OutputKind.EMBEDDINGS)]
            pooling = self.sentence_pooling
            if pooling:
                how = f"{pooling['mode']} pooling over the tokens" + (", L2-normalized" if pooling["normalize"] else "")
                specs.insert(0, OutputSpec("sentence_embedding", f"The sentence embedding, as the model's "
                                           f"sentence-transformers config computes it ({how})", kind=OutputKind.EMBEDDINGS))
            if self.has_pooler:
                specs.append(OutputSpec("pooler_output", "BERT's pretraining pooler (first token, dense, tanh): not a "
                                        "sentence embedding" + ("; use sentence_embedding" if pooling else
                                                                 "; mean-pool last_hidden_state instead"),
                                        kind=OutputKind.EMBEDDINGS))
            return specs
        return list(_TASK_OUTPUTS[self.task])

    def wrap(self, model, part: str = "model"):
        return self._text_wrapper(model, self.mask_convention(model), part)

    def sliding_beyond_window(self) -> Sliding | None:
        """The model's sliding layers when the package is longer than their window (their
        banded mask is then built in the program), else None: within the window a sliding
        layer sees every token, and the package is the same as without it."""
        if not self.causal:
            return None
        try:
            sliding = sliding_of(self.hf_config)
        except UnknownLayerTypes:
            return None  # refused in check_options when it matters
        if sliding is None or self.options.sequence_length.maximum <= sliding.window:
            return None
        return sliding

    @property
    def sentence_pooling(self) -> dict | None:
        """A sentence-transformers model's pooling (loading.sentence_pooling), for feature-extraction."""
        return self.preprocessor.get("sentence_pooling") if self.task == "feature-extraction" else None


class EncoderConfig(TextConfig):
    family = "encoder"
    supported_tasks = (
        "feature-extraction",
        "fill-mask",
        "text-classification",
        "token-classification",
        "question-answering",
        "multiple-choice",
    )


class DecoderConfig(TextConfig):
    family = "decoder"
    causal = True
    supports_kv_cache = True
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

    # --- stateful KV cache (swift-transformers' fast path) -------------------------------

    @property
    def stateful(self) -> bool:
        return self.options.kv_cache == "stateful"

    def context_length(self) -> int:
        return self.options.sequence_length.maximum

    def inputs(self, part: str = "model") -> list[InputSpec]:
        specs = self._package_inputs(part)
        if self.chunk and not self.chunk.first:  # a chunk of layers (chunks.py) also takes the hidden state
            length = QUERY if self.stateful else SEQ
            specs.append(InputSpec(hidden_name(self.chunk.index - 1), (1, length, self.attributes.hidden_size), "float32",
                                   "The hidden state after the previous chunk of layers"))
        return specs

    def outputs(self, part: str = "model") -> list[OutputSpec]:
        if self.chunk and not self.chunk.last:
            return [OutputSpec(hidden_name(self.chunk.index), "The hidden state after this chunk of layers")]
        return self.package_outputs(part)

    def _package_inputs(self, part: str) -> list[InputSpec]:
        if not self.stateful:
            return super().inputs(part)
        return [
            InputSpec("inputIds", (1, QUERY), "int32", "The new tokens: the whole prompt first, then one token at a time"),
            InputSpec(
                "causalMask",
                (1, 1, ROWS, END),
                "float16",
                "Additive mask whose length sets the cache slots in use: zeros [1, 1, 1, T + 1] for T tokens so far "
                "(swift-transformers), or [1, 1, n, n] / [1, 1, 1, T] (explicit); causality is applied inside",
            ),
        ]

    def states(self, part: str = "model") -> list[StateSpec]:
        if not self.stateful:
            return []
        layout = self.cache_layout()
        if layout is not None:
            return layout.states(self.context_length())
        a = self.attributes
        shape = (a.num_layers, 1, a.num_kv_heads, self.context_length(), a.head_dim)
        return [
            StateSpec("keyCache", shape, "Attention keys of every token so far, per layer"),
            StateSpec("valueCache", shape, "Attention values of every token so far, per layer"),
        ]

    def ranged_axes(self) -> dict[str, tuple[int, int]]:
        if not self.stateful:
            return {}
        return {QUERY: (1, self.context_length()), ROWS: (1, self.context_length()), END: (1, self.context_length())}

    def example_sizes(self) -> dict[str, int]:
        if not self.stateful:
            return {}
        # A prefill of 4 tokens after 2 cached ones, a 3-row mask: no axis equals another or a bound.
        return {QUERY: 4, ROWS: 3, END: 6}

    def example_tensor(self, spec, shape, generator):
        if spec.name == "causalMask":
            return torch.zeros(shape)
        return super().example_tensor(spec, shape, generator)

    def wrap(self, model, part: str = "model"):
        if not self.stateful:
            return super().wrap(model, part)
        layout = self.cache_layout()
        return StatefulCausalLM(model, self.states(part)[0].shape, probe_layer=self.chunk.start if self.chunk else 0,
                                sliding=self.sliding_beyond_window(), layout=layout,
                                states=self.states(part) if layout else None)

    def cache_layout(self) -> CacheLayout | qwen3_5.HybridLayout | None:
        """Keys and values shaped per layer (Gemma 4, configs/gemma4.py), linear-attention layers'
        states besides the attention layers' keys and values (Qwen3.5, configs/qwen3_5.py), or None:
        one keyCache/valueCache pair, a slot per layer."""
        return cache_layout(self.hf_config) or qwen3_5.cache_layout(self.hf_config)

    def reference_module(self, model, part: str = "model"):
        """A stateful package is checked against the plain model run on the whole sequence.

        Longer than a sliding window, the reference is the model with its own 0/1 mask:
        transformers builds each sliding layer's band itself, so the package's in-program
        bands are checked against transformers' rather than against a copy of themselves."""
        if not self.stateful:
            return super().reference_module(model, part)
        native = self.mask_convention(model) or self.sliding_beyond_window() is not None
        return TextModelWrapper(model, self.outputs(part), causal=True, native_mask=native, flatten_choices=False)

    def check_options(self) -> None:
        super().check_options()
        if self.stateful:
            self._check_stateful()
        try:
            sliding_of(self.hf_config)
        except UnknownLayerTypes as error:
            window = self.attributes.sliding_window
            wanted = self.options.sequence_length.maximum
            if isinstance(window, int) and 0 < window < wanted:
                raise UserInputError(
                    f"Sequence length {wanted} is longer than this model's sliding attention window ({window}), and {error}. "
                    f"Choose {window} or less."
                ) from None

    def _check_stateful(self) -> None:
        options = self.options
        if self.task != "text-generation":
            raise UserInputError(f"A stateful KV cache is for text-generation only, not {self.task}. Set the KV cache to none.")
        if options.naming != "swift-transformers":
            raise UserInputError("A stateful KV cache uses swift-transformers' names (inputIds, causalMask, keyCache, valueCache); choose that naming.")
        if options.sequence_length.kind != "fixed" or options.sequence_length.maximum < 8:
            raise UserInputError(
                "With a stateful KV cache the sequence length is the context size (the most tokens a conversation can hold): "
                "give one number, 8 or more (for example 2048), or auto (2048, or the model's maximum if smaller)."
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
