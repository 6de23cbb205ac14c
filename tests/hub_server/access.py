"""Who may do what: the Hub's access rules, reduced to what the client can observe.

- A bad token is refused on every request (401 "Invalid credentials ..."), even on
  public repos, as the real Hub does.
- Private repos do not exist for outsiders: 401 to anonymous callers, 404 to others,
  both with X-Error-Code RepoNotFound (-> RepositoryNotFoundError).
- Gated repos show their info and file list, but their files need a grant
  (X-Error-Code GatedRepo -> GatedRepoError).
- Writes need a "write" token from the owner or a member of the owning org;
  pull requests only need a write token and read access, like on the Hub.
"""

from __future__ import annotations

from dataclasses import dataclass

from .store import HubError, Repo, Store

# The client tells a bad token from a missing repo by this exact message.
INVALID_TOKEN_MESSAGE = "Invalid credentials in Authorization header"


@dataclass(frozen=True)
class Caller:
    user: str | None  # None = anonymous
    role: str | None  # "write" | "read" | None
    token_name: str | None = None  # the token's display name (never its value)


def identify(store: Store, authorization: str | None) -> Caller:
    """The caller behind an Authorization header; raises 401 for unknown tokens."""
    if not authorization:
        return Caller(None, None)
    scheme, _, token = authorization.partition(" ")
    found = store.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        raise HubError(401, INVALID_TOKEN_MESSAGE)
    return Caller(found.user, found.role, found.display_name)


def is_member(store: Store, caller: Caller, repo: Repo) -> bool:
    return caller.user is not None and repo.owner in store.namespaces_of(caller.user)


def require_visible(store: Store, caller: Caller, repo_id: str) -> Repo:
    """The repo, if the caller may know it exists (metadata, file list)."""
    repo = store.repos.get(repo_id)
    if repo is None or (repo.private and not is_member(store, caller, repo)):
        raise HubError(401 if caller.user is None else 404, "Repository not found", "RepoNotFound")
    return repo


def require_content(store: Store, caller: Caller, repo_id: str) -> Repo:
    """The repo, if the caller may read file contents (the gate is passed)."""
    repo = require_visible(store, caller, repo_id)
    if repo.gated and not (is_member(store, caller, repo) or caller.user in repo.granted):
        raise HubError(
            401 if caller.user is None else 403,
            f"Access to model {repo.id} is restricted. You must have access to it and be authenticated to access it.",
            "GatedRepo",
        )
    return repo


def require_write_token(caller: Caller) -> str:
    """The caller's user name, if they hold a token allowed to write."""
    if caller.user is None:
        raise HubError(401, "You must be authenticated to do this")
    if caller.role != "write":
        raise HubError(403, "This token has a read-only role: it cannot be used to write")
    return caller.user


def require_write(store: Store, caller: Caller, repo_id: str) -> Repo:
    """The repo, if the caller may push to its branches and change its settings."""
    repo = require_visible(store, caller, repo_id)
    require_write_token(caller)
    if not is_member(store, caller, repo):
        raise HubError(403, f"You don't have the rights to write to {repo.id}")
    return repo


def require_contributor(store: Store, caller: Caller, repo_id: str) -> Repo:
    """The repo, if the caller may open pull requests and upload LFS objects for them."""
    repo = require_content(store, caller, repo_id)
    require_write_token(caller)
    return repo


def require_namespace(store: Store, caller: Caller, namespace: str) -> str:
    """The caller's user name, if they may create repos in `namespace`."""
    user = require_write_token(caller)
    if namespace not in store.namespaces_of(user):
        raise HubError(403, f"You don't have the rights to create a model under the namespace \"{namespace}\"")
    return user
