"""What the form shows about a model before anything is queued: search suggestions and a
summary (architecture, size, the tasks we can convert it for, or why it cannot be).

Everything goes through huggingface_hub on the server, so a self-hosted Hub
(`HF_ENDPOINT`) works, and a private or gated model is read with the user's token.
The checks are the engine's own preflight (converters/preflight.py), the one the worker's
resolve stage runs, so the form says "no" for the same reasons a job would, and preselects
the task `auto` converts for.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from converters.formats import FORMATS
from converters.errors import HubUnavailable, UserInputError
from converters.options import ConversionOptions
from converters.preflight import HubModel, preflight
from converters.tasks import automatic_task
from converters.source import parse_hub_reference

log = logging.getLogger(__name__)

SEARCH_LIMIT = 12
SEARCH_TIMEOUT = 5  # seconds


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
    family: str | None = None  # the wrappers it converts with: decoder, encoder, encoder-decoder, vision
    tested: bool = True  # False: not in the tested list (converted by its family; validation decides)
    error: str | None = None

    @property
    def convertible(self) -> bool:
        return self.error is None and bool(self.tasks)

    @property
    def unsupported_architecture(self) -> bool:
        """True when the model is fine but no family of ours converts its architecture."""
        if not self.error or not self.model_type:
            return False
        from converters.configs import config_class_for

        try:
            config_class_for(self.model_type)
        except UserInputError:
            return True
        return False

    @property
    def keeps_kv_cache(self) -> bool:
        """Whether its family can keep a KV cache (a text generator's: the device fit counts it)."""
        if self.error or not self.model_type:
            return False
        from converters.configs import config_class_for

        try:
            return bool(config_class_for(self.model_type).supports_kv_cache)
        except UserInputError:
            return False

    @property
    def name(self) -> str:
        return (self.repo_id or self.text).split("/")[-1]


class NewestQuery:
    """Typing sends a search per key, and the answers can come back out of order: only the
    answer to a session's newest query is shown. (Gradio's `always_last` trigger cannot be
    used for this: the run it defers re-sends an earlier key's text, so under load the box
    was left suggesting for "j" when "job-b" had been typed.) It also remembers the
    suggestions each session was last sent (see next_choices)."""

    def __init__(self, sessions: int = 1000):
        self._tickets: OrderedDict[str, int] = OrderedDict()
        self._shown: dict[str, list[str]] = {}
        self._sessions = sessions
        self._lock = threading.Lock()
        self._counter = 0

    def begin(self, session: str) -> int:
        with self._lock:
            self._counter += 1
            self._tickets[session] = self._counter
            self._tickets.move_to_end(session)
            while len(self._tickets) > self._sessions:  # bounded: sessions come and go
                gone, _ = self._tickets.popitem(last=False)
                self._shown.pop(gone, None)
            return self._counter

    def is_newest(self, session: str, ticket: int) -> bool:
        with self._lock:
            return self._tickets.get(session) == ticket

    def shown(self, session: str) -> list[str]:
        with self._lock:
            return list(self._shown.get(session, []))

    def show(self, session: str, choices: list[str]) -> None:
        with self._lock:
            if session in self._tickets:
                self._shown[session] = list(choices)


def next_choices(shown: list[str], found: list[str], typed: str) -> list[str] | None:
    """What to send the model box after a search (None: send nothing).

    Gradio's dropdown (6.31) renders new choices with the indices it filtered the old ones by
    (the old suggestions containing the typed text) before it refilters, and throws ("Cannot
    read properties of undefined") when one of those indices is past the new list's end. So:
    - nothing new (found within what is shown): send nothing; the box's own filter by the
      typed text shows exactly those;
    - else the found list, padded with earlier suggestions up to the last index that box
      filter can hold (rarely needed; the next key filters them out)."""
    if not found or set(found) <= set(shown):
        return None
    text = (typed or "").strip().lower()
    reach = max((i + 1 for i, choice in enumerate(shown) if text in choice.lower()), default=0)
    extra = [choice for choice in shown if choice not in found]
    return found + extra[: max(0, reach - len(found))]


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
    from huggingface_hub.utils import hf_raise_for_status

    response = _hub_get("/api/models", token, params={"search": query, "sort": "downloads", "limit": limit})
    hf_raise_for_status(response)
    return [item["id"] for item in response.json()
            if isinstance(item, dict) and item.get("id") and not is_coreml_repo(item)][:limit]


def repo_exists(repo_id: str, token: str | None) -> bool | None:
    """Whether the Hub has `repo_id` (a model repo) that this token can see; None when the Hub
    does not answer in time (the note is a courtesy: the push itself decides)."""
    info = _repo_info(repo_id, token)
    return info if info is None or info is False else True


def repo_packages(repo_id: str, token: str | None) -> list[str] | None:
    """The packages an existing repo holds, as the push finds them (worker/hub.py packages_in:
    each path up to its first folder or file named like a format's package); None when the repo
    does not exist for this token, or the Hub does not answer in time."""
    info = _repo_info(repo_id, token)
    if not isinstance(info, dict):
        return None
    suffixes = tuple(each.package_suffix for each in FORMATS.values() if each.package_suffix)
    found = set()
    for sibling in info.get("siblings") or []:
        parts = str(sibling.get("rfilename") or "").split("/")
        depth = next((i for i, part in enumerate(parts) if part.endswith(suffixes)), None)
        if depth is not None:
            found.add("/".join(parts[: depth + 1]))
    return sorted(found)


def _repo_info(repo_id: str, token: str | None) -> dict | bool | None:
    """The Hub's model info of `repo_id` as this token sees it; False when it has none for this
    token, None when the Hub does not answer in time."""
    try:
        response = _hub_get(f"/api/models/{repo_id}", token)
        if response.status_code == 200:
            return response.json()
    except Exception as error:  # noqa: BLE001 - unreachable: say nothing rather than something wrong
        log.info("checking %s failed: %s", repo_id, type(error).__name__)
        return None
    return False if response.status_code in (401, 404) else None


def _hub_get(path: str, token: str | None, params: dict | None = None):
    """One GET on the configured Hub with huggingface_hub's session and headers, and a short
    timeout: the form asks while a person types."""
    from huggingface_hub.utils import build_hf_headers, get_session

    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return get_session().get(f"{endpoint}{path}", params=params, headers=build_hf_headers(token=token or False),
                             timeout=SEARCH_TIMEOUT)


def is_coreml_repo(item: dict) -> bool:
    """A search result that holds converted packages (ours or anyone's), not a model to convert:
    its library or a tag is an output format's Hub tag (coreml, coreai), or it is named like our
    own outputs (<model>-coreml, <model>-coreai)."""
    tags = {str(tag).lower() for tag in item.get("tags") or ()} | {str(item.get("library_name") or "").lower()}
    ours = [each for each in FORMATS.values() if each.hub_tag]
    return any(each.hub_tag in tags for each in ours) or str(item["id"]).lower().endswith(
        tuple(f"-{each.repo_suffix}" for each in FORMATS.values()))


def inspect_model(text: str, token: str | None = None) -> ModelSummary:
    """Read the model's Hub info and config.json; never raises for the user's input."""
    summary = ModelSummary(text=text)
    try:
        ref = parse_hub_reference(text)
        summary.repo_id, summary.revision = ref.repo_id, ref.revision
        found = HubModel(ref)
        try:
            preflight(ref, token, found=found)
        finally:
            _describe(summary, found)
    except (UserInputError, HubUnavailable) as error:
        summary.error = str(error)
    except Exception as error:  # noqa: BLE001 - an unexpected Hub answer must not break the page
        log.warning("inspecting %r failed: %r", text, error)
        summary.error = f"Could not read this model from the Hub ({type(error).__name__}). Try again in a moment."
    return summary


def _describe(summary: ModelSummary, model: HubModel) -> None:
    """What the preflight found, as far as it got."""
    summary.sha = model.sha
    summary.private, summary.gated = model.private, model.gated
    summary.pipeline_tag = model.pipeline_tag
    summary.parameters, summary.weight_bytes = model.parameters, model.weight_bytes
    summary.config, summary.preprocessor = model.config, model.preprocessor
    summary.model_type = model.model_type
    summary.architectures = model.architectures
    cls = model.config_class
    summary.modality = cls.modality if cls else None
    summary.family = cls.family if cls else None
    summary.tested = cls.tested if cls else True
    if model.tasks is not None:
        summary.tasks = list(model.tasks.available)
        summary.default_task = model.tasks.automatic


def default_task(tasks: list[str], pipeline_tag: str | None, architectures: list[str]) -> str:
    """The model's own task (what `auto` converts for): converters.tasks.automatic_task."""
    return automatic_task(tasks, architectures, pipeline_tag)


def check_options(summary: ModelSummary, task: str | None, options: ConversionOptions) -> str | None:
    """The engine's own refusal of these options for this model (e.g. too long a sequence), or None."""
    if not summary.convertible or not task or task not in summary.tasks:
        return None
    from converters import preflight as engine_preflight

    try:
        engine_preflight.check_options(_hf_config(summary.config), task, options, summary.preprocessor)
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


def size_estimates(summary: ModelSummary | None, task: str | None, options: ConversionOptions) -> dict[str, int] | None:
    """The expected package size in bytes for every weight compression choice (converters/
    size_estimate.py: the model's weight shapes from its config, no weights downloaded), or
    None before a convertible model and task are chosen, or when the estimate fails."""
    if summary is None or not summary.convertible or not task or task not in summary.tasks:
        return None
    from converters.size_estimate import estimates

    try:
        weights = _weight_shapes(json.dumps(summary.config, sort_keys=True), task)
    except Exception as error:  # noqa: BLE001 - the sizes are a hint; the form works without them
        log.info("size estimate failed for %s (%s): %r", summary.repo_id, task, error)
        return None
    return estimates(weights, options, task)


@functools.lru_cache(maxsize=32)
def _weight_shapes(config_json: str, task: str) -> tuple:
    """The model's weight shapes for `task`, once per config and task (the form asks again at
    every option change)."""
    from converters.size_estimate import weight_shapes

    return tuple(weight_shapes(_hf_config(json.loads(config_json)), task))


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
    """transformers' config object, as the engine reads it (converters.loading.load_hf_config:
    no coremltools in the web process, never remote code)."""
    from converters.loading import load_hf_config

    return load_hf_config(folder)
