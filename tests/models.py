"""Tiny models for tests: every supported architecture, built from a transformers config
with random weights and saved like a Hub repo (config.json, model.safetensors, tokenizer
or image-processor files). Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers as tf

VOCAB_SIZE = 128
_WORDS = (
    "the a an of to in is was for on that with as by at from it this be are or his her "
    "which not have one had they you were their has been she he we there all would when "
    "apple core model swift phone convert text image hello world token layer neural engine "
    "quick brown fox jumps over lazy dog paris capital france what where who how why "
    "near river bank runs models phone cpu gpu city fish song colour . , : ?"
).split()

_TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=VOCAB_SIZE)
_DECODER = dict(_TEXT, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_ENCODER = dict(_TEXT, max_position_embeddings=512, pad_token_id=0)
_LABELS = {"id2label": {0: "negative", 1: "neutral", 2: "positive"}, "label2id": {"negative": 0, "neutral": 1, "positive": 2}}

# model_type -> (config factory, model class saved as the checkpoint, modality)
MODELS = {
    "gpt2": (lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB_SIZE, n_positions=512, pad_token_id=0, bos_token_id=1, eos_token_id=2), tf.GPT2LMHeadModel, "text"),
    "gpt_neox": (lambda: tf.GPTNeoXConfig(**{k: v for k, v in _DECODER.items() if k != "num_key_value_heads"}), tf.GPTNeoXForCausalLM, "text"),
    "gpt_bigcode": (lambda: tf.GPTBigCodeConfig(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB_SIZE, n_positions=512, pad_token_id=0), tf.GPTBigCodeForCausalLM, "text"),
    "llama": (lambda: tf.LlamaConfig(**_DECODER), tf.LlamaForCausalLM, "text"),
    "mistral": (lambda: tf.MistralConfig(**_DECODER, sliding_window=None), tf.MistralForCausalLM, "text"),
    "qwen2": (lambda: tf.Qwen2Config(**_DECODER), tf.Qwen2ForCausalLM, "text"),
    "qwen3": (lambda: tf.Qwen3Config(**_DECODER, head_dim=8), tf.Qwen3ForCausalLM, "text"),
    "gemma": (lambda: tf.GemmaConfig(**_DECODER, head_dim=8), tf.GemmaForCausalLM, "text"),
    "gemma2": (lambda: tf.Gemma2Config(**_DECODER, head_dim=8, sliding_window=512), tf.Gemma2ForCausalLM, "text"),
    "phi3": (lambda: tf.Phi3Config(**_DECODER), tf.Phi3ForCausalLM, "text"),
    "falcon": (lambda: tf.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, vocab_size=VOCAB_SIZE, max_position_embeddings=512, pad_token_id=0), tf.FalconForCausalLM, "text"),
    "bert": (lambda: tf.BertConfig(**_ENCODER, **_LABELS), tf.BertForMaskedLM, "text"),
    "distilbert": (lambda: tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, vocab_size=VOCAB_SIZE, max_position_embeddings=512, **_LABELS), tf.DistilBertForMaskedLM, "text"),
    "roberta": (lambda: tf.RobertaConfig(**_ENCODER, **_LABELS), tf.RobertaForMaskedLM, "text"),
    "xlm-roberta": (lambda: tf.XLMRobertaConfig(**_ENCODER, **_LABELS), tf.XLMRobertaForMaskedLM, "text"),
    "deberta-v2": (lambda: tf.DebertaV2Config(**_ENCODER, **_LABELS), tf.DebertaV2ForMaskedLM, "text"),
    "modernbert": (lambda: tf.ModernBertConfig(**_ENCODER, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, **_LABELS), tf.ModernBertForMaskedLM, "text"),
    "mobilebert": (lambda: tf.MobileBertConfig(**_ENCODER, embedding_size=16, intra_bottleneck_size=32, true_hidden_size=32, num_feedforward_networks=1, **_LABELS), tf.MobileBertForMaskedLM, "text"),
    "t5": (lambda: tf.T5Config(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4, vocab_size=VOCAB_SIZE, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0), tf.T5ForConditionalGeneration, "text"),
    "bart": (lambda: tf.BartConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=VOCAB_SIZE, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2), tf.BartForConditionalGeneration, "text"),
    "vit": (lambda: tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8, **_LABELS), tf.ViTForImageClassification, "vision"),
    "convnext": (lambda: tf.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=32, **_LABELS), tf.ConvNextForImageClassification, "vision"),
    "mobilevit": (lambda: tf.MobileViTConfig(image_size=32, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32], num_attention_heads=2, **_LABELS), tf.MobileViTForImageClassification, "vision"),
    "segformer": (lambda: tf.SegformerConfig(hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 2, 2, 4], depths=[1, 1, 1, 1], decoder_hidden_size=32, image_size=32, **_LABELS), tf.SegformerForSemanticSegmentation, "vision"),
    "yolos": (lambda: tf.YolosConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=[32, 32], patch_size=8, num_detection_tokens=4, **_LABELS), tf.YolosForObjectDetection, "vision"),
}


# Architectures outside the registry (the generic path, converters/configs/generic.py): one or
# more of every family, shapes the registry lacks — their own norms and position schemes, a
# code LLM, older decoders, factorised embeddings, a discriminator, windowed and self-supervised
# vision transformers. Not every one converts; tests/test_generic_architectures.py says which.
_SEQ2SEQ = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=VOCAB_SIZE, max_position_embeddings=512,
                pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2)
UNLISTED = {
    "olmo2": (lambda: tf.Olmo2Config(**_DECODER), tf.Olmo2ForCausalLM, "text"),
    "stablelm": (lambda: tf.StableLmConfig(**_DECODER), tf.StableLmForCausalLM, "text"),
    "starcoder2": (lambda: tf.Starcoder2Config(**_DECODER, sliding_window=None), tf.Starcoder2ForCausalLM, "text"),
    "opt": (lambda: tf.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32,
                                 vocab_size=VOCAB_SIZE, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2),
            tf.OPTForCausalLM, "text"),
    "bloom": (lambda: tf.BloomConfig(hidden_size=32, n_layer=2, n_head=4, vocab_size=VOCAB_SIZE, pad_token_id=0, bos_token_id=1,
                                     eos_token_id=2), tf.BloomForCausalLM, "text"),
    "gpt_neo": (lambda: tf.GPTNeoConfig(hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]],
                                        window_size=8, vocab_size=VOCAB_SIZE, max_position_embeddings=512, pad_token_id=0,
                                        bos_token_id=1, eos_token_id=2), tf.GPTNeoForCausalLM, "text"),
    "phi": (lambda: tf.PhiConfig(**_DECODER), tf.PhiForCausalLM, "text"),
    "cohere": (lambda: tf.CohereConfig(**_DECODER), tf.CohereForCausalLM, "text"),
    "granite": (lambda: tf.GraniteConfig(**_DECODER), tf.GraniteForCausalLM, "text"),
    "albert": (lambda: tf.AlbertConfig(**_ENCODER, embedding_size=16, **_LABELS), tf.AlbertForMaskedLM, "text"),
    "electra": (lambda: tf.ElectraConfig(**_ENCODER, embedding_size=16, **_LABELS), tf.ElectraForPreTraining, "text"),
    "mpnet": (lambda: tf.MPNetConfig(**_ENCODER, **_LABELS), tf.MPNetForMaskedLM, "text"),
    "roformer": (lambda: tf.RoFormerConfig(**_ENCODER, **_LABELS), tf.RoFormerForMaskedLM, "text"),
    "mbart": (lambda: tf.MBartConfig(**_SEQ2SEQ), tf.MBartForConditionalGeneration, "text"),
    "pegasus": (lambda: tf.PegasusConfig(**_SEQ2SEQ), tf.PegasusForConditionalGeneration, "text"),
    "marian": (lambda: tf.MarianConfig(**_SEQ2SEQ), tf.MarianMTModel, "text"),
    "swin": (lambda: tf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4,
                                   **_LABELS), tf.SwinForImageClassification, "vision"),
    "dinov2": (lambda: tf.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                       image_size=32, patch_size=8, **_LABELS), tf.Dinov2ForImageClassification, "vision"),
    "deit": (lambda: tf.DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
                                   patch_size=8, **_LABELS), tf.DeiTForImageClassification, "vision"),
    "beit": (lambda: tf.BeitConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
                                   patch_size=8, use_relative_position_bias=True, **_LABELS), tf.BeitForImageClassification, "vision"),
    "resnet": (lambda: tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], **_LABELS),
               tf.ResNetForImageClassification, "vision"),
    "levit": (lambda: tf.LevitConfig(image_size=32, hidden_sizes=[16, 24, 32], num_attention_heads=[1, 2, 2], depths=[1, 1, 1],
                                     key_dim=[8, 8, 8], **_LABELS), tf.LevitForImageClassification, "vision"),
    # The newest decoder families of transformers 5.23: a mixture of experts (top-2 of 4), Qwen3.5's
    # hybrid of Gated DeltaNet (linear attention, gated RMSNorm) and full-attention layers, and
    # Gemma 4 (per-layer inputs, wider heads in its full-attention layer, its MoE block on).
    "qwen3_moe": (lambda: tf.Qwen3MoeConfig(**_DECODER, head_dim=8, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2),
                  tf.Qwen3MoeForCausalLM, "text"),
    # (Its rotary sections must cover the rotary frequencies, 4 here, as 11 + 11 + 10 cover 32 in the real ones.)
    "qwen3_5_text": (lambda: tf.Qwen3_5TextConfig(**_DECODER, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                                                  linear_key_head_dim=8, linear_value_head_dim=8,
                                                  layer_types=["linear_attention", "full_attention"],
                                                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                   "partial_rotary_factor": 0.5, "mrope_section": [2, 1, 1]}),
                     tf.Qwen3_5ForCausalLM, "text"),
    "gemma4_text": (lambda: tf.Gemma4TextConfig(**_DECODER, head_dim=8, global_head_dim=16, hidden_size_per_layer_input=8,
                                                vocab_size_per_layer_input=VOCAB_SIZE, layer_types=["sliding_attention", "full_attention"],
                                                enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=32),
                    tf.Gemma4ForCausalLM, "text"),
    # Older and rarer decoders of the sweep (docs/decoder-families.md): GPT-1, whose additive mask is
    # (1 - mask) * float32's minimum; PhiMoE, whose router scatters over a ranged token axis when
    # stateful; BertGeneration's decoder half (is_decoder).
    "openai-gpt": (lambda: tf.OpenAIGPTConfig(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB_SIZE, n_positions=512, pad_token_id=0,
                                              bos_token_id=1, eos_token_id=2), tf.OpenAIGPTLMHeadModel, "text"),
    "phimoe": (lambda: tf.PhimoeConfig(**_DECODER, num_local_experts=4, num_experts_per_tok=2), tf.PhimoeForCausalLM, "text"),
    "bert-generation": (lambda: tf.BertGenerationConfig(**_ENCODER, is_decoder=True, bos_token_id=1, eos_token_id=2),
                        tf.BertGenerationDecoder, "text"),
    # DiffLlama's differential attention (λ from the layer's own parameters); JetMoE's mixture of
    # attention heads and of MLP experts (top-2 of 4); Llama 4's rotary embedding in complex numbers,
    # a layer without rotary positions (temperature-tuned, by position: floor_scale 8 here, 8192 in
    # the real ones) and its MoE (top-1 of 4, a shared expert).
    "diffllama": (lambda: tf.DiffLlamaConfig(**_DECODER), tf.DiffLlamaForCausalLM, "text"),
    "jetmoe": (lambda: tf.JetMoeConfig(hidden_size=32, num_hidden_layers=2, num_key_value_heads=2, kv_channels=8, intermediate_size=32,
                                       num_local_experts=4, num_experts_per_tok=2, vocab_size=VOCAB_SIZE, max_position_embeddings=512,
                                       pad_token_id=0, bos_token_id=1, eos_token_id=2), tf.JetMoeForCausalLM, "text"),
    "llama4_text": (lambda: tf.Llama4TextConfig(**_DECODER, head_dim=8, intermediate_size_mlp=64, num_local_experts=4,
                                                no_rope_layers=[1, 0], floor_scale=8), tf.Llama4ForCausalLM, "text"),
}
ALL_MODELS = {**MODELS, **UNLISTED}


def build_tokenizer(folder: Path, model_type: str) -> None:
    """A word-level tokenizer over a small vocabulary, saved as tokenizer.json + config."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<mask>", "[CLS]", "[SEP]"]
    vocab = {token: i for i, token in enumerate(specials + _WORDS)}
    assert len(vocab) <= VOCAB_SIZE
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if model_type not in ALL_MODELS or ALL_MODELS[model_type][1].__name__.endswith(("ForMaskedLM", "ForPreTraining")):
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 5), ("[SEP]", 6)]
        )
    fast = tf.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=512,
    )
    fast.save_pretrained(folder)


def empty_tokenizer_first(model_type: str) -> bool:
    """Which weight-only case a family's default package meets (its stateful package meets the
    other): every other registry type, an empty tokenizer; the rest, no tokenizer files."""
    return list(ALL_MODELS).index(model_type) % 2 == 1


def without_tokenizer(folder: Path, dest: Path, empty: bool = False) -> Path:
    """A copy of the checkpoint in `folder` as a weight-only repo: no tokenizer files, or
    (`empty`) only a tokenizer_config.json, from which transformers 5 builds a tokenizer that
    encodes any text to no ids. `dest`'s name is the repo's name."""
    import shutil

    from converters.source_tokenizer import TOKENIZER_FILES

    dest.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        if item.is_file() and item.name not in TOKENIZER_FILES and item.name != "special_tokens_map.json":
            shutil.copy2(item, dest / item.name)
    if empty:
        (dest / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    return dest


def build_image_processor(folder: Path, size: int = 32, same_std: bool = False) -> None:
    std = [0.5, 0.5, 0.5] if same_std else [0.229, 0.224, 0.225]
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "ViTImageProcessor",
                "do_resize": True,
                "size": {"height": size, "width": size},
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": std,
            }
        )
    )


def _like_trained_batch_norms(model: torch.nn.Module) -> None:
    """transformers initialises some BatchNorm scales near 0 (std 0.02), which makes a deep
    random model's features vanish and any comparison vacuous; trained networks have
    scales near 1 and non-trivial running statistics."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.weight is not None:
                module.weight.copy_(1.0 + 0.1 * torch.randn(module.weight.shape, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))


def _like_trained_routers(model: torch.nn.Module) -> None:
    """A random router (std 0.02) scores every expert alike, so which experts a token picks
    hangs on the last bits of its scores and float16 rounding flips picks that no trained
    router leaves that close; trained routers separate the experts. Router weights ~ N(0, 1)."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in model.modules():
            if "Router" in type(module).__name__ or "Gating" in type(module).__name__:
                for weight in module.parameters():
                    if weight.dim() == 2:
                        weight.copy_(torch.randn(weight.shape, generator=generator))


def build_model(model_type: str, folder: Path, seed: int = 0, model_class=None, **config_overrides) -> Path:
    """Write a tiny random `model_type` checkpoint into `folder` and return it (saved from
    `model_class`, default the one in MODELS: the class sets the checkpoint's weight names)."""
    factory, default_class, modality = ALL_MODELS[model_type]
    model_class = model_class or default_class
    config = factory()
    for key, value in config_overrides.items():
        setattr(config, key, value)
    config.architectures = [model_class.__name__]
    torch.manual_seed(seed)
    model = model_class(config).eval()
    _like_trained_batch_norms(model)
    _like_trained_routers(model)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # safetensors by default
    if modality == "text":
        build_tokenizer(folder, model_type)
    else:
        build_image_processor(folder, size=32, same_std=model_type == "vit")
    return folder
