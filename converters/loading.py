"""Loading what a conversion starts from: the config, the task to convert for, the image
processor's settings, and the transformers model (safetensors only, never remote code)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError

from .configs import ExportConfig, config_class_for, model_tasks
from .errors import UserInputError
from .integrity import pooling_config, read_json
from .source import source_pipeline_tag


def resolve_task(requested: str, hf_config, source=None) -> str:
    """The task to convert for: the requested one, or for 'auto' the model's own, by the rule
    the form and the worker use too (configs.model_tasks). `source` (a ModelSource) gives
    the pipeline tag that rule reads: the Hub's for a Hub repo, the model card's for a folder."""
    pipeline_tag = source_pipeline_tag(source) if source is not None else None
    return model_tasks(hf_config, pipeline_tag).choose(requested)


# What transformers raises for a config or checkpoint it cannot use (a field of the wrong
# type, values that contradict each other, weights that do not fit the config).
# A RuntimeError is the input's only for weights whose shapes do not fit (_unloadable).
LOAD_FAILURES = (ValueError, TypeError, KeyError, AttributeError, AssertionError, StrictDataclassError)


def load_hf_config(path: Path):
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = read_json(Path(path) / "config.json", "The model").get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        config_class_for(model_type)  # says why transformers cannot build it
    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    except LOAD_FAILURES as error:
        raise UserInputError(
            f"The model's config.json does not describe a valid {model_type} model: {_first_line(error)}. "
            "Fix config.json (compare it with the original model's) and try again."
        ) from None


def _first_line(error: BaseException) -> str:
    """The reason in one line; a config validator's own (its cause), not huggingface_hub's wrapper."""
    if isinstance(error, StrictDataclassError) and error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300].rstrip(".")


def load_preprocessor(path: Path) -> dict:
    """What the repo says about processing around the model: the image preprocessor's config,
    and under "sentence_pooling" a sentence-transformers model's pooling (sentence_pooling())."""
    found: dict = {}
    for name in ("preprocessor_config.json", "image_processor_config.json"):
        file = Path(path) / name
        if file.exists():
            found = read_json(file, "The model")
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
        # The module's path is the repo's: it must lead to a file inside the folder (a UserInputError if not).
        config = json.loads(pooling_config(path, "The model").read_text())
    except (OSError, ValueError, AttributeError):
        return None
    modes = [mode for mode in ("mean", "cls", "max", "mean_sqrt_len")
             if config.get(f"pooling_mode_{mode}_tokens" if mode != "cls" else "pooling_mode_cls_token")]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        return None
    return {"mode": modes[0], "normalize": "Normalize" in kinds}


def load_model(path: Path, cfg: ExportConfig, warnings_out: list[str]):
    """The transformers model for the task, from safetensors only, never remote code."""
    import transformers

    auto = getattr(transformers, cfg.model_class_name())
    try:
        model, info = auto.from_pretrained(
            str(path),
            use_safetensors=True,
            trust_remote_code=False,
            dtype=torch.float32,
            output_loading_info=True,
            **cfg.model_kwargs(),
        )
    except (*LOAD_FAILURES, RuntimeError) as error:
        if isinstance(error, RuntimeError) and not _size_mismatch(error):
            raise
        raise _unloadable(error, cfg, Path(path)) from None
    missing = [k for k in info.get("missing_keys", []) if k]
    expected = len(model.state_dict())
    if expected and len(missing) > expected / 2:
        raise UserInputError(
            f"The checkpoint does not hold the weights {type(model).__name__} needs for '{cfg.task}': {len(missing)} of "
            f"{expected} are missing (for example {sorted(missing)[0]}), and {len(info.get('unexpected_keys', []))} "
            "in the files are not its. Converted, it would be a random model. If the model converts for its own "
            "task (auto), choose that; otherwise its weights belong to another model or a shard is missing."
        )
    if missing:
        warnings_out.append(
            f"{len(missing)} weights were not in the checkpoint and were initialised randomly "
            f"(for example {sorted(missing)[0]}): this checkpoint was not trained for '{cfg.task}', "
            "so that part of the output is meaningless until the model is fine-tuned."
        )
    return model.eval()


def _size_mismatch(error: BaseException) -> bool:
    return "size mismatch" in str(error) or "ignore_mismatched_sizes" in str(error)


def _first_mismatch(path: Path, cfg: ExportConfig) -> str | None:
    """The first weight whose shape in the files differs from the model config.json describes
    (transformers only logs them), as "name: [..] in the file, [..] for config.json"."""
    import transformers
    from safetensors import safe_open

    with torch.device("meta"):
        model = getattr(transformers, cfg.model_class_name()).from_config(cfg.hf_config)
    wanted = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():
                found = list(weights.get_slice(name).get_shape())
                model_name = next((k for k in wanted if k == name or k.endswith("." + name) or name.endswith("." + k)), None)
                if model_name and wanted[model_name] != found:
                    return f"{name} is {found} in {file.name}, but {wanted[model_name]} for config.json"
    return None


def _unloadable(error: BaseException, cfg: ExportConfig, path: Path) -> BaseException:
    """A UserInputError for a checkpoint transformers cannot load as config.json describes it."""
    text = str(error)
    model_type = cfg.hf_config.model_type
    if _size_mismatch(error):
        detail = _first_mismatch(path, cfg) or "some weights have other shapes than config.json describes"
        return UserInputError(
            f"The model's weights (*.safetensors) do not fit its config.json: {detail}. "
            "The config and the weights must come from the same model: upload the matching config.json."
        )
    return UserInputError(
        f"transformers cannot build this {model_type} model from its files: {_first_line(error)}. "
        "Check config.json and the weights (compare them with the original model's)."
    )
