"""Drive the three Whisper packages as WhisperKit drives them (docs/whisperkit.md): the audio
padded to the window -> MelSpectrogram -> AudioEncoder -> TextDecoder one position a call,
the prompt forced token by token, the greedy token fed back, each call's key and value copied
into the cache at its position and the two masks moved on. The token ids it decodes are
compared with transformers' own `generate` on the same audio and prompt.

A runner is what runs one package: a callable from an input dict to an output dict (the
reference executor in a mode, or Core ML on a Mac), so this module asks no backend.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Runner = Callable[[dict], dict]
ENGLISH_ONLY_VOCAB = 51864  # WhisperKit: any other vocabulary size is multilingual (ModelUtilities.swift:124-126)
MAX_TOKEN_CONTEXT = 448 // 2  # WhisperKit's Constants.maxTokenContext (Models.swift:1334)
MASK_VALUE = -10000.0  # WhisperKit's decoder_key_padding_mask for a slot not yet used (TextDecoder.swift:143)


def voiced_clip(seconds: float = 3.0, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """A deterministic speech-like clip: a gliding pitch with harmonics under a syllable-rate
    envelope, and a little noise."""
    t = np.arange(int(rate * seconds)) / rate
    pitch = 2 * np.pi * (120 + 40 * t) * t
    voiced = sum(np.sin(k * pitch) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    noise = np.random.default_rng(seed).standard_normal(t.shape)
    return (0.2 * voiced + 0.01 * noise).astype(np.float32)


def package_inputs(cfg, part: str, feeder=None) -> tuple[str, dict, tuple]:
    """One validation input set of a Whisper part: (its name, what the package receives, what the
    PyTorch wrapper receives). The mel part takes the voiced clip, the encoder its log-mel, the
    decoder WhisperKit's first call: start of transcript at position 0, an empty cache, and the
    clip's encoder output (`feeder`: the PyTorch encoder wrapper; random without it)."""
    import torch  # heavy: only when validating against the PyTorch model

    specs = cfg.inputs(part)
    audio = pad_audio(voiced_clip(), cfg.samples())
    if specs[0].name == "audio":
        return "voiced clip, 30 s window", {"audio": audio}, (torch.from_numpy(audio),)
    with torch.no_grad():
        features = cfg.wrap(None, "MelSpectrogram")(torch.from_numpy(audio))[0]
    if specs[0].name == "melspectrogram_features":
        return "log-mel of the voiced clip", {specs[0].name: features.numpy()}, (features.float(),)
    example = cfg.example_inputs(part)
    slots = example["kv_cache_update_mask"].shape[-1]
    example["input_ids"] = torch.tensor([cfg.hf_config.decoder_start_token_id], dtype=torch.int32)
    example["cache_length"] = torch.zeros(1, dtype=torch.int32)
    example["key_cache"] = torch.zeros_like(example["key_cache"])
    example["value_cache"] = torch.zeros_like(example["value_cache"])
    example["kv_cache_update_mask"] = torch.nn.functional.one_hot(torch.tensor([0]), slots).to(torch.int32)
    example["decoder_key_padding_mask"] = torch.full((1, slots), MASK_VALUE)
    example["decoder_key_padding_mask"][0, 0] = 0.0
    if feeder is not None:
        with torch.no_grad():
            example["encoder_output_embeds"] = feeder(features.float())[0].float()
    dtypes = {spec.name: spec.dtype for spec in specs}
    package = {name: value.numpy().astype(dtypes[name]) for name, value in example.items()}
    what = "first call (start of transcript), the clip's encoder output" if feeder is not None else "first call, random encoder output"
    return what, package, tuple(torch.from_numpy(package[s.name]).to(example[s.name].dtype) for s in specs)


DEFAULT_LANGUAGE = "en"  # WhisperKit's Constants.defaultLanguageCode (Models.swift:1459): its prompt when the app names none


def model_language(generation_config: dict, model_config: dict | None = None) -> tuple[str, str]:
    """(language code, task) the checkpoint's own generation settings ask for, read as transformers'
    `generate` reads them (models/whisper/generation_whisper.py:1502-1535): `language` and `task` when
    set, else `forced_decoder_ids` ([[1, <|lang|> id], [2, <|task|> id], …]) of generation_config.json,
    else of config.json; a language or task they leave open (None: generate would detect it) is
    English and transcribe, WhisperKit's defaults (TextDecoder.swift:183, Configurations.swift:193).
    A fine-tune for another language names it there, and is validated in it."""
    lang_to_id = generation_config.get("lang_to_id") or {}
    task_to_id = generation_config.get("task_to_id") or {}
    language, task = generation_config.get("language"), generation_config.get("task")
    if language is None and task is None:
        forced = generation_config.get("forced_decoder_ids") or (model_config or {}).get("forced_decoder_ids") or []
        by_position = {int(position): token for position, token in forced if token is not None}
        languages = {token: name for name, token in lang_to_id.items()}
        tasks = {token: name for name, token in task_to_id.items()}
        if by_position.get(1) in languages:
            language = languages[by_position[1]]
        if by_position.get(2) in tasks:
            task = tasks[by_position[2]]
    return _language_code(language, lang_to_id) if language else DEFAULT_LANGUAGE, task or "transcribe"


def _language_code(language: str, lang_to_id: dict) -> str:
    """'fr' from '<|fr|>', 'fr' or 'french' (transformers' TO_LANGUAGE_CODE names); as given otherwise."""
    code = language.strip().lower().removeprefix("<|").removesuffix("|>")
    if f"<|{code}|>" in lang_to_id or not lang_to_id:
        return code
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE  # names: only when given one

    return TO_LANGUAGE_CODE.get(code, code)


def prompt_words(generation_config: dict, vocab_size: int, language: str, task: str) -> str:
    """The language and task tokens the prompt forces, as said in validation's row and the card:
    '<|fr|> <|transcribe|>', or 'English-only' for a model whose prompt has none."""
    if vocab_size == ENGLISH_ONLY_VOCAB:
        return "English-only, no language token"
    return f"<|{language}|> <|{task}|>"


def whisperkit_prompt(generation_config: dict, vocab_size: int, language: str = "en", task: str = "transcribe") -> list[int]:
    """The prompt WhisperKit forces without timestamps (TextDecoder.swift:176-209): start of
    transcript, then for a multilingual model the language and the task, then no-timestamps."""
    prompt = [generation_config["decoder_start_token_id"]]
    if vocab_size != ENGLISH_ONLY_VOCAB:
        prompt += [generation_config["lang_to_id"][f"<|{language}|>"], generation_config["task_to_id"][task]]
    return prompt + [generation_config["no_timestamps_token_id"]]


def pad_audio(audio: np.ndarray, samples: int) -> np.ndarray:
    """The clip then zeros, to the window's length (AudioProcessor.swift:151-174)."""
    window = np.zeros(samples, dtype=np.float32)
    clip = np.asarray(audio, dtype=np.float32)[:samples]
    window[: len(clip)] = clip
    return window


def transcribe_tokens(mel: Runner, encoder: Runner, decoder: Runner, audio: np.ndarray, prompt: list[int], eos: int,
                      samples: int, cache_shape: tuple[int, int], max_new_tokens: int) -> list[int]:
    """The tokens WhisperKit's greedy loop decodes after the prompt (TextDecoder.swift:573-707),
    up to `max_new_tokens`, without the end-of-text token; `cache_shape`: (d_model x layers, slots)."""
    features = mel({"audio": pad_audio(audio, samples)})["melspectrogram_features"]
    embeds = encoder({"melspectrogram_features": features})["encoder_output_embeds"]
    width, slots = cache_shape
    keys = np.zeros((1, width, 1, slots), dtype=np.float16)
    values = np.zeros((1, width, 1, slots), dtype=np.float16)
    update = np.zeros((1, slots), dtype=np.int32)
    padding = np.full((1, slots), MASK_VALUE, dtype=np.float16)
    update[0, 0], padding[0, 0] = 1, 0.0
    tokens = list(prompt)
    token = prompt[-1]
    for position in range(min(MAX_TOKEN_CONTEXT - 1, slots - 1)):
        if position < len(prompt):
            token = prompt[position]  # forced (no timestamps: the last prompt token is never a timestamp)
        out = decoder({
            "input_ids": np.array([token], dtype=np.int32),
            "cache_length": np.array([position], dtype=np.int32),
            "key_cache": keys, "value_cache": values, "kv_cache_update_mask": update,
            "encoder_output_embeds": embeds, "decoder_key_padding_mask": padding,
        })
        token = int(np.argmax(np.asarray(out["logits"], dtype=np.float32)[0, 0]))
        # WhisperKit stops at end of text even where the prompt is still being forced.
        if token == eos or len(tokens) >= MAX_TOKEN_CONTEXT - 1:
            break
        if position >= len(prompt) - 1:
            tokens.append(token)
        keys[..., position] = np.asarray(out["key_cache_updates"], dtype=np.float16)[..., 0]
        values[..., position] = np.asarray(out["value_cache_updates"], dtype=np.float16)[..., 0]
        padding[0, position + 1] = 0.0
        update[0, position], update[0, position + 1] = 0, 1
        if len(tokens) - len(prompt) >= max_new_tokens:
            break
    return tokens[len(prompt):]


def generate_tokens(model, feature_extractor, audio: np.ndarray, max_new_tokens: int, language: str = "en",
                    task: str = "transcribe") -> list[int]:
    """transformers' greedy `generate` on the same audio, in the same language and task without
    timestamps and with no token suppressed: the tokens after the prompt, without end-of-text.
    The language goes as its token (`<|fr|>`), which generate looks up in lang_to_id first
    (generation_whisper.py:1480-1500), so a token a fine-tune added is found too."""
    import torch  # heavy: only when validating against the PyTorch model

    features = feature_extractor(np.asarray(audio, dtype=np.float32), sampling_rate=feature_extractor.sampling_rate,
                                 return_tensors="pt").input_features.to(model.dtype)
    multilingual = model.config.vocab_size != ENGLISH_ONLY_VOCAB
    with torch.no_grad():
        # WhisperKit's default options suppress no token (Configurations.swift:204-205): neither does this.
        sequences = model.generate(input_features=features, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                   return_timestamps=False, suppress_tokens=[], begin_suppress_tokens=[],
                                   **(dict(language=f"<|{language}|>", task=task) if multilingual else {}))
    eos = model.generation_config.eos_token_id
    return [int(t) for t in sequences[0] if int(t) != eos]


PARTS = ("MelSpectrogram", "AudioEncoder", "TextDecoder")
NEW_TOKENS = 24  # greedy tokens compared after the prompt


def applies(cfg, parts) -> bool:
    """Whisper's three packages are all there to be driven together."""
    return cfg.modality == "audio" and set(PARTS) <= set(parts)


def checks(cfg, model, packages: list[tuple[str, object, object]], modes, threshold: float = 1.0) -> list:
    """One row per format and mode: the token ids the three packages decode from the voiced clip,
    driven as WhisperKit drives them, against transformers' greedy `generate`: the share of
    generate's tokens matched before the first difference, at least `threshold` (a float
    package: all of them)."""
    from ..report import Check

    extractor = _feature_extractor(cfg)
    audio = voiced_clip()
    config = cfg.hf_config
    generation = model.generation_config.to_dict()
    language, task = model_language(generation, config.to_dict())
    prompt = whisperkit_prompt(generation, config.vocab_size, language, task)
    new_tokens = max(1, min(NEW_TOKENS, config.max_target_positions - len(prompt) - 1))
    expected = generate_tokens(model, extractor, audio, new_tokens, language, task)
    words = prompt_words(generation, config.vocab_size, language, task)
    rows = []
    by_format: dict[str, tuple[object, dict]] = {}
    for part, path, backend in packages:
        by_format.setdefault(backend.name, (backend, {}))[1][part] = path
    for backend, paths in by_format.values():
        if not set(PARTS) <= set(paths):
            continue
        runners = [backend.runner(paths[part]) for part in PARTS]
        try:
            for mode in getattr(runners[0], "modes", None) or modes:
                run = [lambda feed, r=r: r.predict(feed, mode=mode) for r in runners]
                got = transcribe_tokens(*run, audio, prompt, config.eos_token_id, cfg.samples(),
                                        (cfg.cache_width(), cfg.cache_slots()), new_tokens)
                same = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
                share = 1.0 if got == expected else same / max(len(expected), 1)
                passed = got == expected or share >= threshold
                rows.append(Check(" + ".join(PARTS), f"voiced clip, WhisperKit's greedy decoding, {words}, {len(expected)} tokens",
                                  "token ids", mode, "continuation_match", round(share, 6), threshold, passed, True))
        finally:
            for runner in runners:
                getattr(runner, "close", lambda: None)()
    return rows


def _feature_extractor(cfg):
    from transformers import WhisperFeatureExtractor  # heavy: only when validating

    return WhisperFeatureExtractor(**cfg.features())
