"""Where a model comes from: a local folder or a Hub repo (ID or URL).

Everything that can be checked before converting is checked here, so a bad request fails
in seconds with a message saying what to do: a repo that is missing, private or gated,
weights only in pickle files, code that would have to run from the repo, no config, more
bytes than the caller allows or the disk holds.
Downloads take exactly the files conversion reads (DownloadPlan), by name: no training
checkpoints, logs or data that happen to sit in the repo.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import HubUnavailable, UserInputError
from .integrity import (SHARD_INDEX, WEIGHTS, check_folder, check_inside, damaged, pooling_config_name, read_json, reads,
                        shard_names)

DISK_MARGIN = 1_000_000_000  # left free after a download: the conversion writes its packages too
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
COREML_SUFFIXES = (".mlpackage", ".mlmodel", ".mlmodelc")  # a converted package (its weights: weight.bin)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")


@dataclass(frozen=True)
class HubReference:
    repo_id: str
    revision: str | None = None

    @property
    def name(self) -> str:
        return self.repo_id.split("/")[-1]


def parse_hub_reference(text: str) -> HubReference:
    """Read 'owner/name', 'owner/name@rev' or a Hub URL (https://huggingface.co/owner/name[/tree/rev])."""
    value = (text or "").strip()
    if not value:
        raise UserInputError("No model given. Enter a Hub ID such as 'openai-community/gpt2' or a model URL.")
    revision = None
    if "://" in value or value.startswith(("huggingface.co/", "hf.co/")):
        url = urlparse(value if "://" in value else "https://" + value)
        if url.scheme not in ("http", "https"):
            raise UserInputError(f"'{text}' is not a web address. Enter a Hub ID (owner/name) or an https URL.")
        parts = [unquote(p) for p in url.path.split("/") if p]
        if parts and parts[0] in ("datasets", "spaces"):
            raise UserInputError(f"'{text}' is a {parts[0][:-1]}, not a model. Enter a model's Hub ID or URL.")
        if parts and parts[0] == "models":
            parts = parts[1:]
        if len(parts) < 2:
            raise UserInputError(f"'{text}' does not name a model: a model URL looks like https://huggingface.co/owner/name.")
        if len(parts) >= 4 and parts[2] in ("tree", "blob", "resolve"):
            revision = parts[3]
        value = f"{parts[0]}/{parts[1]}"
    elif "@" in value:
        value, revision = value.split("@", 1)
    if not _REPO_ID.match(value) or ".." in value or value.endswith((".", "-")):
        raise UserInputError(
            f"'{text}' is not a valid Hub model ID. It must look like 'owner/name' "
            "(letters, digits, '-', '_' and '.'), for example 'openai-community/gpt2'."
        )
    return HubReference(value, revision or None)


@dataclass
class ModelSource:
    """A model ready to convert: a local folder with its config, and where it came from."""

    path: Path
    config: dict
    hub_id: str | None = None
    revision: str | None = None
    pipeline_tag: str | None = None  # the Hub's (a folder's is in its README: card_pipeline_tag)

    @property
    def name(self) -> str:
        return self.hub_id.split("/")[-1] if self.hub_id else self.path.name

    @property
    def display(self) -> str:
        return self.hub_id or str(self.path)


def card_pipeline_tag(folder: Path) -> str | None:
    """The `pipeline_tag` in a folder's model card (README.md front matter), as the Hub reads it."""
    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return None
    from huggingface_hub.repocard import metadata_load

    try:
        tag = (metadata_load(readme) or {}).get("pipeline_tag")
    except Exception:  # noqa: BLE001 - an unreadable card carries no tag
        return None
    return tag if isinstance(tag, str) else None


def source_pipeline_tag(source) -> str | None:
    """A ModelSource's pipeline tag (what the `auto` task reads, tasks.automatic_task): the Hub's
    (ModelInfo) for a Hub repo, else its model card's."""
    return getattr(source, "pipeline_tag", None) or card_pipeline_tag(source.path)


def check_files(filenames: list[str], where: str) -> None:
    """Refuse repos we cannot convert safely, judging by their file names alone."""
    packages = sorted({next(part for part in f.split("/") if part.endswith(COREML_SUFFIXES))
                       for f in filenames if any(part.endswith(COREML_SUFFIXES) for part in f.split("/"))})
    if packages and not any(f.endswith(".safetensors") for f in filenames):
        raise UserInputError(
            f"{where} is a Core ML repo (it holds {', '.join(packages[:3])}), not a transformers model: there is "
            "nothing to convert. Choose the model it was converted from (its model card names it as base_model)."
        )
    names = [f for f in filenames if "/" not in f]  # transformers reads the repo's top level only
    if "config.json" not in names:
        raise UserInputError(
            f"{where} has no config.json, so it is not a transformers model we can read. "
            "Check the ID, or add the model's config.json."
        )
    if not any(n.endswith(".safetensors") for n in names):
        if any(n.endswith(PICKLE_SUFFIXES) for n in names):
            raise UserInputError(
                f"{where} has weights only in pickle files (.bin/.pt), which can run arbitrary code when "
                "loaded, so we do not load them. Ask the author for safetensors weights, or convert them "
                "yourself (for example with the 'convert to safetensors' Space) and try again."
            )
        nested = next((f for f in filenames if f.endswith(".safetensors")), None)
        where_else = f" (only in a subfolder: {nested})" if nested else ""
        raise UserInputError(f"{where} has no model weights (*.safetensors) at its top level{where_else}. "
                             "Check the ID and revision, or save the model with save_pretrained and upload that.")


def check_config(config: dict, where: str) -> None:
    """Refuse configs that would need code from the repo to load."""
    if config.get("auto_map"):
        raise UserInputError(
            f"{where} needs custom code from its repo to load (config.json has 'auto_map'). "
            "We never run remote code; only architectures built into transformers can be converted."
        )
    if not config.get("model_type"):
        raise UserInputError(f"{where}'s config.json has no 'model_type', so its architecture is unknown.")


def open_local(path: Path) -> ModelSource:
    where = f"The folder {path}"
    files = [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()]
    check_files(files, where)
    config = read_config(path, where)
    check_config(config, where)
    check_folder(path, where)
    return ModelSource(path=path, config=config)


def read_config(path: Path, where: str) -> dict:
    """config.json, read only once it is known to be inside the folder (not a link out of it)."""
    check_inside(path / "config.json", path, where)
    return read_json(path / "config.json", where)


def hub_api(token: str | None = None):
    from huggingface_hub import HfApi

    # HF_ENDPOINT is read at call time so a self-hosted Hub (and the test Hub) works.
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token or False)


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_timeout() -> float:
    """Seconds to wait for a Hub API answer: huggingface_hub's HF_HUB_ETAG_TIMEOUT (default 10),
    read at call time. HfApi's own calls (model_info) wait forever unless given a timeout."""
    from huggingface_hub import constants

    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or constants.HF_HUB_ETAG_TIMEOUT)
    except ValueError:
        return float(constants.DEFAULT_ETAG_TIMEOUT)


def hub_unavailable(error: BaseException, context: str = "") -> HubUnavailable | None:
    """The `HubUnavailable` that `error` amounts to, or None when the Hub answered about the
    request itself (4xx) or the failure is not the Hub's. Transient: an answer 5xx or 429, a
    timeout, or no connection, anywhere in the exception's chain (huggingface_hub wraps a
    failed lookup in LocalEntryNotFoundError, with the cause chained). `context` names what
    was being done ("for owner/name", "while pushing to owner/name")."""
    from huggingface_hub import errors as hf
    from huggingface_hub.utils import httpx  # the HTTP library the client uses (httpx2 in 2.x)

    endpoint = hub_endpoint()
    later = "This is not a problem with your request: try again in a few minutes."
    where = f" {context}" if context else ""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, hf.HfHubHTTPError):
            status = getattr(current.response, "status_code", None)
            if status is not None and (status >= 500 or status == 429):
                answer = "is limiting requests (HTTP 429)" if status == 429 else f"answered HTTP {status}"
                return HubUnavailable(f"The Hub is unavailable: it {answer}{where} ({endpoint}). {later}",
                                      endpoint=endpoint, status=status)
            return None  # an answer about this request (not found, forbidden, ...)
        if isinstance(current, (httpx.TimeoutException, TimeoutError)):
            return HubUnavailable(
                f"The Hub is unavailable: it did not answer in time{where} ({endpoint}). {later}",
                endpoint=endpoint,
            )
        if isinstance(current, (httpx.TransportError, ConnectionError, socket.gaierror)):
            # An unreachable *configured* endpoint is transient for the person asking: nothing in
            # their request can fix it, the same request works once the network or Hub is back.
            return HubUnavailable(
                f"Cannot reach the Hub ({endpoint}): {current}. The Hub is unavailable from here: "
                "check the network (and HF_ENDPOINT, if you set it) and try again.",
                endpoint=endpoint,
            )
        current = current.__cause__ or current.__context__
    if isinstance(error, hf.LocalEntryNotFoundError):  # the library's verdict: connection or Hub downtime
        return HubUnavailable(f"The Hub is unavailable: it could not serve the files{where} ({endpoint}). {later}",
                              endpoint=endpoint)
    return None


@contextmanager
def hub_errors(ref: HubReference, token: str | None):
    """Turn every Hub access problem into a message that says what to do: a UserInputError
    when the Hub refused this request (missing, private, gated, bad token), HubUnavailable
    when the Hub could not serve it (5xx, 429, timeout, unreachable)."""
    from huggingface_hub import errors as hub_errors

    where = f"The model '{ref.repo_id}'"
    try:
        yield
    except hub_errors.GatedRepoError:
        raise UserInputError(
            f"{where} is gated: accept its conditions on its Hub page with your account, "
            "then sign in (or give a token) and try again."
        ) from None
    except hub_errors.RevisionNotFoundError:
        raise UserInputError(f"{where} has no revision '{ref.revision}'. Check the branch, tag or commit.") from None
    except hub_errors.RepositoryNotFoundError:
        hint = "check the spelling" if token else "check the spelling, or sign in / give a token if it is private"
        raise UserInputError(f"{where} was not found on the Hub: {hint}.") from None
    except Exception as error:
        unavailable = hub_unavailable(error, f"for {ref.repo_id}")
        if unavailable is not None:
            raise unavailable from None
        if isinstance(error, hub_errors.HfHubHTTPError):
            status = getattr(error.response, "status_code", None)
            if status == 401:
                raise UserInputError("The Hub rejected the token: sign in again or give a valid token.") from None
            raise UserInputError(f"The Hub answered an error for {ref.repo_id} ({status}): {error}") from None
        raise


def inspect_hub_model(ref: HubReference, token: str | None = None):
    """Model info (with file sizes) from the Hub."""
    with hub_errors(ref, token):
        return hub_api(token).model_info(ref.repo_id, revision=ref.revision, files_metadata=True,
                                         timeout=hub_timeout())


def download(ref: HubReference, token: str | None = None, cache_dir: Path | None = None, *,
             max_bytes: int | None = None) -> ModelSource:
    """Check the repo, then download only what conversion reads, refusing a download larger
    than `max_bytes` (None: no limit) or than the disk under `cache_dir` has room for."""
    from huggingface_hub import snapshot_download

    info = inspect_hub_model(ref, token)
    where = f"The model '{ref.repo_id}'"
    check_files([s.rfilename for s in info.siblings or []], where)
    revision = info.sha or ref.revision
    plan = DownloadPlan(ref, revision, token, cache_dir, {s.rfilename: s.size or 0 for s in info.siblings or []},
                        max_bytes)
    files = plan.files()
    with hub_errors(ref, token):
        path = Path(
            snapshot_download(
                ref.repo_id,
                revision=revision,
                allow_patterns=[glob.escape(name) for name in files],  # the names themselves, not patterns
                token=token or False,
                endpoint=os.environ.get("HF_ENDPOINT") or None,
                cache_dir=cache_dir,
            )
        )
    config = read_config(path, where)
    check_config(config, where)
    check_folder(path, where)
    return ModelSource(path=path, config=config, hub_id=ref.repo_id, revision=revision,
                       pipeline_tag=info.pipeline_tag)


@dataclass
class DownloadPlan:
    """Which of a repo's files a download takes (`sizes`: each file of the repo -> bytes), and
    whether they fit the caller's limit and the disk, decided before anything large is fetched."""

    ref: HubReference
    revision: str | None
    token: str | None
    cache_dir: Path | None
    sizes: dict[str, int]
    max_bytes: int | None = None

    @property
    def where(self) -> str:
        return f"The model '{self.ref.repo_id}'"

    def files(self) -> list[str]:
        """The top-level files conversion reads (integrity.reads), model.safetensors or else the
        index and the shards it names, and the sentence-transformers Pooling config. Named one
        by one: huggingface_hub's `*` matches '/' too, so a pattern like `*.safetensors` would
        also take checkpoint-1000/ and every other nested copy."""
        if "config.json" not in self.sizes:
            raise UserInputError(f"{self.where} has no config.json at its top level, so it is not a transformers "
                                 "model we can read. Check the ID and revision, or add the model's config.json.")
        files = [name for name in self.sizes if "/" not in name and reads(name)]
        # transformers loads model.safetensors when there is one, and only then the index's shards.
        weights = [WEIGHTS] if WEIGHTS in self.sizes else [SHARD_INDEX] if SHARD_INDEX in self.sizes else []
        if not weights:
            raise self._no_weights()
        files += weights
        self.check_room(files)
        # Two small files say which shards and which module folder are read: fetched first. The
        # index names the shards transformers will open; guessing them from names like
        # model-00001-of-00002.safetensors would also take a stale set from an older sharding.
        if weights == [SHARD_INDEX]:
            files += self._shards(read_json(self._fetch(SHARD_INDEX), self.where))
        if "modules.json" in self.sizes:
            pooling = pooling_config_name(read_json(self._fetch("modules.json"), self.where), self.where)
            files += [pooling] if pooling in self.sizes else []
        self.check_room(files)
        return sorted(set(files))

    def check_room(self, files: list[str]) -> None:
        """Refuse a download over `max_bytes`, or one the disk has no room for (files already in
        the cache take none)."""
        total = sum(self.sizes.get(name, 0) for name in set(files))
        if self.max_bytes is not None and total > self.max_bytes:
            raise UserInputError(
                f"{self.where} is too large to convert here: the files conversion needs are {_bytes(total)}, more "
                f"than the limit of {_bytes(self.max_bytes)}. Choose a smaller model (or a smaller variant of it)."
            )
        needed = sum(self.sizes.get(name, 0) for name in set(files) if not self._cached(name))
        free = shutil.disk_usage(_existing(self.cache_dir)).free
        if needed and needed + DISK_MARGIN > free:
            raise UserInputError(
                f"There is not enough disk space to download the model '{self.ref.repo_id}': its files need "
                f"{_bytes(needed)}, plus {_bytes(DISK_MARGIN)} to convert it, and the disk has {_bytes(free)} free. "
                "Free some space (or choose a smaller model) and try again."
            )

    def _shards(self, index: dict) -> list[str]:
        shards = shard_names(index, self.where)
        missing = [name for name in shards if name not in self.sizes]
        if missing:
            raise damaged(self.where, SHARD_INDEX, f"it names shard files that are not there ({', '.join(missing[:3])})",
                          "Upload the missing shards, or an index that matches the shards you have.")
        return shards

    def _no_weights(self) -> UserInputError:
        found = sorted(name for name in self.sizes if name.endswith(".safetensors"))
        return UserInputError(
            f"{self.where} has no {WEIGHTS} or {SHARD_INDEX} at its top level, where transformers loads a "
            f"model's weights from (it has {', '.join(found[:3])}{', ...' if len(found) > 3 else ''}). Choose the "
            "repo or revision that holds the model saved with save_pretrained, or save it that way and upload it."
        )

    def _fetch(self, name: str) -> Path:
        from huggingface_hub import hf_hub_download

        with hub_errors(self.ref, self.token):
            return Path(hf_hub_download(self.ref.repo_id, name, revision=self.revision, cache_dir=self.cache_dir,
                                        token=self.token or False, endpoint=os.environ.get("HF_ENDPOINT") or None))

    def _cached(self, name: str) -> bool:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.ref.repo_id, name, cache_dir=self.cache_dir, revision=self.revision)
        return isinstance(found, str) and os.path.isfile(found)


def _existing(cache_dir: Path | None) -> Path:
    """The download cache, or its nearest existing parent (disk_usage needs a real path)."""
    from huggingface_hub import constants

    path = Path(cache_dir or constants.HF_HUB_CACHE).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def open_source(source: str, token: str | None = None, cache_dir: Path | None = None, *,
                max_bytes: int | None = None) -> ModelSource:
    """A local folder if `source` is one, otherwise a Hub ID or URL (`max_bytes`: download())."""
    path = Path(source).expanduser()
    if path.is_dir():
        return open_local(path.resolve())
    looks_like_path = source.startswith((".", "/", "~")) or (
        "://" not in source and source.count("/") > 1 and not source.startswith(("huggingface.co/", "hf.co/"))
    )
    if looks_like_path:
        raise UserInputError(f"The folder '{source}' does not exist. Give an existing folder or a Hub ID (owner/name).")
    return download(parse_hub_reference(source), token=token, cache_dir=cache_dir, max_bytes=max_bytes)
