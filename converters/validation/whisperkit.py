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
    timestamps: the tokens after the prompt, without the end-of-text token."""
    import torch  # heavy: only when validating against the PyTorch model

    features = feature_extractor(np.asarray(audio, dtype=np.float32), sampling_rate=feature_extractor.sampling_rate,
                                 return_tensors="pt").input_features.to(model.dtype)
    multilingual = model.config.vocab_size != ENGLISH_ONLY_VOCAB
    with torch.no_grad():
        sequences = model.generate(input_features=features, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                   return_timestamps=False, **(dict(language=language, task=task) if multilingual else {}))
    eos = model.generation_config.eos_token_id
    return [int(t) for t in sequences[0] if int(t) != eos]
