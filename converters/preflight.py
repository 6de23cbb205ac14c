"""Before converting: can this model be converted, for which tasks, and which one is its own?

One rule and one preflight, used by the form (ui/models.py), the worker's resolve stage
(worker/resolve.py) and the engine (converters/loading.py), so all three say "no" for the
same reasons and pick the same task for `auto`:

- `configs.model_tasks(config, pipeline_tag)`: the tasks we can convert a model for (its
  architecture's config class, and the transformers classes for its model type) and its
  own task, the one `auto` means (the rule: `tasks.automatic_task`).
- `check_options`: the plan stage's refusals of these options for this model (plan.check_request).
- `preflight(ref, token, ...)`: everything about a Hub repo that can be checked before any
  weights are downloaded: it exists and the token may read it (private, gated, revision),
  safetensors weights, a config.json that needs no remote code, an architecture we support
  with at least one task, then (when asked) the task, the options, and a size limit.

The engine's own checks of a local folder (converters/source.py open_local) use the same
functions: check_files, check_config, then (at plan time, loading.resolve_task) model_tasks.

This module stands above the families and the loading of configs, yet the web process imports
it without torch or transformers: what needs them is imported where it is used.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserInputError
from .integrity import check_preprocessor, read_json
from .source import HubReference, check_config, check_files, hub_api, hub_errors, inspect_hub_model
from .tasks import ModelTasks

def check_options(hf_config, task: str, options, preprocessor: dict | None = None) -> None:
    """Refuse options this model cannot honour for `task` (UserInputError saying why): the plan
    stage's own refusals (plan.check_request)."""
    from .configs import config_class_for  # deferred: the families import torch and transformers
    from .plan import check_request  # deferred: so does the plan stage

    check_request(config_class_for(hf_config.model_type)(hf_config, task, options, preprocessor or {}))


def check_size(repo_id: str, parameters: int | None, weight_bytes: int, max_parameters: int | None,
               max_bytes: int | None) -> None:
    """Refuse models above a worker's limits (parameters, or bytes of weights; None: no limit)."""
    if parameters is None and weight_bytes:
        parameters = weight_bytes // 2  # weights stored as 16-bit floats at most: a lower bound
    advice = (
        "Pick a smaller model, or run it on a worker with more memory "
        "(self-hosting: raise COREML_CONVERTER_MAX_PARAMS / COREML_CONVERTER_MAX_BYTES)."
    )
    if max_parameters and parameters and parameters > max_parameters:
        raise UserInputError(
            f"The model '{repo_id}' is too large for this worker: {_count(parameters)} parameters, "
            f"and this worker converts models up to {_count(max_parameters)} parameters. {advice}"
        )
    if max_bytes and weight_bytes > max_bytes:
        raise UserInputError(
            f"The model '{repo_id}' is too large for this worker: {_size(weight_bytes)} of weights, "
            f"and this worker takes up to {_size(max_bytes)}. {advice}"
        )


@dataclass
class HubModel:
    """What the preflight learned about a Hub model, filled in as it goes (so a caller that
    passes its own still knows the model type when a later check refuses it)."""

    ref: HubReference
    sha: str | None = None
    private: bool = False
    gated: bool = False
    license: str | None = None  # the card's licence id (its `license` field), if any
    base_model: list[str] = field(default_factory=list)  # the card's `base_model`, if any
    pipeline_tag: str | None = None
    files: list[str] = field(default_factory=list)
    parameters: int | None = None  # from the safetensors headers, as the Hub counts them
    weight_bytes: int = 0
    config: dict = field(default_factory=dict)  # config.json
    preprocessor: dict = field(default_factory=dict)  # preprocessor_config.json, if any
    hf_config: object = None  # transformers' config object
    tasks: ModelTasks | None = None
    task: str | None = None  # the task asked for, resolved (when one was asked for)

    @property
    def where(self) -> str:
        return f"The model '{self.ref.repo_id}'"

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")

    @property
    def architectures(self) -> list[str]:
        return list(self.config.get("architectures") or [])

    @property
    def config_class(self):
        """The config class that would convert it (registry or family), None if none would."""
        from .configs import config_class_for  # deferred: the families import torch and transformers

        try:
            return config_class_for(self.model_type or "")
        except UserInputError:
            return None

    @property
    def modality(self) -> str | None:
        cls = self.config_class
        return cls.modality if cls else None


def card_licence(info) -> tuple[str | None, list[str]]:
    """The model card's `license` and `base_model` (the copy's card repeats them)."""
    data = getattr(info, "card_data", None) or getattr(info, "cardData", None) or {}
    get = data.get if hasattr(data, "get") else lambda key, default=None: getattr(data, key, default)
    licence, base = get("license", None), get("base_model", None) or []
    if isinstance(licence, list):
        licence = licence[0] if licence else None
    return (str(licence) if licence else None), [str(b) for b in ([base] if isinstance(base, str) else base)]


def preflight(
    ref: HubReference,
    token: str | None = None,
    folder: Path | None = None,
    *,
    task: str | None = None,
    options=None,
    max_parameters: int | None = None,
    max_bytes: int | None = None,
    found: HubModel | None = None,
) -> HubModel:
    """Check a Hub model before downloading its weights; raise UserInputError (or
    HubUnavailable) at the first problem. config.json (and preprocessor_config.json) are
    downloaded into `folder` (a temporary folder if None). With `task`, it is resolved
    ('auto': the model's own) and, with `options`, those are checked for it; the size limits
    are checked last. `found` is filled in as the checks go."""
    model = found or HubModel(ref)
    info = inspect_hub_model(ref, token)
    model.sha = info.sha
    model.private, model.gated = bool(info.private), bool(info.gated)
    model.license, model.base_model = card_licence(info)
    model.pipeline_tag = info.pipeline_tag
    model.files = [s.rfilename for s in info.siblings or []]
    # The top level's weights: what is downloaded and converted (a checkpoint-*/ folder is not).
    model.weight_bytes = sum(s.size or 0 for s in info.siblings or []
                             if s.rfilename.endswith(".safetensors") and "/" not in s.rfilename)
    model.parameters = info.safetensors.total if info.safetensors else None
    with hub_errors(ref, token):
        # Gated repos show their metadata to anyone; their files need the user's access.
        hub_api(token).auth_check(ref.repo_id, token=token or False)
    check_files(model.files, model.where)

    if folder is None:
        with tempfile.TemporaryDirectory(prefix="coreml-preflight-") as temporary:
            _read_configs(model, token, Path(temporary))
    else:
        _read_configs(model, token, Path(folder))

    if task is not None:
        model.task = model.tasks.choose(task)
        if options is not None:
            check_options(model.hf_config, model.task, options, model.preprocessor)
    check_size(ref.repo_id, model.parameters, model.weight_bytes, max_parameters, max_bytes)
    return model


def _read_configs(model: HubModel, token: str | None, folder: Path) -> None:
    from .configs import model_tasks  # deferred: the families import torch and transformers
    from .loading import load_hf_config  # deferred: so does loading

    revision = model.sha or model.ref.revision
    path = _download(model.ref, "config.json", revision, token, folder)
    model.config = read_json(path, model.where)
    check_config(model.config, model.where)
    model.tasks = model_tasks(model.config, model.pipeline_tag, model.where)
    if "preprocessor_config.json" in model.files:
        path = _download(model.ref, "preprocessor_config.json", revision, token, folder)
        model.preprocessor = read_json(path, model.where)
        check_preprocessor(model.preprocessor, model.where, "preprocessor_config.json")
    model.hf_config = load_hf_config(folder)


def _download(ref: HubReference, filename: str, revision: str | None, token: str | None, folder: Path) -> Path:
    with hub_errors(ref, token):
        return Path(hub_api(token).hf_hub_download(ref.repo_id, filename, revision=revision, local_dir=folder,
                                                   token=token or False))


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
