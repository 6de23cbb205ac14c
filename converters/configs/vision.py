"""Configs for image models: ViT, ConvNeXT, MobileViT, SegFormer, YOLOS.

Packages take an RGB image. Core ML applies the image processor's rescale and normalise
as the input's scale and bias; when the per-channel std differs (one scale cannot express
it) the package takes pixels scaled to 0..1 and normalises itself.
"""

from __future__ import annotations

import inspect

import torch

from .base import ExportConfig, InputSpec, OutputKind, OutputSpec, first_output

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class NormalisedImage(torch.nn.Module):
    """A wrapper whose program normalises the pixels itself (mean, std per channel), set only
    when the normalisation could not go into the image input's scale and bias."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", None if mean is None else torch.tensor(mean).reshape(1, 3, 1, 1))
        self.register_buffer("std", None if std is None else torch.tensor(std).reshape(1, 3, 1, 1))

    def normalised(self, pixel_values):
        return pixel_values if self.mean is None else (pixel_values - self.mean) / self.std


def resizing(model, sized: bool) -> dict:
    """The model's argument that lets it take another image size than its config's (its position
    embeddings resized to the input's, transformers' `interpolate_pos_encoding`), when sizes are chosen."""
    takes = "interpolate_pos_encoding" in inspect.signature(getattr(model, "forward", model)).parameters
    return {"interpolate_pos_encoding": True} if sized and takes else {}


class VisionWrapper(NormalisedImage):
    def __init__(self, model, outputs: list[OutputSpec], mean, std, sized: bool = False):
        super().__init__(mean, std)
        self.model = model
        self.outputs = outputs
        self.arguments = resizing(model, sized)

    def forward(self, pixel_values):
        result = self.model(pixel_values=self.normalised(pixel_values), **self.arguments)
        values = []
        for spec in self.outputs:
            if spec.kind == OutputKind.LABEL_MAP:  # per-pixel labels at the input's resolution
                logits = torch.nn.functional.interpolate(
                    first_output(result, "logits"), size=tuple(pixel_values.shape[-2:]), mode="bilinear", align_corners=False
                )
                values.append(torch.argmax(logits, dim=1).to(torch.int32))
                continue
            value = first_output(result, "logits" if spec.kind == OutputKind.CLASS_PROBABILITIES else spec.name)
            if spec.postprocess == "softmax":
                value = torch.softmax(value, dim=-1)
            values.append(value)
        return tuple(values)


class VisionConfig(ExportConfig):
    modality = "vision"
    family = "vision"
    supported_tasks = ("feature-extraction", "image-classification", "semantic-segmentation", "object-detection")
    has_pooler = True

    def image_size(self) -> tuple[int, int]:
        """(height, width) the package takes by default: the image processor's, unless image sizes
        are chosen (then the processor's when listed, else the first listed)."""
        own = self.processor_image_size()
        chosen = self.options.image_size.sizes
        if not chosen or (own[0] == own[1] and own[0] in chosen):
            return own
        return chosen[0], chosen[0]

    def image_sizes(self) -> list[tuple[int, int]]:
        """Every (height, width) the package takes, smallest first (configs/image_sizes.py)."""
        chosen = self.options.image_size.sizes
        return [(side, side) for side in chosen] if chosen else [self.image_size()]

    def image_size_refusal(self, sizes: tuple[int, ...]) -> str | None:
        """Why this model cannot take the chosen image `sizes` (None: it can)."""
        return None

    def processor_image_size(self) -> tuple[int, int]:
        """(height, width) the image processor resizes to."""
        pre = self.preprocessor
        for key in ("crop_size", "size"):
            size = pre.get(key) if pre.get(f"do_{'center_crop' if key == 'crop_size' else 'resize'}", True) else None
            if isinstance(size, dict):
                if "height" in size and "width" in size:
                    return int(size["height"]), int(size["width"])
                if "shortest_edge" in size:
                    return int(size["shortest_edge"]), int(size["shortest_edge"])
            if isinstance(size, int):
                return size, size
        size = self.attributes.image_size or 224
        if isinstance(size, (list, tuple)):
            return int(size[0]), int(size[1])
        return int(size), int(size)

    def normalization(self) -> tuple[float, list[float], list[float] | None, list[float] | None]:
        """(scale, bias, mean, std): scale/bias for Core ML, mean/std left for the wrapper."""
        pre = self.preprocessor
        rescale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
        if not pre.get("do_normalize", True):
            return rescale, [0.0, 0.0, 0.0], None, None
        mean = list(pre.get("image_mean", IMAGENET_MEAN))
        std = list(pre.get("image_std", IMAGENET_STD))
        if max(std) - min(std) < 1e-6:
            return rescale / std[0], [-m / std[0] for m in mean], None, None
        return rescale, [0.0, 0.0, 0.0], mean, std

    def inputs(self, part: str = "model") -> list[InputSpec]:
        height, width = self.image_size()
        scale, bias, _, _ = self.normalization()
        return [
            InputSpec(
                "image",
                (1, 3, height, width),
                "float32",
                f"RGB image, {width}x{height}",
                image={"scale": scale, "bias": bias, "color_layout": "RGB"},
            )
        ]

    def outputs(self, part: str = "model") -> list[OutputSpec]:
        if self.task == "feature-extraction":
            specs = [OutputSpec("last_hidden_state", "Features at the last layer", kind=OutputKind.EMBEDDINGS)]
            if self.has_pooler:
                specs.append(OutputSpec("pooler_output", "Pooled image features", kind=OutputKind.EMBEDDINGS))
            return specs
        if self.task == "image-classification":
            return [OutputSpec("probabilities", "Probability of each class (after softmax)", "softmax", OutputKind.CLASS_PROBABILITIES)]
        if self.task == "semantic-segmentation":
            return [OutputSpec("classLabels", "Class index of each pixel, at the input's resolution", "argmax", OutputKind.LABEL_MAP)]
        return [
            OutputSpec("logits", "Class scores of each detection (before softmax; the last class is 'no object')"),
            OutputSpec("pred_boxes", "Boxes as (center x, center y, width, height), relative to the image size"),
        ]

    def wrap(self, model, part: str = "model"):
        _, _, mean, std = self.normalization()
        return VisionWrapper(model, self.outputs(part), mean, std, not self.options.image_size.auto)



class SegformerConfig(VisionConfig):
    has_pooler = False


class YolosConfig(VisionConfig):
    supported_tasks = ("object-detection",)

    # Its position embeddings are resized bicubically to the same size: the identity.
    quirks = ("same_size_bicubic_resize",)

    def image_size_refusal(self, sizes: tuple[int, ...]) -> str | None:
        own = self.processor_image_size()
        if sizes == (own[0],) and own[0] == own[1]:
            return None
        return (f"YOLOS resizes its position embeddings to the photo's size inside every layer with a bicubic "
                f"interpolation, which Core ML has no operation for: it takes only its own size, {own[1]}x{own[0]}. "
                "Leave the image size at auto.")
