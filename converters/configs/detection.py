"""Configs for DETR-family detectors: DETR (and, through the generic path, others of its output shape).

An RGB image in (the model's own rescale and normalise inside), a fixed set of detections
out, one per query, as the image processor's `post_process_object_detection` reads them
(transformers' detr/image_processing_detr.py and rt_detr/image_processing_rt_detr.py):
- `scores`: each query's probability per class, after the model's own activation — a
  softmax with the last "no object" class dropped (DETR), or a sigmoid per class (RT-DETR,
  trained with a focal loss);
- `boxes`: each query's box as (center x, center y, width, height), relative to the image
  (0..1), the coordinates the processor scales by the image's size after turning them into
  corners. Class names go into the package's metadata (`co.huggingface.exporters.labels`).
An app keeps the queries whose best score passes its threshold.
"""

from __future__ import annotations

import importlib.util
import json

import torch

from ..errors import UserInputError
from .base import MASK_VALUE, OutputKind, OutputSpec, first_output
from .vision import NormalisedImage, VisionConfig


def _ready_masks(model) -> None:
    """DETR's encoder and decoder turn its (all-ones) 2-D pixel mask into attention masks with
    transformers 5's mask helpers, whose ops (`new_ones`) coremltools cannot convert; a 4-D
    additive mask is used as it is, so they get one made by arithmetic instead (not the
    deformable-attention detectors, which use the 2-D mask as it is)."""
    if any("Deformable" in type(module).__name__ for module in model.modules()):
        return  # deformable attention reads the 2-D mask itself, as booleans
    base = getattr(model, "model", None)
    for name in ("encoder", "decoder"):
        part = getattr(base, name, None)
        if part is None or getattr(part, "_ready_masks", False):
            continue
        original = part.forward

        def forward(*args, _original=original, **kwargs):
            for key in ("attention_mask", "encoder_attention_mask"):
                mask = kwargs.get(key)
                if mask is not None and mask.dim() == 2:
                    kwargs[key] = (1.0 - mask.to(torch.float32))[:, None, None, :] * MASK_VALUE
            return _original(*args, **kwargs)

        part.forward = forward
        part._ready_masks = True


def _constant_position_embeddings(model, image_size: tuple[int, int]) -> None:
    """RT-DETR builds its encoder's sine position embeddings at each call from the feature
    map's size, in float64 (which Core ML has not); at a fixed image size they are constants:
    made once here, by a plain forward, and handed back at every call."""
    builders = [m for m in model.modules() if hasattr(m, "_cached_build_2d_sinusoidal_position_embedding")
                and not getattr(m, "_made_once", False)]  # the model wrapped again (validation, Try it): already done
    for module in builders:
        made: dict = {}
        original = module.forward

        def forward(width, height, device, dtype, _original=original, _made=made):
            key = (int(width), int(height), dtype)
            if key not in _made:
                _made[key] = _original(width, height, device, dtype)
            return _made[key]

        module.forward = forward
        module._made_once = True
    if builders:
        with torch.no_grad():
            model(pixel_values=torch.zeros(1, 3, *image_size))


def _rank5_deformable_attention(model) -> None:
    """Multi-scale deformable attention (Deformable DETR, RT-DETR) shapes its sampling offsets
    [batch, queries, heads, levels, points, 2]: rank 6, beyond Core ML's 5. The package's batch
    is 1, so the same attention is computed without the batch axis (its own forward's steps, its
    own weights)."""
    for module in model.modules():
        if type(module).__name__.endswith("MultiscaleDeformableAttention") and hasattr(module, "sampling_offsets"):
            module.forward = _rank5_forward.__get__(module)


def _rank5_forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                   position_embeddings=None, reference_points=None, spatial_shapes=None, spatial_shapes_list=None,
                   level_start_index=None, **kwargs):
    if position_embeddings is not None:
        hidden_states = hidden_states + position_embeddings
    queries, length = hidden_states.shape[1], encoder_hidden_states.shape[1]
    heads, levels, points = self.n_heads, self.n_levels, self.n_points
    head_dim = self.d_model // heads
    value = self.value_proj(encoder_hidden_states)
    if attention_mask is not None:
        value = value * attention_mask[..., None].to(value.dtype)
    value = value.reshape(length, heads, head_dim)
    offsets = self.sampling_offsets(hidden_states).reshape(queries, heads, levels, points, 2)
    weights = torch.softmax(self.attention_weights(hidden_states).reshape(queries, heads, levels * points), -1)
    reference = reference_points[0]  # [queries, levels, 2 or 4]
    if reference.shape[-1] == 2:
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
        locations = reference[:, None, :, None, :] + offsets / normalizer[None, None, :, None, :]
    else:
        locations = reference[:, None, :, None, :2] + offsets / points * reference[:, None, :, None, 2:] * 0.5
    grids = 2 * locations - 1  # [queries, heads, levels, points, 2]
    sampled, start = [], 0
    for level, (height, width) in enumerate(spatial_shapes_list):
        level_value = value[start:start + height * width].permute(1, 2, 0).reshape(heads, head_dim, height, width)
        start += height * width
        grid = grids[:, :, level].transpose(0, 1)  # [heads, queries, points, 2]
        sampled.append(torch.nn.functional.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros",
                                                       align_corners=False))  # [heads, head_dim, queries, points]
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # [heads, head_dim, queries, levels * points]
    output = (stacked * weights.transpose(0, 1).reshape(heads, 1, queries, levels * points)).sum(-1)
    output = output.reshape(1, heads * head_dim, queries).transpose(1, 2)
    return self.output_proj(output), weights.reshape(1, queries, heads, levels, points)


class DetectionWrapper(NormalisedImage):
    def __init__(self, model, mean, std, focal: bool, image_size: tuple[int, int]):
        super().__init__(mean, std)
        _ready_masks(model)
        _constant_position_embeddings(model, image_size)
        _rank5_deformable_attention(model)
        self.model = model
        self.focal = focal

    def forward(self, pixel_values):
        result = self.model(pixel_values=self.normalised(pixel_values))
        logits = first_output(result, "logits")
        scores = torch.sigmoid(logits) if self.focal else torch.softmax(logits, dim=-1)[..., :-1]
        return scores, first_output(result, "pred_boxes")


class DetectionConfig(VisionConfig):
    supported_tasks = ("object-detection",)
    has_pooler = False

    @property
    def focal(self) -> bool:
        """Scores by a sigmoid per class (a model trained with a focal loss: RT-DETR, D-FINE,
        Deformable and Conditional DETR, as their processors' use_focal_loss and configs say),
        else a softmax over the classes and "no object" (DETR)."""
        config = self.hf_config
        return bool(getattr(config, "use_focal_loss", False) or getattr(config, "focal_alpha", None) is not None)

    def outputs(self, part: str = "model") -> list[OutputSpec]:
        activation = "sigmoid per class" if self.focal else "softmax, without the 'no object' class"
        return [
            OutputSpec("scores", f"Each detection's probability per class ({activation})", kind=OutputKind.CLASS_SCORES),
            OutputSpec("boxes", "Each detection's box as (center x, center y, width, height), relative to the image (0..1)",
                       kind=OutputKind.BOXES),
        ]

    def wrap(self, model, part: str = "model"):
        _, _, mean, std = self.normalization()
        return DetectionWrapper(model, mean, std, self.focal, self.image_size())

    def check_options(self) -> None:
        super().check_options()
        backbone = getattr(self.hf_config, "backbone_config", None)
        if getattr(backbone, "model_type", None) == "timm_backbone" and importlib.util.find_spec("timm") is None:
            raise UserInputError(
                f"This {self.hf_config.model_type} checkpoint's backbone is a timm model "
                f"({getattr(backbone, 'backbone', None) or 'timm'}), and this service does not include the timm library, "
                "so it cannot load it yet. Checkpoints whose backbone is a transformers model (backbone_config with a "
                "transformers model_type, e.g. resnet) convert; ask for timm backbones in an issue.")

    def image_size_refusal(self, sizes: tuple[int, ...]) -> str | None:
        if len(sizes) == 1:
            return None  # its wrapper makes the size's constant masks and position embeddings
        return (f"A {self.hf_config.model_type} detector's package is made for one image size: its attention masks "
                "and position embeddings are made constant for that size. Type one size.")

    def labels(self) -> list[str]:
        id2label = getattr(self.hf_config, "id2label", None) or {}
        return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(len(id2label))]

    def package_metadata(self, part: str = "model") -> dict[str, str]:
        return {"co.huggingface.exporters.labels": json.dumps(self.labels())}

