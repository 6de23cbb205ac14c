"""Extra repos and tokens on the local Hub for the job-service tests: models that convert
slowly (to cancel or crash mid-job), fail validation, are too large, or cannot be served."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from tests.conftest import OTHER, OWNER, OWNER_TOKEN

OWNER_READ_TOKEN = "hf_alice_read_only_token"
OTHER_READ_TOKEN = "hf_bob_read_only_token"
REVOCABLE_TOKEN = "hf_alice_revocable_token"  # revoked mid-job: push-time rejection

TINY = f"{OWNER}/job-bert"  # happy paths (kept apart from the repos other tests change)
PR_SOURCE = f"{OWNER}/pr-bert"
TINY_LLAMA = f"{OWNER}/job-llama"  # text generation: the Try it panel's prompt
SLOW = f"{OWNER}/slow-bert"  # a few seconds of conversion: cancel and crash it
FRAGILE = f"{OWNER}/fragile-bert"  # overflows in float16: fails validation
HUGE = f"{OWNER}/huge-llama"  # 7 B parameters announced by its safetensors header
SPEECH = f"{OWNER}/wav2vec2-model"  # speech (CTC): a kind of model no family of ours converts
UNLISTED_LLM = f"{OWNER}/job-olmo2"  # a decoder outside the tested list: the generic path
TINY_WHISPER = f"{OWNER}/job-whisper"  # speech to text: WhisperKit's three packages in a variant folder
NO_CONFIG = f"{OWNER}/no-config"
NO_WEIGHTS = f"{OWNER}/no-weights"
BAD_CONFIG = f"{OWNER}/bad-config-json"
TRUNCATED = f"{OWNER}/truncated-weights"  # model.safetensors cut in half: a damaged upload


def _bert(folder: Path, *, hidden: int, layers: int, intermediate: int, scale: float | None = None) -> Path:
    import torch
    import transformers as tf

    from tests.models import build_tokenizer

    if (folder / "model.safetensors").is_file():  # built already in this session
        return folder
    torch.manual_seed(0)
    config = tf.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                           intermediate_size=intermediate, vocab_size=128, max_position_embeddings=512, pad_token_id=0)
    model = tf.BertForMaskedLM(config).eval()
    if scale:
        # Activations far beyond float16's 65504: the fp16 package computes inf.
        with torch.no_grad():
            for layer in model.bert.encoder.layer:
                layer.intermediate.dense.weight.mul_(scale)
    model.save_pretrained(folder)
    build_tokenizer(folder, "bert")
    return folder


def _whisper(folder: Path) -> Path:
    from tests.whisper_model import build_whisper

    if (folder / "model.safetensors").is_file():  # built already in this session
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    return build_whisper(folder)


def _header_only_safetensors(shapes: dict[str, list[int]]) -> bytes:
    header = {name: {"dtype": "BF16", "shape": shape, "data_offsets": [0, 0]} for name, shape in shapes.items()}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


def seed(hub, tiny_model, tmp: Path) -> None:
    if TINY in hub.repo_ids():
        return  # seeded already (a module's Hub)
    bert = tiny_model("bert")
    hub.add_token(OWNER, OWNER_READ_TOKEN, role="read")
    hub.add_token(OTHER, OTHER_READ_TOKEN, role="read")
    hub.add_token(OWNER, REVOCABLE_TOKEN, role="write")
    hub.add_repo_from_folder(TINY, bert, owner_token=OWNER_TOKEN)
    hub.add_repo_from_folder(PR_SOURCE, bert, owner_token=OWNER_TOKEN)
    hub.add_repo_from_folder(TINY_LLAMA, tiny_model("llama"), owner_token=OWNER_TOKEN)
    hub.add_repo_from_folder(SLOW, _bert(tmp / "slow", hidden=256, layers=4, intermediate=1024))
    hub.add_repo_from_folder(FRAGILE, _bert(tmp / "fragile", hidden=32, layers=2, intermediate=64, scale=3e6))
    llama = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
             "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000}
    hub.add_repo(HUGE, {"config.json": json.dumps(llama),
                        "model.safetensors": _header_only_safetensors({"model.layers.weight": [7_000_000, 1000]})})
    hub.add_repo_from_folder(UNLISTED_LLM, tiny_model("olmo2"), owner_token=OWNER_TOKEN)
    hub.add_repo_from_folder(TINY_WHISPER, _whisper(tmp / "job-whisper"), owner_token=OWNER_TOKEN)
    hub.add_repo(SPEECH, {"config.json": json.dumps({"model_type": "wav2vec2", "architectures": ["Wav2Vec2ForCTC"]}),
                         "model.safetensors": _header_only_safetensors({"w": [4, 4]})})
    hub.add_repo(NO_CONFIG, {"model.safetensors": _header_only_safetensors({"w": [4, 4]}), "README.md": "hi"})
    hub.add_repo(NO_WEIGHTS, {"config.json": (bert / "config.json").read_text(), "README.md": "hi"})
    llama = tiny_model("llama")
    weights = (llama / "model.safetensors").read_bytes()
    hub.add_repo(TRUNCATED, {**{f.name: f.read_bytes() for f in llama.iterdir() if f.name != "model.safetensors"},
                             "model.safetensors": weights[: len(weights) // 2]})
    hub.add_repo(BAD_CONFIG, {"config.json": "{not json", "model.safetensors": _header_only_safetensors({"w": [4, 4]})})


def revoke(hub, token: str) -> None:
    """Revoke a token on the local Hub (as a user deleting it, or an OAuth token expiring)."""
    with hub._lock:
        hub.store.tokens.pop(token, None)
