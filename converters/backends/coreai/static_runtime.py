"""Apple's StaticShapeEngine, in coreai-core's runtime: the iOS static-shape LLM bundle
(static_bundle.py) driven here exactly as CoreAILanguageModel drives it on a device. Read from
apple/coreai-models at 86b363d, swift/Sources/CoreAILanguageModels/InferenceEngines/
CoreAIStaticShapeEngine.swift (`engine:` below), line by line:

- init (engine:67-128): the functions named `extend…`/`prompt…` sorted, the `gather_embeddings…`
  set, the largest q parsed from the names (else 64); the first of them whose key_cache's largest
  axis is max_context_length, else it throws; its out_logits and key_cache/value_cache checked
  (:155-177); `load_embeddings` run once (:179-201); the two caches allocated at that shape;
- inference (:370-462): while tokens remain, prompt_opt when more than the largest q remain, else
  extend; the graph by forwardGraph (:268-298); the batch starting at the position rounded down to
  a multiple of q (:390-393), so earlier tokens are sent again;
- each call's inputs (:466-531): the table, the batch's ids gathered by gather_embeddings_<q> (unused
  id slots 0, as a fresh NDArray holds), uint16 positions start … start + q − 1, the float16 mask
  (:302-326), in_step = start; the states the shared caches' [..., 0:ctx] (:414-433: a view on the
  device; a copy here, written back after the call);
- the logits: after an extend call only, row tokensInBatch − 1 of out_logits (:435-449).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .runtime import LoadedModel

LOGITS, KEY, VALUE = "out_logits", "key_cache", "value_cache"  # engine:19-21
MASKED = -40000.0  # engine:312
DEFAULT_MAX_QUERY = 64  # engine:90
def _dense(descriptor) -> bool:
    """Whether an NDArray allocated from `descriptor` is plain C order (not interleaved)."""
    from coreai.runtime import NDArray

    array = NDArray.from_descriptor(descriptor)
    shape = list(array.shape)
    return list(array.strides) == [int(np.prod(shape[i + 1:])) for i in range(len(shape))]


def _split(name: str) -> tuple[int, int] | None:
    """extend_<ctx>_<q> / prompt_opt_<ctx>_<q> -> (ctx, q) (engine:271-273)."""
    parts = name.split("_")[-2:]
    return (int(parts[0]), int(parts[1])) if len(parts) == 2 and all(p.isdigit() for p in parts) else None


def max_query(names: list[str]) -> int:
    """engine:86-90: the largest trailing number of the decoder functions' names, else 64."""
    found = [int(n.split("_")[-1]) for n in names if n.split("_")[-1].isdigit()]
    return max(found) if found else DEFAULT_MAX_QUERY


def forward_graph(names: list[str], tokens: int, position: int, prefill: bool) -> str:
    """engine:268-298: q = the smallest ≥ the tokens left, else the largest; ctx = the smallest > the position."""
    pairs = [p for p in map(_split, names) if p]
    if not pairs:
        raise ValueError("No extend functions found in static-shape engine")
    queries = sorted(q for _, q in pairs)
    chosen = next((q for q in queries if q >= tokens), queries[-1])
    fits = sorted(ctx for ctx, q in pairs if q == chosen and ctx > position)
    if not fits:
        raise ValueError(f"No graph with cache_len > {position} and seq_len = {chosen}")
    return f"{'prompt_opt' if prefill else 'extend'}_{fits[0]}_{chosen}"


def batch(position: int, query: int, total: int) -> tuple[int, int]:
    """engine:390-393: (the batch's first token, how many real tokens it holds)."""
    start = (position // query) * query
    end = min(start + query - 1, total - 1)
    return start, end - start + 1


def causal_mask(ctx: int, query: int, tokens: int, start: int) -> np.ndarray:
    """engine:302-326: −40000 everywhere, 0 for slot ≤ start + row on the rows holding real tokens."""
    mask = np.full((1, ctx, 1, query), MASKED, dtype=np.float16)
    for row in range(tokens):
        mask[0, :min(start + row, ctx - 1) + 1, 0, row] = 0
    return mask


class StaticShapeEngine(LoadedModel):
    """An iOS bundle's .aimodel run as StaticShapeEngine runs it. `calls` records each call's
    (function, first token, real tokens) — what the engine's log line says (engine:395)."""

    def __init__(self, path: Path, max_context_length: int, vocab_size: int):
        started = time.perf_counter()
        super().__init__(path)
        self.max_context_length, self.vocab_size = int(max_context_length), int(vocab_size)
        names = list(self._model.function_names)
        self.function_names = names
        self.decoder_names = sorted(n for n in names if n.startswith("extend") or n.startswith("prompt"))  # :76-79
        self.gather_names = {n for n in names if n.startswith("gather_embeddings")}  # :80
        self.max_query = max_query(self.decoder_names)
        self._functions: dict = {}
        largest = next((n for n in self.decoder_names if self.context_of(n) == self.max_context_length), None)  # :92-101
        if largest is None:
            raise ValueError(f"Failed to find an extend function with the max context length of {self.max_context_length}")
        self._check(largest)
        self.table = self._run("load_embeddings", {})["embedding_table"]  # :179-201, kept as the runtime laid it out
        desc = self.function(largest).desc
        self.caches = {name: np.zeros([int(d) for d in desc.state_descriptor(name).shape], dtype=np.float16) for name in (KEY, VALUE)}
        self.interleaved = not _dense(desc.state_descriptor(KEY))
        self.processed = 0
        self.calls: list[tuple[str, int, int]] = []
        self.load_seconds = time.perf_counter() - started

    # ---------------------------------------------------------------- functions

    def function(self, name: str):
        """Loaded once, on first use (engine:206-213)."""
        if name not in self._functions:
            self._functions[name] = self._model.load_function(name)
        return self._functions[name]

    def context_of(self, name: str) -> int:
        """engine:254-264: the key_cache's largest axis (max_context_length when an axis is dynamic)."""
        desc = self.function(name).desc
        if KEY not in list(desc.state_names):
            return self.max_context_length
        shape = [int(d) for d in desc.state_descriptor(KEY).shape]
        return self.max_context_length if -1 in shape else max(shape)

    def query_of(self, name: str) -> int:
        """engine:225-236: transformer_input's axis 1, else the name's last number."""
        desc = self.function(name).desc
        given = next((n for n in desc.input_names if "transformer_input" in n), None)
        if given is not None and len(desc.input_descriptor(given).shape) >= 2:
            return int(desc.input_descriptor(given).shape[1])
        last = name.split("_")[-1]
        return int(last) if last.isdigit() else 1

    def _check(self, name: str) -> None:
        """engine:155-177."""
        desc = self.function(name).desc
        if LOGITS not in list(desc.output_names):
            raise ValueError(f"Function '{name}' missing required output '{LOGITS}'. Available outputs: {list(desc.output_names)}")
        states = list(desc.state_names)
        if len(states) == 1:
            raise ValueError(f"Function '{name}' has exactly 1 state ({states}) — expected 0 (internal to model) or 2 ({KEY}, {VALUE})")
        if len(states) >= 2 and not {KEY, VALUE} <= set(states):
            raise ValueError(f"Function '{name}' has states {states} but missing required '{KEY}' and/or '{VALUE}'")

    def _run(self, name: str, feed: dict, state: dict | None = None) -> dict:
        """One call; numpy inputs wrapped, NDArrays (the table, the gathered rows) passed as they are."""
        from coreai.runtime import NDArray

        given = {key: NDArray(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value for key, value in feed.items()}
        return dict(self._loop.run_until_complete(self.function(name)(given, state=state or {})))

    # ---------------------------------------------------------------- inference

    def reset(self) -> None:
        """A new sequence (engine:583-600, to 0): the caches keep their contents, which the mask hides."""
        self.processed = 0

    def gather(self, tokens: list[int], query: int) -> np.ndarray:
        """engine:535-572."""
        name = f"gather_embeddings_{query}"
        if name not in self.gather_names:
            raise ValueError(f"No gather function '{name}' for batch size {query}")
        ids = np.zeros((1, query), dtype=np.int32)
        ids[0, :min(query, len(tokens))] = tokens[:query]
        outputs = self._run(name, {"in_new_token_ids": ids, "embedding_table": self.table})
        return outputs.get("out_transformer_input", next(iter(outputs.values())))  # an NDArray, passed on as it is

    def inference(self, tokens: list[int]) -> np.ndarray:
        """engine:370-462: every token not yet processed; the float16 logits row of the last one."""
        from coreai.runtime import NDArray

        total = len(tokens)
        if self.interleaved:
            raise ValueError("the caches carry the Neural Engine's interleaved layout, which coreai-core's Python API cannot "
                             "fill and its Linux runtime mishandles: drive the programs converted without it "
                             "(static_bundle.twin)")
        if self.processed >= total:
            raise ValueError("No new tokens to process")
        logits = np.zeros(self.vocab_size, dtype=np.float16)
        position = self.processed
        while position < total:
            prefill = total - position > self.max_query
            name = forward_graph(self.decoder_names, total - position, position, prefill)
            query = self.query_of(name)
            start, count = batch(position, query, total)
            ctx = self.context_of(name)
            feed = {"transformer_input": self.gather(tokens[start:start + count], query),
                    "position_ids": (start + np.arange(query, dtype=np.int64)).astype(np.uint16)[None],
                    "causal_mask": causal_mask(ctx, query, count, start),
                    "in_step": np.array([start], dtype=np.int32),
                    "embedding_table": self.table}
            desc = self.function(name).desc
            feed = {key: value for key, value in feed.items() if key in list(desc.input_names)}
            # The device passes views [..., 0:ctx] of one buffer (:420-428); here each call gets a copy of
            # the shared caches' first ctx slots (zeros at first), written back after the call.
            state = {key: NDArray(np.ascontiguousarray(array[..., :ctx])) for key, array in self.caches.items()}
            outputs = self._run(name, feed, state)
            for key, array in self.caches.items():
                array[..., :ctx] = state[key].numpy()
            self.calls.append((name, start, count))
            if not prefill:
                flat = np.ascontiguousarray(outputs[LOGITS].numpy()).reshape(-1)
                logits = flat[(count - 1) * self.vocab_size:count * self.vocab_size].copy()
            position = start + count
            self.processed = position
        return logits

