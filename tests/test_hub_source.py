"""Models from a Hub (the local one, over real HTTP): what is downloaded, every access
problem as a clear message with exit code 2, and a Hub outage (503, timeout) as "the Hub is
unavailable, try again" with exit code 1."""

from __future__ import annotations

import json

import pytest

from converters.__main__ import main
from converters.source import ALLOW_PATTERNS, download, parse_hub_reference
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
    assert "*.bin" not in ALLOW_PATTERNS


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


def test_a_503_while_downloading_files_is_unavailable_too(outage, tmp_path):
    """huggingface_hub reports a failed file lookup as LocalEntryNotFoundError, the 503 chained."""
    from huggingface_hub import hf_hub_download

    from converters.errors import HubUnavailable, UserInputError
    from converters.source import HubReference, hub_errors

    outage.inject_fault(f"{OWNER}/tiny-bert", status=503)
    with pytest.raises(HubUnavailable) as error:
        with hub_errors(HubReference(f"{OWNER}/tiny-bert"), None):
            hf_hub_download(f"{OWNER}/tiny-bert", "config.json", cache_dir=tmp_path, token=False,
                            endpoint=outage.url)
    assert error.value.status == 503 and error.value.transient and error.value.exit_code == 1
    assert not isinstance(error.value, UserInputError)
    assert "The Hub is unavailable" in str(error.value)


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
