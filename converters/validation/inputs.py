"""Deterministic validation inputs: real text through the model's tokenizer when it has
one, and a synthetic image (gradients and a checkerboard) of the right size otherwise.

Each input set holds what the package receives (numpy, by package input name) and what
the PyTorch wrapper receives (torch tensors, positionally): for images these differ by
the scale and bias that Core ML applies to an image input before the program runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..configs import ExportConfig
from . import whisperkit

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Core ML runs models on the phone: CPU, GPU and the Neural Engine.",
]
CONTEXT = "Paris is the capital of France."
CHOICES = ["It is a city near the river.", "A fish.", "The quick brown fox jumps over the lazy dog.", "What is a song?"]


@dataclass
class InputSet:
    name: str  # e.g. "text, 128 tokens"
    package: dict[str, np.ndarray]  # what the Core ML package receives
    torch_args: tuple  # what the PyTorch wrapper receives, in order
    valid_positions: int | None = None  # tokens before padding (text), for token-level checks
    steps: list[dict[str, np.ndarray]] | None = None  # stateful: successive feeds sharing one state


def sequence_lengths(cfg: ExportConfig) -> list[int]:
    """Lengths to validate at: each enumerated size (up to four), both ends of a range."""
    sequence = cfg.options.sequence_length
    if sequence.kind == "range":
        return sorted({max(2, sequence.minimum), sequence.maximum})
    sizes = list(sequence.sizes)
    if len(sizes) > 4:
        sizes = [sizes[0], sizes[len(sizes) // 3], sizes[2 * len(sizes) // 3], sizes[-1]]
    return sizes


def _ids(tokenizer, cfg: ExportConfig, length: int, text: str, pair: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    if tokenizer is None:
        vocab = max(cfg.attributes.vocab_size or 100, 8)
        rng = np.random.default_rng(length)
        valid = max(1, (3 * length) // 4)
        ids = np.zeros(length, dtype=np.int32)
        ids[:valid] = rng.integers(3, vocab, valid)
        mask = np.zeros(length, dtype=np.int32)
        mask[:valid] = 1
        return ids, mask
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = tokenizer(text, pair, truncation=True, max_length=length, add_special_tokens=True)
    ids = list(encoded["input_ids"])[:length]
    out_ids = np.full(length, pad_id, dtype=np.int32)
    out_mask = np.zeros(length, dtype=np.int32)
    out_ids[: len(ids)] = ids
    out_mask[: len(ids)] = 1
    return out_ids, out_mask


def text_inputs(cfg: ExportConfig, tokenizer, part: str, length: int) -> InputSet:
    names = [spec.name for spec in cfg.inputs(part)]
    if cfg.task == "multiple-choice":
        pairs = [_ids(tokenizer, cfg, length, CONTEXT, choice) for choice in CHOICES[: _choices(cfg)]]
        ids = np.stack([p[0] for p in pairs])[None]
        mask = np.stack([p[1] for p in pairs])[None]
        arrays = [ids, mask]
        if len(names) == 3:
            arrays.append(_token_types(mask))
        valid = None
    else:
        ids, mask = _ids(tokenizer, cfg, length, TEXTS[0])
        arrays = [ids[None], mask[None]]
        valid = int(mask.sum())
    package = dict(zip(names, arrays))
    return InputSet(f"text, {length} tokens", package, tuple(torch.from_numpy(a) for a in arrays), valid)


def _choices(cfg: ExportConfig) -> int:
    return cfg.inputs()[0].shape[1]


def _token_types(mask: np.ndarray) -> np.ndarray:
    # Context then choice: mark the second half of the real tokens as segment 1 (approximate
    # but deterministic; the same array goes to both sides).
    types = np.zeros_like(mask)
    for index in np.ndindex(mask.shape[:-1]):
        valid = int(mask[index].sum())
        types[index][valid // 2 : valid] = 1
    return types


def decoder_inputs(cfg: ExportConfig, part: str, tokenizer, length: int, encoder) -> InputSet:
    """Decoder inputs, with the encoder side computed by the PyTorch `encoder` wrapper so
    the decoder package is checked on its own."""
    start = cfg.attributes.decoder_start_token_id or 0
    target, target_mask = _ids(tokenizer, cfg, length, TEXTS[1])
    target = np.concatenate([[start], target[:-1]]).astype(np.int32)[None]
    target_mask = np.concatenate([[1], target_mask[:-1]]).astype(np.int32)[None]
    source, source_mask = _ids(tokenizer, cfg, cfg.options.sequence_length.maximum, TEXTS[0])
    source, source_mask = torch.from_numpy(source[None]), torch.from_numpy(source_mask[None])
    with torch.no_grad():
        hidden = encoder(source, source_mask)[0].float()
    arrays = [target, target_mask, hidden.numpy(), source_mask.numpy()]
    names = [spec.name for spec in cfg.inputs(part)]
    torch_args = (torch.from_numpy(target), torch.from_numpy(target_mask), hidden, source_mask)
    return InputSet(f"text, {length} target tokens", dict(zip(names, arrays)), torch_args, int(target_mask.sum()))


def synthetic_image(height: int, width: int) -> np.ndarray:
    """A deterministic RGB image with smooth gradients and sharp edges, 0..255, [1,3,H,W]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 255.0 * x / max(width - 1, 1)
    green = 255.0 * y / max(height - 1, 1)
    blue = np.where(((x // max(width // 8, 1)) + (y // max(height // 8, 1))) % 2 == 0, 230.0, 25.0)
    return np.stack([red, green, blue])[None].astype(np.float32)


def image_inputs(cfg: ExportConfig, part: str = "model", size: tuple[int, int] | None = None) -> InputSet:
    spec = cfg.inputs(part)[0]
    height, width = size or spec.shape[2:]  # `size`: one of the image sizes the package takes
    image = synthetic_image(height, width)
    scale, bias = spec.image["scale"], np.asarray(spec.image["bias"], dtype=np.float32).reshape(1, 3, 1, 1)
    preprocessed = image * scale + bias  # what Core ML hands the program's first op
    return InputSet(f"synthetic image {width}x{height}", {spec.name: image}, (torch.from_numpy(preprocessed),))


EXTENDS = 8  # one-token calls after the prefill in each stateful input set
SYNTHETIC_TOKENS = 96  # without a tokenizer: the synthetic ids of a stateful set (a 128-token context's 3/4)


def stateful_inputs(cfg: ExportConfig, tokenizer) -> list[InputSet]:
    """A prompt prefilled at once, then 8 tokens one at a time on the same state, sent the
    two ways callers send them; the package's logits for every token are compared with the
    plain model run on the whole sequence.

    - swift-transformers (`LanguageModelWithStatefulKVCache`): causalMask = zeros
      [1, 1, 1, T + 1], T = tokens so far including the new ones;
    - explicit (Apple's recipe): a -1e4 upper triangle [1, 1, n, n] at the prefill, then
      zeros [1, 1, 1, T].

    The sequence is the two texts (a few dozen tokens), or SYNTHETIC_TOKENS synthetic ids: not
    the whole context, which at 2048 would make every check a 2048-token prefill. A package
    longer than the model's sliding window gets a sequence past the window (the texts
    repeated), so the prefill and the extends both cross it."""
    context = cfg.options.sequence_length.maximum
    sliding = getattr(cfg, "sliding_beyond_window", lambda: None)()
    reach = min(context - 1, sliding.window + 2 * EXTENDS) if sliding else 0  # tokens that pass the window
    text = TEXTS[0] + " " + TEXTS[1]
    for _ in range(16):  # doubling (a tokenizer that encodes to nothing never gets there)
        if tokenizer is None or len(tokenizer(text)["input_ids"]) >= reach:
            break
        text = text + " " + text
    ids, mask = _ids(tokenizer, cfg, context, text)
    # swift-transformers' mask is one longer than the tokens: at most context - 1 of them.
    total = min(int(mask.sum()), context - 1)
    if tokenizer is None:
        total = min(total, max(SYNTHETIC_TOKENS, reach))
    ids = ids[:total][None].astype(np.int32)
    prompt = max(1, total - EXTENDS)
    torch_args = (torch.from_numpy(ids), torch.ones_like(torch.from_numpy(ids)))

    def zeros(length: int) -> np.ndarray:
        return np.zeros((1, 1, 1, length), np.float32)

    swift = [{"inputIds": ids[:, :prompt], "causalMask": zeros(prompt + 1)}]
    swift += [{"inputIds": ids[:, t : t + 1], "causalMask": zeros(t + 2)} for t in range(prompt, total)]
    triangle = np.triu(np.full((prompt, prompt), np.float32(-1e4)), 1)[None, None]
    explicit = [{"inputIds": ids[:, :prompt], "causalMask": triangle}]
    explicit += [{"inputIds": ids[:, t : t + 1], "causalMask": zeros(t + 1)} for t in range(prompt, total)]
    steps = f"{prompt}-token prompt + {total - prompt} cached steps"
    return [
        InputSet(f"text, {steps} (swift-transformers masks)", swift[0], torch_args, total, swift),
        InputSet(f"text, {steps} (explicit masks)", explicit[0], torch_args, total, explicit),
    ]


def input_sets(cfg: ExportConfig, part: str, tokenizer, encoder=None) -> list[InputSet]:
    """The inputs to validate `part` with; `encoder` (the PyTorch encoder wrapper) is needed
    for a text2text decoder."""
    if cfg.states(part):
        return stateful_inputs(cfg, tokenizer)
    if any(spec.image for spec in cfg.inputs(part)):  # an image input (an image-text model's text part has none)
        return [image_inputs(cfg, part, size) for size in getattr(cfg, "image_sizes", lambda: [None])()]  # each size it takes
    if cfg.modality == "audio":  # Whisper: a voiced clip, its log-mel, a decoder call (whisperkit.py)
        return [InputSet(*whisperkit.package_inputs(cfg, part, encoder))]
    if cfg.fed_by(part):
        return [decoder_inputs(cfg, part, tokenizer, length, encoder) for length in sequence_lengths(cfg)]
    return [text_inputs(cfg, tokenizer, part, length) for length in sequence_lengths(cfg)]
