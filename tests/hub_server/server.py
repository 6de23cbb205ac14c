"""LocalHub: the Hub double as a real HTTP server (uvicorn in a background thread).

Point huggingface_hub at `hub.url` with `HfApi(endpoint=hub.url)` or `HF_ENDPOINT`
(read when huggingface_hub is imported). Uploads need `HF_HUB_DISABLE_XET=1` (or
`huggingface_hub.constants.HF_HUB_DISABLE_XET = True` in-process): with hf_xet
installed the client uploads through Xet without asking the server, and this server
only speaks basic LFS. `client_env()` gives the variables for worker processes.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import uvicorn

from . import metadata
from .app import HubApp, Settings
from .faults import Fault, Faults
from .store import DEFAULT_BRANCH, HubError, PutFile, Repo, Store, Token, User


class LocalHub:
    """A local Hugging Face Hub for tests: users, tokens, model repos, LFS, PRs.

    with LocalHub() as hub:
        hub.add_user("alice", "hf_alice", orgs=["acme"])
        hub.add_repo_from_folder("alice/tiny", folder)
        api = HfApi(endpoint=hub.url, token="hf_alice")
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_dir: str | Path | None = None,
        lfs_threshold: int = 10_000_000,
        tree_page_size: int = 1000,
        discussions_page_size: int = 50,
    ):
        self.settings = Settings(
            lfs_threshold=lfs_threshold,
            tree_page_size=tree_page_size,
            models_page_size=tree_page_size,
            discussions_page_size=discussions_page_size,
        )
        self.store = Store(Path(storage_dir) if storage_dir else None)
        self.request_log: list[tuple[str, str, int]] = []  # (method, path, status), no tokens
        self.faults = Faults()  # injected outages (faults.py)
        self._lock = threading.RLock()  # the server thread and the test thread share the store
        self._host, self._port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalHub is not started")
        return f"http://{self._host}:{self._port}"

    def start(self, timeout: float = 10.0) -> "LocalHub":
        # Bind first so the port is ours before uvicorn starts (no free-port race).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self._port = sock.getsockname()[1]
        app = HubApp(self.store, self.settings, self._lock, self.request_log, self.faults)
        # A long keep-alive avoids the client reusing a connection the server is closing.
        config = uvicorn.Config(app, lifespan="off", log_config=None, log_level="warning", access_log=False,
                                timeout_keep_alive=120)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="LocalHub", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("LocalHub failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and delete the blob storage (if LocalHub created it)."""
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None
        self.store.close()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client_env(self) -> dict[str, str]:
        """Environment for a process that should use this Hub through huggingface_hub."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}

    # --------------------------------------------------------------- faults

    def inject_fault(self, repo_id: str, *, status: int | None = 503, delay: float = 0.0,
                     times: int | None = None) -> None:
        """Make requests naming `repo_id` fail as in a Hub outage: answer `status` (503),
        after `delay` seconds (longer than the client's timeout: a timeout; `status=None`
        then serves normally, late). `times`: only the next N requests (None: until cleared)."""
        self.faults.add(repo_id, Fault(status=status, delay=delay, times=times))

    def clear_faults(self, repo_id: str | None = None) -> None:
        """Remove the fault for `repo_id` (None: all); requests waiting on it answer at once."""
        self.faults.clear(repo_id)

    # ------------------------------------------------------------- accounts

    def add_user(self, name: str, token: str, orgs: tuple[str, ...] | list[str] = (), role: str = "write") -> None:
        """A user (members of `orgs` may write to their repos) and one token for them."""
        with self._lock:
            self.store.users[name] = User(name, tuple(orgs))
            self.add_token(name, token, role=role)

    def add_token(self, user: str, token: str, role: str = "read") -> None:
        """Another token for an existing user; role "read" tokens are refused on writes."""
        if role not in ("read", "write"):
            raise ValueError(f"role must be 'read' or 'write', not {role!r}")
        with self._lock:
            if user not in self.store.users:
                raise KeyError(f"unknown user {user!r}")
            self.store.tokens[token] = Token(user, role, f"{user}-{role}-{len(self.store.tokens)}")

    # ---------------------------------------------------------------- repos

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | str],
        *,
        private: bool = False,
        gated: bool | str = False,
        owner_token: str | None = None,
        message: str = "Initial commit",
    ) -> str:
        """Seed a model repo with one commit of `files`; returns the commit sha.

        `gated=True` means "auto". `owner_token` creates the owner as a user with that
        token if they do not exist yet (owners without a user are fine: nobody can write).
        """
        owner = repo_id.split("/")[0]
        with self._lock:
            if repo_id in self.store.repos:
                raise ValueError(f"{repo_id} already exists")
            if owner_token is not None and owner not in self.store.users:
                self.add_user(owner, owner_token)
            repo = Repo(repo_id, private=private, gated="auto" if gated is True else gated)
            self.store.repos[repo_id] = repo
            return self._seed_commit(repo, files, DEFAULT_BRANCH, message)

    def add_repo_from_folder(self, repo_id: str, folder: str | Path, **kwargs) -> str:
        """Seed a repo with every file under `folder` (except .git/ and .cache/)."""
        return self.add_repo(repo_id, _read_folder(Path(folder)), **kwargs)

    def add_files(self, repo_id: str, files: dict[str, bytes | str], *, revision: str = DEFAULT_BRANCH,
                  message: str = "Update files") -> str:
        """Commit more files to an existing repo's branch, bypassing HTTP; returns the sha."""
        with self._lock:
            return self._seed_commit(self._repo(repo_id), files, revision, message)

    def grant_access(self, repo_id: str, user: str) -> None:
        """Admit `user` to a gated repo."""
        with self._lock:
            self._repo(repo_id).granted.add(user)

    def _seed_commit(self, repo: Repo, files: dict[str, bytes | str], ref: str, message: str) -> str:
        raw = {p: d.encode() if isinstance(d, str) else d for p, d in files.items()}
        current = repo.commits[repo.refs[ref]].files if ref in repo.refs else {}
        attributes = raw.get(".gitattributes")
        if attributes is None and ".gitattributes" in current:
            attributes = self.store.blobs.read(current[".gitattributes"].sha256)
        patterns = metadata.lfs_patterns(attributes)
        ops = []
        for path, data in sorted(raw.items()):
            lfs = metadata.wants_lfs(path, data[:512], len(data), threshold=self.settings.lfs_threshold,
                                     patterns=patterns)
            entry = self.store.blobs.entry(data, lfs=lfs)
            if lfs:
                repo.lfs_oids.add(entry.sha256)
            ops.append(PutFile(path, entry))
        return repo.commit(ref, ops, title=message, author=repo.owner).oid

    # ------------------------------------------------------------ inspection

    def files(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> dict[str, bytes]:
        """Path -> content at `revision` (a branch, refs/pr/N or a commit sha)."""
        with self._lock:
            commit = self._commit(repo_id, revision)
            return {p: self.store.blobs.read(e.sha256) for p, e in sorted(commit.files.items())}

    def sha(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> str:
        """The commit sha `revision` points to."""
        with self._lock:
            return self._commit(repo_id, revision).oid

    def lfs_paths(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> set[str]:
        """The paths stored through LFS at `revision`."""
        with self._lock:
            return {p for p, e in self._commit(repo_id, revision).files.items() if e.lfs}

    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self.store.repos:
            raise KeyError(f"no repo {repo_id}")
        return self.store.repos[repo_id]

    def _commit(self, repo_id: str, revision: str):
        try:
            return self._repo(repo_id).resolve(revision)
        except HubError as err:
            raise KeyError(f"{repo_id}@{revision}: {err.message}") from None

    def commits(self, repo_id: str) -> list[dict]:
        """Every commit of the repo in creation order: oid, parent, title, message, author, date, ref, paths."""
        with self._lock:
            return [c.as_dict() for c in self._repo(repo_id).commits.values()]

    def discussions(self, repo_id: str) -> list[dict]:
        """Discussions and PRs: num, title, author, is_pull_request, status, ref, event types."""
        with self._lock:
            return [d.as_dict() for d in self._repo(repo_id).discussions]

    def repo_ids(self) -> list[str]:
        with self._lock:
            return sorted(self.store.repos)

    # ---------------------------------------------------------------- seeds

    def seed(self, spec: dict, base_dir: str | Path = ".") -> None:
        """Load users and repos from a dict (the JSON seed file format):

        {"users": [{"name": "alice", "token": "hf_a", "orgs": ["acme"],
                    "tokens": [{"token": "hf_a_ro", "role": "read"}]}],
         "repos": [{"id": "alice/tiny", "folder": "tiny", "private": false,
                    "gated": false, "granted": ["bob"]}]}

        Repo folders are relative to `base_dir`.
        """
        for user in spec.get("users", []):
            self.add_user(user["name"], user["token"], orgs=user.get("orgs", ()), role=user.get("role", "write"))
            for extra in user.get("tokens", []):
                self.add_token(user["name"], extra["token"], role=extra.get("role", "read"))
        for repo in spec.get("repos", []):
            self.add_repo_from_folder(repo["id"], Path(base_dir) / repo["folder"],
                                      private=repo.get("private", False), gated=repo.get("gated", False))
            for user in repo.get("granted", []):
                self.grant_access(repo["id"], user)

    def seed_from_dir(self, seed_dir: str | Path) -> None:
        """Load `seed_dir/seed.json`, whose repo folders are relative to `seed_dir`."""
        seed_dir = Path(seed_dir)
        self.seed(json.loads((seed_dir / "seed.json").read_text()), base_dir=seed_dir)


def _read_folder(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        raise FileNotFoundError(folder)
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not {".git", ".cache"} & set(rel.parts):
            files[rel.as_posix()] = path.read_bytes()
    return files
