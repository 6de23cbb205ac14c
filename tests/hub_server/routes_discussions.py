"""Routes for discussions and pull requests: list (paged), details (with a minimal diff),
create (a PR gets refs/pr/N), comment, status change and merge.
"""

from __future__ import annotations

import secrets

from starlette.responses import Response

from .access import is_member, require_contributor, require_visible, require_write
from .app import MODEL, Ctx, json_response, route
from .store import (
    DEFAULT_BRANCH,
    PR_REF_PREFIX,
    DeleteFile,
    Discussion,
    HubError,
    Operation,
    PutFile,
    Repo,
    now_iso,
)


# ------------------------------------------------------------- discussions


def event(kind: str, author: str | None, data: dict) -> dict:
    """One item of a discussion's `events`, as deserialize_event reads it."""
    return {"id": secrets.token_hex(12), "type": kind, "createdAt": now_iso(),
            "author": {"name": author or "deleted", "type": "user"}, "data": data}


def comment_event(author: str | None, text: str) -> dict:
    return event("comment", author, {"edited": False, "hidden": False, "latest": {"raw": text, "html": text}})


def _discussion_json(repo: Repo, d: Discussion) -> dict:
    return {
        "num": d.num,
        "title": d.title,
        "status": d.status,
        "isPullRequest": d.is_pull_request,
        "createdAt": d.created_at,
        "author": {"name": d.author, "type": "user"},
        "repo": {"name": repo.id, "type": "model"},
        "pinned": False,
        "numComments": sum(1 for e in d.events if e["type"] == "comment"),
        "topReactions": [],
    }


def _pr_diff(repo: Repo, d: Discussion) -> str:
    """A minimal `git diff` listing: one header per changed path."""
    before = repo.commits[d.base_oid].files if d.base_oid else {}
    after = repo.resolve(d.ref).files
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    return "".join(f"diff --git a/{p} b/{p}\n" for p in changed)


@route("GET", MODEL + r"/discussions")
def list_discussions(ctx: Ctx, repo_id: str) -> Response:
    repo = require_visible(ctx.store, ctx.caller, repo_id)
    kind = ctx.query.get("type", "all")
    status = ctx.query.get("status", "all")
    author = ctx.query.get("author")
    statuses = {"open": {"open", "draft"}, "closed": {"closed", "merged"}}.get(status)
    found = [
        d for d in reversed(repo.discussions)  # newest first, as on the Hub
        if (kind == "all" or d.is_pull_request == (kind == "pull_request"))
        and (statuses is None or d.status in statuses)
        and (author is None or d.author == author)
    ]
    size = ctx.settings.discussions_page_size
    start = int(ctx.query.get("p", "0") or 0) * size
    return json_response({
        "discussions": [_discussion_json(repo, d) for d in found[start : start + size]],
        "count": len(found),
        "start": start,
        "numClosedDiscussions": sum(1 for d in repo.discussions if d.status in ("closed", "merged")),
    })


@route("GET", MODEL + r"/discussions/(?P<num>\d+)")
def discussion_details(ctx: Ctx, repo_id: str, num: str) -> Response:
    repo = require_visible(ctx.store, ctx.caller, repo_id)
    d = repo.discussion(int(num))
    data = {**_discussion_json(repo, d), "events": d.events}
    if d.is_pull_request:
        data["changes"] = {"base": f"refs/heads/{d.target}", "headRef": d.ref}
        if d.merge_oid:
            data["changes"]["mergeCommitId"] = d.merge_oid
        data["filesWithConflicts"] = []
        if ctx.flag("diff"):
            data["diff"] = _pr_diff(repo, d)
    return json_response(data)


@route("POST", MODEL + r"/discussions")
def create_discussion(ctx: Ctx, repo_id: str) -> Response:
    repo = require_contributor(ctx.store, ctx.caller, repo_id)
    body = ctx.json() or {}
    num = repo.next_discussion_num()
    user = ctx.caller.user
    d = Discussion(num, (body.get("title") or "").strip(), user, bool(body.get("pullRequest")),
                   "open", now_iso())
    if d.is_pull_request:
        # An empty draft PR: refs/pr/N starts at the target branch's head.
        base = repo.resolve(DEFAULT_BRANCH)
        d.status, d.ref, d.base_oid = "draft", f"{PR_REF_PREFIX}{num}", base.oid
        repo.refs[d.ref] = base.oid
    d.events.append(comment_event(user, body.get("description") or ""))
    repo.discussions.append(d)
    return json_response({**_discussion_json(repo, d), "pullRequest": d.is_pull_request})


@route("POST", MODEL + r"/discussions/(?P<num>\d+)/comment")
def comment_discussion(ctx: Ctx, repo_id: str, num: str) -> Response:
    repo = require_contributor(ctx.store, ctx.caller, repo_id)
    d = repo.discussion(int(num))
    new = comment_event(ctx.caller.user, (ctx.json() or {}).get("comment", ""))
    d.events.append(new)
    return json_response({"newMessage": new})


@route("POST", MODEL + r"/discussions/(?P<num>\d+)/status")
def change_status(ctx: Ctx, repo_id: str, num: str) -> Response:
    repo = require_contributor(ctx.store, ctx.caller, repo_id)
    d = repo.discussion(int(num))
    if d.author != ctx.caller.user and not is_member(ctx.store, ctx.caller, repo):
        raise HubError(403, "Only the author or the repo owners can change the status")
    new_status = (ctx.json() or {}).get("status")
    if new_status not in ("open", "closed"):
        raise HubError(400, f"Invalid status {new_status!r}")
    d.status = new_status
    new = event("status-change", ctx.caller.user, {"status": new_status})
    d.events.append(new)
    return json_response({"newStatus": new})


@route("POST", MODEL + r"/discussions/(?P<num>\d+)/merge")
def merge_pull_request(ctx: Ctx, repo_id: str, num: str) -> Response:
    repo = require_write(ctx.store, ctx.caller, repo_id)
    d = repo.discussion(int(num))
    if not d.is_pull_request or d.status not in ("open", "draft"):
        raise HubError(400, f"Discussion #{num} is not an open pull request")
    # Replay the PR's changes (relative to where it started) on the target branch.
    before = repo.commits[d.base_oid].files
    after = repo.resolve(d.ref).files
    ops: list[Operation] = [PutFile(p, e) for p, e in after.items() if before.get(p) != e]
    ops += [DeleteFile(p) for p in before if p not in after and p in repo.resolve(d.target).files]
    merged = repo.commit(d.target, ops, title=d.title, message=f"Merge pull request #{d.num}",
                         author=ctx.caller.user)
    d.status, d.merge_oid = "merged", merged.oid
    d.events.append(event("status-change", ctx.caller.user, {"status": "merged"}))
    return json_response({})
