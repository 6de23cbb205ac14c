"""How a vision package takes several image sizes, by model type, and its functions' names: the
light rules (no torch) that the conversion (configs/image_sizes.py, backends/coreml/sizes.py) and
the model card (worker/card_vision.py) share.

ConvNeXt and ResNet follow the input's size in every op: exported with a dynamic height and width,
converted and run at each size against PyTorch (issue 29), they are one program with enumerated image
shapes. Every other model is converted once per size, each a function of one multifunction package.
"""

from __future__ import annotations

# Model types whose graph follows the input's size (one program, enumerated shapes).
SIZE_AGNOSTIC = frozenset({"convnext", "resnet"})
ENUMERATED, FUNCTIONS, ONE = "enumerated", "functions", "one"


def design_for(model_type: str | None, sizes: int) -> str:
    """How a package of `sizes` image sizes is made for `model_type`."""
    if sizes <= 1:
        return ONE
    return ENUMERATED if model_type in SIZE_AGNOSTIC else FUNCTIONS


def function_name(size: tuple[int, int]) -> str:
    """The package's function for one size (what an app sets MLModelConfiguration.functionName to)."""
    height, width = size
    return f"image_{height}" if height == width else f"image_{height}x{width}"
