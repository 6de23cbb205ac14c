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
    """What the repo says about processing around the model: the image preprocessor's config,
    and under "sentence_pooling" a sentence-transformers model's pooling (sentence_pooling())."""
    found: dict = {}
    for name in ("preprocessor_config.json", "image_processor_config.json"):
        file = Path(path) / name
        if file.exists():
            found = json.loads(file.read_text())
            break
    pooling = sentence_pooling(Path(path))
    return {**found, "sentence_pooling": pooling} if pooling else found


POOLING_MODES = ("mean", "cls", "max")  # what the package computes (sentence-transformers' names: *_tokens)


def sentence_pooling(path: Path) -> dict | None:
    """A sentence-transformers repo's recipe for its sentence embedding, read from modules.json
    and its Pooling module's config: {"mode": mean|cls|max, "normalize": bool}; None if the repo
    is no sentence-transformers model or pools in a way we do not compute (then only the token
    embeddings are exported, and the card says so)."""
    try:
        modules = json.loads((path / "modules.json").read_text())
        kinds = {m.get("type", "").rsplit(".", 1)[-1]: m.get("path", "") for m in modules}
        if "Pooling" not in kinds:
            return None
        config = json.loads((path / kinds["Pooling"] / "config.json").read_text())
    except (OSError, ValueError, AttributeError):
        return None
    modes = [mode for mode in ("mean", "cls", "max", "mean_sqrt_len")
             if config.get(f"pooling_mode_{mode}_tokens" if mode != "cls" else "pooling_mode_cls_token")]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        return None
    return {"mode": modes[0], "normalize": "Normalize" in kinds}


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
