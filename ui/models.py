"""What the form shows about a model before anything is queued: search suggestions and a
summary (architecture, size, the tasks we can convert it for, or why it cannot be).

Everything goes through huggingface_hub on the server, so a self-hosted Hub
(`HF_ENDPOINT`) works, and a private or gated model is read with the user's token.
The checks are the engine's own (converters.source, converters.configs), so the form
says "no" for the same reasons a job would.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from converters.errors import UserInputError
from converters.options import ConversionOptions
from converters.source import HubReference, check_config, check_files, hub_api, hub_errors, parse_hub_reference

log = logging.getLogger(__name__)

SEARCH_LIMIT = 12
SEARCH_TIMEOUT = 5  # seconds

# Hub pipeline tags -> the task we convert for (when the architecture serves it).
PIPELINE_TASKS = {
    "text-generation": "text-generation",
    "fill-mask": "fill-mask",
    "feature-extraction": "feature-extraction",
    "sentence-similarity": "feature-extraction",
    "image-feature-extraction": "feature-extraction",
    "text-classification": "text-classification",
    "zero-shot-classification": "text-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    "multiple-choice": "multiple-choice",
    "text2text-generation": "text2text-generation",
    "translation": "text2text-generation",
    "summarization": "text2text-generation",
    "image-classification": "image-classification",
    "image-segmentation": "semantic-segmentation",
    "object-detection": "object-detection",
}


@dataclass
class ModelSummary:
    """A model as the form describes it. `error` is set when it cannot be converted."""

    text: str  # what the user typed
    repo_id: str | None = None
    revision: str | None = None
    sha: str | None = None
    model_type: str | None = None
    architectures: list[str] = field(default_factory=list)
    pipeline_tag: str | None = None
    parameters: int | None = None
    weight_bytes: int = 0
    private: bool = False
    gated: bool = False
    tasks: list[str] = field(default_factory=list)
    default_task: str | None = None
    config: dict = field(default_factory=dict)
    preprocessor: dict = field(default_factory=dict)
    modality: str | None = None
    error: str | None = None

    @property
    def convertible(self) -> bool:
        return self.error is None and bool(self.tasks)

    @property
    def unsupported_architecture(self) -> bool:
        """True when the model is fine but its architecture is not in the registry yet."""
        if not self.error or not self.model_type:
            return False
        from converters.configs import ARCHITECTURES

        return self.model_type not in ARCHITECTURES

    @property
    def name(self) -> str:
        return (self.repo_id or self.text).split("/")[-1]


def search_models(query: str, token: str | None = None, limit: int = SEARCH_LIMIT) -> list[str]:
    """Model IDs matching `query` (most downloaded first on the Hub); [] when the Hub cannot answer."""
    query = (query or "").strip()
    if len(query) < 2:
        return []
    if "://" in query or query.startswith(("huggingface.co/", "hf.co/")):
        try:
            query = parse_hub_reference(query).repo_id
        except UserInputError:
            return []
    query = query.split("@")[0]
    try:
        return _list_model_ids(query, token, limit)
    except Exception as error:  # noqa: BLE001 - suggestions are a convenience; typing still works
        log.info("model search for %r failed: %s", query, type(error).__name__)
        return []


def _list_model_ids(query: str, token: str | None, limit: int) -> list[str]:
    """GET /api/models?search=... once, with a short timeout: HfApi.list_models retries a
    failing Hub for ~20 s, too long for suggestions while typing."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    response = get_session().get(
        f"{endpoint}/api/models",
        params={"search": query, "sort": "downloads", "limit": limit},
        headers=build_hf_headers(token=token or False),
        timeout=SEARCH_TIMEOUT,
    )
    hf_raise_for_status(response)
    return [item["id"] for item in response.json() if isinstance(item, dict) and item.get("id")][:limit]


def inspect_model(text: str, token: str | None = None) -> ModelSummary:
    """Read the model's Hub info and config.json; never raises for the user's input."""
    summary = ModelSummary(text=text)
    try:
        ref = parse_hub_reference(text)
        summary.repo_id, summary.revision = ref.repo_id, ref.revision
        _read(summary, ref, token)
    except UserInputError as error:
        summary.error = str(error)
    except Exception as error:  # noqa: BLE001 - an unexpected Hub answer must not break the page
        log.warning("inspecting %r failed: %r", text, error)
        summary.error = f"Could not read this model from the Hub ({type(error).__name__}). Try again in a moment."
    return summary


def _read(summary: ModelSummary, ref: HubReference, token: str | None) -> None:
    from converters.configs import config_class_for
    from converters.source import inspect_hub_model

    where = f"The model '{ref.repo_id}'"
    info = inspect_hub_model(ref, token)
    summary.sha = info.sha
    summary.private = bool(info.private)
    summary.gated = bool(info.gated)
    summary.pipeline_tag = info.pipeline_tag
    siblings = info.siblings or []
    summary.weight_bytes = sum(s.size or 0 for s in siblings if s.rfilename.endswith(".safetensors"))
    summary.parameters = info.safetensors.total if info.safetensors else None
    files = [s.rfilename for s in siblings]
    with hub_errors(ref, token):
        # Gated repos show their metadata to anyone; their files need the user's access.
        hub_api(token).auth_check(ref.repo_id, token=token or False)
    check_files(files, where)

    with tempfile.TemporaryDirectory(prefix="coreml-ui-") as folder:
        config_path = _download(ref.repo_id, "config.json", info.sha or ref.revision, token, Path(folder))
        try:
            summary.config = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserInputError(f"{where} has a config.json that is not valid JSON ({error}).") from None
        summary.model_type = summary.config.get("model_type")
        summary.architectures = list(summary.config.get("architectures") or [])
        check_config(summary.config, where)
        config_cls = config_class_for(summary.model_type)
        summary.modality = config_cls.modality
        if "preprocessor_config.json" in files:
            path = _download(ref.repo_id, "preprocessor_config.json", info.sha or ref.revision, token, Path(folder))
            try:
                summary.preprocessor = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                summary.preprocessor = {}
        hf_config = _load_hf_config(Path(folder))
    summary.tasks = config_cls.available_tasks(hf_config)
    if not summary.tasks:
        raise UserInputError(f"{where} is a {summary.model_type} model, but transformers offers no task we can convert for it.")
    summary.default_task = default_task(summary.tasks, summary.pipeline_tag, summary.architectures)


def default_task(tasks: list[str], pipeline_tag: str | None, architectures: list[str]) -> str:
    """The model's own task: its Hub pipeline tag, else what its architecture was trained for."""
    from converters.tasks import task_from_architectures

    for candidate in (PIPELINE_TASKS.get(pipeline_tag or ""), task_from_architectures(architectures)):
        if candidate in tasks:
            return candidate
    return tasks[0]


def check_options(summary: ModelSummary, task: str | None, options: ConversionOptions) -> str | None:
    """The engine's own refusal of these options for this model (e.g. too long a sequence), or None."""
    if not summary.convertible or not task or task not in summary.tasks:
        return None
    from converters.configs import config_class_for

    try:
        config_cls = config_class_for(summary.model_type)
        config_cls(_hf_config(summary.config), task, options, summary.preprocessor).check_options()
    except UserInputError as error:
        return str(error)
    except Exception as error:  # noqa: BLE001 - the worker checks again; do not block the form
        log.info("option check failed for %s: %r", summary.repo_id, error)
    return None


def tolerances(summary: ModelSummary | None, precision: str, tolerance: str = "default") -> dict | None:
    """The validation thresholds this architecture uses for `precision`, scaled by the
    tolerance option (its config's Tolerances)."""
    if summary is None or not summary.model_type or summary.error:
        return None
    from converters.configs import config_class_for
    from converters.options import TOLERANCES

    try:
        t = config_class_for(summary.model_type).tolerances.scaled(TOLERANCES.get(tolerance, 1.0))
    except UserInputError:
        return None
    key = "float32" if precision == "float32" else "float16"
    return {
        "atol": t.atol[key],
        "min_psnr": t.min_psnr[key],
        "min_top1": t.min_top1[key],
        "min_cosine": t.min_cosine[key],
        "min_label_agreement": t.min_label_agreement[key],
    }


def warm_up() -> None:
    """Import the engine's registry (torch, transformers) before the first user needs it."""
    try:
        import converters.configs  # noqa: F401
        import transformers  # noqa: F401
    except Exception:  # noqa: BLE001 - the first inspection will say what is wrong
        log.exception("warming up the engine imports failed")


def _hf_config(config: dict):
    with tempfile.TemporaryDirectory(prefix="coreml-ui-") as folder:
        Path(folder, "config.json").write_text(json.dumps(config))
        return _load_hf_config(Path(folder))


def _load_hf_config(folder: Path):
    """transformers' config object, as the engine reads it (converters.export.load_hf_config,
    without importing coremltools into the web process); never remote code."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except ValueError as error:
        raise UserInputError(f"transformers cannot read this model's config.json: {error}") from None


def _download(repo_id: str, filename: str, revision: str | None, token: str | None, folder: Path) -> Path:
    with hub_errors(HubReference(repo_id, revision), token):
        return Path(hub_api(token).hf_hub_download(repo_id, filename, revision=revision, local_dir=folder,
                                                   token=token or False))
