"""Where a model comes from: a local folder or a Hub repo (ID or URL).

Everything that can be checked before converting is checked here, so a bad request fails
in seconds with a message saying what to do: a repo that is missing, private or gated,
weights only in pickle files, code that would have to run from the repo, no config.
Downloads take only what conversion needs: safetensors, JSON configs, tokenizer files.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import UserInputError

# What we download: weights in safetensors, configs, tokenizer and image-processor files.
ALLOW_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "*.json",
    "*.model",  # sentencepiece
    "*.txt",  # vocab.txt, merges.txt
    "*.tiktoken",
]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
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

    @property
    def name(self) -> str:
        return self.hub_id.split("/")[-1] if self.hub_id else self.path.name

    @property
    def display(self) -> str:
        return self.hub_id or str(self.path)


def check_files(filenames: list[str], where: str) -> None:
    """Refuse repos we cannot convert safely, judging by their file names alone."""
    names = [f.split("/")[-1] for f in filenames]
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
        raise UserInputError(f"{where} has no model weights (*.safetensors). Check the ID and revision.")


def check_config(config: dict, where: str) -> None:
    """Refuse configs that would need code from the repo to load."""
    if config.get("auto_map"):
        raise UserInputError(
            f"{where} needs custom code from its repo to load (config.json has 'auto_map'). "
            "We never run remote code; only architectures built into transformers can be converted."
        )
    if not config.get("model_type"):
        raise UserInputError(f"{where}'s config.json has no 'model_type', so its architecture is unknown.")


def _read_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as error:
        raise UserInputError(f"{path / 'config.json'} is not valid JSON ({error}).") from None


def open_local(path: Path) -> ModelSource:
    files = [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()]
    check_files(files, f"The folder {path}")
    config = _read_config(path)
    check_config(config, f"The folder {path}")
    return ModelSource(path=path, config=config)


def hub_api(token: str | None = None):
    from huggingface_hub import HfApi

    # HF_ENDPOINT is read at call time so a self-hosted Hub (and the test Hub) works.
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token or False)


@contextmanager
def hub_errors(ref: HubReference, token: str | None):
    """Turn every Hub access problem into a UserInputError that says what to do."""
    from huggingface_hub import errors as hub_errors
    from huggingface_hub.utils import httpx  # the HTTP library the client uses (httpx2 in 2.x)

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
    except hub_errors.HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status == 401:
            raise UserInputError("The Hub rejected the token: sign in again or give a valid token.") from None
        raise UserInputError(f"The Hub answered an error for {ref.repo_id} ({status}): {error}") from None
    except (OSError, httpx.TransportError) as error:
        raise UserInputError(
            f"Cannot reach the Hub ({os.environ.get('HF_ENDPOINT') or 'https://huggingface.co'}): {error}. "
            "Check the network and try again."
        ) from None


def inspect_hub_model(ref: HubReference, token: str | None = None):
    """Model info (with file sizes) from the Hub."""
    with hub_errors(ref, token):
        return hub_api(token).model_info(ref.repo_id, revision=ref.revision, files_metadata=True)


def download(ref: HubReference, token: str | None = None, cache_dir: Path | None = None) -> ModelSource:
    """Check the repo, then download only what conversion needs."""
    from huggingface_hub import snapshot_download

    info = inspect_hub_model(ref, token)
    where = f"The model '{ref.repo_id}'"
    check_files([s.rfilename for s in info.siblings or []], where)
    with hub_errors(ref, token):
        path = Path(
            snapshot_download(
                ref.repo_id,
                revision=info.sha or ref.revision,
                allow_patterns=ALLOW_PATTERNS,
                token=token or False,
                endpoint=os.environ.get("HF_ENDPOINT") or None,
                cache_dir=cache_dir,
            )
        )
    config = _read_config(path)
    check_config(config, where)
    return ModelSource(path=path, config=config, hub_id=ref.repo_id, revision=info.sha or ref.revision)


def open_source(source: str, token: str | None = None, cache_dir: Path | None = None) -> ModelSource:
    """A local folder if `source` is one, otherwise a Hub ID or URL."""
    path = Path(source).expanduser()
    if path.is_dir():
        return open_local(path.resolve())
    looks_like_path = source.startswith((".", "/", "~")) or (
        "://" not in source and source.count("/") > 1 and not source.startswith(("huggingface.co/", "hf.co/"))
    )
    if looks_like_path:
        raise UserInputError(f"The folder '{source}' does not exist. Give an existing folder or a Hub ID (owner/name).")
    return download(parse_hub_reference(source), token=token, cache_dir=cache_dir)
