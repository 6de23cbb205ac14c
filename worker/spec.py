"""JobSpec: one conversion request, typed and checked before anything is queued.

`JobSpec.build(...)` reads what a form or a client sends (loosely written values) and
raises `UserInputError` with a message that says what to do. `to_json()` is what rq
stores (plain JSON, never pickle) and holds no token: the token travels separately,
encrypted (see worker/tokens.py). `job_id()` is a hash of the request, so an identical
request already queued or running finds that job instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from converters.formats import format_of
from converters.errors import UserInputError
from converters.options import ConversionOptions
from converters.source import parse_hub_reference
from converters.tasks import normalize_task

from . import settings

NEW_REPO = "new-repo"
PULL_REQUEST = "pull-request"
PUSH_KINDS = (NEW_REPO, PULL_REQUEST)
RUNNERS = ("any", "macos")  # "macos": validate on real Core ML compute units

_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
_REVISION = re.compile(r"^[A-Za-z0-9._/\-]{1,255}$")


@dataclass(frozen=True)
class PushTarget:
    """Where the result goes: a repo in the user's namespace (default `<user>/<model>-coreml`)
    or a pull request to the source repo."""

    kind: str = NEW_REPO
    repo_id: str | None = None  # new-repo only; None means the default name
    # None: follow the source (private when it is gated or private: its licence may forbid a
    # public copy); True/False: the user's explicit choice.
    private: bool | None = None
    # The repo's other packages (earlier conversions' of other names or formats): kept and
    # listed in the new card (False), or removed by this push (True), as the user chose.
    remove_others: bool = False

    def to_json(self) -> dict:
        return {"kind": self.kind, "repo_id": self.repo_id, "private": self.private, "remove_others": self.remove_others}


@dataclass(frozen=True)
class JobSpec:
    repo_id: str
    revision: str | None
    task: str
    options: ConversionOptions
    push: PushTarget
    push_even_if_invalid: bool = False
    runner: str = "any"
    user: str | None = None  # the Hub account asking; filled from the token when not given
    token: str | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        model: str,
        *,
        token: str | None,
        task: str = "auto",
        revision: str | None = None,
        options: ConversionOptions | dict | None = None,
        push: str | PushTarget | dict = NEW_REPO,
        push_repo: str | None = None,
        private: bool | None = None,
        remove_others: bool = False,
        push_even_if_invalid: bool = False,
        runner: str = "any",
        user: str | None = None,
    ) -> "JobSpec":
        """A checked spec from form values; raises UserInputError saying what to fix."""
        ref = parse_hub_reference(model)
        revision = _revision(revision, ref.revision, model)
        task = _task(task)
        options = _options(options)
        target = _push_target(push, push_repo, private, remove_others)
        if runner not in RUNNERS:
            raise UserInputError(f"Unknown runner '{runner}'. Choose one of: {', '.join(RUNNERS)}.")
        if user is not None and not _USER.match(user):
            raise UserInputError(f"'{user}' is not a valid Hub user name.")
        token = (token or "").strip() or None
        if token is None:
            raise UserInputError(
                "A Hugging Face token is needed: the result is pushed to your account. "
                "Sign in, or give a token with write access."
            )
        if any(c.isspace() for c in token):
            raise UserInputError("The token contains spaces: paste it again without them.")
        return cls(ref.repo_id, revision, task, options, target, bool(push_even_if_invalid), runner, user, token)

    def with_user(self, user: str) -> "JobSpec":
        if not _USER.match(user):
            raise UserInputError(f"'{user}' is not a valid Hub user name.")
        return JobSpec(self.repo_id, self.revision, self.task, self.options, self.push,
                       self.push_even_if_invalid, self.runner, user, self.token)

    # ------------------------------------------------------------------ derived

    @property
    def model_name(self) -> str:
        return self.repo_id.split("/")[-1]

    @property
    def queue_name(self) -> str:
        return settings.MACOS_QUEUE if self.runner == "macos" else settings.GENERAL_QUEUE

    @property
    def push_repo_id(self) -> str:
        """The repo the result is pushed to."""
        if self.push.kind == PULL_REQUEST:
            return self.repo_id
        if self.push.repo_id:
            return self.push.repo_id
        if not self.user:
            raise ValueError("the user is not known yet")
        return default_repo_name(self.user, self.model_name, self.options)

    def private_for(self, source_gated: bool, source_private: bool) -> bool:
        """The new repo's visibility: the user's choice, else the source's (a gated or private
        model's copy stays private: its licence or its owner may not allow a public one)."""
        if self.push.private is not None:
            return self.push.private
        return bool(source_gated or source_private)

    def job_id(self) -> str:
        """Same request (model, revision, task, options, push target, user) -> same id."""
        if not self.user:
            raise ValueError("the user is not known yet")
        identity = self.to_json()
        identity.pop("runner")  # where it runs does not make it another conversion
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"cv-{digest[:32]}"  # letters, digits and '-' only, as rq requires

    def describe(self) -> str:
        revision = f"@{self.revision}" if self.revision else ""
        where = "a pull request" if self.push.kind == PULL_REQUEST else self.push_repo_id if self.user else "a new repo"
        return f"Convert {self.repo_id}{revision} ({self.task}) to Core ML, push to {where}"

    # ------------------------------------------------------------------ JSON (no token)

    def to_json(self) -> dict:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "task": self.task,
            "options": self.options.to_dict(),
            "push": self.push.to_json(),
            "push_even_if_invalid": self.push_even_if_invalid,
            "runner": self.runner,
            "user": self.user,
        }

    @classmethod
    def from_json(cls, data: dict, token: str | None = None) -> "JobSpec":
        push = data.get("push") or {}
        return cls(
            repo_id=data["repo_id"],
            revision=data.get("revision"),
            task=data["task"],
            options=ConversionOptions.from_dict(data.get("options") or {}),
            push=PushTarget(push.get("kind", NEW_REPO), push.get("repo_id"), _visibility(push.get("private")),
                            bool(push.get("remove_others", False))),
            push_even_if_invalid=bool(data.get("push_even_if_invalid", False)),
            runner=data.get("runner", "any"),
            user=data.get("user"),
            token=token,
        )


def variant(options: ConversionOptions) -> list[str]:
    """What tells this package apart from the default conversion of the same model:
    precision, compression, cache (and the format, in the suffix)."""
    parts = []
    if options.precision != "float16":
        parts.append(options.precision)
    if options.quantize != "none":
        parts.append(options.quantize)
    if options.kv_cache != "none":
        parts.append(options.kv_cache)
    return parts


def default_repo_name(user: str, model_name: str, options: ConversionOptions) -> str:
    """`<user>/<model>[-<variant>]-coreml`: a float16 and an int4 conversion of one model go to
    different repos by default, so neither silently replaces the other."""
    suffix = format_of(options.format).repo_suffix
    base = model_name[: -len("-coreml")] if model_name.lower().endswith("-coreml") else model_name
    return f"{user}/{'-'.join([base, *variant(options), suffix])}"


def _revision(given: str | None, from_reference: str | None, model: str) -> str | None:
    given = (given or "").strip() or None
    if given and from_reference and given != from_reference:
        raise UserInputError(
            f"Two revisions were given: '{from_reference}' in '{model}' and '{given}'. Give only one."
        )
    revision = given or from_reference
    if revision is not None and (not _REVISION.match(revision) or ".." in revision or revision.startswith(("/", "-"))):
        raise UserInputError(f"'{revision}' is not a valid revision: use a branch, tag or commit hash.")
    return revision


def _task(task: str | None) -> str:
    task = (task or "auto").strip()
    return "auto" if task.lower() == "auto" else normalize_task(task)


def _options(options: ConversionOptions | dict | None) -> ConversionOptions:
    if options is None:
        return ConversionOptions()
    if isinstance(options, ConversionOptions):
        return options
    if not isinstance(options, dict):
        raise UserInputError("The conversion options must be a set of named values.")
    # By name, as in the engine's option table (converters/options.py): a new option needs
    # no change here; a name the table does not have is refused.
    return ConversionOptions.from_dict(options, strict=True)


def _visibility(private) -> bool | None:
    return None if private is None else bool(private)


def _push_target(push: str | PushTarget | dict, push_repo: str | None, private: bool | None,
                 remove_others: bool = False) -> PushTarget:
    if isinstance(push, PushTarget):
        kind, push_repo, private, remove_others = push.kind, push.repo_id, push.private, push.remove_others
    elif isinstance(push, dict):
        kind, push_repo, private = push.get("kind", NEW_REPO), push.get("repo_id"), push.get("private")
        remove_others = bool(push.get("remove_others", remove_others))
    else:
        kind = push
    kind = (kind or NEW_REPO).strip().lower().replace("_", "-")
    kind = {"pr": PULL_REQUEST, "repo": NEW_REPO}.get(kind, kind)
    if kind not in PUSH_KINDS:
        raise UserInputError(f"Unknown push target '{kind}'. Choose 'new-repo' or 'pull-request'.")
    push_repo = (push_repo or "").strip() or None
    if kind == PULL_REQUEST and push_repo:
        raise UserInputError("A pull request goes to the source model's repo: leave the target repo empty.")
    if push_repo:
        if "://" in push_repo or "@" in push_repo:
            raise UserInputError(f"The target repo '{push_repo}' must be a plain Hub ID such as 'you/model-coreml'.")
        try:
            push_repo = parse_hub_reference(push_repo).repo_id
        except UserInputError:
            raise UserInputError(
                f"The target repo '{push_repo}' is not a valid Hub ID: use 'you/name' with letters, digits, '-', '_' and '.'."
            ) from None
    new_repo = kind == NEW_REPO
    return PushTarget(kind, push_repo, _visibility(private) if new_repo else None, bool(remove_others) and new_repo)
