"""Configs for image–text embedding models: CLIP, SigLIP, SigLIP 2.

Two packages, as apps use them (photo search embeds the library once and each query as it
comes): an image encoder (an RGB image with the model's own resize, rescale and normalise
inside, as the vision family's packages take it) and a text encoder (token ids and their
mask at the tokenizer's length). Each returns its embedding L2-normalised, of the same width,
so a label's score is a dot product: `logit_scale * image · text (+ logit_bias)`, whose
softmax over the labels (CLIP) or sigmoid per label (SigLIP) is the model's probability, as
transformers' zero-shot pipeline computes it (pipelines/zero_shot_image_classification.py).
The scale and bias are the trained weights' (read when the model is wrapped) and go into
both packages' metadata (`package_metadata`).

SigLIP 2 takes patches, not an image: its packages take a square image of the size its
processor gives a square photo (`max_num_patches` patches) and cut it into patches inside,
with its position embeddings resized once for that grid.
"""

from __future__ import annotations

import math

import torch

from ..errors import UserInputError
from .attributes import ModelAttributes
from .base import SEQ, ExportConfig, InputSpec, OutputKind, OutputSpec, additive_mask, first_output
from .vision import VisionConfig, resizing

IMAGE, TEXT = "image_encoder", "text_encoder"


def _normalised(value: torch.Tensor) -> torch.Tensor:
    return value / value.norm(p=2, dim=-1, keepdim=True)


class ImageTower(torch.nn.Module):
    def __init__(self, model, mean, std, sized: bool = False):
        super().__init__()
        self.model = model
        self.arguments = resizing(model.get_image_features, sized)  # another size than the config's: embeddings resized
        self.register_buffer("mean", None if mean is None else torch.tensor(mean).reshape(1, 3, 1, 1))
        self.register_buffer("std", None if std is None else torch.tensor(std).reshape(1, 3, 1, 1))

    def features(self, pixel_values):
        return self.model.get_image_features(pixel_values=pixel_values, **self.arguments)

    def forward(self, pixel_values):
        if self.mean is not None:
            pixel_values = (pixel_values - self.mean) / self.std
        return (_normalised(first_output(self.features(pixel_values), "pooler_output")),)


class PatchImageTower(ImageTower):
    """SigLIP 2: the image cut into patches as its processor cuts them (channels last within
    a patch, patches row by row), every patch real, on one fixed grid."""

    def __init__(self, model, mean, std, patch: int, grid: tuple[int, int]):
        super().__init__(model, mean, std)
        self.patch, self.grid = patch, grid
        embeddings = model.vision_model.embeddings
        weight = embeddings.position_embedding.weight
        side = embeddings.position_embedding_size
        shapes = torch.tensor([list(grid)])
        with torch.no_grad():  # resized once for this grid (the model resizes per image, with .tolist())
            resized = embeddings.resize_positional_embeddings(weight.reshape(side, side, -1), shapes, grid[0] * grid[1])
        embeddings.resize_positional_embeddings = lambda *args, **kwargs: resized
        self.register_buffer("spatial_shapes", shapes, persistent=False)

    def features(self, pixel_values):
        (rows, columns), p = self.grid, self.patch
        patches = pixel_values.reshape(1, 3, rows, p, columns, p).permute(0, 2, 4, 3, 5, 1).reshape(1, rows * columns, p * p * 3)
        return self.model.get_image_features(pixel_values=patches, pixel_attention_mask=None, spatial_shapes=self.spatial_shapes)


class TextTower(torch.nn.Module):
    def __init__(self, model, causal: bool):
        super().__init__()
        self.model = model
        self.causal = causal

    def forward(self, input_ids, attention_mask):
        mask = additive_mask(attention_mask, causal=self.causal)
        features = self.model.get_text_features(input_ids=input_ids, attention_mask=mask)
        return (_normalised(first_output(features, "pooler_output")),)


class ImageTextConfig(ExportConfig):
    """CLIP: a causal text tower pooled at its end-of-text token; softmax over the labels."""

    modality = "text"  # the text encoder reads the tokenizer; the image encoder's input is an image (its spec says so)
    family = "image-text"
    supported_tasks = ("zero-shot-image-classification", "feature-extraction")
    causal_text = True
    probability = "softmax"  # how the model turns a label's score into its probability

    def __init__(self, hf_config, task, options=None, preprocessor=None):
        self.text_config = hf_config.text_config
        super().__init__(hf_config, task, options, preprocessor)
        self.attributes = ModelAttributes(self.text_config)  # ids, lengths: the text tower's
        self.vision = VisionConfig(hf_config.vision_config, "feature-extraction", options, preprocessor)
        self.scores: dict[str, float] = {}  # logit_scale (and logit_bias), the trained weights', set by wrap

    def max_sequence_length(self) -> int | None:
        value = getattr(self.text_config, "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    def parts(self) -> list[str]:
        return [IMAGE, TEXT]

    def model_class_name(self) -> str:
        return "AutoModel"  # both tasks load the two towers with their scale (CLIPModel, SiglipModel)

    def embedding_size(self) -> int:
        return int(getattr(self.hf_config, "projection_dim", None) or self.text_config.hidden_size)

    def image_size(self) -> tuple[int, int]:
        return self.vision.image_size()

    def image_sizes(self) -> list[tuple[int, int]]:
        return self.vision.image_sizes()

    def image_size_refusal(self, sizes: tuple[int, ...]) -> str | None:
        return None

    def inputs(self, part: str = IMAGE) -> list[InputSpec]:
        if part == IMAGE:
            return self.vision.inputs()
        return [
            InputSpec("input_ids", (1, SEQ), "int32", "Indices of the text's tokens in the vocabulary, padded to the full length"),
            InputSpec("attention_mask", (1, SEQ), "int32", "1 for tokens to attend to, 0 for padding"),
        ]

    def outputs(self, part: str = IMAGE) -> list[OutputSpec]:
        if part == IMAGE:
            return [OutputSpec("image_embeds", "The image's embedding, L2-normalised", kind=OutputKind.EMBEDDINGS)]
        return [OutputSpec("text_embeds", "The text's embedding, L2-normalised", kind=OutputKind.EMBEDDINGS)]

    def wrap(self, model, part: str = IMAGE):
        self.scores = {"logit_scale": float(model.logit_scale.detach().exp())}
        if getattr(model, "logit_bias", None) is not None:
            self.scores["logit_bias"] = float(model.logit_bias.detach())
        if part == TEXT:
            return TextTower(model, self.causal_text)
        _, _, mean, std = self.vision.normalization()
        return self.image_tower(model, mean, std)

    def image_tower(self, model, mean, std) -> torch.nn.Module:
        return ImageTower(model, mean, std, not self.options.image_size.auto)

    @property
    def zero_shot_parts(self) -> tuple[str, str]:
        """The image and text parts validation scores labels with (validation/zero_shot.py)."""
        return IMAGE, TEXT

    def model_pixels(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's own image arguments for pixels as the image package's program receives them."""
        _, _, mean, std = self.vision.normalization()
        if mean is not None:
            pixel_values = (pixel_values - torch.tensor(mean).reshape(1, 3, 1, 1)) / torch.tensor(std).reshape(1, 3, 1, 1)
        if not self.options.image_size.auto:  # another size than the config's: the model resizes its position embeddings
            return {"pixel_values": pixel_values, "interpolate_pos_encoding": True}
        return {"pixel_values": pixel_values}

    def zero_shot_logits(self, model, pixel_values, input_ids, attention_mask) -> torch.Tensor:
        """PyTorch's logits_per_image for one image and a batch of texts, as the model computes
        them (its own masks and pooling, not the packages' wrappers)."""
        result = model(input_ids=input_ids.long(), attention_mask=attention_mask.long(), **self.model_pixels(pixel_values))
        return first_output(result, "logits_per_image")

    def package_metadata(self, part: str) -> dict[str, str]:
        """The label score's scale and bias, for the app to compute probabilities as the model does."""
        values = {name: repr(value) for name, value in self.scores.items()}
        values["probability"] = self.probability
        return {"co.huggingface.exporters." + name: value for name, value in values.items()}

    def example_tensor(self, spec, shape, generator):
        if spec.name == "input_ids":  # an end-of-text token where CLIP pools
            ids = super().example_tensor(spec, shape, generator)
            ids[..., -1] = self.end_token()
            return ids
        return super().example_tensor(spec, shape, generator)

    def end_token(self) -> int:
        eos = getattr(self.text_config, "eos_token_id", None)
        vocab = self.attributes.vocab_size or 100
        return eos if isinstance(eos, int) and 0 <= eos < vocab else vocab - 1


class SiglipConfig(ImageTextConfig):
    """SigLIP: a bidirectional text tower pooled at its last position, so the text is always
    padded to the length it was trained at; a sigmoid per label (with a learnt bias)."""

    causal_text = False
    probability = "sigmoid"

    def check_options(self) -> None:
        super().check_options()
        limit, sequence = self.max_sequence_length(), self.options.sequence_length
        if limit and (sequence.kind != "fixed" or sequence.maximum != limit):
            raise UserInputError(
                f"{self.hf_config.model_type} reads its text at its last position, so the text must be padded to the "
                f"{limit} tokens it was trained with (as transformers' zero-shot pipeline pads it). "
                f"Choose sequence length {limit} (or auto)."
            )


class Siglip2Config(SiglipConfig):
    def image_sizes(self) -> list[tuple[int, int]]:
        return [self.image_size()]

    def image_size_refusal(self, sizes: tuple[int, ...]) -> str | None:
        side = self.image_size()[0]
        if sizes == (side,):
            return None
        return (f"SigLIP 2 takes its photo as at most {self.grid()[0] ** 2} patches (its processor's max_num_patches): "
                f"its package takes a {side}x{side} image, cut into those patches. Leave the image size at auto.")

    def image_size(self) -> tuple[int, int]:
        side = self.patch_size() * self.grid()[0]
        return side, side

    def patch_size(self) -> int:
        return int(self.preprocessor.get("patch_size") or self.hf_config.vision_config.patch_size)

    def grid(self) -> tuple[int, int]:
        """A square photo's patches: the largest square grid within max_num_patches."""
        limit = int(self.preprocessor.get("max_num_patches") or self.hf_config.vision_config.num_patches)
        side = math.isqrt(limit)
        return side, side

    def inputs(self, part: str = IMAGE) -> list[InputSpec]:
        if part != IMAGE:
            return super().inputs(part)
        height, width = self.image_size()
        scale, bias, _, _ = self.vision.normalization()
        return [InputSpec("image", (1, 3, height, width), "float32", f"RGB image, {width}x{height}",
                          image={"scale": scale, "bias": bias, "color_layout": "RGB"})]

    def image_tower(self, model, mean, std) -> torch.nn.Module:
        return PatchImageTower(model, mean, std, self.patch_size(), self.grid())

    def model_pixels(self, pixel_values):
        rows, columns = self.grid()
        p = self.patch_size()
        pixel_values = super().model_pixels(pixel_values)["pixel_values"]
        patches = pixel_values.reshape(1, 3, rows, p, columns, p).permute(0, 2, 4, 3, 5, 1).reshape(1, rows * columns, p * p * 3)
        return {"pixel_values": patches, "pixel_attention_mask": torch.ones(1, rows * columns, dtype=torch.long),
                "spatial_shapes": torch.tensor([[rows, columns]])}
