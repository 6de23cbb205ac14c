"""Routes for accounts, repos and reading files: whoami, create/delete/settings, model
info and search, auth checks, refs and branches, tree listings, commits, /resolve downloads.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qs

import yaml
from starlette.responses import FileResponse, Response

from . import metadata
from .access import (
    is_member,
    require_content,
    require_namespace,
    require_visible,
    require_write,
    require_write_token,
)
from .app import MODEL, REPO, REV, Ctx, json_response, paginate, route
from .store import DEFAULT_BRANCH, PR_REF_PREFIX, HubError, PutFile, Repo, now_iso


# ---------------------------------------------------------------- accounts


@route("GET", r"/api/whoami-v2")
def whoami(ctx: Ctx) -> Response:
    if ctx.caller.user is None:
        raise HubError(401, "You must be authenticated to call whoami")
    user = ctx.store.users[ctx.caller.user]
    return json_response({
        "type": "user",
        "id": hashlib.sha1(user.name.encode()).hexdigest()[:24],
        "name": user.name,
        "fullname": user.name,
        "email": f"{user.name}@localhub.test",
        "emailVerified": True,
        "canPay": False,
        "isPro": False,
        "periodEnd": None,
        "avatarUrl": "",
        "orgs": [{"type": "org", "name": o, "fullname": o, "roleInOrg": "write"} for o in user.orgs],
        "auth": {
            "type": "access_token",
            "accessToken": {"displayName": ctx.caller.token_name, "role": ctx.caller.role, "createdAt": now_iso()},
        },
    })


# ------------------------------------------------------------------- repos


def repo_url(ctx: Ctx, repo_id: str) -> str:
    return f"{ctx.base_url}/{repo_id}"


def _require_model_type(repo_type: str | None) -> None:
    if repo_type not in (None, "model"):
        raise HubError(400, f"LocalHub only serves model repos, not {repo_type!r}")


@route("POST", r"/api/repos/create")
def create_repo(ctx: Ctx) -> Response:
    body = ctx.json() or {}
    _require_model_type(body.get("type"))
    name = body.get("name") or ""
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,95}", name):
        raise HubError(400, f"Invalid repo name: {name!r}")
    user = require_write_token(ctx.caller)
    namespace = body.get("organization") or user
    require_namespace(ctx.store, ctx.caller, namespace)
    repo_id = f"{namespace}/{name}"
    if repo_id in ctx.store.repos:
        # The client's exist_ok reads "url" from this 409 body.
        return json_response({"error": "You already created this model repo", "url": repo_url(ctx, repo_id)}, 409)
    private = body.get("visibility") == "private" or body.get("private") is True
    repo = ctx.store.repos[repo_id] = Repo(repo_id, private=private)
    # New Hub repos start with one commit holding the default .gitattributes.
    entry = ctx.store.blobs.entry(metadata.DEFAULT_GITATTRIBUTES.encode(), lfs=False)
    repo.commit(DEFAULT_BRANCH, [PutFile(".gitattributes", entry)], title="initial commit", author=user)
    return json_response({"url": repo_url(ctx, repo_id), "name": repo_id, "id": repo_id})


@route("DELETE", r"/api/repos/delete")
def delete_repo(ctx: Ctx) -> Response:
    body = ctx.json() or {}
    _require_model_type(body.get("type"))
    user = require_write_token(ctx.caller)
    repo_id = f"{body.get('organization') or user}/{body.get('name')}"
    require_write(ctx.store, ctx.caller, repo_id)
    del ctx.store.repos[repo_id]
    return json_response({})


@route("PUT", MODEL + r"/settings")
def update_settings(ctx: Ctx, repo_id: str) -> Response:
    repo = require_write(ctx.store, ctx.caller, repo_id)
    body = ctx.json() or {}
    if "private" in body:
        repo.private = bool(body["private"])
    if "visibility" in body:
        repo.private = body["visibility"] == "private"
    if "gated" in body:
        repo.gated = body["gated"] or False
    return json_response({})


@route("POST", r"/api/validate-yaml")
def validate_yaml(ctx: Ctx) -> Response:
    # Called before any commit touching README.md; reject only unparsable front matter.
    content = (ctx.json() or {}).get("content", "")
    match_ = re.match(r"^---\s*\n(.*?)\n---\s*(?:\n|$)", content, re.S)
    try:
        if match_:
            yaml.safe_load(match_.group(1))
    except yaml.YAMLError as exc:
        return json_response({"errors": [{"message": f"Invalid YAML: {exc}"}], "warnings": []}, 400)
    return json_response({"errors": [], "warnings": []})


@route("GET", r"/api/models")
def list_models(ctx: Ctx) -> Response:
    search = ctx.query.get("search", "").lower()
    author = ctx.query.get("author")
    wanted_tags = set(ctx.values("filter"))
    task = ctx.query.get("pipeline_tag")
    items = []
    for repo in ctx.store.repos.values():
        if (repo.private and not is_member(ctx.store, ctx.caller, repo)) or search not in repo.id.lower():
            continue
        if author and repo.owner != author:
            continue
        info = metadata.model_info(repo, repo.resolve(DEFAULT_BRANCH), ctx.store.blobs, with_blobs=False)
        if (task and info.get("pipeline_tag") != task) or not wanted_tags <= {*info["tags"], repo.id}:
            continue
        items.append(info)
    sort = ctx.query.get("sort")
    if sort in ("lastModified", "createdAt"):
        items.sort(key=lambda i: i[sort], reverse=True)
    else:
        items.sort(key=lambda i: i["id"])
    expand = ctx.values("expand")
    items = [
        metadata.select_expanded(i, expand) if expand else metadata.list_item(
            i, full=ctx.flag("full"), with_config=ctx.flag("config"), with_card=ctx.flag("cardData"))
        for i in items
    ]
    return paginate(ctx, items, ctx.settings.models_page_size)


@route("GET", MODEL)
@route("GET", MODEL + r"/revision/" + REV)
def model_info(ctx: Ctx, repo_id: str, rev: str | None = None) -> Response:
    repo = require_visible(ctx.store, ctx.caller, repo_id)
    commit = repo.resolve(rev)
    info = metadata.model_info(repo, commit, ctx.store.blobs, with_blobs=ctx.flag("blobs"))
    expand = ctx.values("expand")
    return json_response(metadata.select_expanded(info, expand) if expand else info)


@route("GET", MODEL + r"/auth-check")
@route("GET", MODEL + r"/auth-check/(?P<write>write)")
def auth_check(ctx: Ctx, repo_id: str, write: str | None = None) -> Response:
    if write:
        require_write(ctx.store, ctx.caller, repo_id)
    else:
        require_content(ctx.store, ctx.caller, repo_id)
    return json_response({})


@route("GET", MODEL + r"/refs")
def list_refs(ctx: Ctx, repo_id: str) -> Response:
    repo = require_visible(ctx.store, ctx.caller, repo_id)
    branches = [(n, o) for n, o in repo.refs.items() if not n.startswith(PR_REF_PREFIX)]
    prs = [(n, o) for n, o in repo.refs.items() if n.startswith(PR_REF_PREFIX)]
    data = {
        "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": o} for n, o in branches],
        "converts": [],
        "tags": [],
    }
    if ctx.flag("include_prs"):
        data["pullRequests"] = [{"name": n, "ref": n, "targetCommit": o} for n, o in prs]
    return json_response(data)


@route("POST", MODEL + r"/branch/(?P<branch>[^/]+)")
def create_branch(ctx: Ctx, repo_id: str, branch: str) -> Response:
    repo = require_write(ctx.store, ctx.caller, repo_id)
    if branch in repo.refs:
        raise HubError(409, f"Reference already exists: refs/heads/{branch}")
    start = repo.resolve((ctx.json() or {}).get("startingPoint"))
    repo.refs[branch] = start.oid
    return json_response({})


@route("DELETE", MODEL + r"/branch/(?P<branch>[^/]+)")
def delete_branch(ctx: Ctx, repo_id: str, branch: str) -> Response:
    repo = require_write(ctx.store, ctx.caller, repo_id)
    if branch == DEFAULT_BRANCH or branch not in repo.refs:
        raise HubError(404 if branch not in repo.refs else 403, f"Cannot delete branch {branch}")
    del repo.refs[branch]
    return json_response({})


# ------------------------------------------------------------------- files


@route("GET", MODEL + r"/tree/" + REV + r"(?:/(?P<path>.*))?")
def list_tree(ctx: Ctx, repo_id: str, rev: str, path: str = "") -> Response:
    repo = require_visible(ctx.store, ctx.caller, repo_id)
    commit = repo.resolve(rev)
    entries = metadata.tree(commit.files, path, recursive=ctx.flag("recursive"))
    if entries is None:
        raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
    return paginate(ctx, entries, ctx.settings.tree_page_size)


@route("POST", MODEL + r"/paths-info/" + REV)
def paths_info(ctx: Ctx, repo_id: str, rev: str) -> Response:
    repo = require_visible(ctx.store, ctx.caller, repo_id)
    files = repo.resolve(rev).files
    # The client posts form data: paths=a&paths=b&expand=False.
    form = parse_qs(ctx.body.decode("utf-8"))
    folders = metadata.folders(files)
    out = []
    for path in form.get("paths", []):
        path = path.strip("/")
        if path in files:
            out.append(metadata.file_entry(path, files[path]))
        elif path in folders:
            out.append(metadata.folder_entry(path, files))
    return json_response(out)


@route("GET", MODEL + r"/commits/" + REV)
def list_commits(ctx: Ctx, repo_id: str, rev: str) -> Response:
    repo = require_visible(ctx.store, ctx.caller, repo_id)
    items = [
        {"id": c.oid, "title": c.title, "message": c.message, "date": c.date,
         "authors": [{"user": c.author}] if c.author else []}
        for c in repo.history(repo.resolve(rev))
    ]
    return paginate(ctx, items, ctx.settings.tree_page_size)


@route("GET", r"/" + REPO + r"/resolve/" + REV + r"/(?P<path>.+)")
def resolve_file(ctx: Ctx, repo_id: str, rev: str, path: str) -> Response:
    repo = require_content(ctx.store, ctx.caller, repo_id)
    commit = repo.resolve(rev)
    entry = commit.files.get(path)
    if entry is None:
        # X-Repo-Commit lets the client cache the file's absence for this commit.
        raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
    # What hf_hub_download needs: the commit, an ETag (git oid or sha256) and the size.
    # The real Hub redirects LFS files to a CDN; serving them here is equivalent for the client.
    headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.etag}"'}
    if entry.lfs:
        headers.update({"X-Linked-Etag": f'"{entry.etag}"', "X-Linked-Size": str(entry.size)})
    return FileResponse(ctx.store.blobs.path(entry.sha256), headers=headers, media_type="application/octet-stream")
