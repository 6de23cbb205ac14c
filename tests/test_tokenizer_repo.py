"""The repo a package names for its tokenizer (metadata `co.huggingface.exporters.name`, what
swift-transformers' LanguageModel downloads tokenizer.json / tokenizer_config.json /
config.json from): `--hub-name` on the command line, the target repo for a worker's new repo,
the source repo for a pull request; recorded in the report and explained in the model card."""

from __future__ import annotations

import json

import pytest

from converters.__main__ import main
from worker import card
from worker.job import tokenizer_repo
from worker.spec import JobSpec

NAME_KEY = "co.huggingface.exporters.name"


def saved_metadata(package) -> dict:
    import coremltools as ct

    return dict(ct.models.MLModel(str(package), skip_model_load=True).get_spec().description.metadata.userDefined)


@pytest.mark.parametrize("flags, expected", [
    (["--hub-name", "bob/tiny-coreml"], "bob/tiny-coreml"),
    (["--hub-name", "https://huggingface.co/bob/tiny-coreml"], "bob/tiny-coreml"),
    ([], "bert"),  # a local folder: its name, as before
])
def test_the_hub_name_flag_writes_the_key_and_the_report(tiny_model, tmp_path, capsys, flags, expected):
    report_path = tmp_path / "report.json"
    code = main([str(tiny_model("bert")), "--no-validate", "--sequence-length", "8", "--output", str(tmp_path / "o"),
                 "--report", str(report_path), *flags])
    assert code == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert report["tokenizer_repo"] == expected
    assert saved_metadata(report["packages"][0]["path"])[NAME_KEY] == expected
    assert f"(co.huggingface.exporters.name): {expected}" in capsys.readouterr().out


@pytest.mark.parametrize("value, message", [
    ("bob/tiny@v2", "always reads the tokenizer from the repo's main branch"),
    ("not a repo", "--hub-name: 'not a repo' is not a valid Hub model ID"),
])
def test_a_bad_hub_name_is_refused_before_converting(tiny_model, tmp_path, capsys, value, message):
    code = main([str(tiny_model("bert")), "--hub-name", value, "--output", str(tmp_path / "o")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_worker_names_the_new_repo_or_the_pull_requests_source():
    new_repo = JobSpec.build("alice/gated-llama", token="hf_x", user="bob")
    assert tokenizer_repo(new_repo, "alice/gated-llama") == "bob/gated-llama-coreml"
    chosen = JobSpec.build("alice/gated-llama", token="hf_x", user="bob", push_repo="bob/my-llama")
    assert tokenizer_repo(chosen, "alice/gated-llama") == "bob/my-llama"
    pull_request = JobSpec.build("alice/gated-llama", token="hf_x", user="bob", push="pull-request")
    assert tokenizer_repo(pull_request, "alice/gated-llama") == "alice/gated-llama"


def test_the_worker_passes_the_name_to_the_engine(monkeypatch, tmp_path):
    import converters.export
    from worker.conversion import convert_and_validate

    seen = {}

    def fake_convert(source, task, output_dir, options, progress=None, validate=True, hub_name=None, time_limit=None,
                     layers_per_chunk=None, calibration_cache=None):
        seen["hub_name"], seen["time_limit"], seen["layers_per_chunk"] = hub_name, time_limit, layers_per_chunk
        seen["calibration_cache"] = calibration_cache
        return converters.export.ConversionResult(report={"validation": {"passed": True}})

    monkeypatch.setattr(converters.export, "convert", fake_convert)
    convert_and_validate("src", "text-generation", tmp_path, None, None, hub_name="bob/m-coreml")
    assert seen["hub_name"] == "bob/m-coreml"
    from worker.settings import job_timeout

    assert seen["time_limit"] == job_timeout()  # the job's limit: what could not finish in it is refused up front
    assert seen["layers_per_chunk"] is None and seen["calibration_cache"] is None  # unset: by size; GPTQ always walks
    monkeypatch.setenv("COREML_CONVERTER_LAYERS_PER_CHUNK", "2")
    monkeypatch.setenv("COREML_CONVERTER_CALIBRATION_CACHE", str(tmp_path / "gptq"))
    convert_and_validate("src", "text-generation", tmp_path, None, None, hub_name="bob/m-coreml")
    assert seen["layers_per_chunk"] == 2 and seen["calibration_cache"] == tmp_path / "gptq"


# ---------------------------------------------------------------------- the card says which and why

TEXT_REPORT = {
    "task": "text-generation",
    "options": {"precision": "float16", "sequence_length": "128", "minimum_deployment_target": "iOS17",
                "naming": "swift-transformers", "kv_cache": "none"},
    "packages": [{"path": "m.mlpackage", "inputs": [{"name": "inputIds", "shape": [1, 128]}],
                  "outputs": [{"name": "logits"}]}],
    "validation": {"passed": True, "kind": "reference executor", "message": "ok", "checks": []},
}


def body(report: dict, source: str = "alice/gated-llama", **kwargs) -> str:
    return card.card_body(source_repo=source, revision="0123456789abcdef", source_url=f"http://hub/{source}",
                          report=report, package_paths=["m.mlpackage"], **kwargs)


def test_card_of_a_new_repo_names_it_and_says_why():
    text = body({**TEXT_REPORT, "tokenizer_repo": "bob/gated-llama-coreml"},
                tokenizer_files=["tokenizer.json", "tokenizer_config.json", "config.json"])
    section = text.split("## Tokenizer", 1)[1].split("##", 1)[0]
    assert "`co.huggingface.exporters.name` names **`bob/gated-llama-coreml`** — this repo" in section
    assert "not the source `alice/gated-llama`" in section and "gated or private" in section
    assert "**Note:**" not in section


def test_card_of_a_pull_request_names_the_source_and_warns_when_gated():
    text = body({**TEXT_REPORT, "tokenizer_repo": "alice/gated-llama"}, tokenizer_files=["config.json"])
    section = text.split("## Tokenizer", 1)[1].split("##", 1)[0]
    assert "names **`alice/gated-llama`**, the source repo" in section
    assert "If `alice/gated-llama` is gated or private" in section
    assert "has no `tokenizer.json` or `tokenizer_config.json`" in section


def test_card_has_no_tokenizer_section_for_an_image_model_or_an_older_report():
    vision = {**TEXT_REPORT, "task": "image-classification", "tokenizer_repo": "bob/vit-coreml",
              "packages": [{"path": "m.mlpackage", "inputs": [{"name": "image"}], "outputs": []}]}
    assert "## Tokenizer" not in body(vision)
    assert "## Tokenizer" not in body(TEXT_REPORT)  # no tokenizer_repo recorded


def test_card_of_a_model_without_a_tokenizer_says_so_and_what_an_app_needs():
    report = {**TEXT_REPORT, "tokenizer_repo": "bob/finetune-coreml", "tokenizer_missing": "the repo has no tokenizer files"}
    section = body(report, source="bob/finetune", tokenizer_files=["config.json"]).split("## Tokenizer", 1)[1].split("\n## ", 1)[0]
    assert "**This model comes without a usable tokenizer**: the repo has no tokenizer files." in section
    assert "checked on made-up token ids" in section and "no text was run through it" in section
    assert "for a fine-tune, usually its base model's" in section and "pass it to the model" in section
    assert "names **`bob/finetune-coreml`**, which has no tokenizer for swift-transformers to download" in section
    assert "--" not in section  # no command-line flags in the card


def test_the_card_lists_the_packages_earlier_conversions_left_in_the_repo():
    from worker import card

    readme = card.model_card(source_repo="alice/llama", revision="0123456789abcdef", source_url="http://hub/alice/llama",
                             report=TEXT_REPORT, package_paths=["m.aimodel"], other_packages=["m.mlpackage"])
    section = readme.split("## Other packages in this repo", 1)[1]
    assert "- `m.mlpackage`" in section and "do not describe" in section
    assert "## Other packages" not in card.model_card(source_repo="alice/llama", revision="0123456789abcdef",
                                                        source_url="x", report=TEXT_REPORT, package_paths=["m.mlpackage"])
