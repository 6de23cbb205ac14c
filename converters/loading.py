"""Loading what a conversion starts from: the config, the task to convert for, the image
processor's settings, and the transformers model (safetensors only, never remote code)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .configs import CoreMLConfig
from .errors import UserInputError


def resolve_task(requested: str, hf_config, source=None) -> str:
    """The task to convert for: the requested one, or for 'auto' the model's own, by the rule
    the form and the worker use too (preflight.model_tasks). `source` (a ModelSource) gives
    the pipeline tag that rule reads: the Hub's for a Hub repo, the model card's for a folder."""
    from .preflight import model_tasks, source_pipeline_tag

    pipeline_tag = source_pipeline_tag(source) if source is not None else None
    return model_tasks(hf_config, pipeline_tag).choose(requested)


def load_hf_config(path: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    except ValueError as error:
        raise UserInputError(f"transformers cannot read this model's config.json: {error}") from None


def load_preprocessor(path: Path) -> dict:
    for name in ("preprocessor_config.json", "image_processor_config.json"):
        file = Path(path) / name
        if file.exists():
            return json.loads(file.read_text())
    return {}


def load_model(path: Path, cfg: CoreMLConfig, warnings_out: list[str]):
    """The transformers model for the task, from safetensors only, never remote code."""
    import transformers

    auto = getattr(transformers, cfg.model_class_name())
    model, info = auto.from_pretrained(
        str(path),
        use_safetensors=True,
        trust_remote_code=False,
        dtype=torch.float32,
        output_loading_info=True,
        **cfg.model_kwargs(),
    )
    missing = [k for k in info.get("missing_keys", []) if k]
    if missing:
        warnings_out.append(
            f"{len(missing)} weights were not in the checkpoint and were initialised randomly "
            f"(for example {sorted(missing)[0]}): this checkpoint was not trained for '{cfg.task}', "
            "so that part of the output is meaningless until the model is fine-tuned."
        )
    return model.eval()
