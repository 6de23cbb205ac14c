"""Injected faults: make the local Hub misbehave for one repo, as the real Hub does in an
outage — answer an HTTP error (503) or not answer in time — to test how clients cope.

A fault applies to every request whose path names the repo (`/api/models/owner/name...`,
`/owner/name/resolve/...`), optionally only for the next `times` requests. Set it from the
test process (`LocalHub.inject_fault`) or over HTTP for a separate server process
(`POST /_admin/faults {"repo_id", "status", "delay", "times"}`, `DELETE /_admin/faults`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from urllib.parse import unquote


@dataclass
class Fault:
    status: int | None = 503  # answer this instead of serving (None: serve, after `delay`)
    delay: float = 0.0  # seconds to wait before answering (longer than the client's timeout: a timeout)
    times: int | None = None  # how many requests it still applies to (None: until cleared)
    cleared: bool = False  # set by Faults.clear: requests still waiting on it answer at once


class Faults:
    def __init__(self):
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()

    def add(self, repo_id: str, fault: Fault) -> None:
        with self._lock:
            self._faults[repo_id] = fault

    def clear(self, repo_id: str | None = None) -> None:
        with self._lock:
            removed = list(self._faults) if repo_id is None else [repo_id]
            for name in removed:
                fault = self._faults.pop(name, None)
                if fault is not None:
                    fault.cleared = True

    def take(self, raw_path: str) -> tuple[str, Fault] | None:
        """The fault for a request to `raw_path` (counting it against `times`), or None."""
        path = unquote(raw_path).rstrip("/") + "/"
        with self._lock:
            for repo_id, fault in self._faults.items():
                if f"/{repo_id}/" in path:
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            del self._faults[repo_id]
                    return repo_id, fault
        return None
