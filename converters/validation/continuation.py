"""Continuation check for text generation: does the package, driven exactly as
swift-transformers drives it, greedily continue a real prompt as PyTorch does?

The other checks compare logits on fixed inputs; this one runs the app's own loop. It
catches what those cannot: a package that is right on one fixed input but wrong the way
an app feeds it (padding, mask layout, cache positions across calls).

- PyTorch: the plain transformers model in fp32, argmax of the last row each step.
- The package, in the reference executor (fp32 and fp16 emulation), driven as
  swift-transformers 1.x does (`Sources/Models/LanguageModel.swift`,
  `Sources/Generation/Generation.swift`; see DESIGN.md):
  * non-stateful: every step the whole sequence so far, right-padded with token 0 to the
    fixed length L of `inputIds`, an int32 attention mask [1, L] (1s then 0s), row
    tokenCount - 1 read. Given PyTorch's tokens as a draft, the driver reads them ahead: the
    app's last call holds every earlier call's row when the package is causal, which the
    driver checks bit for bit before it trusts it (drive_padded);
  * stateful (`keyCache`/`valueCache` states): a fresh zero state, the prompt at once with
    a ZERO float16 causalMask [1, 1, 1, n + 1], then one token per call with zeros
    [1, 1, 1, T + 1] (T tokens so far, the new one included), the last row read.
  `EXPLICIT` drives a stateful package as Apple's Python recipe does instead (a -inf upper
  triangle [1, 1, n, n] at prefill, zeros [1, 1, 1, T] per step).
- Generation stops at the tokenizer's EOS (swift-transformers does), after NEW_TOKENS, or
  when the next call would not fit the package's shapes or cache. Token lists keep that
  EOS id at the end (swift-transformers drops it from its output) so it is compared too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..configs.base import OutputKind
from ..report import Check

PROMPT = "The capital of France is"
NEW_TOKENS = 8
PAD_ID = 0  # swift-transformers pads with `config.padTokenId ?? 0` (GenerationConfig's, unset by default)
SWIFT, EXPLICIT = "swift-transformers", "explicit"
INPUT_NAMES = {"ids": ("inputIds", "input_ids"), "mask": ("attentionMask", "attention_mask"), "causal": ("causalMask",)}
OnToken = Callable[[int], None]  # on_token(tokens so far), after each new token


def _no_count(count: int) -> None:
    pass


@dataclass
class Reference:
    """The prompt and PyTorch's greedy continuation of it."""

    prompt: str | None  # None: no tokenizer, synthetic ids
    prompt_ids: list[int]
    eos: set[int]
    tokens: list[int]  # new tokens, ending with an EOS id if PyTorch stopped there
    logits: list[np.ndarray]  # PyTorch's next-token scores before each new token
    new_tokens: int = NEW_TOKENS  # the budget
    tokenizer: object = None

    def text(self, tokens: list[int]) -> str | None:
        return self.tokenizer.decode(tokens, skip_special_tokens=True) if self.tokenizer is not None else None


@dataclass
class Layout:
    """What the driver needs to know of a package: input names and size limits."""

    ids: str
    masks: list[str]  # mask inputs present (one normally)
    stateful: bool
    bounds: dict[str, tuple]  # input name -> upper bound per axis (the fixed shape for a padded package)
    context: int | None = None  # stateful: positions the cache holds

    @property
    def length(self) -> int:
        """The padded length L of a non-stateful package's inputIds."""
        return int(self.bounds[self.ids][-1])


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)
    stopped: str = "new_tokens"  # "new_tokens", "eos" or "length"


def applies(cfg, part: str) -> bool:
    """Text generation packages whose token scores an app reads directly (not a part fed by another)."""
    generates = any(spec.kind == OutputKind.TOKEN_SCORES for spec in cfg.outputs(part))
    return cfg.task == "text-generation" and generates and cfg.fed_by(part) is None


# ------------------------------------------------------------------------- PyTorch


def prompt_ids(cfg, tokenizer) -> list[int]:
    if tokenizer is not None:
        # swift-transformers' `tokenizer.encode(text:)` adds special tokens (e.g. BOS) too.
        return [int(i) for i in tokenizer(PROMPT, add_special_tokens=True)["input_ids"]]
    vocab = max(cfg.attributes.vocab_size or 100, 8)
    return [int(i) for i in np.random.default_rng(0).integers(3, vocab, 5)]


def eos_ids(cfg, tokenizer) -> set[int]:
    """swift-transformers stops on the tokenizer's single EOS id; without a tokenizer, the
    model config's — only ids inside the vocabulary."""
    vocab = cfg.attributes.vocab_size

    def inside(ids) -> set[int]:  # an id past the vocabulary can never be generated
        return {int(i) for i in ids if i is not None and (not vocab or 0 <= int(i) < vocab)}

    if tokenizer is not None and tokenizer.eos_token_id is not None:
        return inside([tokenizer.eos_token_id])
    value = cfg.attributes.eos_token_id
    return inside(value if isinstance(value, (list, tuple)) else [value])


def pytorch_greedy(model, prompt: list[int], new_tokens: int, eos: set[int],
                   on_token: OnToken = _no_count) -> tuple[list[int], list[np.ndarray]]:
    tokens, scores = [], []
    with torch.no_grad():
        for _ in range(new_tokens):
            ids = torch.tensor([prompt + tokens], dtype=torch.long)
            row = model(input_ids=ids, use_cache=False).logits[0, -1].float().numpy()
            scores.append(row)
            tokens.append(int(row.argmax()))
            on_token(len(tokens))
            if tokens[-1] in eos:
                break
    return tokens, scores


def reference(cfg, model, tokenizer, new_tokens: int = NEW_TOKENS) -> Reference:
    ids, eos = prompt_ids(cfg, tokenizer), eos_ids(cfg, tokenizer)
    tokens, scores = pytorch_greedy(model, ids, new_tokens, eos)
    return Reference(PROMPT if tokenizer is not None else None, ids, eos, tokens, scores, new_tokens, tokenizer)


# ------------------------------------------------------------------------- driving


def layout(info: dict) -> Layout | None:
    """The package's driving layout from describe_package(); None if it has no token ids input."""
    inputs = {i["name"]: i for i in info["inputs"]}
    ids = next((name for name in INPUT_NAMES["ids"] if name in inputs), None)
    if ids is None:
        return None
    stateful = bool(info.get("states"))
    mask_names = INPUT_NAMES["mask"] + INPUT_NAMES["causal"]
    masks = [name for name in mask_names if name in inputs]
    bounds = {name: _upper_bounds(inputs[name]) for name in [ids, *masks]}
    # The positions the keys and values hold (Qwen3.5's convState and recurrentState hold none).
    caches = [s for s in info.get("states") or [] if s["name"].endswith("Cache")] or info.get("states")
    context = min(s["shape"][-2] for s in caches) if stateful else None
    return Layout(ids, masks, stateful, bounds, context)


def _upper_bounds(feature: dict) -> tuple:
    """swift-transformers' length of an input: the first enumerated shape, a range's upper
    bound (unbounded: no limit), else the fixed shape."""
    if feature.get("flexibility") == "enumerated":
        return tuple(feature["shapes"][0])
    if feature.get("flexibility") == "range":
        return tuple(upper if upper > 0 else np.inf for _, upper in feature["ranges"])
    return tuple(feature["shape"])


def _fits(layout_: Layout, feed: dict) -> bool:
    return all(np.asarray(value).ndim == len(layout_.bounds[name]) and all(s <= b for s, b in zip(np.shape(value), layout_.bounds[name]))
               for name, value in feed.items())


def _logits(outputs: dict) -> np.ndarray:
    return np.asarray(outputs["logits"] if "logits" in outputs else next(iter(outputs.values())))


def _next(row: np.ndarray, tokens: list[int], eos: set[int]) -> bool:
    """Append the argmax of `row`; True when generation stops there (EOS)."""
    tokens.append(int(np.asarray(row, dtype=np.float64).argmax()))
    return tokens[-1] in eos


def padded_feed(layout_: Layout, sequence: list[int]) -> dict[str, np.ndarray]:
    """swift-transformers, non-stateful: the sequence right-padded with PAD_ID to L, and a
    0/1 int32 attention mask if the package takes one (it never sends a causalMask here)."""
    length, count = layout_.length, len(sequence)
    ids = np.full((1, length), PAD_ID, dtype=np.int32)
    ids[0, :count] = sequence
    feed = {layout_.ids: ids}
    for name in layout_.masks:
        if name in INPUT_NAMES["mask"]:
            feed[name] = (np.arange(length) < count).astype(np.int32)[None]
    return feed


def drive_padded(executor, mode: str, layout_: Layout, prompt: list[int], new_tokens: int, eos: set[int],
                 on_token: OnToken = _no_count, draft: list[int] = ()) -> Generation:
    """swift-transformers' loop: one call per token, each with the whole sequence so far.

    `draft`, tokens expected to come next (PyTorch's continuation), lets one call read many
    tokens: a causal model's row i depends only on positions 0..i, so the call swift-
    transformers makes last — the sequence with every token written — holds in its rows all
    the earlier calls' answers, as long as each token it reads equals the draft's (each
    row's input is then exactly what the app would have sent). That the package is causal
    is checked, not assumed: the call with the draft must give the row the plain first call
    gave, bit for bit; if not, or where the package leaves the draft, it goes on one call
    per token as the app does."""
    run = Generation()
    ahead = bool(draft)  # the look-ahead is tried once, after the plain first call
    first_row = None
    while len(run.tokens) < new_tokens:
        sequence = prompt + run.tokens
        if len(sequence) > layout_.length:
            run.stopped = "length"
            break
        if ahead and first_row is not None:
            ahead = False
            if _read_ahead(executor, mode, layout_, prompt, new_tokens, eos, draft, first_row, run, on_token):
                break
            continue
        row = _logits(executor.predict(padded_feed(layout_, sequence), mode=mode))[0, len(sequence) - 1]
        first_row = row if first_row is None else first_row
        stop = _next(row, run.tokens, eos)
        on_token(len(run.tokens))
        if stop:
            run.stopped = "eos"
            break
        ahead = ahead and run.tokens == list(draft[:1])
    return run


def _read_ahead(executor, mode: str, layout_: Layout, prompt: list[int], new_tokens: int, eos: set[int],
                draft: list[int], first_row: np.ndarray, run: Generation, on_token: OnToken) -> bool:
    """After the first token (equal to the draft's): one call with the prompt and the draft,
    and the tokens its rows give while they follow the draft. True when generation ended."""
    # Rows len(prompt) .. len(prompt) + k - 1 answer tokens 2 .. k + 1; their inputs reach draft[k - 1].
    count = min(new_tokens - 1, len(draft), layout_.length - len(prompt))
    sequence = prompt + list(draft[:count])
    rows = _logits(executor.predict(padded_feed(layout_, sequence), mode=mode))[0]
    if not np.array_equal(np.asarray(rows[len(prompt) - 1]), np.asarray(first_row)):
        return False  # not causal as fed: the next rows may see the draft; go on call by call
    for position in range(len(prompt), len(sequence)):
        stop = _next(rows[position], run.tokens, eos)
        on_token(len(run.tokens))
        if stop:
            run.stopped = "eos"
            return True
        if run.tokens[-1] != draft[len(run.tokens) - 1]:
            return len(run.tokens) >= new_tokens  # left the draft: later rows read the draft's token, not this one
    return len(run.tokens) >= new_tokens


def stateful_feed(layout_: Layout, new: list[int], total: int, pattern: str = SWIFT) -> dict[str, np.ndarray]:
    """One call of a stateful package: `new` tokens (the prompt, or the last token), `total`
    tokens so far including them.

    swift-transformers sends an all-zero float16 mask [1, 1, 1, total + 1] (to every mask
    input it finds, attentionMask or causalMask); Apple's recipe a -inf upper triangle
    [1, 1, n, n] at prefill and zeros [1, 1, 1, total] for one token."""
    query = len(new)
    if pattern == SWIFT:
        mask = np.zeros((1, 1, 1, total + 1), dtype=np.float16)
    elif query > 1:
        mask = np.triu(np.full((query, total), -np.inf, dtype=np.float16), k=1 + total - query)[None, None]
    else:
        mask = np.zeros((1, 1, 1, total), dtype=np.float16)
    feed = {layout_.ids: np.asarray([new], dtype=np.int32)}
    feed.update({name: mask for name in layout_.masks})
    return feed


def drive_stateful(executor, mode: str, layout_: Layout, prompt: list[int], new_tokens: int, eos: set[int], pattern: str = SWIFT,
                   on_token: OnToken = _no_count) -> Generation:
    run = Generation()
    state = executor.make_state()  # swift-transformers: resetState() = makeState(), per generation
    while len(run.tokens) < new_tokens:
        new = prompt if not run.tokens else run.tokens[-1:]
        total = len(prompt) + len(run.tokens)
        feed = stateful_feed(layout_, new, total, pattern)
        if total > (layout_.context or np.inf) or not _fits(layout_, feed):
            run.stopped = "length"
            break
        outputs = executor.predict(feed, mode=mode, state=state)
        stop = _next(_logits(outputs)[0, len(new) - 1], run.tokens, eos)
        on_token(len(run.tokens))
        if stop:
            run.stopped = "eos"
            break
    return run


def driven_as(layout_: Layout, pattern: str = SWIFT) -> str:
    if not layout_.stateful:
        mask = f" with {layout_.masks[0]}" if layout_.masks else ""
        return f"swift-transformers (right-padded to {layout_.length}{mask})"
    mask = layout_.masks[0] if layout_.masks else "no mask"
    if pattern == SWIFT:
        return f"swift-transformers (stateful: prefill then one token per call, {mask} zeros [1,1,1,T+1])"
    return f"Apple's recipe (stateful: prefill with a -inf upper-triangle {mask} [1,1,n,n], then zeros [1,1,1,T])"


def drive(executor, mode: str, layout_: Layout, prompt: list[int], new_tokens: int, eos: set[int], pattern: str = SWIFT,
          on_token: OnToken = _no_count, draft: list[int] = ()) -> Generation:
    """The package's greedy continuation of `prompt`; `on_token(count)` after each new token.
    `draft`: the tokens PyTorch wrote, which a padded package may read ahead (drive_padded)."""
    if layout_.stateful:
        return drive_stateful(executor, mode, layout_, prompt, new_tokens, eos, pattern, on_token)
    return drive_padded(executor, mode, layout_, prompt, new_tokens, eos, on_token, draft)


# ------------------------------------------------------------------------- comparing


def compare(ref: Reference, tokens: list[int], atol: float) -> dict:
    """Token-by-token greedy equality, up to the first divergence.

    A different token where PyTorch's own margin between its choice and the package's is
    within the tolerance the logits checks use (atol x max(1, max|logits|), as
    top1_agreement) is a near-tie, not an error: fp16 rounding may flip it legitimately.
    Comparison stops there either way, because after a divergence the two continue
    different texts and comparing further would measure nothing."""
    compared = min(len(ref.tokens), len(tokens))
    for step in range(compared):
        expected, got = ref.tokens[step], tokens[step]
        if expected == got:
            continue
        row = ref.logits[step].astype(np.float64)
        margin = float(row[expected] - row[got])
        tolerance = atol * max(1.0, float(np.max(np.abs(row))))
        if margin <= tolerance:
            note = (f"step {step + 1}: the package chose token {got}, PyTorch {expected}, a near-tie in PyTorch's logits "
                    f"(margin {margin:.3g} <= {tolerance:.3g}); compared up to there")
            return {"matching_tokens": step, "tokens_compared": step + 1, "value": 1.0, "passed": True, "note": note}
        return {"matching_tokens": step, "tokens_compared": compared, "value": step / compared, "passed": False,
                "note": f"step {step + 1}: the package chose token {got}, PyTorch {expected} (margin {margin:.3g} > {tolerance:.3g})"}
    if compared == 0:
        return {"matching_tokens": 0, "tokens_compared": 0, "value": float("nan"), "passed": False, "note": "no tokens to compare"}
    return {"matching_tokens": compared, "tokens_compared": compared, "value": 1.0, "passed": True}


def run_package(ref: Reference, executor, info: dict, part: str, mode: str, atol: float, pattern: str = SWIFT,
                on_token: OnToken = _no_count) -> dict | None:
    """Drive one package in one mode and compare; the report's run entry (None: the package
    has no token ids input). `on_token(count)` after each token the package writes."""
    layout_ = layout(info)
    if layout_ is None:
        return None
    entry = {"package": part, "mode": mode, "driven_as": driven_as(layout_, pattern)}
    try:
        run = drive(executor, mode, layout_, ref.prompt_ids, len(ref.tokens), ref.eos, pattern, on_token, ref.tokens)
    except Exception as error:  # noqa: BLE001 - a package that cannot be driven fails the check, with the reason
        return {**entry, "text": None, "token_ids": [], "matching_tokens": 0, "tokens_compared": len(ref.tokens), "value": 0.0,
                "passed": False, "stopped": "error", "error": f"{type(error).__name__}: {error}"}
    entry.update(text=ref.text(run.tokens), token_ids=run.tokens, stopped=run.stopped)
    if not run.tokens and run.stopped == "length":
        # A package shorter than the prompt is the user's choice, not an error: nothing to compare.
        return {**entry, "matching_tokens": 0, "tokens_compared": 0, "passed": None,
                "note": f"the {len(ref.prompt_ids)}-token prompt does not fit the package: continuation not checked"}
    result = compare(ref, run.tokens, atol)
    if run.stopped == "length" and len(run.tokens) < len(ref.tokens):
        result.setdefault("note", f"the package's length allowed only {len(run.tokens)} new tokens")
    return {**entry, **result, **split_texts(ref, run.tokens, result["matching_tokens"])}


def split_texts(ref: Reference, tokens: list[int], same: int) -> dict:
    """The texts as counted: what both wrote (the first `same` tokens), then each one's own
    rest, so a reader sees exactly where the two part (None without a tokenizer)."""
    if ref.tokenizer is None:
        return {}
    return {"same_text": ref.text(tokens[:same]), "own_rest": ref.text(tokens[same:]),
            "pytorch_rest": ref.text(ref.tokens[same:])}


def check_row(ref: Reference, run: dict) -> Check | None:
    """The run as a validation check row (None for a run that was not checked)."""
    if run["passed"] is None:
        return None
    return Check(run["package"], f"continuation, {ref.new_tokens} tokens", "logits", run["mode"], "continuation_match",
                 run["value"], 1.0, bool(run["passed"]), True)


def section(ref: Reference, runs: list[dict]) -> dict:
    data = {
        "prompt": ref.prompt if ref.prompt is not None else "(no tokenizer: synthetic token ids)",
        "prompt_ids": ref.prompt_ids,
        "new_tokens": ref.new_tokens,
        "pytorch": {"text": ref.text(ref.tokens), "token_ids": ref.tokens},
        "runs": [{k: v for k, v in run.items() if k != "value"} for run in runs],
        # None: nothing was checked (no package could be driven, or the prompt fits none).
        "passed": all(run["passed"] is not False for run in runs) if any(run["passed"] is not None for run in runs) else None,
    }
    return data
