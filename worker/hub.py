"""Push a conversion to the Hub with huggingface_hub, in one commit.

Two flavours:
- new repo (default `<user>/<model>-coreml`): the package(s), the config and tokenizer
  files swift-transformers reads, and a generated README (model card). If we created
  the repo and the commit fails, the repo is deleted again: nothing half-written.
- pull request to the source repo: the package(s) only, the card as the PR description.
  An open PR of ours for the same conversion (same title) gets the new commit instead
  of a duplicate PR.
Every Hub refusal becomes a UserInputError that says what to do; a Hub that cannot serve
the push (5xx, 429, timeout, unreachable) becomes HubUnavailable (not retried: see job.HubRetry).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from converters.errors import UserInputError

log = logging.getLogger(__name__)

# Files next to the weights that swift-transformers (and Core ML apps) read by repo name.
SUPPORT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",  # swift-transformers reads both (Sources/Hub/Hub.swift, loadConfig)
    "chat_template.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "preprocessor_config.json",
)


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    repo_url: str
    commit_url: str
    pull_request_url: str | None = None
    created_repo: bool = False
    reused_pull_request: bool = False

    def links(self) -> dict:
        links = {"repo": self.repo_url, "commit": self.commit_url}
        if self.pull_request_url:
            links["pull_request"] = self.pull_request_url
        return links


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _api(token: str):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint(), token=token)


def upload_plan(output_dir: Path, packages: list[Path], model_dir: Path | None) -> dict[str, Path]:
    """path in repo -> local file: every file of every package (paths as the engine laid
    them out under output_dir) and, when model_dir is given, the support files it has."""
    plan: dict[str, Path] = {}
    for package in packages:
        for file in sorted(shipped_folder(package).rglob("*")):
            if file.is_file():
                plan[file.relative_to(output_dir).as_posix()] = file
    if model_dir is not None:
        for name in SUPPORT_FILES:
            if (model_dir / name).is_file():
                plan[name] = model_dir / name
    return plan


WHISPERKIT_PACKAGES = ("MelSpectrogram", "AudioEncoder", "TextDecoder")


def shipped_folder(package: Path) -> Path:
    """What goes up for a package: the package itself, or — for a Core AI LLM bundle's .aimodel —
    the bundle folder around it, with its metadata.json and tokenizer/ (Apple's
    `CoreAILanguageModel(resourcesAt:)` loads the folder: coreai-models export/pipeline.py:316-343)."""
    package = Path(package)
    if package.suffix == ".aimodel" and package.parent.name == package.stem and (package.parent / "metadata.json").is_file():
        return package.parent
    if all((package.parent / f"{name}.mlpackage").is_dir() for name in WHISPERKIT_PACKAGES):
        return package.parent  # WhisperKit's variant folder: its three packages, the tokenizer and configs (docs/whisperkit.md)
    return package


def _bundle_parts(root: str) -> list[str]:
    """A bundle's own files beside its .aimodel (`<name>/<name>.aimodel`): replaced with it."""
    folder, _, name = root.rpartition("/")
    if name.endswith(".aimodel") and folder.rpartition("/")[2] == name.removesuffix(".aimodel"):
        return [f"{folder}/metadata.json", f"{folder}/tokenizer"]
    return []


def package_roots(output_dir: Path, packages: list[Path]) -> list[str]:
    return [Path(p).relative_to(output_dir).as_posix() for p in packages]


def push_new_repo(*, token: str, repo_id: str, private: bool, files: dict[str, Path], readme: str,
                  commit_message: str, replace_folders: list[str]) -> PushResult:
    from huggingface_hub import CommitOperationAdd

    api = _api(token)
    with push_errors(repo_id, "create or write to"):
        existed = api.repo_exists(repo_id)
        api.create_repo(repo_id, private=private, exist_ok=True)
    try:
        with push_errors(repo_id, "write to"):
            operations = _replace_ops(api, repo_id, None, replace_folders) if existed else []
            operations += [CommitOperationAdd(path, str(local)) for path, local in files.items()]
            operations.append(CommitOperationAdd("README.md", readme.encode()))
            info = api.create_commit(repo_id, operations, commit_message=commit_message)
    except BaseException:
        if not existed:
            _delete_quietly(api, repo_id)
        raise
    return PushResult(repo_id, f"{endpoint()}/{repo_id}", info.commit_url, created_repo=not existed)


def push_pull_request(*, token: str, repo_id: str, user: str, files: dict[str, Path], title: str,
                      description: str, replace_folders: list[str]) -> PushResult:
    from huggingface_hub import CommitOperationAdd

    api = _api(token)
    with push_errors(repo_id, "open a pull request on"):
        ours = next(
            (
                d
                for d in api.get_repo_discussions(repo_id, author=user, discussion_type="pull_request",
                                                  discussion_status="open")
                if d.title == title
            ),
            None,
        )
        revision = ours.git_reference if ours else None
        operations = _replace_ops(api, repo_id, revision, replace_folders)
        operations += [CommitOperationAdd(path, str(local)) for path, local in files.items()]
        if ours:
            info = api.create_commit(repo_id, operations, commit_message=f"Update: {title}",
                                     commit_description=description, revision=revision)
            pr_url = f"{endpoint()}/{repo_id}/discussions/{ours.num}"
        else:
            info = api.create_commit(repo_id, operations, commit_message=title, commit_description=description,
                                     create_pr=True)
            pr_url = info.pr_url
    return PushResult(repo_id, f"{endpoint()}/{repo_id}", info.commit_url, pull_request_url=pr_url,
                      reused_pull_request=ours is not None)


PACKAGE_SUFFIXES = (".mlpackage", ".aimodel")


def packages_in(token: str, repo_id: str) -> list[str]:
    """The packages (folders or files named *.mlpackage / *.aimodel) a repo holds now; [] if it is new."""
    from huggingface_hub import errors

    try:
        with push_errors(repo_id, "read"):
            files = _api(token).list_repo_files(repo_id)
    except (errors.RepositoryNotFoundError, UserInputError):
        return []
    found = []
    for path in files:
        parts = path.split("/")
        for depth, part in enumerate(parts):
            if part.endswith(PACKAGE_SUFFIXES):
                found.append("/".join(parts[: depth + 1]))
                break
    return sorted(set(found))


def landed_commit(token: str | None, repo_id: str, title: str, since_iso: str) -> str | None:
    """The URL of a commit titled `title` made to `repo_id` since `since_iso`, or None
    (what a job killed mid-push actually left)."""
    from datetime import datetime

    from huggingface_hub import errors

    since = datetime.fromisoformat(since_iso)
    try:
        commits = _api(token or None).list_repo_commits(repo_id)
    except errors.RepositoryNotFoundError:
        return None
    for commit in commits:
        if commit.title == title and commit.created_at >= since.replace(microsecond=0):
            return f"{endpoint()}/{repo_id}/commit/{commit.commit_id}"
    return None


def _replace_ops(api, repo_id: str, revision: str | None, folders: list[str]) -> list:
    """Delete a previous version of each package (folder or file), so no stale file survives in it."""
    from huggingface_hub import CommitOperationDelete

    existing = api.list_repo_files(repo_id, revision=revision)
    folders = [*folders, *(part for folder in folders for part in _bundle_parts(folder))]
    folders_ = [CommitOperationDelete(f"{folder}/", is_folder=True) for folder in folders
                if any(f.startswith(f"{folder}/") for f in existing)]
    files = [CommitOperationDelete(name) for name in folders if name in existing]  # a package stored as one file
    return folders_ + files


def _delete_quietly(api, repo_id: str) -> None:
    try:
        api.delete_repo(repo_id, missing_ok=True)
    except Exception as error:  # noqa: BLE001 - the push failure is what the user must see
        log.warning("could not delete the empty repo %s after a failed push: %s", repo_id, type(error).__name__)


@contextmanager
def push_errors(repo_id: str, action: str):
    """Turn Hub refusals while pushing into messages that say what to do."""
    from huggingface_hub import errors

    from converters.source import hub_unavailable

    try:
        yield
    except errors.HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status == 401:
            raise UserInputError(
                f"The Hub rejected your token while pushing to {repo_id} (it may have expired or been revoked). "
                "Sign in again, or give a new token, and retry. Nothing was pushed."
            ) from None
        if status == 403:
            raise UserInputError(
                f"Your token may not {action} {repo_id}: it is read-only, or your account has no write "
                "rights there. Give a token with write access (or pick a repo in your own namespace) and retry. "
                "Nothing was pushed."
            ) from None
        if status == 404:
            raise UserInputError(
                f"{repo_id} was not found when pushing: check the target repo name. Nothing was pushed."
            ) from None
        unavailable = hub_unavailable(error, f"while pushing to {repo_id}")
        if unavailable is not None:
            raise unavailable from None
        raise
    except Exception as error:
        unavailable = hub_unavailable(error, f"while pushing to {repo_id}")
        if unavailable is not None:
            raise unavailable from None
        raise
