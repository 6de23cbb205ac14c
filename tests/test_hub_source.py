"""Models from a Hub (the local one, over real HTTP): what is downloaded, every access
problem as a clear message with exit code 2, and a Hub outage (503, timeout) as "the Hub is
unavailable, try again" with exit code 1."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from converters.__main__ import main
from converters.source import download, parse_hub_reference
from tests.conftest import OTHER_TOKEN, OWNER, OWNER_TOKEN


@pytest.fixture
def hub_env(local_hub, monkeypatch):
    for key, value in local_hub.client_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return local_hub


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_download_takes_only_safe_files(hub_env, tmp_path):
    hub_env.add_files(f"{OWNER}/tiny-bert", {"pytorch_model.bin": b"\x80\x04pickle", "train.py": "print('hi')"})
    source = download(parse_hub_reference(f"{OWNER}/tiny-bert"), cache_dir=tmp_path)
    names = sorted(p.name for p in source.path.iterdir())
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    assert "pytorch_model.bin" not in names and "train.py" not in names
    assert source.hub_id == f"{OWNER}/tiny-bert" and len(source.revision) == 40


def test_convert_from_a_hub_url(hub_env, tmp_path, capsys):
    report = tmp_path / "report.json"
    code, err = run_cli([f"{hub_env.url}/{OWNER}/tiny-bert", "--task", "feature-extraction", "--sequence-length", "8",
                         "--output", tmp_path / "out", "--report", report], capsys)
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["source"]["id"] == f"{OWNER}/tiny-bert"
    assert (tmp_path / "out" / "tiny-bert.mlpackage").exists()


def test_private_repo_without_token(hub_env, tmp_path, capsys):
    code, err = run_cli([f"{OWNER}/secret-bert", "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert f"'{OWNER}/secret-bert' was not found on the Hub" in err and "sign in / give a token if it is private" in err


def test_private_repo_of_someone_else(hub_env, tmp_path, capsys):
    code, err = run_cli([f"{OWNER}/secret-bert", "--token", OTHER_TOKEN, "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert "was not found on the Hub: check the spelling." in err


def test_private_repo_with_the_owners_token_passes_the_checks(hub_env, tmp_path, capsys):
    code, err = run_cli([f"{OWNER}/secret-bert", "--token", OWNER_TOKEN, "--task", "nope", "--output", tmp_path / "out"], capsys)
    assert code == 2 and "Unknown task 'nope'" in err  # got past access, failed on the task


def test_missing_repo(hub_env, tmp_path, capsys):
    code, err = run_cli([f"{OWNER}/no-such-model", "--output", tmp_path / "out"], capsys)
    assert code == 2 and f"'{OWNER}/no-such-model' was not found on the Hub" in err


def test_missing_revision(hub_env, tmp_path, capsys):
    code, err = run_cli([f"{OWNER}/tiny-bert@no-such-branch", "--output", tmp_path / "out"], capsys)
    assert code == 2 and "has no revision 'no-such-branch'" in err


def test_gated_repo_without_access(hub_env, tmp_path, capsys):
    code, err = run_cli([f"{OWNER}/gated-bert", "--token", OTHER_TOKEN, "--output", tmp_path / "out"], capsys)
    assert code == 2 and "is gated: accept its conditions" in err


def test_rejected_token(hub_env, tmp_path, capsys):
    code, err = run_cli([f"{OWNER}/tiny-bert", "--token", "hf_not_a_real_token", "--output", tmp_path / "out"], capsys)
    assert code == 2 and "The Hub rejected the token" in err
    assert "hf_not_a_real_token" not in err


def test_pickle_only_repo(hub_env, tmp_path, capsys):
    code, err = run_cli([f"{OWNER}/pickle-bert", "--output", tmp_path / "out"], capsys)
    assert code == 2 and "only in pickle files" in err
    assert not any("resolve" in path and "pytorch_model.bin" in path for _, path, _ in hub_env.request_log)


def test_remote_code_repo(hub_env, tmp_path, capsys):
    code, err = run_cli([f"{OWNER}/remote-code", "--output", tmp_path / "out"], capsys)
    assert code == 2 and "needs custom code" in err
    assert not any("modeling_mine.py" in path for _, path, _ in hub_env.request_log)


# ---------------------------------------------------------------------- Hub outages


@pytest.fixture
def outage(hub_env):
    """The local Hub, with whatever fault a test injects cleared afterwards."""
    yield hub_env
    hub_env.clear_faults()


def test_hub_answering_503_is_unavailable_not_the_users_fault(outage, tmp_path, capsys):
    outage.inject_fault(f"{OWNER}/tiny-bert", status=503)
    code, err = run_cli([f"{OWNER}/tiny-bert", "--output", tmp_path / "out"], capsys)
    assert code == 1, err
    assert "The Hub is unavailable: it answered HTTP 503" in err and "try again" in err
    assert "not found" not in err and "Traceback" not in err
    assert ("GET", f"/api/models/{OWNER}/tiny-bert", 503) in outage.request_log
    assert not (tmp_path / "out").exists()


def test_hub_timing_out_is_unavailable(outage, tmp_path, capsys, monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")  # read at call time by converters.source
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)  # huggingface_hub read it at import
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    outage.inject_fault(f"{OWNER}/tiny-bert", status=None, delay=30)  # answers, but far too late
    start = time.monotonic()
    code, err = run_cli([f"{OWNER}/tiny-bert", "--output", tmp_path / "out"], capsys)
    assert time.monotonic() - start < 10
    assert code == 1, err
    assert "The Hub is unavailable: it did not answer in time" in err and "try again" in err
    assert "Traceback" not in err


def test_a_503_while_downloading_files_is_unavailable_too(outage, tmp_path, monkeypatch):
    """huggingface_hub reports a failed file lookup as LocalEntryNotFoundError, the 503 chained.
    It retries first, with waits of 1+2+4+8+8 s: the retries are kept, the waits only recorded."""
    import time

    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import _http

    from converters.errors import HubUnavailable, UserInputError
    from converters.source import HubReference, hub_errors

    waits = []

    class Clock:  # huggingface_hub's own `time`, without the waiting
        def __getattr__(self, name):
            return getattr(time, name)

        def sleep(self, seconds):
            waits.append(seconds)

    monkeypatch.setattr(_http, "time", Clock())
    outage.inject_fault(f"{OWNER}/tiny-bert", status=503)
    with pytest.raises(HubUnavailable) as error:
        with hub_errors(HubReference(f"{OWNER}/tiny-bert"), None):
            hf_hub_download(f"{OWNER}/tiny-bert", "config.json", cache_dir=tmp_path, token=False,
                            endpoint=outage.url)
    assert error.value.status == 503 and error.value.transient and error.value.exit_code == 1
    assert not isinstance(error.value, UserInputError)
    assert "The Hub is unavailable" in str(error.value)
    assert waits == [1, 2, 4, 8, 8]  # it did retry, as it would against the real Hub


def test_faults_are_per_repo_and_can_be_limited(outage, tmp_path):
    outage.inject_fault(f"{OWNER}/tiny-bert", status=503, times=1)
    from converters.errors import HubUnavailable
    from converters.source import inspect_hub_model

    ref = parse_hub_reference(f"{OWNER}/tiny-bert")
    assert inspect_hub_model(parse_hub_reference(f"{OWNER}/secret-bert"), OWNER_TOKEN).sha  # another repo: served
    with pytest.raises(HubUnavailable):
        inspect_hub_model(ref)
    assert inspect_hub_model(ref).sha  # the fault was for one request

    import httpx  # a LocalHub in another process takes faults over HTTP

    httpx.post(f"{outage.url}/_admin/faults", json={"repo_id": f"{OWNER}/tiny-bert", "status": 502}).raise_for_status()
    with pytest.raises(HubUnavailable, match="HTTP 502"):
        inspect_hub_model(ref)
    httpx.request("DELETE", f"{outage.url}/_admin/faults", json={}).raise_for_status()
    assert inspect_hub_model(ref).sha


# ------------------------------------------------ what a download takes (issue 23)


def _seed(hub, repo_id: str, files: dict, big: dict[str, int] | None = None) -> str:
    """A repo of `files`, plus `big` files (path -> bytes) stored as sparse LFS blobs, so a
    gigabyte costs no disk and no time unless someone downloads it. Once per module's Hub."""
    from tests.hub_server.store import PutFile

    if repo_id not in hub.repo_ids():
        hub.add_repo(repo_id, files, owner_token=OWNER_TOKEN)
        for path, size in (big or {}).items():
            sha256 = hashlib.sha256(path.encode()).hexdigest()  # never served: its content is not checked
            with open(hub.store.blobs.path(sha256), "wb") as blob:
                blob.truncate(size)
            with hub._lock:
                repo = hub._repo(repo_id)
                repo.lfs_oids.add(sha256)
                repo.commit("main", [PutFile(path, hub.store.blobs.lfs_entry(sha256))], title=f"Add {path}")
    return repo_id


def _bert_files(tiny_model, *leave_out: str) -> dict[str, bytes]:
    folder = tiny_model("bert")
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name not in leave_out}


def _downloaded(source) -> list[str]:
    return sorted(p.relative_to(source.path).as_posix() for p in source.path.rglob("*") if p.is_file())


def _fetched(hub, since: int, repo_id: str) -> list[str]:
    """The files of `repo_id` asked for (HEAD or GET) since request `since`, not API calls."""
    return sorted({path.split("/resolve/", 1)[1].split("/", 1)[1] for _, path, _ in hub.request_log[since:]
                   if path.startswith(f"/{repo_id}/resolve/")})


def test_a_repo_with_a_nested_gigabyte_downloads_none_of_it(hub_env, tiny_model, tmp_path):
    """huggingface_hub's `*` matches '/': `*.safetensors` took checkpoint-1000/ and `*.json` eval/."""
    bert = _bert_files(tiny_model)
    repo = _seed(hub_env, f"{OWNER}/cluttered-bert", {
        **bert, "consolidated.safetensors": bert["model.safetensors"], "trainer_state.json": "{}", "README.md": "# hi",
        "eval/samples.json": '{"a": 1}\n{"a": 2}\n', "runs/Dec01/events.out.tfevents": b"\0" * 64,
        "checkpoint-1000/config.json": bert["config.json"]}, big={"checkpoint-1000/model.safetensors": 1 << 30})
    start = len(hub_env.request_log)
    source = download(parse_hub_reference(repo), cache_dir=tmp_path, max_bytes=50_000_000)  # the gigabyte is not counted
    assert _downloaded(source) == sorted(name for name in bert if name != "README.md")
    assert _fetched(hub_env, start, repo) == _downloaded(source)
    assert not any(name in path for path in os.listdir(tmp_path) for name in ("checkpoint", "eval", "runs"))


def _shards(bert: dict[str, bytes]) -> dict[str, bytes]:
    from safetensors.torch import load, save

    tensors = load(bert["model.safetensors"])
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    files = {shard: save({n: tensors[n] for n in keys}) for shard, keys in halves.items()}
    index = {"metadata": {}, "weight_map": {n: shard for shard, keys in halves.items() for n in keys}}
    return {**files, "model.safetensors.index.json": json.dumps(index)}


def test_a_sharded_repo_downloads_the_shards_its_index_names(hub_env, tiny_model, tmp_path):
    bert = _bert_files(tiny_model, "model.safetensors")
    shards = _shards(_bert_files(tiny_model))
    stale = {"model-00001-of-00003.safetensors": shards["model-00001-of-00002.safetensors"]}  # an older sharding
    repo = _seed(hub_env, f"{OWNER}/sharded-bert", {**bert, **shards, **stale})
    source = download(parse_hub_reference(repo), cache_dir=tmp_path)
    assert _downloaded(source) == sorted({*bert, *shards})


def _escaping_repo(tiny_model, kind: str) -> dict[str, bytes | str]:
    files = _bert_files(tiny_model)
    if kind == "index":  # a real shard, and one that is another repo's (in a cache shared with its users)
        files["model-00001-of-00001.safetensors"] = files.pop("model.safetensors")
        name = f"../../../models--{OWNER}--secret-bert/snapshots/main/model.safetensors"
        index = {"weight_map": {"a": "model-00001-of-00001.safetensors", "w": name}}
        return {**files, "model.safetensors.index.json": json.dumps(index)}
    pooling = f"../../../models--{OWNER}--secret-bert/snapshots/main/1_Pooling"
    return {**files, "modules.json": json.dumps([{"path": pooling, "type": "sentence_transformers.models.Pooling"}])}


@pytest.mark.parametrize("kind, words", [
    ("index", ["damaged model.safetensors.index.json", f"\"../../../models--{OWNER}--secret-bert/snapshots/main",
               "which is not a file inside the model folder", "without absolute paths, '..' or backslashes"]),
    ("modules", ["damaged modules.json", "Pooling module's path", "not a folder inside the model folder"]),
])
def test_a_name_leading_out_of_the_repo_is_refused_before_downloading(hub_env, tiny_model, tmp_path, capsys, kind, words):
    repo = _seed(hub_env, f"{OWNER}/escaping-{kind}", _escaping_repo(tiny_model, kind))
    start = len(hub_env.request_log)
    code, err = run_cli([repo, "--output", tmp_path / "out"], capsys)
    assert code == 2, err
    assert all(word in err for word in words), err
    assert not any(name.endswith(".safetensors") for name in _fetched(hub_env, start, repo))


def test_a_sentence_transformers_repo_downloads_its_pooling_config_and_no_other_module(hub_env, tiny_model, tmp_path):
    from converters.loading import load_preprocessor

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
               {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}]
    bert = _bert_files(tiny_model)
    repo = _seed(hub_env, f"{OWNER}/sentence-bert", {
        **bert, "modules.json": json.dumps(modules), "1_Pooling/config.json": json.dumps({"pooling_mode_mean_tokens": True}),
        "2_Dense/config.json": "{}", "2_Dense/model.safetensors": bert["model.safetensors"]})
    source = download(parse_hub_reference(repo), cache_dir=tmp_path)
    assert _downloaded(source) == sorted({*bert, "modules.json", "1_Pooling/config.json"})
    assert load_preprocessor(source.path)["sentence_pooling"] == {"mode": "mean", "normalize": True}


def test_weights_only_in_a_subfolder_are_not_a_model(hub_env, tiny_model, tmp_path, capsys):
    bert = _bert_files(tiny_model, "model.safetensors")
    repo = _seed(hub_env, f"{OWNER}/checkpoints-only", {**bert, "checkpoint-1000/model.safetensors": b"\0" * 16})
    code, err = run_cli([repo, "--output", tmp_path / "out"], capsys)
    assert code == 2, err
    # Said from the Hub's file list, before anything is downloaded.
    assert "has no model weights (*.safetensors) at its top level (only in a subfolder: checkpoint-1000/model.safetensors)" in err


def test_a_download_over_the_callers_limit_is_refused_before_it_starts(hub_env, tmp_path):
    from converters.errors import UserInputError

    start = len(hub_env.request_log)
    with pytest.raises(UserInputError) as error:
        download(parse_hub_reference(f"{OWNER}/tiny-bert"), cache_dir=tmp_path, max_bytes=1000)
    assert f"The model '{OWNER}/tiny-bert' is too large to convert here" in str(error.value)
    assert "more than the limit of 1.0 kB. Choose a smaller model" in str(error.value)
    assert _fetched(hub_env, start, f"{OWNER}/tiny-bert") == []


def test_a_download_the_disk_has_no_room_for_is_refused_and_a_cached_one_needs_none(hub_env, tmp_path, monkeypatch):
    import shutil

    from converters import source as source_module
    from converters.errors import UserInputError

    ref = parse_hub_reference(f"{OWNER}/tiny-bert")
    full = shutil.disk_usage(tmp_path)._replace(free=source_module.DISK_MARGIN + 1000)
    with monkeypatch.context() as patch:
        patch.setattr(source_module.shutil, "disk_usage", lambda path: full)
        with pytest.raises(UserInputError) as error:
            download(ref, cache_dir=tmp_path / "cache" / "not-made-yet")  # its nearest existing parent is asked
    message = str(error.value)
    assert f"There is not enough disk space to download the model '{OWNER}/tiny-bert': its files need" in message
    assert "plus 1.0 GB to convert it, and the disk has 1.0 GB free. Free some space" in message
    download(ref, cache_dir=tmp_path)
    monkeypatch.setattr(source_module.shutil, "disk_usage", lambda path: full)
    assert download(ref, cache_dir=tmp_path).hub_id == ref.repo_id  # everything is in the cache already
