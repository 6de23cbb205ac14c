"""Configs for depth estimation: Depth Anything, DPT.

An RGB image in (the model's own rescale and normalise inside, as the vision family's
packages take it), the depth map out at the model's output resolution: transformers'
`predicted_depth`, [1, height, width]. Relative-depth models (Depth Anything v1/v2's
relative checkpoints, DPT) give larger values for nearer points (inverse depth); metric
checkpoints give metres. The image processor's `post_process_depth_estimation` (resizing
the map back to the photo's size) is left to the app: the card says how.
"""

from __future__ import annotations

from .base import OutputKind, OutputSpec
from .vision import VisionConfig


class DepthConfig(VisionConfig):
    supported_tasks = ("depth-estimation",)
    has_pooler = False

    def outputs(self, part: str = "model") -> list[OutputSpec]:
        return [OutputSpec("predicted_depth", "Depth map at the model's output resolution: relative "
                           "(larger is nearer) or in metres, as the checkpoint was trained", kind=OutputKind.DEPTH_MAP)]
