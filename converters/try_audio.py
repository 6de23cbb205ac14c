"""Try Whisper's three packages (WhisperKit's MelSpectrogram, AudioEncoder and TextDecoder) on
a clip, beside the PyTorch model they came from (issue 30): each side's transcript and token ids.

The packages are driven as validation drives them, as WhisperKit does
(validation/whisperkit.py: the clip padded to the 30-second window -> mel -> encoder -> greedy
decoding one token a call with the cache outside the package); PyTorch's side is transformers'
own greedy `generate` on the same 16 kHz samples, in the same language and task (the model's own, from its
generation config: validation/whisperkit.model_language). The clip is the
person's (a WAV file's bytes, any rate, mono or not: mixed down and resampled to 16 kHz as
WhisperKit's AudioProcessor does before its MelSpectrogram) or, without one, validation's
voiced clip. The packages run in the backend's runner, as every try does.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from .backends import backend_for_package
from .errors import UserInputError
from .source_tokenizer import check_tokenizer
from .validation.whisperkit import (PARTS, generate_tokens, model_language, prompt_words, transcribe_tokens, voiced_clip,
                                   whisperkit_prompt)

# torch and transformers are imported where the packages run.

RATE = 16000  # Whisper's sampling rate: its MelSpectrogram takes 30 s of it
MAX_SECONDS = 30  # one window: what WhisperKit transcribes in one pass
MAX_NEW_TOKENS = 96  # tokens decoded after the prompt, at most (a 30 s clip says about 80 words)


def clip(data: bytes | None, rate: int = RATE) -> np.ndarray:
    """The clip as Whisper takes it: mono float32 in -1..1 at `rate`, at most MAX_SECONDS long."""
    if data is None:
        return voiced_clip(rate=rate)
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    try:
        source_rate, samples = wavfile.read(io.BytesIO(data))
    except (ValueError, EOFError, OSError) as error:
        raise UserInputError(f"The file is not a clip this page can read (a WAV file): {error}") from None
    samples = np.asarray(samples)
    if samples.dtype == np.uint8:  # 8-bit WAV: unsigned, centred on 128
        samples = (samples.astype(np.float64) - 128) / 128
    elif np.issubdtype(samples.dtype, np.integer):
        samples = samples.astype(np.float64) / -float(np.iinfo(samples.dtype).min)
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim == 2:  # mixed down to mono
        samples = samples.mean(axis=1)
    if samples.size == 0 or source_rate <= 0:
        raise UserInputError("The clip is empty: record or choose one with some speech.")
    if samples.size / source_rate > MAX_SECONDS + 0.5:
        raise UserInputError(f"The clip is {samples.size / source_rate:.0f} s long; try one of at most {MAX_SECONDS} s "
                             "(one window of the model).")
    if source_rate != rate:
        divisor = np.gcd(int(source_rate), rate)
        samples = resample_poly(samples, rate // divisor, int(source_rate) // divisor)
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - start, 3)


def transcribe(packages: list[Path], model_dir: Path, data: bytes | None, mode: str, language: str | None = None,
               task: str | None = None) -> dict:
    """Both transcripts of the clip, their token ids, and how many of PyTorch's tokens the
    packages decode the same before a first difference. The language and task: the model's own
    (its generation config, as validation reads it) unless given."""
    import torch
    from transformers import AutoConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from .configs import config_class_for
    from .loading import load_preprocessor
    from .options import ConversionOptions

    by_part = {path.stem: path for path in packages}
    missing = [part for part in PARTS if part not in by_part]
    if missing:
        raise UserInputError(f"This conversion has no {', '.join(missing)} package: convert it again to try it.")
    audio = clip(data)
    hf_config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
    cfg = config_class_for(hf_config.model_type)(hf_config, "automatic-speech-recognition", ConversionOptions(),
                                                  load_preprocessor(model_dir))
    model = WhisperForConditionalGeneration.from_pretrained(str(model_dir), use_safetensors=True, trust_remote_code=False,
                                                            torch_dtype=torch.float32).eval()
    own_language, own_task = model_language(model.generation_config.to_dict(), hf_config.to_dict())
    language, task = language or own_language, task or own_task
    prompt = whisperkit_prompt(model.generation_config.to_dict(), hf_config.vocab_size, language, task)
    new_tokens = max(1, min(MAX_NEW_TOKENS, hf_config.max_target_positions - len(prompt) - 1))
    runners = []
    for part in PARTS:
        backend = backend_for_package(by_part[part], check=False)
        runners.append(backend.runner(by_part[part]))
    try:
        drive = [lambda feed, r=r: r.predict(feed, mode=mode) for r in runners]
        ours, package_seconds = _timed(lambda: transcribe_tokens(
            *drive, audio, prompt, hf_config.eos_token_id, cfg.samples(), (cfg.cache_width(), cfg.cache_slots()), new_tokens))
    finally:
        for runner in runners:
            getattr(runner, "close", lambda: None)()
    extractor = WhisperFeatureExtractor(**cfg.features())
    theirs, torch_seconds = _timed(lambda: generate_tokens(model, extractor, audio, new_tokens, language, task))
    tokenizer = check_tokenizer(model_dir).tokenizer
    matching = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))

    def side(tokens: list[int], seconds: float) -> dict:
        text = tokenizer.decode(tokens, skip_special_tokens=True).strip() if tokenizer is not None else None
        return {"text": text, "token_ids": tokens, "seconds": seconds}

    return {"kind": "transcribe", "mode": mode, "clip_seconds": round(len(audio) / RATE, 2), "language": language, "task": task,
            "language_tokens": prompt_words(model.generation_config.to_dict(), hf_config.vocab_size, language, task),
            "package": side(ours, package_seconds), "pytorch": side(theirs, torch_seconds), "matching_tokens": matching}
