"""Running an .aimodel with coreai-core's own runtime — real execution on this machine's
CPU, on Linux too (Apple ships the runtime in the coreai-core wheel). Validation drives it
exactly as it drives the Core ML reference executor: the same input sets, the same
continuation loop, the same checks; its rows are the `coreai` mode.

The runtime's API is asynchronous; a runner keeps one event loop and one loaded model for
its life (loading lowers the program, the slow part), and `close()` lets both go.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np

MODE = "coreai"  # validation's row label: the Core AI runtime, really executed
# How fast the Linux runtime runs a program, in parameters × tokens per second, measured on this
# 2-core machine with SmolLM2-135M: float32 one 128-token call in 7.2 s; float16 one 8-token call
# in 42 s — the runtime converts every float16 value in software (__truncsfhf2, one thread).
SPEED = {"float32": 135e6 * 128 / 7.2, "float16": 135e6 * 8 / 42}
_DTYPES = {"Float32": "float32", "Float16": "float16", "Int32": "int32", "Int8": "int8", "Int16": "int16",
           "BFloat16": "bfloat16", "Bool": "bool", "UInt8": "uint8"}


class LoadedModel:
    """A saved .aimodel loaded into coreai-core's runtime, with the event loop its asynchronous
    API runs on: both kept for the holder's life, let go by close()."""

    def __init__(self, path: Path):
        from coreai.authoring.asset import AIModelAsset

        self.path = Path(path)
        self._loop = asyncio.new_event_loop()
        self._asset = AIModelAsset.load(str(path))
        self._executable = self._asset.executable()
        self._model = self._loop.run_until_complete(self._executable.__aenter__())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.run_until_complete(self._executable.__aexit__(None, None, None))
        self._loop.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class CoreAIRunner(LoadedModel):
    """Runs a saved .aimodel's `main` function (the validation Runner of the Core AI backend)."""

    modes = (MODE,)
    mode_words = {MODE: "Core AI runtime"}  # validation's progress lines

    def __init__(self, path: Path):
        super().__init__(path)
        self._function = self._model.load_function("main")
        desc = self._function.desc
        self.state_names = list(desc.state_names)
        self._inputs = {name: desc.input_descriptor(name) for name in desc.input_names}
        self._states = {name: desc.state_descriptor(name) for name in self.state_names}

    def make_state(self) -> dict:
        """Fresh zero state (what an app's new generation starts from)."""
        from coreai.runtime import NDArray

        return {name: NDArray(np.zeros([int(d) for d in d_.shape], dtype=_numpy_dtype(d_.dtype)))
                for name, d_ in self._states.items()}

    def predict(self, inputs: dict, mode: str = MODE, state: dict | None = None) -> dict:
        """One call; `state` (from make_state) is updated in place by the runtime."""
        from coreai.runtime import NDArray

        if mode != MODE:
            raise ValueError(f"the Core AI runtime runs the package as it is (mode {MODE!r}), not {mode!r}")
        feed = {}
        for name, value in inputs.items():
            descriptor = self._inputs.get(name)
            if descriptor is None:
                continue  # an input the package does not take (e.g. a mask it has no use for)
            feed[name] = NDArray(np.ascontiguousarray(np.asarray(value).astype(_numpy_dtype(descriptor.dtype))))
        outputs = self._loop.run_until_complete(self._function(feed, state=state or {}))
        return {name: _widened(value.numpy()) for name, value in outputs.items()}


def validation_seconds(cfg, parameters: int, bundle: bool = False, static: bool = False) -> float:
    """About how long validation runs an .aimodel of `parameters` here: the tokens its input
    sets and continuation send (validation/inputs.py, continuation.py), at SPEED. An LLM
    bundle (`bundle`) is driven once: a prompt of a few tokens, then one token per call; the iOS
    bundle (`static`) sends 8 token slots a call (StaticShapeEngine's smallest q)."""
    # Deferred: both import torch, and this module is read without it (try_it.py in the web process).
    from ...validation.continuation import NEW_TOKENS
    from ...validation.inputs import sequence_lengths

    lengths = sequence_lengths(cfg)
    if bundle and static:  # the prompt in one call of 8 or 16 slots, then 8 slots a token
        tokens = 16 + 8 * NEW_TOKENS
    elif bundle:  # a compressed bundle also prefills the quality passage (about 128 tokens)
        tokens = 8 + NEW_TOKENS + (128 if getattr(cfg.options, "quantize", "none") != "none" else 0)
    elif getattr(cfg, "stateful", False):  # two prefills of a short text plus one-token steps, and the prompt's
        tokens = 2 * min(32, max(lengths)) + 16
    elif cfg.task == "text-generation":  # every continuation step re-sends the whole padded sequence
        tokens = (len(lengths) + NEW_TOKENS) * max(lengths)
    else:
        tokens = sum(lengths) * len(cfg.parts())
    return parameters * tokens / SPEED[cfg.options.precision]


def _dtype_name(name: str) -> str:
    """The runtime's type name ("Float16") as numpy's ("float16")."""
    return _DTYPES.get(name, name.lower())


def _numpy_dtype(name: str) -> np.dtype:
    return np.dtype(_dtype_name(name))


def _widened(array: np.ndarray) -> np.ndarray:
    """float16 outputs compared in float32, as the reference executor returns them."""
    return array.astype(np.float32) if array.dtype == np.float16 else array


def described(path: Path, function: str = "main") -> dict:
    """An .aimodel's inputs, outputs, states and metadata in package_info.describe_spec's
    shape, read from the saved file (`function`: an iOS LLM bundle has no `main`). The format keeps
    a flexible axis as `?` without bounds: those come from the converter's own
    `coreml_converter_input_shapes` metadata."""
    from coreai.authoring.asset import AIModelAsset

    asset = AIModelAsset.load(str(path))
    metadata = {key: value if isinstance(value, str) else json.dumps(value)
                for key, value in asset.metadata.creator_defined_metadata.items()}
    bounds = json.loads(metadata.get("coreml_converter_input_shapes", "{}"))
    summary = asset.summary(include_statistics=True)
    inputs = [_feature(name, text, bounds.get(name)) for name, text in summary.function_inputs(function)]
    outputs = [_feature(name, text) for name, text in summary.function_outputs(function)]
    states = [dict(_feature(name, text, bounds.get(name)), type="state") for name, text in summary.function_states(function)]
    return {
        "inputs": inputs,
        "outputs": outputs,
        "states": states,
        "metadata": metadata,
        "minimum_os": summary._compatibility_version,  # noqa: SLF001 - the only way the summary names it
        # report.ProgramInfo's keys; Core ML's fused attention op is not in an .aimodel
        "program": {"fused_attention": False, "stateful": bool(states), "weight_bits": None,
                    "op_counts": {op: count for op, count in summary.operation_distribution if op != "constant"},
                    "format": "aimodel"},
    }


def _feature(name: str, text: str, bounds: list | None = None) -> dict:
    """'NDArray (Int32, 1 × ?)' -> name, dtype, shape, flexibility (and ranges from `bounds`)."""
    inner = text[text.index("(") + 1:text.rindex(")")] if "(" in text else text
    dtype_text, _, shape_text = inner.partition(",")
    dims = [d.strip() for d in shape_text.split("×")] if shape_text.strip() else []
    info: dict = {"name": name, "description": "", "type": "tensor", "dtype": _dtype_name(dtype_text.strip())}
    flexible = [i for i, d in enumerate(dims) if not d.isdigit()]
    if not flexible:
        info.update(shape=[int(d) for d in dims], flexibility="fixed")
        return info
    ranges = [[int(d), int(d)] if d.isdigit() else None for d in dims]
    for i in flexible:
        given = bounds[i] if bounds and len(bounds) == len(dims) else None
        ranges[i] = list(given) if isinstance(given, list) else [1, int(given) if given else -1]
    info.update(shape=[r[1] for r in ranges], flexibility="range", ranges=ranges)
    return info


# ------------------------------------------------------------------ Apple's LLM bundle, driven as Apple drives it
#
# apple/coreai-models at 86b363d (swift/Sources/CoreAILanguageModels/...). What an app's
# `CoreAILanguageModel(resourcesAt: bundleFolder)` does with the bundle, step by step, and the
# code below that does the same here:
# - LanguageBundle.swift:31-47 → ModelBundle.swift:141-195: metadata.json in the folder, version
#   "0.2", `kind` llm, `assets.main` (the .aimodel beside it; ModelBundle.swift:70-78);
# - CoreAISequentialEngine.swift:110-150: function `main`, exactly 2 inputs read by position
#   (token ids, position ids), output 0 float16 logits, 2–4 states;
# - StateHandlerFactory.swift:53-55, 141-158 and StateHandler+NDArray.swift:75-123: with two states
#   both are the KV cache; a `?` axis starts at min(256, max_context_length) and doubles, the
#   old contents copied, up to max_context_length;
# - CoreAISequentialEngine.swift:211-216, 245-250 and ModelConfig.swift:131-143: a prompt longer
#   than 1024 tokens is sent in 512-token chunks, else at once; every call sends int32 position
#   ids 0 … processed + batch − 1; then one token per call (greedy: CoreAILanguageModel.swift:109);
# - CoreAILanguageModel.swift:153-160, 386-389 and LanguageConfig.swift:83-165: generation stops on
#   the tokenizer's EOS or one of tokenizer_config.json's extra stop tokens.

CHUNK_THRESHOLD = 1024  # ModelConfig.swift:131-138 (COREAI_CHUNK_THRESHOLD unset)
PREFILL_CHUNK = min(512, CHUNK_THRESHOLD)  # ModelConfig.swift:141-143
INITIAL_CACHE = 256  # StateHandlerFactory.swift:152
TURN_END_PATTERNS = ("end_of_turn", "im_end", "eot_id", "endoftext", "eot_token")  # LanguageConfig.swift:137


def bundle_folder(path: Path) -> Path | None:
    """The LLM bundle an .aimodel sits in (its folder holds metadata.json naming it), or None."""
    path = Path(path)
    folder = path if path.suffix != ".aimodel" else path.parent
    metadata = folder / "metadata.json"
    if not metadata.is_file():
        return None
    try:
        main = json.loads(metadata.read_text()).get("assets", {}).get("main")
    except (ValueError, AttributeError):
        return None
    return folder if main and (path.suffix != ".aimodel" or main == path.name) else None


class BundleState:
    """One generation's state as Apple's engine keeps it: the KV arrays and the count of
    tokens they hold (CoreAISequentialEngine.processedTokenCount)."""

    def __init__(self, arrays: dict, capacity: int):
        self.arrays, self.capacity, self.processed = arrays, capacity, 0


class CoreAILanguageModelEngine(CoreAIRunner):
    """An LLM bundle's .aimodel run as CoreAISequentialEngine runs it: the caller gives token
    ids only; the engine sends the position ids and owns the growing KV cache. As a validation
    Runner, `predict` takes a feed whose token ids are its first input (other inputs — a mask
    a driver would send to a Core ML package — are not the bundle's and are not sent)."""

    def __init__(self, path: Path, max_context_length: int | None = None):
        super().__init__(path)
        desc = self._function.desc
        self.input_names = list(desc.input_names)
        self.output_names = list(desc.output_names)
        self.max_context_length = max_context_length
        problems = self.contract_problems()
        if problems:
            raise ValueError("not an LLM that CoreAILanguageModel can run: " + "; ".join(problems))
        self.ids_name, self.positions_name = self.input_names
        self.logits_name = self.output_names[0]

    def contract_problems(self) -> list[str]:
        """Where the program breaks CoreAISequentialEngine's checks (CoreAISequentialEngine.swift:110-150)."""
        desc, problems = self._function.desc, []
        if len(self.input_names) != 2:
            problems.append(f"expected 2 inputs, got {len(self.input_names)}: {self.input_names}")
        elif any(_dtype_name(self._inputs[n].dtype) != "int32" for n in self.input_names):
            problems.append("token ids and position ids must be int32")
        if not self.output_names:
            problems.append("no output")
        elif _dtype_name(desc.output_descriptor(self.output_names[0]).dtype) != "float16":
            problems.append(f"output 0 ({self.output_names[0]}) must be float16 logits (else unsupportedLogitsType)")
        if not 2 <= len(self.state_names) <= 4:
            problems.append(f"expected 2–4 states, got {len(self.state_names)}")
        return problems

    def make_state(self) -> BundleState:
        """Fresh zero caches: a `?` axis at min(256, max_context_length) (StateHandlerFactory.swift:152-157)."""
        limit = self.max_context_length or INITIAL_CACHE
        capacity = min(INITIAL_CACHE, limit)
        from coreai.runtime import NDArray

        return BundleState({name: NDArray(self._zeros(name, capacity)) for name in self.state_names}, capacity)

    def _zeros(self, name: str, capacity: int) -> np.ndarray:
        d_ = self._states[name]
        return np.zeros([int(d) if int(d) >= 0 else capacity for d in d_.shape], dtype=_numpy_dtype(d_.dtype))

    def _ensure_capacity(self, state: BundleState, length: int) -> None:
        """GrowingNDArrayState.ensureCapacity (StateHandler+NDArray.swift:99-123): double up to the
        maximum, copying what the cache holds; past the maximum, an error."""
        if length <= state.capacity:
            return
        limit = self.max_context_length or length
        if length > limit:
            raise ValueError(f"Context length {length} exceeds maximum {limit}")
        dynamic = [n for n in self.state_names if any(int(d) < 0 for d in self._states[n].shape)]
        if not dynamic:  # fixed caches: the program's own size is the limit
            raise ValueError(f"Context length {length} exceeds the fixed cache")
        from coreai.runtime import NDArray

        capacity = max(state.capacity, 1)
        while capacity < length:
            capacity = min(capacity * 2, limit)
        for name in dynamic:
            axis = next(i for i, d in enumerate(self._states[name].shape) if int(d) < 0)
            grown = self._zeros(name, capacity)
            old = state.arrays[name].numpy()
            index = [slice(None)] * old.ndim
            index[axis] = slice(0, old.shape[axis])
            grown[tuple(index)] = old
            state.arrays[name] = NDArray(grown)
        state.capacity = capacity

    def process(self, tokens: list[int], state: BundleState) -> np.ndarray:
        """One call (CoreAISequentialEngine.processTokenBatch, :221-281): `tokens` at the
        positions after what the state holds; the float16 logits [1, len(tokens), vocab]."""
        from coreai.runtime import NDArray

        if not tokens:
            raise ValueError("Cannot process empty token batch")
        self._ensure_capacity(state, state.processed + len(tokens))
        total = state.processed + len(tokens)
        feed = {self.ids_name: NDArray(np.asarray([tokens], dtype=np.int32)),
                self.positions_name: NDArray(np.arange(total, dtype=np.int32)[None])}
        # The runtime updates the state's arrays in place (as the Swift engine's bound views).
        outputs = self._loop.run_until_complete(self._function(feed, state=state.arrays))
        state.processed = total
        return outputs[self.logits_name].numpy()

    def prefill(self, tokens: list[int], state: BundleState) -> np.ndarray:
        """The prompt: at once, or in 512-token chunks past 1024 tokens (ModelConfig.swift:129-143,
        CoreAISequentialEngine.swift:211-216, 285-320); the logits of every prompt token."""
        if len(tokens) > CHUNK_THRESHOLD:
            rows = [self.process(tokens[i:i + PREFILL_CHUNK], state) for i in range(0, len(tokens), PREFILL_CHUNK)]
            return np.concatenate(rows, axis=1)
        return self.process(tokens, state)

    def predict(self, inputs: dict, mode: str = MODE, state=None) -> dict:
        if mode != MODE:
            raise ValueError(f"the Core AI runtime runs the package as it is (mode {MODE!r}), not {mode!r}")
        ids = inputs.get(self.ids_name)
        if ids is None:
            ids = next(iter(inputs.values()))
        state = state if isinstance(state, BundleState) else self.make_state()
        logits = self.prefill([int(t) for t in np.asarray(ids).reshape(-1)], state)
        return {self.logits_name: _widened(logits)}


def apple_stop_ids(tokenizer, tokenizer_dir: Path | None) -> set[int]:
    """The ids CoreAILanguageModel stops on: the tokenizer's EOS (CoreAILanguageModel.swift:388)
    plus LanguageConfig.additionalStopTokenIds (LanguageConfig.swift:83-165), read from the
    bundle's tokenizer/tokenizer_config.json: its additional_special_tokens, an eos_token list,
    special added tokens whose text names a turn's end, and top-level turn-end tokens."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    config_path = Path(tokenizer_dir) / "tokenizer_config.json" if tokenizer_dir else None
    if config_path is None or not config_path.is_file():
        return ids
    try:
        config = json.loads(config_path.read_text())
    except ValueError:
        return ids

    def token_id(token) -> int | None:  # swift-transformers' convertTokenToId: nil for an unknown token
        if not isinstance(token, str):
            return None
        found = tokenizer.convert_tokens_to_ids(token)
        if found is None or (found == tokenizer.unk_token_id and token != tokenizer.unk_token):
            return None
        return int(found)

    for item in config.get("additional_special_tokens") or []:  # :97-120
        found = token_id(item.get("content") if isinstance(item, dict) else item)
        if found is not None:
            ids.add(found)
    if isinstance(config.get("eos_token"), list):  # :122-132
        ids.update(i for i in map(token_id, config["eos_token"]) if i is not None)
    for key, value in (config.get("added_tokens_decoder") or {}).items():  # :134-150
        if isinstance(value, dict) and value.get("special") is True and isinstance(value.get("content"), str):
            if any(pattern in value["content"].lower() for pattern in TURN_END_PATTERNS) and key.lstrip("-").isdigit():
                ids.add(int(key))
    for pattern in TURN_END_PATTERNS:  # :152-162
        found = token_id(config.get(pattern))
        if found is not None:
            ids.add(found)
    return ids
