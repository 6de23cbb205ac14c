"""Tiny image–text and depth models for tests (issue 29): built from a transformers config with
random weights and saved like a Hub repo, with a tokenizer or image processor. Nothing is
downloaded. The registry's other architectures are in tests/models.py."""

from __future__ import annotations

import json
from pathlib import Path

import transformers as tf

from tests.models import _LABELS, VOCAB_SIZE, build_image_processor, build_tokenizer

SEP = 6  # the tiny tokenizer's end token ([SEP]), where CLIP pools
_TOWER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
_TEXT = dict(_TOWER, vocab_size=VOCAB_SIZE, max_position_embeddings=16, pad_token_id=0, bos_token_id=5, eos_token_id=SEP)
_VISION = dict(_TOWER, image_size=32, patch_size=8)
_BACKBONE = dict(model_type="dinov2", hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                 image_size=28, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False)

# model_type -> (config factory, checkpoint class, the task its checkpoint is for)
KINDS = {
    "clip": (lambda: tf.CLIPConfig(text_config=_TEXT, vision_config=_VISION, projection_dim=16), tf.CLIPModel, "zero-shot-image-classification"),
    "siglip": (lambda: tf.SiglipConfig(text_config=_TEXT, vision_config=_VISION), tf.SiglipModel, "zero-shot-image-classification"),
    "siglip2": (lambda: tf.Siglip2Config(text_config=_TEXT, vision_config=dict(_TOWER, num_patches=16, patch_size=8)), tf.Siglip2Model, "zero-shot-image-classification"),
    "depth_anything": (lambda: tf.DepthAnythingConfig(backbone_config=_BACKBONE, neck_hidden_sizes=[8, 16, 16, 32], fusion_hidden_size=16,
                                                      head_hidden_size=8, reassemble_hidden_size=32, patch_size=14),
                       tf.DepthAnythingForDepthEstimation, "depth-estimation"),
    "dpt": (lambda: tf.DPTConfig(**dict(_TOWER, num_hidden_layers=4), image_size=32, patch_size=16, neck_hidden_sizes=[8, 16, 16, 32],
                                 fusion_hidden_size=16, backbone_out_indices=[0, 1, 2, 3], head_in_index=-1),
            tf.DPTForDepthEstimation, "depth-estimation"),
    "detr": (lambda: tf.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, num_queries=8,
                                   backbone_config=tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                                                   out_features=["stage4"]),
                                   d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
                                   encoder_ffn_dim=64, decoder_ffn_dim=64, **_LABELS),
             tf.DetrForObjectDetection, "object-detection"),
    "rt_detr": (lambda: tf.RTDetrConfig(backbone_config=tf.RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                                                              out_features=["stage2", "stage3", "stage4"]),
                                        encoder_hidden_dim=16, encoder_in_channels=[16, 24, 32], decoder_in_channels=[16, 16, 16], d_model=32,
                                        encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
                                        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=8, decoder_n_points=2, num_feature_levels=3,
                                        anchor_image_size=None, use_pretrained_backbone=False, **_LABELS),
                tf.RTDetrForObjectDetection, "object-detection"),
}
IMAGE_SIZES = {"depth_anything": 28, "detr": 64, "rt_detr": 64}  # the processor's size (else 32)


def _like_trained_convolutions(model) -> None:
    """transformers initialises convolutions with std 0.02, which leaves a random depth head's
    map near 1e-9 (float16's subnormals) where trained ones give values near 1: PyTorch's own
    initialisation instead."""
    import torch

    torch.manual_seed(1)
    convolutions = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    for module in convolutions:
        module.reset_parameters()
    head = getattr(model, "head", None)
    if head is not None:  # a depth head ends in a ReLU: its last convolution's bias keeps the map positive, as trained ones are
        with torch.no_grad():
            [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)][-1].bias.fill_(1.0)


def build_kind(model_type: str, folder: Path, seed: int = 0) -> Path:
    """A tiny random `model_type` checkpoint saved like a Hub repo, with its tokenizer and image processor."""
    import torch

    factory, model_class, task = ALL_KINDS[model_type]
    config = factory()
    config.architectures = [model_class.__name__]
    torch.manual_seed(seed)
    model = model_class(config).eval()
    if task == "depth-estimation":
        _like_trained_convolutions(model)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if task == "zero-shot-image-classification":
        build_tokenizer(folder, model_type)
    if model_type == "siglip2":
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "Siglip2ImageProcessor", "patch_size": 8, "max_num_patches": 16, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    else:
        build_image_processor(folder, size=IMAGE_SIZES.get(model_type, 32), same_std=model_type not in IMAGE_SIZES)
    return folder

# Outside the registry (the generic path): a CLIP-like model with a bidirectional (BERT) text tower.
UNLISTED_KINDS = {
    "chinese_clip": (lambda: tf.ChineseCLIPConfig(text_config=dict(_TOWER, vocab_size=VOCAB_SIZE, max_position_embeddings=16, pad_token_id=0),
                                                  vision_config=_VISION, projection_dim=16),
                     tf.ChineseCLIPModel, "zero-shot-image-classification"),
}
ALL_KINDS = {**KINDS, **UNLISTED_KINDS}
