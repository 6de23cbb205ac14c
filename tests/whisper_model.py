"""A tiny random Whisper for the tests (tests/test_whisper.py, the job service's Hub): 2 layers,
d_model 64, Whisper's special tokens in a 300-token vocabulary, a byte-level tokenizer.json."""

from __future__ import annotations

import torch

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
IDS = {token: 256 + index for index, token in enumerate(SPECIALS)}  # after the 256 byte tokens, as in Whisper's vocabulary
EOS, SLOTS = IDS["<|endoftext|>"], 64
ALIGNMENT_HEADS = [[1, 0], [1, 2]]  # [decoder layer, head] pairs, as openai's checkpoints list them


def build_whisper(folder):
    """A 2-layer, d_model-64 Whisper with Whisper's special tokens in a 300-token vocabulary;
    weights drawn wide (init_std 0.2) so the greedy tokens depend on the audio."""
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(1)
    config = WhisperConfig(
        vocab_size=300, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=1500,
        max_target_positions=SLOTS, init_std=0.2, pad_token_id=EOS, bos_token_id=EOS, eos_token_id=EOS,
        decoder_start_token_id=IDS["<|startoftranscript|>"], suppress_tokens=[], begin_suppress_tokens=[])
    WhisperForConditionalGeneration(config).eval().save_pretrained(folder)
    GenerationConfig(
        decoder_start_token_id=IDS["<|startoftranscript|>"], eos_token_id=EOS, pad_token_id=EOS, bos_token_id=EOS,
        is_multilingual=True, lang_to_id={"<|en|>": IDS["<|en|>"], "<|fr|>": IDS["<|fr|>"]},
        task_to_id={"translate": IDS["<|translate|>"], "transcribe": IDS["<|transcribe|>"]},
        no_timestamps_token_id=IDS["<|notimestamps|>"], prev_sot_token_id=IDS["<|startofprev|>"],
        suppress_tokens=[], begin_suppress_tokens=[], max_length=SLOTS,
        alignment_heads=ALIGNMENT_HEADS,  # word timestamps: the TextDecoder returns their cross-attention
    ).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    build_tokenizer(folder)
    return folder


def build_tokenizer(folder) -> None:
    """A byte-level tokenizer.json: the 256 byte tokens, then Whisper's special tokens at the ids above."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(ByteLevel.alphabet())}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(SPECIALS)
    tokenizer.save(str(folder / "tokenizer.json"))
