"""The Whisper family (task automatic-speech-recognition): the three packages WhisperKit
loads, with the names, shapes and dtypes its Swift code reads (docs/whisperkit.md cites them).

- `MelSpectrogram`: 30 s of 16 kHz audio -> the log-mel features, computed as transformers'
  `WhisperFeatureExtractor` computes them (its mel filters, its periodic Hann window, its
  centred reflect-padded frames), as plain convolution and matrix products;
- `AudioEncoder`: the log-mel features -> the encoder's hidden states, [1, d_model, 1, 1500];
- `TextDecoder`: one token a call, the KV cache kept outside the package: the call at
  position t writes this token's key and value into slot t (`kv_cache_update_mask`, one-hot),
  attends over every slot with `decoder_key_padding_mask` added, and returns the new key and
  value alone for WhisperKit to copy into its cache; with the checkpoint's alignment heads
  (generation_config.json's `alignment_heads`), also `alignment_heads_weights` [1, 1500], what
  WhisperKit's word timestamps read (TextDecoder.swift:317, 420-422).

WhisperKit reads the float outputs' buffers as Float16 (its sampler and its cache copy), so
every float output is float16 whatever the package's compute precision.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .base import ExportConfig, InputSpec, OutputKind, OutputSpec

MEL, ENCODER, DECODER = "MelSpectrogram", "AudioEncoder", "TextDecoder"
MASK_VALUE = -1e4  # WhisperKit's decoder_key_padding_mask value for an unused slot
LOG_FLOOR = math.log(1e-10)  # WhisperFeatureExtractor's mel floor, in the log domain
COMPANION_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "config.json", "generation_config.json",
                   "preprocessor_config.json")


def feature_settings(preprocessor: dict, num_mel_bins: int) -> dict:
    """The feature extractor's settings (preprocessor_config.json), Whisper's defaults where absent."""
    return {
        "feature_size": int(preprocessor.get("feature_size", num_mel_bins)),
        "sampling_rate": int(preprocessor.get("sampling_rate", 16000)),
        "hop_length": int(preprocessor.get("hop_length", 160)),
        "n_fft": int(preprocessor.get("n_fft", 400)),
        "chunk_length": int(preprocessor.get("chunk_length", 30)),
    }


class LogMelSpectrogram(torch.nn.Module):
    """`WhisperFeatureExtractor._np_extract_fbank_features` on one padded window, in torch ops a
    Core ML program has: the STFT is a strided convolution with the windowed DFT's cosine and
    sine rows, the centre padding a reflection made of reversed slices."""

    def __init__(self, mel_filters, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        bins = n_fft // 2 + 1
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64)[:, None]
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        angle = 2 * math.pi * k * n / n_fft
        kernel = torch.cat([torch.cos(angle) * window, torch.sin(angle) * window])  # [2 * bins, n_fft]
        self.register_buffer("kernel", kernel[:, None, :].float())
        self.register_buffer("filters", torch.as_tensor(mel_filters, dtype=torch.float64).T.contiguous().float())  # [mels, bins]

    def forward(self, audio):
        half = self.n_fft // 2
        left = torch.flip(audio[1:half + 1], dims=[0])
        right = torch.flip(audio[-half - 1:-1], dims=[0])
        padded = torch.cat([left, audio, right])[None, None, :]
        spectrum = torch.nn.functional.conv1d(padded, self.kernel, stride=self.hop_length)[0]  # [2 * bins, frames]
        bins = spectrum.shape[0] // 2
        power = spectrum[:bins, :-1] ** 2 + spectrum[bins:, :-1] ** 2  # the last frame is dropped, as transformers does
        mel = torch.matmul(self.filters, power)
        log_spec = torch.clamp(torch.log(mel), min=LOG_FLOOR) / math.log(10.0)
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        log_spec = (log_spec + 4.0) / 4.0
        return (log_spec[None, :, None, :].to(torch.float16),)


class AudioEncoderWrapper(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, melspectrogram_features):
        hidden = self.encoder(input_features=melspectrogram_features.squeeze(2).float()).last_hidden_state
        return (hidden.transpose(1, 2).unsqueeze(2).to(torch.float16),)


class TextDecoderStep(torch.nn.Module):
    """One decoder position with the cache outside, from transformers' Whisper decoder weights
    (as whisperkittools' WhisperTextDecoder computes it: whisperkit/text_decoder.py:172-244)."""

    def __init__(self, model, alignment_heads: list | None = None):
        super().__init__()
        self.decoder = model.model.decoder
        self.proj_out = model.proj_out
        config = model.config
        self.d_model = config.d_model
        self.heads = config.decoder_attention_heads
        self.alignment_heads = [(int(layer), int(head)) for layer, head in alignment_heads or []]

    def _heads(self, x):  # [1, length, d] -> [1, heads, length, head_dim]
        return x.reshape(1, x.shape[1], self.heads, self.d_model // self.heads).transpose(1, 2)

    def _attend(self, attention, query, keys, values, mask=None, weights=None):
        scores = torch.matmul(self._heads(attention.q_proj(query) * attention.scaling), self._heads(keys).transpose(2, 3))
        if mask is not None:
            scores = scores + mask
        probabilities = torch.softmax(scores.float(), dim=-1)
        if weights is not None:
            weights.append(probabilities)  # [1, heads, 1, frames]: the cross-attention's, for the alignment heads
        mixed = torch.matmul(probabilities.to(values.dtype), self._heads(values))
        return attention.out_proj(mixed.transpose(1, 2).reshape(1, query.shape[1], self.d_model))

    def forward(self, input_ids, cache_length, key_cache, value_cache, kv_cache_update_mask, encoder_output_embeds,
                decoder_key_padding_mask):
        decoder = self.decoder
        hidden = decoder.embed_tokens(input_ids)[:, None, :] + decoder.embed_positions.weight[cache_length][:, None, :]
        encoder = encoder_output_embeds.squeeze(2).transpose(1, 2).to(hidden.dtype)  # [1, frames, d]
        update = kv_cache_update_mask.to(hidden.dtype)[:, :, None]  # [1, slots, 1]: 1 at this position
        padding = decoder_key_padding_mask.to(hidden.dtype)[:, None, None, :]
        layer_keys = key_cache.to(hidden.dtype).squeeze(2).transpose(1, 2).split(self.d_model, dim=2)
        layer_values = value_cache.to(hidden.dtype).squeeze(2).transpose(1, 2).split(self.d_model, dim=2)
        new_keys, new_values, cross_weights = [], [], []
        for layer, cached_keys, cached_values in zip(decoder.layers, layer_keys, layer_values):
            residual = hidden
            normed = layer.self_attn_layer_norm(hidden)
            key, value = layer.self_attn.k_proj(normed), layer.self_attn.v_proj(normed)
            new_keys.append(key)
            new_values.append(value)
            keys = cached_keys * (1.0 - update) + key * update
            values = cached_values * (1.0 - update) + value * update
            hidden = residual + self._attend(layer.self_attn, normed, keys, values, padding)
            residual = hidden
            normed = layer.encoder_attn_layer_norm(hidden)
            cross = layer.encoder_attn
            hidden = residual + self._attend(cross, normed, cross.k_proj(encoder), cross.v_proj(encoder), weights=cross_weights)
            residual = hidden
            hidden = residual + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden))))
        logits = self.proj_out(decoder.layer_norm(hidden))
        key_updates = torch.cat(new_keys, dim=2).transpose(1, 2).unsqueeze(3)  # [1, d * layers, 1, 1]
        value_updates = torch.cat(new_values, dim=2).transpose(1, 2).unsqueeze(3)
        outputs = (logits.to(torch.float16), key_updates.to(torch.float16), value_updates.to(torch.float16))
        if self.alignment_heads:  # their cross-attention weights, averaged (whisperkittools text_decoder.py:157-168)
            chosen = torch.cat([cross_weights[layer][:, head, 0, :][:, None, :] for layer, head in self.alignment_heads], dim=1)
            outputs += (chosen.mean(dim=1).to(torch.float16),)
        return outputs


class WhisperExportConfig(ExportConfig):
    modality = "audio"
    family = "speech"
    supported_tasks = ("automatic-speech-recognition",)

    def parts(self) -> list[str]:
        return [MEL, ENCODER, DECODER]

    def model_class_name(self) -> str:
        return "AutoModelForSpeechSeq2Seq"

    def max_sequence_length(self) -> int | None:
        return None  # fixed shapes: 30 s of audio, the decoder's full context

    # --- sizes ----------------------------------------------------------------------------

    def features(self) -> dict:
        return feature_settings(self.preprocessor, self.hf_config.num_mel_bins)

    def samples(self) -> int:
        settings = self.features()
        return settings["chunk_length"] * settings["sampling_rate"]

    def frames(self) -> int:
        return 2 * self.hf_config.max_source_positions

    def cache_slots(self) -> int:
        return self.hf_config.max_target_positions

    def cache_width(self) -> int:
        return self.hf_config.d_model * self.hf_config.decoder_layers

    # --- packages -------------------------------------------------------------------------

    def inputs(self, part: str = MEL) -> list[InputSpec]:
        c = self.hf_config
        mel = InputSpec("melspectrogram_features", (1, c.num_mel_bins, 1, self.frames()), "float16",
                        "Log-mel spectrogram of 30 s of audio")
        if part == MEL:
            return [InputSpec("audio", (self.samples(),), "float32", "30 s of 16 kHz mono audio, padded with zeros")]
        if part == ENCODER:
            return [mel]
        slots, width = self.cache_slots(), self.cache_width()
        return [
            InputSpec("input_ids", (1,), "int32", "Token id for current decoding step"),
            InputSpec("cache_length", (1,), "int32", "Numbers of tokens decoded so far in the current context"),
            InputSpec("key_cache", (1, width, 1, slots), "float16",
                      "Per-layer key projection outputs cached from previous decoding steps concat across dim=1"),
            InputSpec("value_cache", (1, width, 1, slots), "float16",
                      "Per-layer value projection outputs cached from previous decoding steps concat across dim=1"),
            InputSpec("kv_cache_update_mask", (1, slots), "int32",
                      "One-hot encoded vector that marks the current token index in the sequence"),
            InputSpec("encoder_output_embeds", (1, c.d_model, 1, c.max_source_positions), "float16",
                      "Output tensor from AudioEncoder"),
            InputSpec("decoder_key_padding_mask", (1, slots), "float16",
                      "Mask that disables attention on invalid (e.g. padded) decoder tokens"),
        ]

    def outputs(self, part: str = MEL) -> list[OutputSpec]:
        if part == MEL:
            return [OutputSpec("melspectrogram_features", "Log-mel spectrogram of 30 s of audio", kind=OutputKind.VALUES)]
        if part == ENCODER:
            return [OutputSpec("encoder_output_embeds", "Audio encoder hidden states", kind=OutputKind.EMBEDDINGS)]
        return [
            OutputSpec("logits", "Logits over the vocabulary for next token", kind=OutputKind.TOKEN_SCORES),
            OutputSpec("key_cache_updates", "Slice update for key_cache computed during the latest forward pass",
                       kind=OutputKind.CACHE_UPDATE),
            OutputSpec("value_cache_updates", "Slice update for value_cache computed during the latest forward pass",
                       kind=OutputKind.CACHE_UPDATE),
        ] + ([OutputSpec("alignment_heads_weights", "Average cross-attention weights of the alignment heads, for word "
                         "timestamps", kind=OutputKind.VALUES)] if self.alignment_heads() else [])

    def alignment_heads(self) -> list[list[int]]:
        """The checkpoint's alignment heads ([layer, head] pairs: the cross-attention heads that follow
        the audio in time) from generation_config.json beside its config, as whisperkittools reads them
        (text_decoder.py:143-146); none when it names none (distil-whisper, most fine-tunes keep them)."""
        folder = getattr(self.hf_config, "_name_or_path", "") or ""
        try:
            heads = json.loads((Path(folder) / "generation_config.json").read_text()).get("alignment_heads") if folder else None
        except (OSError, ValueError):
            return []
        layers, per_layer = self.hf_config.decoder_layers, self.hf_config.decoder_attention_heads
        valid = isinstance(heads, list) and heads and all(
            isinstance(pair, list) and len(pair) == 2 and 0 <= pair[0] < layers and 0 <= pair[1] < per_layer for pair in heads)
        return [list(map(int, pair)) for pair in heads] if valid else []

    def compresses(self, part: str = MEL) -> bool:
        """The mel spectrogram's DFT rows and mel filters stay float16: WhisperKit's compressed
        variants keep the float MelSpectrogram too (whisperkittools scripts/generate_model.py:271-273)."""
        return part != MEL

    def companion_files(self) -> tuple[str, ...]:
        """WhisperKit reads the tokenizer from the model folder (ModelUtilities.swift:17-77);
        whisperkittools copies config.json and generation_config.json there too."""
        return COMPANION_FILES

    def fed_by(self, part: str = MEL) -> str | None:
        return {ENCODER: MEL, DECODER: ENCODER}.get(part)

    def wrap(self, model, part: str = MEL):
        if part == MEL:
            return LogMelSpectrogram(mel_filters(self.features()), self.features()["n_fft"], self.features()["hop_length"])
        if part == ENCODER:
            return AudioEncoderWrapper(model.model.encoder)
        return TextDecoderStep(model, self.alignment_heads())

    def example_tensor(self, spec, shape, generator):
        position = min(3, self.cache_slots() - 1)
        if spec.name == "cache_length":
            return torch.full(shape, position, dtype=torch.int32)
        if spec.name == "kv_cache_update_mask":
            mask = torch.zeros(shape, dtype=torch.int32)
            mask[:, position] = 1
            return mask
        if spec.name == "decoder_key_padding_mask":
            mask = torch.full(shape, MASK_VALUE)
            mask[:, :position + 1] = 0.0
            return mask
        if spec.name == "audio":
            return 0.1 * torch.randn(shape, generator=generator)
        if spec.dtype.startswith("float"):
            return torch.randn(shape, generator=generator)
        return super().example_tensor(spec, shape, generator)


def mel_filters(settings: dict):
    """The feature extractor's mel filter bank [n_fft // 2 + 1, mels], as transformers makes it."""
    from transformers import WhisperFeatureExtractor  # heavy: only when a package is built

    return WhisperFeatureExtractor(**settings).mel_filters
