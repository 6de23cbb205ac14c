"""State of the local Hub: accounts, repos, commits, LFS blobs and discussions.

No HTTP here. `api.py` turns requests into calls on these objects and turns
`HubError` into the status codes and `X-Error-*` headers that huggingface_hub maps
to its exceptions. Nothing in this module checks permissions (see `access.py`).
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

# The ref names huggingface_hub uses: branches are bare names, PRs are refs/pr/N.
DEFAULT_BRANCH = "main"
PR_REF_PREFIX = "refs/pr/"


class HubError(Exception):
    """An error the server reports to the client.

    `code` becomes the `X-Error-Code` header, which is how the client picks
    RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError or EntryNotFoundError.
    """

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def now_iso() -> str:
    """Timestamps in the one format the client's parse_datetime accepts."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's oid/ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class FileEntry:
    """One file in a commit's tree; the content lives in the BlobStore under sha256."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str  # sha1 of the git blob: the content itself, or the LFS pointer

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    @property
    def etag(self) -> str:
        # What the real Hub serves: sha256 for LFS files, the git blob id otherwise.
        return self.sha256 if self.lfs else self.git_oid


class BlobStore:
    """Content-addressed files on disk (root/<sha256>), so large uploads stay out of memory."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def add(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has(sha256):
            self._write_atomically(sha256, data)
        return sha256

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def _write_atomically(self, sha256: str, data: bytes) -> None:
        # A reader streaming the blob must never see a half-written file.
        with tempfile.NamedTemporaryFile(dir=self.root, delete=False) as tmp:
            tmp.write(data)
        Path(tmp.name).replace(self.path(sha256))

    def entry(self, data: bytes, lfs: bool) -> FileEntry:
        sha256 = self.add(data)
        git_oid = git_blob_oid(lfs_pointer(sha256, len(data)) if lfs else data)
        return FileEntry(sha256=sha256, size=len(data), lfs=lfs, git_oid=git_oid)

    def lfs_entry(self, sha256: str) -> FileEntry:
        """The tree entry for an already stored LFS object (commits only name its oid)."""
        size = self.path(sha256).stat().st_size
        return FileEntry(sha256=sha256, size=size, lfs=True, git_oid=git_blob_oid(lfs_pointer(sha256, size)))


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, FileEntry]  # full snapshot: small repos, simple reads
    title: str
    message: str
    author: str | None
    date: str
    ref: str  # the ref the commit was made on (main, refs/pr/N, ...)

    def as_dict(self) -> dict:
        return {
            "oid": self.oid,
            "parent": self.parent,
            "title": self.title,
            "message": self.message,
            "author": self.author,
            "date": self.date,
            "ref": self.ref,
            "paths": sorted(self.files),
        }


@dataclass
class Discussion:
    num: int
    title: str
    author: str
    is_pull_request: bool
    status: str  # open | closed | merged | draft
    created_at: str
    events: list[dict] = field(default_factory=list)
    ref: str | None = None  # refs/pr/N for pull requests
    base_oid: str | None = None  # commit of the target branch the PR started from
    target: str = DEFAULT_BRANCH
    merge_oid: str | None = None

    def as_dict(self) -> dict:
        return {
            "num": self.num,
            "title": self.title,
            "author": self.author,
            "is_pull_request": self.is_pull_request,
            "status": self.status,
            "ref": self.ref,
            "events": [e["type"] for e in self.events],
        }


# Operations of one commit, in the order the client sent them.
@dataclass(frozen=True)
class PutFile:
    path: str
    entry: FileEntry


@dataclass(frozen=True)
class DeleteFile:
    path: str


@dataclass(frozen=True)
class DeleteFolder:
    path: str


Operation = PutFile | DeleteFile | DeleteFolder

_commit_counter = itertools.count()


def _new_commit_oid(repo_id: str, parent: str | None, title: str, files: dict[str, FileEntry]) -> str:
    # Unique even for identical trees: each commit gets a new sha like a real push.
    tree = "".join(f"{p}:{e.git_oid}\n" for p, e in sorted(files.items()))
    seed = f"{repo_id}\n{parent}\n{title}\n{next(_commit_counter)}\n{now_iso()}\n{tree}"
    return hashlib.sha1(seed.encode()).hexdigest()


def apply_operations(files: dict[str, FileEntry], ops: list[Operation]) -> dict[str, FileEntry]:
    """The tree after `ops`; raises EntryNotFound for deletes of missing paths, like the Hub."""
    result = dict(files)
    for op in ops:
        if isinstance(op, PutFile):
            result[op.path] = op.entry
        elif isinstance(op, DeleteFile):
            if op.path not in result:
                raise HubError(404, f"A file with this name doesn't exist: {op.path}", "EntryNotFound")
            del result[op.path]
        else:
            prefix = op.path.rstrip("/") + "/"
            doomed = [p for p in result if p.startswith(prefix)]
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {op.path}", "EntryNotFound")
            for p in doomed:
                del result[p]
    return result


@dataclass
class Repo:
    id: str
    private: bool = False
    gated: bool | str = False  # False, "auto" or "manual" as in ModelInfo.gated
    created_at: str = field(default_factory=now_iso)
    commits: dict[str, Commit] = field(default_factory=dict)  # insertion order = creation order
    refs: dict[str, str] = field(default_factory=dict)  # ref name -> commit oid
    lfs_oids: set[str] = field(default_factory=set)  # LFS objects uploaded to this repo
    granted: set[str] = field(default_factory=set)  # users admitted to a gated repo
    discussions: list[Discussion] = field(default_factory=list)

    @property
    def owner(self) -> str:
        return self.id.split("/")[0]

    def resolve(self, revision: str | None) -> Commit:
        """A branch, refs/pr/N, refs/heads/X or a (prefix of a) commit sha -> that commit."""
        rev = revision or DEFAULT_BRANCH
        if rev.startswith("refs/heads/"):
            rev = rev[len("refs/heads/"):]
        if rev in self.refs:
            return self.commits[self.refs[rev]]
        if len(rev) >= 7 and all(c in "0123456789abcdef" for c in rev):
            matches = [c for oid, c in self.commits.items() if oid.startswith(rev)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def commit(
        self,
        ref: str,
        ops: list[Operation],
        *,
        title: str,
        message: str = "",
        author: str | None = None,
        expected_parent: str | None = None,
        start_from: str | None = None,
    ) -> Commit:
        """Append a commit to `ref`; a new ref starts from commit `start_from` (or empty).

        Nothing changes if an operation fails, so a rejected commit leaves no trace.
        """
        parent_oid = self.refs.get(ref, start_from)
        if expected_parent is not None and parent_oid is not None and not parent_oid.startswith(expected_parent):
            raise HubError(412, f"A commit has happened since. Please refresh and try again. ({parent_oid})")
        base = self.commits[parent_oid].files if parent_oid else {}
        files = apply_operations(base, ops)
        oid = _new_commit_oid(self.id, parent_oid, title, files)
        commit = Commit(oid, parent_oid, files, title, message, author, now_iso(), ref)
        self.commits[oid] = commit
        self.refs[ref] = oid
        return commit

    def history(self, head: Commit) -> list[Commit]:
        """Commits reachable from `head`, newest first (what list_repo_commits shows)."""
        out, oid = [], head.oid
        while oid is not None:
            out.append(self.commits[oid])
            oid = self.commits[oid].parent
        return out

    def discussion(self, num: int) -> Discussion:
        for d in self.discussions:
            if d.num == num:
                return d
        raise HubError(404, f"Discussion #{num} not found")

    def next_discussion_num(self) -> int:
        return len(self.discussions) + 1


@dataclass
class User:
    name: str
    orgs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Token:
    user: str
    role: str  # "write" or "read"
    display_name: str


class Store:
    """Everything the server knows. Callers hold `lock` (see server.py) while using it."""

    def __init__(self, root: Path | None = None):
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="localhub-")) if root is None else Path(root)
        self.blobs = BlobStore(self.root / "blobs")
        self.users: dict[str, User] = {}
        self.tokens: dict[str, Token] = {}
        self.repos: dict[str, Repo] = {}
        # One-shot LFS upload URLs: ticket -> (repo id, sha256, size). The PUT carries
        # no Authorization header (like a presigned S3 URL), so the ticket is the credential.
        self.upload_tickets: dict[str, tuple[str, str, int]] = {}

    def close(self) -> None:
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def namespaces_of(self, user: str) -> set[str]:
        return {user, *self.users[user].orgs}
