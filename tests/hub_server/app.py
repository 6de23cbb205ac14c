"""HTTP plumbing: an ASGI app with a small router, request context and error mapping.

Routing works on the raw (still percent-encoded) path because the client encodes
revisions with `quote(rev, safe="")`: `refs/pr/1` arrives as `refs%2Fpr%2F1`, and a
decoded path could not tell it from a file path. Handlers (routes_*.py) are plain
functions that run under the store lock and return a Starlette response; `HubError`
becomes a JSON error with the `X-Error-Code` / `X-Error-Message` headers the client
maps to its exceptions (huggingface_hub/utils/_http.py: hf_raise_for_status).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import unquote

from starlette.datastructures import URL, Headers, QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .access import Caller, identify
from .faults import Fault, Faults
from .store import HubError, Store


@dataclass
class Settings:
    lfs_threshold: int = 10_000_000  # the Hub refuses regular files above 10 MB
    tree_page_size: int = 1000  # list_repo_tree pages (Link: rel="next")
    models_page_size: int = 1000  # list_models pages
    discussions_page_size: int = 50  # get_repo_discussions pages (?p=N)


@dataclass
class Ctx:
    """One request, already read and authenticated."""

    method: str
    url: URL
    query: QueryParams
    headers: Headers
    body: bytes
    caller: Caller
    store: Store
    settings: Settings

    @property
    def base_url(self) -> str:
        # URLs we hand out (commit, PR, LFS upload) use the host the client reached us on.
        return f"{self.url.scheme}://{self.url.netloc}"

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise HubError(400, "Invalid JSON body") from None

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true", "yes")

    def values(self, name: str) -> list[str]:
        # httpx sends lists as repeated keys; browsers/JS clients as name[].
        return self.query.getlist(name) + self.query.getlist(name + "[]")


# ---------------------------------------------------------------------- routing

Handler = Callable[..., Response]
_ROUTES: list[tuple[frozenset[str], re.Pattern, Handler]] = []

REPO = r"(?P<repo_id>[^/]+/[^/]+?)"
# A revision is one encoded segment, or an unencoded refs/pr/N for hand-written URLs.
REV = r"(?P<rev>refs(?:/|%2[Ff])pr(?:/|%2[Ff])\d+|[^/]+)"
MODEL = r"/api/models/" + REPO


def route(methods: str, pattern: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _ROUTES.append((frozenset(methods.split()), re.compile(pattern), fn))
        return fn

    return register


def match(method: str, raw_path: str) -> tuple[Handler, dict[str, str]]:
    allowed = False
    for methods, pattern, fn in _ROUTES:
        m = pattern.fullmatch(raw_path)
        if m is None:
            continue
        # HEAD works wherever GET does; the server drops the body.
        if method in methods or (method == "HEAD" and "GET" in methods):
            return fn, {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
        allowed = True
    raise HubError(405 if allowed else 404, f"LocalHub has no route for {method} {raw_path}")


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    return JSONResponse(data, status_code=status, headers=headers)


def error_response(err: HubError) -> Response:
    headers = {"X-Error-Message": err.message, **err.headers}
    if err.code:
        headers["X-Error-Code"] = err.code
    return json_response({"error": err.message}, err.status, headers)


def paginate(ctx: Ctx, items: list, page_size: int) -> Response:
    """One page of `items`, with a GitHub-style Link header to the next (cursor = offset)."""
    start = int(ctx.query.get("cursor", "0") or 0)
    limit = int(ctx.query.get("limit", page_size) or page_size)
    size = max(1, min(page_size, limit))
    page = items[start : start + size]
    headers = {}
    if start + size < len(items) and ("limit" not in ctx.query or start + size < limit):
        next_url = ctx.url.include_query_params(cursor=start + size)
        headers["Link"] = f'<{next_url}>; rel="next"'
    return json_response(page, headers=headers)


# ------------------------------------------------------------------ ASGI entry


class HubApp:
    """ASGI app: read the request, handle it under the lock, log it, answer."""

    def __init__(self, store: Store, settings: Settings, lock: threading.RLock, log: list,
                 faults: Faults | None = None):
        from . import routes_commits, routes_discussions, routes_repos  # noqa: F401  (they register routes)

        self.store, self.settings, self.lock, self.log = store, settings, lock, log
        self.faults = faults if faults is not None else Faults()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        if scope["path"] == "/_admin/faults":
            response = self.admin_faults(request.method.upper(), body)
        else:
            response = await self.injected_fault(request, scope) or self.handle(request, scope, body)
        await response(scope, receive, send)

    async def injected_fault(self, request: Request, scope: dict) -> Response | None:
        """Wait and/or answer an error if a fault is set for the repo this request names
        (faults.py). Awaited outside the store lock: other requests go on meanwhile."""
        hit = self.faults.take(scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0])
        if hit is None:
            return None
        repo_id, fault = hit
        deadline = time.monotonic() + fault.delay
        while time.monotonic() < deadline and not fault.cleared:
            await asyncio.sleep(0.02)
        if fault.status is None:
            return None  # a slow answer, then the real one
        response = error_response(HubError(fault.status, f"LocalHub: injected fault for {repo_id}"))
        self.log.append((request.method.upper(), _loggable(request.url.path), response.status_code))
        return response

    def admin_faults(self, method: str, body: bytes) -> Response:
        """POST {"repo_id", "status": 503, "delay": 0, "times": null} sets a fault; DELETE
        {"repo_id"} (or no body: all) clears it. For a LocalHub in another process."""
        try:
            data = json.loads(body or b"{}")
            if method == "POST":
                self.faults.add(data["repo_id"], Fault(status=data.get("status", 503), delay=float(data.get("delay", 0)),
                                                       times=data.get("times")))
            elif method == "DELETE":
                self.faults.clear(data.get("repo_id"))
            else:
                return error_response(HubError(405, "POST or DELETE /_admin/faults"))
        except (ValueError, KeyError, TypeError) as error:
            return error_response(HubError(400, f"Bad fault: {error!r}"))
        return json_response({"ok": True})

    def handle(self, request: Request, scope: dict, body: bytes) -> Response:
        method = request.method.upper()
        raw_path = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0]
        try:
            with self.lock:
                caller = identify(self.store, request.headers.get("authorization"))
                handler, params = match(method, raw_path)
                ctx = Ctx(method, request.url, request.query_params, request.headers, body, caller,
                          self.store, self.settings)
                response = handler(ctx, **params)
        except HubError as err:
            response = error_response(err)
        except Exception as exc:  # a server bug: make it loud in the test output
            traceback.print_exc()
            response = error_response(HubError(500, f"LocalHub internal error: {exc!r}"))
        self.log.append((method, _loggable(request.url.path), response.status_code))
        return response


def _loggable(path: str) -> str:
    # Upload tickets act as credentials: keep them out of the log.
    return re.sub(r"^/_lfs/upload/[^/]+", "/_lfs/upload/***", path)
