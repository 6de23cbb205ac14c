"""The image sizes a vision package takes (the `image_size` option), decided per model before
any weights load, and the position embeddings of one size made constant for its capture.

How a package takes several sizes depends on the model's graph:
- **enumerated**: a convolutional network whose every op follows the input's size (ConvNeXt,
  ResNet: verified by exporting them with a dynamic height and width, converting and running
  each size against PyTorch) is one program; its image input lists the sizes (Core ML
  enumerated shapes).
- **functions**: any other model (ViT, DeiT, CLIP's and SigLIP's image towers, DPT, Depth
  Anything, MobileViT, SegFormer) is converted once per size, each a function of one Core ML
  multifunction package. Models whose position embeddings are resized to the input's size do
  it with a bicubic interpolation (`interpolate_pos_encoding`, e.g.
  transformers/models/vit/modeling_vit.py:89-128), which Core ML has no op for: each size's
  embeddings are computed by the model's own code in PyTorch at conversion time
  (`constant_position_embeddings`) and captured as a constant. MobileViT unfolds patches with
  Python arithmetic on the size and SegFormer upsamples to a size read from a tensor: neither
  exports with a dynamic size.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..errors import UserInputError
from ..image_size_rules import ENUMERATED, FUNCTIONS, ONE, SIZE_AGNOSTIC, design_for, function_name  # noqa: F401 (re-exported)

SMALLEST_SIDE = 32  # a convolutional network's usual total stride: a smaller photo leaves no pixel at its last stage


def takes_images(cfg) -> bool:
    return any(spec.image for part in cfg.parts() for spec in cfg.inputs(part))


def image_parts(cfg) -> list[str]:
    return [part for part in cfg.parts() if any(spec.image for spec in cfg.inputs(part))]


def design(cfg) -> str:
    """How the package takes its sizes: one, enumerated shapes or one function per size."""
    return design_for(cfg.hf_config.model_type, len(getattr(cfg, "image_sizes", lambda: [])()))


def other_than_own(cfg) -> bool:
    """Whether a chosen size differs from the model's own (its processor's) for a model whose
    graph does not follow the input's size (its position embeddings are resized for it)."""
    chosen = cfg.options.image_size.sizes
    if not chosen or cfg.hf_config.model_type in SIZE_AGNOSTIC:
        return False
    own = getattr(cfg, "vision", cfg).processor_image_size()
    return chosen != (own[0],) or own[0] != own[1]


def patch_size(hf_config) -> int | None:
    """The side of the patches the model cuts a photo into (its own, its vision tower's or its backbone's)."""
    for config in (hf_config, getattr(hf_config, "vision_config", None), getattr(hf_config, "backbone_config", None)):
        value = getattr(config, "patch_size", None) if config is not None else None
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        if isinstance(value, int) and value > 1:
            return value
    return None


def check(cfg) -> None:
    """Refuse image sizes this model cannot take, saying what to type (plan time)."""
    chosen = cfg.options.image_size
    if chosen.auto:
        return
    model_type = cfg.hf_config.model_type
    if not takes_images(cfg):
        raise UserInputError(f"This {model_type} model takes no image: the image size is for vision models. Leave it at auto.")
    reason = getattr(cfg, "image_size_refusal", lambda sizes: None)(chosen.sizes)  # the family's own limits
    if reason:
        raise UserInputError(reason)
    patch = None if model_type in SIZE_AGNOSTIC else patch_size(cfg.hf_config)
    smallest = patch or SMALLEST_SIDE
    if min(chosen.sizes) < smallest:
        why = f"one {patch}-pixel patch" if patch else "what its layers shrink a photo by"
        raise UserInputError(f"Image size {min(chosen.sizes)} is too small for this model: at least {smallest} pixels "
                             f"a side ({why}). Type {smallest} or more.")
    for size in chosen.sizes if patch else ():
        if size % patch:
            low = size - size % patch
            raise UserInputError(f"Image size {size} is not a multiple of this model's patch size ({patch}): it cuts the "
                                 f"photo into {patch}-pixel squares. Type {low} or {low + patch} instead.")


def interpolates(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that resize their position embeddings to the input's size in PyTorch."""
    return [m for m in module.modules() if callable(getattr(type(m), "interpolate_pos_encoding", None))]


@contextmanager
def constant_position_embeddings(module: torch.nn.Module, example: tuple):
    """While open, each position-embedding module of `module` returns the embeddings it computed
    for `example` (one size), as a constant: the model's own resize, run in PyTorch once, so the
    captured program holds the size's embeddings instead of a bicubic resize."""
    owners = interpolates(module)
    made: dict[int, torch.Tensor] = {}

    def recording(owner):
        original = type(owner).interpolate_pos_encoding.__get__(owner)

        def record(*args, **kwargs):
            value = original(*args, **kwargs)
            made.setdefault(id(owner), value.detach().clone())
            return value

        return record

    try:
        for owner in owners:
            owner.interpolate_pos_encoding = recording(owner)
        with torch.no_grad():
            module(*example)
        for owner in owners:
            if id(owner) in made:
                owner.interpolate_pos_encoding = lambda *args, _value=made[id(owner)], **kwargs: _value
        yield
    finally:
        for owner in owners:
            owner.__dict__.pop("interpolate_pos_encoding", None)
