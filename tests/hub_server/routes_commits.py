"""Routes for writing: preupload (regular vs LFS), the LFS batch API with its upload and
verify URLs, and the NDJSON commit endpoint (including create_pr=1).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets

from starlette.responses import Response

from . import metadata
from .access import is_member, require_contributor, require_write
from .app import MODEL, REPO, REV, Ctx, json_response, route
from .routes_discussions import comment_event, event
from .routes_repos import repo_url
from .store import (
    DEFAULT_BRANCH,
    PR_REF_PREFIX,
    DeleteFile,
    DeleteFolder,
    Discussion,
    FileEntry,
    HubError,
    Operation,
    PutFile,
    Repo,
    now_iso,
)


# ----------------------------------------------------------------- commits


def _require_push(ctx: Ctx, repo_id: str, rev: str, create_pr: bool) -> Repo:
    """Rights to write to `rev`: branches need repo write rights; PRs only need a contributor."""
    if create_pr:
        return require_contributor(ctx.store, ctx.caller, repo_id)
    if rev.startswith(PR_REF_PREFIX):
        repo = require_contributor(ctx.store, ctx.caller, repo_id)
        pr = repo.discussion(int(rev[len(PR_REF_PREFIX):]))
        if pr.author != ctx.caller.user and not is_member(ctx.store, ctx.caller, repo):
            raise HubError(403, f"Only the author of {rev} or the repo owners can push to it")
        return repo
    return require_write(ctx.store, ctx.caller, repo_id)


@route("POST", MODEL + r"/preupload/" + REV)
def preupload(ctx: Ctx, repo_id: str, rev: str) -> Response:
    repo = _require_push(ctx, repo_id, rev, ctx.flag("create_pr"))
    commit = repo.resolve(rev)
    attributes = commit.files.get(".gitattributes")
    patterns = metadata.lfs_patterns(ctx.store.blobs.read(attributes.sha256) if attributes else None)
    replies = []
    for item in (ctx.json() or {}).get("files", []):
        sample = base64.b64decode(item.get("sample", ""))
        lfs = metadata.wants_lfs(item["path"], sample, int(item["size"]),
                                 threshold=ctx.settings.lfs_threshold, patterns=patterns)
        existing = commit.files.get(item["path"])
        # The client skips unchanged files when this oid equals its own: sha256 for
        # LFS files, the git blob id for regular ones.
        oid = None
        if existing is not None and existing.lfs == lfs:
            oid = existing.sha256 if lfs else existing.git_oid
        replies.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False, "oid": oid})
    return json_response({"files": replies, "commitOid": commit.oid})


@route("POST", MODEL + r"/commit/" + REV)
def create_commit(ctx: Ctx, repo_id: str, rev: str) -> Response:
    create_pr = ctx.flag("create_pr")
    repo = _require_push(ctx, repo_id, rev, create_pr)
    header, ops = _parse_commit_payload(ctx, repo)
    title = header.get("summary") or "Upload files"
    description = header.get("description") or ""
    if create_pr:
        commit, pr = _open_pull_request(ctx, repo, rev, ops, title, description)
    else:
        commit, pr = _commit_to_ref(ctx, repo, rev, ops, title, description, header.get("parentCommit"))
    return json_response({
        "success": True,
        "commitOid": commit.oid,
        "commitUrl": f"{repo_url(ctx, repo.id)}/commit/{commit.oid}",
        "hookOutput": "",
        "pullRequestUrl": f"{repo_url(ctx, repo.id)}/discussions/{pr.num}" if pr is not None else None,
    })


def _open_pull_request(ctx: Ctx, repo: Repo, rev: str, ops: list[Operation], title: str, description: str):
    """create_pr=1: the commit goes to a new refs/pr/N branched from `rev`, with its discussion."""
    user = ctx.caller.user
    base = repo.resolve(rev)
    num = repo.next_discussion_num()
    commit = repo.commit(f"{PR_REF_PREFIX}{num}", ops, title=title, message=description, author=user,
                         start_from=base.oid)
    target = rev if rev in repo.refs and not rev.startswith(PR_REF_PREFIX) else DEFAULT_BRANCH
    pr = Discussion(num, title, user, True, "open", now_iso(), ref=commit.ref, base_oid=base.oid, target=target)
    pr.events += [comment_event(user, description), event("commit", user, {"subject": title, "oid": commit.oid})]
    repo.discussions.append(pr)
    return commit, pr


def _commit_to_ref(ctx: Ctx, repo: Repo, rev: str, ops: list[Operation], title: str, description: str,
                   parent: str | None):
    """A commit on an existing branch or PR ref (a PR records it as a "commit" event)."""
    if rev not in repo.refs:
        repo.resolve(rev)  # an unknown name raises RevisionNotFound
        raise HubError(400, f"Cannot commit to {rev}: not a branch")
    commit = repo.commit(rev, ops, title=title, message=description, author=ctx.caller.user,
                         expected_parent=parent)
    pr = repo.discussion(int(rev[len(PR_REF_PREFIX):])) if rev.startswith(PR_REF_PREFIX) else None
    if pr is not None:
        pr.events.append(event("commit", ctx.caller.user, {"subject": title, "oid": commit.oid}))
    return commit, pr


def _parse_commit_payload(ctx: Ctx, repo: Repo) -> tuple[dict, list[Operation]]:
    """The NDJSON commit body: a header line, then file / lfsFile / deletedFile / deletedFolder lines."""
    header: dict = {}
    ops: list[Operation] = []
    for line in ctx.body.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        key, value = item.get("key"), item.get("value") or {}
        if key == "header":
            header = value
        elif key == "file":
            ops.append(PutFile(value["path"], _regular_entry(ctx, value)))
        elif key == "lfsFile":
            ops.append(PutFile(value["path"], _lfs_entry(ctx, repo, value)))
        elif key == "deletedFile":
            ops.append(DeleteFile(value["path"]))
        elif key == "deletedFolder":
            ops.append(DeleteFolder(value["path"]))
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")
    return header, ops


def _regular_entry(ctx: Ctx, value: dict) -> FileEntry:
    content = value.get("content", "")
    try:
        data = base64.b64decode(content, validate=True) if value.get("encoding") == "base64" else content.encode()
    except binascii.Error:
        raise HubError(400, f"Invalid base64 content for {value.get('path')}") from None
    return ctx.store.blobs.entry(data, lfs=False)


def _lfs_entry(ctx: Ctx, repo: Repo, value: dict) -> FileEntry:
    oid = value.get("oid", "")
    if oid not in repo.lfs_oids or not ctx.store.blobs.has(oid):
        raise HubError(400, f"Your push was rejected because an LFS pointer pointed to a missing file ({oid})")
    entry = ctx.store.blobs.lfs_entry(oid)
    if "size" in value and int(value["size"]) != entry.size:
        raise HubError(400, f"LFS object {oid} has size {entry.size}, not {value['size']}")
    return entry


@route("GET", MODEL + r"/xet-(?P<kind>read|write)-token/(?P<rest>.*)")
def xet_token(ctx: Ctx, repo_id: str, kind: str, rest: str) -> Response:
    # huggingface_hub uploads through Xet whenever hf_xet is importable; this server
    # only speaks basic LFS, so say how to switch the client over.
    raise HubError(501, "LocalHub does not speak the Xet protocol: set HF_HUB_DISABLE_XET=1 in the client")


# --------------------------------------------------------------------- LFS

LFS_JSON = "application/vnd.git-lfs+json"


@route("POST", r"/" + REPO + r"\.git/info/lfs/objects/batch")
def lfs_batch(ctx: Ctx, repo_id: str) -> Response:
    body = ctx.json() or {}
    if body.get("operation") != "upload":
        raise HubError(422, "LocalHub's LFS endpoint only accepts uploads (downloads go through /resolve)")
    repo = require_contributor(ctx.store, ctx.caller, repo_id)
    objects = []
    for obj in body.get("objects", []):
        oid, size = obj["oid"], int(obj["size"])
        reply: dict = {"oid": oid, "size": size, "authenticated": True}
        # Already stored objects get no "actions": the client skips their upload.
        if not (oid in repo.lfs_oids and ctx.store.blobs.has(oid)):
            ticket = secrets.token_urlsafe(24)
            ctx.store.upload_tickets[ticket] = (repo.id, oid, size)
            # No "header.chunk_size": that would switch the client to multipart.
            reply["actions"] = {
                "upload": {"href": f"{ctx.base_url}/_lfs/upload/{ticket}", "expires_in": 3600},
                "verify": {"href": f"{repo_url(ctx, repo.id)}.git/info/lfs/objects/verify", "expires_in": 3600},
            }
        objects.append(reply)
    # "basic" only: never "xet" (the client ignores this field for its choice anyway).
    return json_response({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                         headers={"Content-Type": LFS_JSON})


@route("PUT", r"/_lfs/upload/(?P<ticket>[^/]+)")
def lfs_upload(ctx: Ctx, ticket: str) -> Response:
    if ticket not in ctx.store.upload_tickets:
        raise HubError(403, "Invalid or already used upload URL")
    repo_id, oid, size = ctx.store.upload_tickets[ticket]
    if len(ctx.body) != size or hashlib.sha256(ctx.body).hexdigest() != oid:
        raise HubError(400, f"Uploaded content does not match LFS object {oid} ({size} bytes)")
    ctx.store.blobs.add(ctx.body)
    if repo_id in ctx.store.repos:
        ctx.store.repos[repo_id].lfs_oids.add(oid)
    del ctx.store.upload_tickets[ticket]
    return Response(status_code=200, headers={"ETag": f'"{oid}"'})


@route("POST", r"/" + REPO + r"\.git/info/lfs/objects/verify")
def lfs_verify(ctx: Ctx, repo_id: str) -> Response:
    repo = require_contributor(ctx.store, ctx.caller, repo_id)
    body = ctx.json() or {}
    oid = body.get("oid", "")
    if oid not in repo.lfs_oids or not ctx.store.blobs.has(oid):
        raise HubError(404, f"LFS object {oid} was not uploaded")
    return json_response({"oid": oid, "size": body.get("size")})
