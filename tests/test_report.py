"""The typed report (converters/report.py): it reads and writes exactly the JSON the engine
returns, and every reader — the CLI, the model card, the UI's result view and its report
link, the job's message — says how validation went with its one summary() and failures().
A package pushed anyway after failing validation says so in the view and the card."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from converters.__main__ import print_outcome
from converters.export import convert
from converters.options import ConversionOptions
from converters.report import ConversionReport, ValidationReport
from tests.e2e.repos import _bert
from ui import render
from worker import card
from worker.job import validation_failure_message, public_report
from worker.states import ErrorKind, JobState
from worker.status import JobStatus, Links


@pytest.fixture(scope="module")
def reports(tiny_model, tmp_path_factory) -> dict[str, tuple[dict, object]]:
    """Real engine reports: text generation (with the continuation section), a failed
    validation (float16 overflow), an encoder-decoder (two packages), validation skipped."""
    out = tmp_path_factory.mktemp("reports")
    eight = ConversionOptions.from_strings(sequence_length="8")
    fragile = _bert(out / "fragile-src", hidden=32, layers=2, intermediate=64, scale=3e6)
    runs = {
        "gpt2": (tiny_model("gpt2"), {}),
        "fragile": (fragile, {}),
        "t5": (tiny_model("t5"), {}),
        "skipped": (tiny_model("bert"), {"validate": False}),
    }
    return {name: (convert(str(folder), "auto", out / name, eight, **kw).report_json, out / name)
            for name, (folder, kw) in runs.items()}


def test_reports_round_trip_to_exactly_the_engines_json(reports):
    gpt2 = reports["gpt2"][0]
    assert "continuation" in gpt2["validation"] and gpt2["tokenizer_repo"]  # the sections that are new
    for name, (report, out) in reports.items():
        typed = ConversionReport.from_json(report)
        assert json.dumps(typed.to_json()) == json.dumps(report), name  # same keys, order and values
        assert ValidationReport.from_json(report["validation"]).to_json() == report["validation"], name
        public = public_report(typed, out)  # the job's report: no local paths
        assert "path" not in public["source"] and not any(Path(p["path"]).is_absolute() for p in public["packages"]), name
        assert ConversionReport.from_json(public).to_json() == public, name
    typed = ConversionReport.from_json(gpt2)
    assert typed.task == "text-generation" and typed.architecture.class_name == "GPT2LMHeadModel"
    assert typed.validation.continuation.runs[0].driven_as.startswith("swift-transformers")
    assert typed.packages[0].exporter == "torch.export"
    assert [p.part for p in ConversionReport.from_json(reports["t5"][0]).packages] == ["encoder", "decoder"]


def test_keys_a_newer_engine_adds_are_kept(reports):
    report = copy.deepcopy(reports["gpt2"][0])
    report["stages"] = ["capture", "convert"]
    report["packages"][0]["compression"] = None
    report["validation"]["effective_precision"] = "float16"
    report["validation"]["continuation"]["runs"][0]["seconds"] = 0.5
    report["validation"]["continuation"]["temperature"] = 0
    assert ConversionReport.from_json(report).to_json() == report


def test_one_summary_and_worst_first_failures(reports):
    passed = ValidationReport.from_json(reports["gpt2"][0]["validation"])
    assert passed.summary() == f"passed — all {len(passed.checks)} checks passed" and passed.failures() == []
    skipped = ValidationReport.from_json(reports["skipped"][0]["validation"])
    assert skipped.summary() == "skipped — validation was skipped (--no-validate)"
    failed = ValidationReport.from_json(reports["fragile"][0]["validation"])
    lines = failed.failures()
    assert len(lines) == len([c for c in failed.checks if not c.passed]) >= 2
    # Non-finite output is the worst failure, before the distances it makes infinite.
    assert lines[0] == "model/token_scores fp16 (text, 8 tokens): finite values 0.0%, needs ≥ 100.0%"
    assert "max abs difference inf, needs ≤ 0.05" in " ".join(lines)
    # Only float16 fails (the exact runs pass): the remedy is a float32 package.
    assert failed.only_float16_fails
    assert not ValidationReport.from_json(reports["skipped"][0]["validation"]).only_float16_fails
    assert failed.summary() == f"FAILED — {len(lines)} of {len(failed.checks)} checks failed; worst: {lines[0]}"


def test_a_package_the_executor_cannot_run_says_which_ops():
    reason = "model: the reference executor cannot run op type(s): softmax: validation cannot vouch for this package"
    validation = ValidationReport.from_json({"passed": False, "message": reason, "checks": [
        {"package": "model", "inputs": "-", "output": "-", "mode": "fp32", "metric": "executor_supports_all_ops",
         "value": 0.0, "threshold": 1.0, "passed": False, "higher_is_better": True}]})
    assert validation.failures() == [reason] and validation.summary().endswith(f"worst: {reason}")


def test_every_reader_shows_the_same_failures(reports, capsys):
    report = reports["fragile"][0]
    validation = ValidationReport.from_json(report["validation"])
    summary, lines = validation.summary(), validation.failures()

    assert print_outcome(report) == 1
    out = capsys.readouterr().out
    assert summary in out and all(f"failed: {line}" in out for line in lines)

    body = card.card_body(source_repo="alice/fragile", revision="0" * 40, source_url="http://hub/alice/fragile",
                          report=report, package_paths=["fragile.mlpackage"])
    assert card._plain(summary) in body  # markdown-escaped

    status = JobStatus(job_id="cv-9", state=JobState.FAILED, stage="validate", model="alice/fragile", task="fill-mask",
                       error=validation_failure_message(report["validation"], "float16"),
                       error_kind=ErrorKind.VALIDATION, validation=report["validation"], report=report)
    # The job's message: the worst failure in plain words and the one remedy (only float16 failed).
    assert lines[0] in status.error and "Convert in float32" in status.error
    assert "authors" not in status.error and "_" not in lines[0].split(": ", 1)[1]
    assert validation_failure_message(report["validation"], "float32").count("please report it") == 1
    html = render.results(status, "https://tracker/new")
    assert render.escape(summary) in html
    body = parse_qs(urlparse(render.report_url(status, "https://github.com/o/r/issues/new")).query)["body"][0]
    assert f"- validation: {summary}" in body and all(f"- {line}" in body for line in lines[:5])


# ---------------------------------------------------------------------- pushed anyway


def _finished(validation: dict | None) -> JobStatus:
    return JobStatus(job_id="cv-1", state=JobState.FINISHED, stage="done", percent=100, pushed=True,
                     model="alice/fragile", push_target="alice/fragile-coreml", validation=validation,
                     links=Links(repo="http://hub/alice/fragile-coreml"))


def test_the_view_of_a_package_pushed_anyway_says_it_failed_validation(reports):
    failed = reports["fragile"][0]["validation"]
    html = render.results(_finished(failed))
    done = html.split('data-role="done"', 1)[1].split("</div></div>", 1)[0]
    assert "passed validation" not in html
    assert '<div class="cm-warning" data-role="done" data-validation="failed">' in html
    assert "Pushed anyway: the package FAILED validation." in done
    assert "pushed to alice/fragile-coreml anyway because you asked to push even if validation fails" in done
    assert render.escape(ValidationReport.from_json(failed).summary()) in done
    assert "Open the repo alice/fragile-coreml" in done

    passed = render.results(_finished(reports["gpt2"][0]["validation"]))
    assert "The package passed validation and was pushed to alice/fragile-coreml." in passed
    assert 'data-validation="passed"' in passed and "anyway" not in passed
    skipped = render.results(_finished(reports["skipped"][0]["validation"]))
    assert "Pushed without validation." in skipped and "passed validation" not in skipped


def test_the_card_of_a_package_pushed_anyway_says_it_failed_validation(reports):
    report = reports["fragile"][0]
    text = card.model_card(source_repo="alice/fragile", revision="0" * 40, source_url="http://hub/alice/fragile",
                           report=report, package_paths=["fragile.mlpackage"])
    front, body = text.split("\n---\n", 1)
    first, second, third = body.lstrip().splitlines()[:3]
    assert "- unvalidated" in front
    assert first == ("> **Warning: this Core ML package FAILED validation** against the PyTorch model, "
                     "and was pushed anyway.")
    assert second == f"> Validation {card._plain(ValidationReport.from_json(report['validation']).summary())}."
    assert "asked to push even if validation fails" in third
    assert "passed" not in "\n".join(card.warning_lines(report["validation"]))
    assert card.warning_lines(reports["gpt2"][0]["validation"]) == []
    skipped = card.warning_lines(reports["skipped"][0]["validation"])
    assert skipped[0].startswith("> **Warning: this Core ML package was NOT validated**")
    assert "pushed anyway" in skipped[0]


def test_a_compression_that_loses_too_much_names_a_larger_size_not_a_fault():
    validation = {"passed": False, "message": "the lut4 compression loses too much quality to ship",
                  "quality": {"scheme": "lut4"}, "checks": [
                      {"package": "model", "inputs": "passage, 121 tokens", "output": "logits", "mode": "fp32",
                       "metric": "top1_agreement", "value": 0.5, "threshold": 0.7, "passed": False,
                       "higher_is_better": True}]}
    message = validation_failure_message(validation, "float16")
    assert message.startswith("The lut4 compression loses too much quality on this model: ")
    assert "top-1 agreement 50.0%, needs ≥ 70.0%" in message and "8-bit" in message
    assert "fault" not in message and "report" not in message


@pytest.mark.parametrize("passed, verdict", [(True, "passed"), (False, "failed")])
def test_an_unlisted_architecture_is_marked_in_the_report_cli_page_and_card(passed, verdict, capsys):
    report = ConversionReport.from_json({
        "task": "text-generation", "architecture": {"model_type": "olmo2", "class": "Olmo2ForCausalLM", "family": "decoder",
                                                   "tested": False},
        "validation": {"passed": passed, "message": "", "checks": []},
    })
    mark = f"architecture not in the tested list (decoder family) — validated: {verdict}"
    assert report.untested_mark() == mark
    assert ConversionReport.from_json(report.to_json()).untested_mark() == mark  # the JSON keeps it
    print_outcome(report)
    assert f"olmo2: {mark}" in capsys.readouterr().out
    data = report.to_json()
    html = render.results(JobStatus(job_id="cv-1", state=JobState.FINISHED if passed else JobState.FAILED, report=data,
                                    validation=data["validation"]))
    assert 'data-role="untested"' in html and mark in html
    lines = card.untested_lines(data)
    assert lines and mark[0].upper() + mark[1:] in lines[0] and "validation against PyTorch" in lines[0]
    tested = {**data, "architecture": {**data["architecture"], "tested": True}}
    assert ConversionReport.from_json(tested).untested_mark() is None and card.untested_lines(tested) == []
    assert ConversionReport.from_json({"task": "fill-mask"}).architecture.tested  # reports from before the mark


def test_a_failed_validation_of_an_unlisted_architecture_asks_for_it_rather_than_blaming_us():
    validation = {"passed": False, "message": "1 of 1 checks failed", "checks": [
        {"package": "model", "output": "logits", "mode": "fp32", "metric": "top1_agreement", "value": 0.5,
         "threshold": 1.0, "passed": False}]}
    message = validation_failure_message(validation, "float32", {"model_type": "olmo2", "family": "decoder", "tested": False})
    assert "'olmo2' is not in the tested list" in message and "as a decoder model" in message
    assert "ask for this architecture" in message and "fault in our conversion" not in message
    assert "fault in our conversion" in validation_failure_message(validation, "float32", {"tested": True})
