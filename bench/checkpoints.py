"""Randomly initialised checkpoints for benchmarks (nothing can be downloaded here)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The size of the benchmark model (defaults: about 270 M parameters) and its input."""
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="the checkpoint's weights as stored (the Hub's LLMs: bfloat16)")


def build_llama(folder: Path, hidden: int = 1024, layers: int = 16, vocab: int = 32000, dtype: str = "float32") -> int:
    """A Llama-architecture checkpoint saved as safetensors (weights in `dtype`); returns its
    parameter count. The defaults give about 270 M parameters, the size DESIGN.md's reference
    figures use."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.75),
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        vocab_size=vocab,
        max_position_embeddings=2048,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())
