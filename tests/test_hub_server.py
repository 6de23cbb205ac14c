"""LocalHub driven by the real huggingface_hub client, over real HTTP."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

try:
    from tests.hub_server import LocalHub
except ImportError:  # pytest run without the repo root on sys.path
    from hub_server import LocalHub

REPO_ROOT = Path(__file__).resolve().parent.parent
ALICE, BOB, ALICE_RO = "hf_alice_write", "hf_bob_write", "hf_alice_read"
CONFIG = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_layer": 2}
CARD = "---\nlicense: mit\ntags:\n- tiny\n---\n# Tiny\n"


def _safetensors(shapes: dict[str, list[int]]) -> bytes:
    """A valid safetensors file of float32 zeros."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "README.md").write_text(CARD)
    (folder / "model.safetensors").write_bytes(_safetensors({"wte": [10, 4], "bias": [4]}))
    (folder / "extra").mkdir()
    (folder / "extra" / "notes.txt").write_text("hello")
    return folder


@pytest.fixture(scope="module")
def hub(tiny_folder):
    with LocalHub() as hub:
        hub.add_user("alice", ALICE, orgs=["acme"])
        hub.add_token("alice", ALICE_RO, role="read")
        hub.add_user("bob", BOB)
        hub.add_repo_from_folder("alice/tiny", tiny_folder)
        hub.add_repo_from_folder("alice/secret", tiny_folder, private=True)
        hub.add_repo_from_folder("acme/gated", tiny_folder, gated=True)
        yield hub


@pytest.fixture(autouse=True)
def _lfs_not_xet(monkeypatch):
    # With hf_xet installed the client uploads through Xet without asking the server.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


def api(hub: LocalHub, token: str | bool) -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


# ----------------------------------------------------------------- accounts


def test_whoami_good_and_bad_tokens(hub):
    me = api(hub, ALICE).whoami()
    assert me["name"] == "alice" and me["type"] == "user"
    assert me["auth"]["accessToken"]["role"] == "write"
    assert [o["name"] for o in me["orgs"]] == ["acme"]
    assert api(hub, ALICE_RO).whoami()["auth"]["accessToken"]["role"] == "read"
    with pytest.raises(HfHubHTTPError, match="Invalid user token") as err:
        api(hub, "hf_wrong").whoami()
    assert err.value.response.status_code == 401


def test_bad_token_is_refused_even_on_public_repos(hub):
    with pytest.raises(HfHubHTTPError) as err:
        api(hub, "hf_wrong").model_info("alice/tiny")
    assert err.value.response.status_code == 401
    assert not isinstance(err.value, RepositoryNotFoundError)


# ------------------------------------------------------------ reading repos


def test_model_info(hub):
    info = api(hub, False).model_info("alice/tiny", files_metadata=True)
    assert info.id == "alice/tiny" and info.private is False and info.gated is False
    assert info.pipeline_tag == "text-generation" and info.library_name == "transformers"
    assert info.config == {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}
    assert info.card_data.license == "mit"
    assert {"tiny", "gpt2", "safetensors", "license:mit"} <= set(info.tags)
    assert info.safetensors.total == 44 and info.safetensors.parameters == {"F32": 44}
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {"config.json", "README.md", "model.safetensors", "extra/notes.txt"}
    assert siblings["model.safetensors"].lfs is not None and siblings["config.json"].lfs is None
    assert info.sha == hub.sha("alice/tiny")
    # expand returns only what was asked
    assert api(hub, False).model_info("alice/tiny", expand=["sha"]).pipeline_tag is None


def test_model_info_at_a_revision(hub):
    sha = hub.commits("alice/tiny")[0]["oid"]
    assert api(hub, False).model_info("alice/tiny", revision=sha).sha == sha
    with pytest.raises(RevisionNotFoundError):
        api(hub, False).model_info("alice/tiny", revision="nope")


def test_list_models_for_search_suggestions(hub):
    anonymous = api(hub, False)
    assert [m.id for m in anonymous.list_models(search="tin")] == ["alice/tiny"]
    assert [m.id for m in anonymous.list_models(author="acme")] == ["acme/gated"]
    # private repos are listed for their owner only
    assert "alice/secret" not in [m.id for m in anonymous.list_models(search="secret")]
    assert [m.id for m in api(hub, ALICE).list_models(search="secret")] == ["alice/secret"]
    assert len(list(anonymous.list_models(limit=1))) == 1


def test_list_files_and_tree(hub):
    client = api(hub, False)
    assert sorted(client.list_repo_files("alice/tiny")) == [
        "README.md", "config.json", "extra/notes.txt", "model.safetensors"]
    top = {e.path: type(e).__name__ for e in client.list_repo_tree("alice/tiny")}
    assert top == {"extra": "RepoFolder", "README.md": "RepoFile", "config.json": "RepoFile",
                   "model.safetensors": "RepoFile"}
    assert [e.path for e in client.list_repo_tree("alice/tiny", path_in_repo="extra")] == ["extra/notes.txt"]
    weights = next(e for e in client.list_repo_tree("alice/tiny") if e.path == "model.safetensors")
    assert weights.lfs.sha256 and weights.lfs.size == weights.size
    with pytest.raises(RemoteEntryNotFoundError):
        list(client.list_repo_tree("alice/tiny", path_in_repo="missing"))
    infos = client.get_paths_info("alice/tiny", ["config.json", "extra", "missing"])
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFile", "config.json"), ("RepoFolder", "extra")]
    assert client.file_exists("alice/tiny", "extra/notes.txt") and not client.file_exists("alice/tiny", "nope")


def test_tree_pagination(hub, monkeypatch):
    monkeypatch.setattr(hub.settings, "tree_page_size", 2)
    seen = len(hub.request_log)
    entries = list(api(hub, False).list_repo_tree("alice/tiny", recursive=True))
    assert len({e.path for e in entries}) == 5  # 4 files + the folder
    assert [p for _, p, _ in hub.request_log[seen:]] == ["/api/models/alice/tiny/tree/main"] * 3


def test_download_and_snapshot_with_patterns(hub, tmp_path, tiny_folder):
    client = api(hub, False)
    path = client.hf_hub_download("alice/tiny", "config.json", cache_dir=tmp_path / "c1")
    assert json.loads(Path(path).read_text()) == CONFIG
    nested = client.hf_hub_download("alice/tiny", "extra/notes.txt", cache_dir=tmp_path / "c1")
    assert Path(nested).read_text() == "hello"
    snap = Path(client.snapshot_download("alice/tiny", allow_patterns=["*.json", "*.safetensors"],
                                         cache_dir=tmp_path / "c2"))
    assert sorted(p.name for p in snap.rglob("*") if p.is_file()) == ["config.json", "model.safetensors"]
    assert (snap / "model.safetensors").read_bytes() == (tiny_folder / "model.safetensors").read_bytes()
    local = Path(client.snapshot_download("alice/tiny", local_dir=tmp_path / "local"))
    assert (local / "extra" / "notes.txt").read_text() == "hello"
    with pytest.raises(RemoteEntryNotFoundError):
        client.hf_hub_download("alice/tiny", "nope.txt", cache_dir=tmp_path / "c1")


def test_resolve_headers_and_range_requests(hub):
    url = f"{hub.url}/alice/tiny/resolve/main/config.json"
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["x-repo-commit"] == hub.sha("alice/tiny")
    assert head.headers["etag"] and int(head.headers["content-length"]) == len(json.dumps(CONFIG))
    lfs_head = httpx.head(f"{hub.url}/alice/tiny/resolve/main/model.safetensors")
    assert lfs_head.headers["x-linked-size"] == lfs_head.headers["content-length"]
    part = httpx.get(url, headers={"Range": "bytes=0-4"})
    assert part.status_code == 206 and part.content == json.dumps(CONFIG).encode()[:5]
    # get_safetensors_metadata reads the header with Range requests
    meta = api(hub, False).get_safetensors_metadata("alice/tiny")
    assert meta.parameter_count == {"F32": 44}


# ------------------------------------------------------------ access rules


def test_private_repo_is_invisible_to_others(hub, tmp_path):
    assert api(hub, ALICE).model_info("alice/secret").private is True
    for client in (api(hub, BOB), api(hub, False)):
        with pytest.raises(RepositoryNotFoundError):
            client.model_info("alice/secret")
        with pytest.raises(RepositoryNotFoundError):
            client.hf_hub_download("alice/secret", "config.json", cache_dir=tmp_path)
        assert client.repo_exists("alice/secret") is False
    assert api(hub, BOB).repo_exists("alice/tiny") is True
    assert api(hub, BOB).repo_exists("alice/none") is False
    # HEAD on the info endpoint answers with the same status codes
    info_url = f"{hub.url}/api/models/alice/secret"
    assert httpx.head(info_url).status_code == 401
    assert httpx.head(info_url, headers={"authorization": f"Bearer {BOB}"}).status_code == 404
    assert httpx.head(info_url, headers={"authorization": f"Bearer {ALICE}"}).status_code == 200


def test_gated_repo_needs_a_grant(hub, tmp_path):
    bob = api(hub, BOB)
    assert bob.model_info("acme/gated").gated == "auto"  # info stays visible
    assert bob.repo_exists("acme/gated") is True
    with pytest.raises(GatedRepoError):
        bob.hf_hub_download("acme/gated", "config.json", cache_dir=tmp_path)
    with pytest.raises(GatedRepoError):
        bob.auth_check("acme/gated")
    with pytest.raises(GatedRepoError):
        api(hub, False).hf_hub_download("acme/gated", "config.json", cache_dir=tmp_path)
    api(hub, ALICE).auth_check("acme/gated")  # org member
    hub.grant_access("acme/gated", "bob")
    bob.auth_check("acme/gated")
    assert Path(bob.hf_hub_download("acme/gated", "config.json", cache_dir=tmp_path)).is_file()


def test_auth_check(hub):
    api(hub, ALICE).auth_check("alice/tiny", write=True)
    api(hub, BOB).auth_check("alice/tiny")
    with pytest.raises(HfHubHTTPError) as err:
        api(hub, BOB).auth_check("alice/tiny", write=True)
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        api(hub, ALICE_RO).auth_check("alice/tiny", write=True)
    assert err.value.response.status_code == 403
    with pytest.raises(RepositoryNotFoundError):
        api(hub, BOB).auth_check("alice/secret")


# ------------------------------------------------------------------ writing


def test_create_repo(hub):
    alice = api(hub, ALICE)
    url = alice.create_repo("alice/fresh")
    assert url.repo_id == "alice/fresh"
    assert list(hub.files("alice/fresh")) == [".gitattributes"]  # like a new Hub repo
    with pytest.raises(HfHubHTTPError) as err:
        alice.create_repo("alice/fresh")
    assert err.value.response.status_code == 409
    assert alice.create_repo("alice/fresh", exist_ok=True).repo_id == "alice/fresh"
    assert alice.create_repo("acme/team-model", private=True).repo_id == "acme/team-model"
    assert api(hub, False).repo_exists("acme/team-model") is False
    with pytest.raises(HfHubHTTPError) as err:
        api(hub, BOB).create_repo("alice/intruder")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        api(hub, ALICE_RO).create_repo("alice/readonly")
    assert err.value.response.status_code == 403
    assert "alice/intruder" not in hub.repo_ids() and "alice/readonly" not in hub.repo_ids()


def test_upload_folder_sends_binaries_through_lfs(hub, tmp_path):
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "notes.md").write_text("small text file\n")
    (folder / "README.md").write_text("---\nlibrary_name: coreml\npipeline_tag: text-generation\n---\n")
    blob = os.urandom(1_500_000)
    (folder / "weights.bin").write_bytes(blob)
    (folder / "data.raw").write_bytes(b"\0\1\2" * 1000)  # binary content, no LFS pattern
    alice = api(hub, ALICE)
    alice.create_repo("alice/uploaded")
    info = alice.upload_folder(repo_id="alice/uploaded", folder_path=folder, commit_message="add files")
    assert info.oid == hub.commits("alice/uploaded")[-1]["oid"]
    files = hub.files("alice/uploaded")
    assert files["weights.bin"] == blob and files["notes.md"] == b"small text file\n"
    assert hub.lfs_paths("alice/uploaded") == {"weights.bin", "data.raw"}
    assert ("PUT", "/_lfs/upload/***", 200) in hub.request_log
    assert hub.commits("alice/uploaded")[-1]["title"] == "add files"
    assert ("POST", "/api/validate-yaml", 200) in hub.request_log  # README.md is checked first
    assert alice.model_info("alice/uploaded").library_name == "coreml"
    # Round trip through the download path, then an unchanged re-upload is a no-op.
    got = alice.hf_hub_download("alice/uploaded", "weights.bin", cache_dir=tmp_path / "cache")
    assert Path(got).read_bytes() == blob
    n = len(hub.commits("alice/uploaded"))
    alice.upload_folder(repo_id="alice/uploaded", folder_path=folder)
    assert len(hub.commits("alice/uploaded")) == n


def test_create_commit_with_deletes(hub):
    alice = api(hub, ALICE)
    alice.create_repo("alice/edits")
    alice.create_commit("alice/edits", [CommitOperationAdd("a/x.txt", b"x"), CommitOperationAdd("a/y.txt", b"y"),
                                        CommitOperationAdd("keep.txt", b"k")], commit_message="add")
    alice.create_commit("alice/edits", [CommitOperationDelete("a/")], commit_message="drop folder")
    assert sorted(hub.files("alice/edits")) == [".gitattributes", "keep.txt"]
    with pytest.raises(RemoteEntryNotFoundError):
        alice.create_commit("alice/edits", [CommitOperationDelete("nope.txt")], commit_message="bad")
    titles = [c.title for c in alice.list_repo_commits("alice/edits")]
    assert titles == ["drop folder", "add", "initial commit"]


def test_branches(hub):
    alice = api(hub, ALICE)
    alice.create_repo("alice/branchy")
    alice.create_branch("alice/branchy", branch="dev")
    alice.upload_file(path_or_fileobj=b"dev only", path_in_repo="dev.txt", repo_id="alice/branchy", revision="dev")
    assert "dev.txt" in hub.files("alice/branchy", "dev") and "dev.txt" not in hub.files("alice/branchy")
    assert {b.name for b in alice.list_repo_refs("alice/branchy").branches} == {"main", "dev"}
    with pytest.raises(RevisionNotFoundError):
        alice.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/branchy", revision="nope")


def test_read_only_token_and_outsiders_cannot_upload(hub):
    op = [CommitOperationAdd("x.txt", b"x")]
    with pytest.raises(HfHubHTTPError) as err:
        api(hub, ALICE_RO).create_commit("alice/tiny", op, commit_message="nope")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        api(hub, BOB).create_commit("alice/tiny", op, commit_message="nope")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        api(hub, False).create_commit("alice/tiny", op, commit_message="nope")
    assert err.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        api(hub, BOB).create_commit("alice/secret", op, commit_message="nope")
    assert "x.txt" not in hub.files("alice/tiny")


def test_pull_request_from_another_user(hub, tmp_path):
    before = hub.files("alice/tiny")
    blob = os.urandom(1_000_000)
    ops = [CommitOperationAdd("coreml/model.bin", blob), CommitOperationAdd("coreml/README.txt", b"converted")]
    bob = api(hub, BOB)
    info = bob.create_commit("alice/tiny", ops, commit_message="Add Core ML", commit_description="from LocalHub",
                             create_pr=True)
    assert info.pr_num >= 1 and info.pr_revision == f"refs/pr/{info.pr_num}"
    assert info.pr_url.endswith(f"/alice/tiny/discussions/{info.pr_num}")
    pr_files = hub.files("alice/tiny", info.pr_revision)
    assert pr_files["coreml/model.bin"] == blob and hub.files("alice/tiny") == before
    got = bob.hf_hub_download("alice/tiny", "coreml/model.bin", revision=info.pr_revision, cache_dir=tmp_path)
    assert Path(got).read_bytes() == blob
    with pytest.raises(RemoteEntryNotFoundError):
        bob.hf_hub_download("alice/tiny", "coreml/model.bin", cache_dir=tmp_path / "main")

    prs = list(bob.get_repo_discussions("alice/tiny", discussion_type="pull_request"))
    assert [(d.num, d.title, d.author, d.is_pull_request, d.status) for d in prs] == [
        (info.pr_num, "Add Core ML", "bob", True, "open")]
    details = bob.get_discussion_details("alice/tiny", info.pr_num)
    assert details.target_branch == "refs/heads/main" and "coreml/model.bin" in details.diff
    assert [e.type for e in details.events] == ["comment", "commit"]
    assert details.events[0].content == "from LocalHub"

    # The author may push more commits to the PR; the owner merges it.
    bob.create_commit("alice/tiny", [CommitOperationAdd("coreml/extra.txt", b"more")],
                      commit_message="more", revision=info.pr_revision)
    assert "coreml/extra.txt" in hub.files("alice/tiny", info.pr_revision)
    api(hub, ALICE).merge_pull_request("alice/tiny", info.pr_num)
    assert {"coreml/model.bin", "coreml/extra.txt"} <= set(hub.files("alice/tiny"))
    assert hub.discussions("alice/tiny")[-1]["status"] == "merged"


def test_create_pull_request_and_discussion(hub):
    alice = api(hub, ALICE)
    alice.create_repo("alice/talk")
    pr = alice.create_pull_request("alice/talk", "Draft PR")
    assert pr.is_pull_request and pr.status == "draft"
    assert hub.files("alice/talk", f"refs/pr/{pr.num}") == hub.files("alice/talk")
    disc = api(hub, BOB).create_discussion("alice/talk", "A question", description="Why?")
    assert not disc.is_pull_request and disc.num == pr.num + 1
    api(hub, BOB).comment_discussion("alice/talk", disc.num, "ping")
    assert [d.num for d in alice.get_repo_discussions("alice/talk")] == [disc.num, pr.num]
    refs = alice.list_repo_refs("alice/talk", include_pull_requests=True)
    assert [r.ref for r in refs.pull_requests] == [f"refs/pr/{pr.num}"]


def test_settings_and_delete(hub):
    alice = api(hub, ALICE)
    alice.create_repo("alice/short-lived")
    alice.update_repo_settings("alice/short-lived", private=True)
    assert api(hub, BOB).repo_exists("alice/short-lived") is False
    with pytest.raises(HfHubHTTPError):
        api(hub, BOB).delete_repo("alice/tiny")
    alice.delete_repo("alice/short-lived")
    assert "alice/short-lived" not in hub.repo_ids()


# ------------------------------------------------------------- bookkeeping


def test_request_log_never_holds_tokens(hub):
    logged = repr(hub.request_log)
    assert hub.request_log and all(t not in logged for t in (ALICE, BOB, ALICE_RO))


def test_runs_as_a_separate_process(tmp_path, tiny_folder):
    (tmp_path / "seed.json").write_text(json.dumps({
        "users": [{"name": "carol", "token": "hf_carol"}],
        "repos": [{"id": "carol/tiny", "folder": str(tiny_folder), "private": True}],
    }))
    proc = subprocess.Popen([sys.executable, "-m", "tests.hub_server", "--port", "0", "--seed-dir", str(tmp_path)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = HfApi(endpoint=url, token="hf_carol")
        assert client.whoami()["name"] == "carol"
        assert client.model_info("carol/tiny").private is True
    finally:
        proc.terminate()
        proc.wait(timeout=10)
