"""Bad input gets a specific message saying what to do, and exit code 2; nothing is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from converters.__main__ import main
from tests.conftest import ROOT


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


def _fake_repo(folder: Path, config: dict | None, files=("model.safetensors",)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    for name in files:
        # A well-formed safetensors file holding no tensors; other names get a few bytes.
        (folder / name).write_bytes(b"\x02" + b"\0" * 7 + b"{}" if name.endswith(".safetensors") else b"\0" * 16)
    return folder


def test_an_architecture_of_a_kind_we_do_not_convert_says_what_it_is(tmp_path, capsys):
    folder = _fake_repo(tmp_path / "m", {"model_type": "wav2vec2"})
    code, err = run_cli([folder, "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert "architecture 'wav2vec2' cannot be converted: it is a speech or audio model" in err
    assert "text decoders, text encoders, text encoder-decoders and image models" in err
    assert not (tmp_path / "out").exists()


def test_task_not_available_lists_the_models_tasks(tiny_model, tmp_path, capsys):
    code, err = run_cli([tiny_model("bert"), "--task", "text-generation", "--output", tmp_path], capsys)
    assert code == 2
    assert "'text-generation' is not available for bert" in err
    assert "fill-mask" in err and "question-answering" in err


def test_unknown_task_lists_tasks_and_aliases(tiny_model, tmp_path, capsys):
    code, err = run_cli([tiny_model("bert"), "--task", "translation-xx", "--output", tmp_path], capsys)
    assert code == 2
    assert "Unknown task 'translation-xx'" in err and "causal-lm" in err and "feature-extraction" in err


def test_no_config(tmp_path, capsys):
    folder = _fake_repo(tmp_path / "m", None)
    code, err = run_cli([folder, "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert "has no config.json" in err


def test_pickle_only_weights_are_refused(tmp_path, capsys):
    folder = _fake_repo(tmp_path / "m", {"model_type": "bert"}, files=("pytorch_model.bin",))
    code, err = run_cli([folder, "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert "only in pickle files" in err and "safetensors" in err


def test_no_weights_at_all(tmp_path, capsys):
    folder = _fake_repo(tmp_path / "m", {"model_type": "bert"}, files=())
    code, err = run_cli([folder, "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert "has no model weights" in err


def test_remote_code_is_refused(tmp_path, capsys):
    config = {"model_type": "my_model", "auto_map": {"AutoModel": "modeling_my.MyModel"}}
    folder = _fake_repo(tmp_path / "m", config, files=("model.safetensors", "modeling_my.py"))
    code, err = run_cli([folder, "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert "needs custom code" in err and "never run remote code" in err


def test_invalid_config_json(tmp_path, capsys):
    folder = _fake_repo(tmp_path / "m", None)
    (folder / "config.json").write_text("{not json")
    code, err = run_cli([folder, "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert "is not valid JSON" in err


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--precision", "fp8", "Unknown precision 'fp8'. Choose one of: float16, float32"),
        ("--sequence-length", "abc", "Sequence length 'abc' is not understood"),
        ("--sequence-length", "512-64", "must go from a smaller to a larger number"),
        ("--sequence-length", "0", "must be at least 1"),
        ("--minimum-target", "iOS9", "Unknown minimum deployment target 'iOS9'"),
        ("--naming", "camel", "Unknown naming 'camel'. Choose one of: swift-transformers, exporters"),
    ],
)
def test_unknown_option_values(flag, value, message, tiny_model, tmp_path, capsys):
    code, err = run_cli([tiny_model("bert"), flag, value, "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert message in err
    assert not (tmp_path / "out").exists()


def test_sequence_length_beyond_model_maximum(tiny_model, tmp_path, capsys):
    code, err = run_cli([tiny_model("llama"), "--sequence-length", "64,1024", "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert "Sequence length 1024 is beyond this model's maximum of 512 tokens" in err


def test_enumerated_lengths_need_ios18_for_several_token_inputs(tiny_model, tmp_path, capsys):
    code, err = run_cli([tiny_model("gpt2"), "--sequence-length", "8,16", "--minimum-target", "iOS17", "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert "needs minimum deployment target iOS18 or macOS15" in err


def test_missing_folder(tmp_path, capsys):
    code, err = run_cli([tmp_path / "nowhere" / "model", "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert "does not exist" in err


@pytest.mark.parametrize("source", ["not a model", "owner/", "a/b/c/d?x", "https://huggingface.co/datasets/x/y"])
def test_malformed_hub_ids(source, tmp_path, capsys):
    code, err = run_cli([source, "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert "error:" in err and ("not a valid Hub model ID" in err or "does not exist" in err or "not a model" in err)


def test_unreachable_hub(tmp_path, capsys, monkeypatch):
    """Not the request's fault and transient (issue 9): exit 1, "unavailable, try again"."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    code, err = run_cli(["someone/some-model", "--output", tmp_path / "out"], capsys)
    assert code == 1
    assert "Cannot reach the Hub (http://127.0.0.1:9)" in err
    assert "The Hub is unavailable from here" in err and "try again" in err and "Traceback" not in err


def test_unsupported_architecture_is_a_user_error_carrying_the_model_type():
    from converters.configs import config_class_for
    from converters.errors import HubUnavailable, UnsupportedArchitecture, UserInputError

    with pytest.raises(UnsupportedArchitecture) as error:
        config_class_for("wav2vec2")
    assert error.value.model_type == "wav2vec2"
    assert isinstance(error.value, UserInputError) and error.value.exit_code == 2 and not error.value.transient
    assert "architecture 'wav2vec2' cannot be converted" in str(error.value)
    assert not issubclass(HubUnavailable, UserInputError) and HubUnavailable.transient


def test_exit_codes_from_a_real_process(tiny_model, tmp_path):
    """The module entry point really exits 2 on bad input and 0 with a report on success."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad = subprocess.run(
        [sys.executable, "-m", "converters", str(tiny_model("bert")), "--task", "text-generation", "--output", str(tmp_path / "bad")],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("error: The task 'text-generation' is not available")
    report = tmp_path / "report.json"
    good = subprocess.run(
        [sys.executable, "-m", "converters", str(tiny_model("bert")), "--task", "auto", "--sequence-length", "8",
         "--output", str(tmp_path / "good"), "--report", str(report)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert good.returncode == 0, good.stderr
    data = json.loads(report.read_text())
    assert data["task"] == "fill-mask"  # the checkpoint is BertForMaskedLM
    assert data["requested_task"] == "auto"
    assert Path(data["packages"][0]["path"]).exists()
    assert set(data) >= {"source", "architecture", "options", "packages", "versions", "timings", "warnings"}
