"""The UI's HTML (ui/render.py): the live job view, the validation table with numbers and
pass/fail, where the model can run, links, failures with a pre-filled report link, and
"My jobs" rows. Everything user-supplied is escaped; no token can appear."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qs, urlparse

import pytest

from ui import render
from ui.models import ModelSummary
from worker.status import JobStatus, TryStatus

CHECKS = [
    {"package": "model", "inputs": "text, 8 tokens", "output": "token_scores", "mode": "fp32", "metric": "finite_share",
     "value": 1.0, "threshold": 1.0, "passed": True, "higher_is_better": True},
    {"package": "model", "inputs": "text, 8 tokens", "output": "token_scores", "mode": "fp32", "metric": "max_abs_diff",
     "value": 1.219e-06, "threshold": 0.05, "passed": True, "higher_is_better": False},
    {"package": "model", "inputs": "text, 8 tokens", "output": "token_scores", "mode": "fp16", "metric": "psnr_db",
     "value": 12.5, "threshold": 30.0, "passed": False, "higher_is_better": True},
]
VALIDATION = {
    "passed": False,
    "kind": "reference executor (Core ML not available here)",
    "message": "1 of 3 checks failed",
    "notes": [],
    "checks": CHECKS,
    "compute_units": {"model": {"basis": "static analysis of the program (Core ML placement rules)",
                                "units": {"cpu": "yes", "gpu": "yes", "neural_engine": "default_shape"},
                                "reasons": ["inputs with range shapes run on the GPU or CPU, and on the Neural Engine "
                                            "only at their default shape (input_ids [1, 1])"]}},
    "placement": {},
}


def status(**overrides) -> JobStatus:
    """A job's status as api.status() returns it (built from its JSON form)."""
    base = {
        "job_id": "cv-123", "state": "running", "queue": "default", "queue_position": None, "stage": "convert",
        "percent": 40, "message": "Converting to Core ML", "log": ["12:00:00 Checking", "12:00:01 Converting"],
        "user": "alice", "model": "alice/tiny-bert", "task": "fill-mask", "push_target": "alice/tiny-bert-coreml",
        "submitted_at": "2026-11-24T12:00:00+00:00", "elapsed_seconds": 75.0, "report": None, "validation": None,
        "links": {}, "pushed": False, "error": None, "error_kind": None, "user_error": False, "cancelled": False,
        "note": None,
    }
    base.update(overrides)
    return JobStatus.from_dict(base)


def test_the_running_job_view_shows_stage_progress_message_and_elapsed_time():
    html = render.job_status(status())
    assert 'data-state="running"' in html and 'data-stage="convert"' in html
    assert '<li class="cm-done" data-step="download">' in html
    assert '<li class="cm-current" data-step="convert">' in html
    assert '<li class="" data-step="validate">' in html
    assert 'aria-valuenow="40"' in html and "width: 40%" in html
    assert "Converting to Core ML" in html and "Elapsed: 1 min 15 s" in html


def test_a_queued_job_shows_its_position_and_why_it_waits():
    html = render.job_status(status(state="queued", stage="queued", percent=0, queue_position=1,
                                    note="No worker is running: the job waits until one starts."))
    assert "Position in the queue: 1 (next)" in html
    assert "No worker is running" in html
    assert 'data-step="queued"' in html


def test_failed_and_cancelled_jobs_mark_the_step_they_stopped_at():
    failed = render.job_status(status(state="failed", stage="validate", percent=70))
    assert '<li class="cm-failed" data-step="validate">' in failed and "cm-bar-failed" in failed
    cancelled = render.job_status(status(state="cancelled", stage="cancelled", percent=15))
    assert '<li class="cm-stopped" data-step="convert">' in cancelled
    assert '<li class="cm-done" data-step="download">' in cancelled and "cm-bar-stopped" in cancelled
    finished = render.job_status(status(state="finished", stage="done", percent=100))
    assert "cm-current" not in finished and "cm-bar-done" in finished


def test_the_validation_table_has_numbers_thresholds_and_pass_fail():
    html = render.validation_section(VALIDATION)
    assert html.count("<tr data-passed=") == 3
    assert '<tr data-passed="no">' in html
    assert "max abs difference" in html and "1.22e-06" in html and "≤ 0.05" in html
    assert "PSNR (dB)" in html and "12.5" in html and "≥ 30" in html
    assert "finite values" in html and "100.0%" in html
    assert "fp16 (GPU / Neural Engine emulation)" in html
    assert "✗ fail" in html and "✓ pass" in html
    assert "failed" in html and "reference executor" in html


def test_where_the_model_can_run_lists_units_and_reasons():
    html = render.compute_units_section(VALIDATION)
    assert "<td data-unit='cpu'>✓ yes</td>" in html
    assert "<td data-unit='gpu'>✓ yes</td>" in html
    assert "<td data-unit='neural_engine'>◐ at the default shape</td>" in html
    assert "range shapes run on the GPU or CPU" in html


def test_a_finished_job_links_the_repo_and_commit():
    html = render.results(status(state="finished", stage="done", percent=100, pushed=True, validation=dict(VALIDATION, passed=True),
                                 links={"repo": "http://hub/alice/tiny-bert-coreml",
                                        "commit": "http://hub/alice/tiny-bert-coreml/commit/abc123"}))
    assert 'href="http://hub/alice/tiny-bert-coreml"' in html and "Open the repo alice/tiny-bert-coreml" in html
    assert "See the commit" in html and 'data-role="validation-table"' in html
    pr = render.results(status(state="finished", stage="done", pushed=True,
                               links={"repo": "http://hub/a/b", "pull_request": "http://hub/a/b/discussions/3"}))
    assert "Open the pull request" in pr and "pushed to a pull request" in pr


def test_a_failure_says_why_in_plain_words_with_a_report_link():
    failed = status(state="failed", stage="validate", error="Validation failed: the package computes inf.",
                    error_kind="validation", validation=VALIDATION)
    html = render.results(failed, "https://example.org/new?title=x")
    assert "Validation failed: the package computes inf." in html and "(during: Validate)" in html
    assert 'href="https://example.org/new?title=x"' in html and "Report this problem" in html
    assert "authors" not in html  # a failed conversion is ours to fix
    user = render.results(status(state="failed", stage="resolve", error="Too large.", error_kind="user_input"), None)
    assert "cannot be converted as given" in user and 'data-role="report"' not in user


def test_float32_is_offered_only_when_just_float16_failed():
    """VALIDATION: the fp32 rows pass, an fp16 row fails. In a float16 job that makes float32 the
    one remedy (the page shows its button, no report link); any failed exact row does not."""
    fp16_only = status(state="failed", stage="validate", error="drifts in float16", error_kind="validation",
                       validation=VALIDATION, report={"options": {"precision": "float16"}})
    assert render.float32_is_the_remedy(fp16_only)
    assert 'data-role="report"' not in render.results(fp16_only, "https://example.org/new")
    exact_fails = dict(VALIDATION, checks=[dict(CHECKS[0], passed=False, value=0.5)] + CHECKS[1:])
    assert not render.float32_is_the_remedy(replace(fp16_only, validation=exact_fails, report={
        "options": {"precision": "float16"}, "validation": exact_fails}))
    assert not render.float32_is_the_remedy(replace(fp16_only, report={"options": {"precision": "float32"}}))
    assert not render.float32_is_the_remedy(replace(fp16_only, state="finished"))


def test_a_cancelled_job_says_nothing_was_pushed():
    assert "Cancelled. Nothing was pushed." in render.results(status(state="cancelled", stage="cancelled"))


def test_a_job_cancelled_while_pushing_says_what_landed():
    landed = ("Cancelled while pushing. It stopped after its commit to alice/m-coreml had landed "
              "(https://hub/alice/m-coreml/commit/abc): the package is there, but the job did not finish.")
    shown = render.results(status(state="cancelled", stage="cancelled", message=landed))
    assert "the package is there" in shown and "Nothing was pushed" not in shown


def test_report_links_are_prefilled_for_github_and_for_hub_discussions(monkeypatch):
    failed = status(state="failed", stage="validate", error="Validation failed.", error_kind="validation",
                    validation=VALIDATION, report={"options": {"precision": "float16"}, "versions": {"coremltools": "9.0"}})
    url = render.report_url(failed, "https://github.com/o/r/issues/new")
    query = parse_qs(urlparse(url).query)
    assert query["title"] == ["Conversion failed: alice/tiny-bert (fill-mask)"]
    body = query["body"][0]
    assert "cv-123" in body and "precision=float16" in body and "coremltools 9.0" in body
    assert "Validation failed." in body and "PSNR (dB) 12.5, needs ≥ 30" in body

    hub = render.report_url(failed, "https://huggingface.co/spaces/me/converter/discussions/new")
    assert "description=" in hub and "body=" not in hub

    monkeypatch.delenv("COREML_CONVERTER_REPORT_URL", raising=False)
    monkeypatch.setenv("SPACE_ID", "me/converter")
    assert render.report_base_url("a/b") == "https://huggingface.co/spaces/me/converter/discussions/new"
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.local")
    assert render.report_base_url("a/b") == ""  # never the model's own discussions: the fault is ours
    monkeypatch.setenv("COREML_CONVERTER_REPORT_URL", "https://tracker/new")
    assert render.report_base_url("a/b") == "https://tracker/new"


def test_user_text_is_escaped():
    evil = "<script>alert(1)</script>"
    html = render.job_status(status(model=evil, message=evil)) + render.results(
        status(state="failed", error=evil, error_kind="internal")) + render.log_html(status(log=[evil]))
    assert "<script>" not in html and "&lt;script&gt;" in html
    summary = render.model_summary(ModelSummary(text=evil, error=evil))
    assert "<script>" not in summary


def test_model_summary_shows_architecture_size_and_tasks_or_why_not():
    ok = ModelSummary(text="alice/tiny-bert", repo_id="alice/tiny-bert", model_type="bert",
                      architectures=["BertForMaskedLM"], pipeline_tag="fill-mask", parameters=38944,
                      weight_bytes=160304, tasks=["feature-extraction", "fill-mask"], default_task="fill-mask")
    html = render.model_summary(ok)
    assert 'data-model-ok="yes"' in html and "bert (BertForMaskedLM)" in html
    assert "38.9 k parameters" in html and "160.3 kB" in html and "feature-extraction, fill-mask" in html
    bad = ModelSummary(text="alice/x", repo_id="alice/x", model_type="wav2vec2", architectures=["Wav2Vec2ForCTC"],
                       error="The architecture 'wav2vec2' cannot be converted: it is a speech or audio model.")
    html = render.model_summary(bad)
    assert 'data-model-ok="no"' in html and "cannot be converted" in html and "wav2vec2" in html
    assert 'data-role="request"' not in html  # no tracker configured: no request link

    html = render.model_summary(bad, "https://github.com/o/r/issues/new")
    href = html.split('data-role="request"><a href="')[1].split('"')[0].replace("&amp;", "&")
    query = parse_qs(urlparse(href).query)
    assert query["title"] == ["Support the wav2vec2 architecture"] and "alice/x" in query["body"][0]
    pickle = ModelSummary(text="alice/p", repo_id="alice/p", model_type="bert", error="weights only in pickle files")
    assert 'data-role="request"' not in render.model_summary(pickle, "https://github.com/o/r/issues/new")


def test_model_summary_names_the_family_and_marks_an_unlisted_architecture():
    fields = dict(text="alice/m", repo_id="alice/m", architectures=["X"], tasks=["text-generation"])
    tested = render.model_summary(ModelSummary(**fields, model_type="llama", family="decoder", tested=True))
    assert 'data-role="family">Family: decoder (tested)' in tested and "not in the tested list" not in tested
    untested = render.model_summary(ModelSummary(**fields, model_type="olmo2", family="decoder", tested=False))
    assert 'data-tested="no"' in untested and "architecture not in the tested list" in untested
    assert "validation decides" in untested


@pytest.mark.parametrize("value, metric, text", [
    (1.219e-06, "max_abs_diff", "1.22e-06"), (90.836601, "psnr_db", "90.84"), (0.95, "top1_agreement", "95.0%"),
    (float("inf"), "max_abs_diff", "inf"), (0.0, "max_abs_diff", "0"), (None, None, ""), (True, None, "yes"),
])
def test_numbers(value, metric, text):
    assert render.number(value, metric) == text


def test_durations_sizes_and_counts():
    assert render.duration(5) == "5 s" and render.duration(125) == "2 min 05 s" and render.duration(3725) == "1 h 02 min"
    assert render.count(3_390_336) == "3.4 M" and render.size(13_600_000) == "13.6 MB" and render.count(None) == "unknown"


def test_my_jobs_rows():
    rows = render.job_rows([
        status(state="finished", stage="done", links={"repo": "http://hub/alice/tiny-bert-coreml"}),
        status(state="finished", stage="done", links={"repo": "http://hub/a/b", "pull_request": "http://hub/a/b/discussions/2"}),
        status(state="failed", error="The model [x] is too large.\nTry a smaller one."),
        status(state="running", stage="validate", percent=72),
        status(state="failed", error="x " * 200, error_kind="internal"),
        status(state="failed", stage="validate", error="drifts", error_kind="validation", validation=VALIDATION,
               report={"options": {"precision": "float16"}}),
    ])
    assert rows[0] == ["2026-11-24 12:00 UTC", "alice/tiny-bert", "fill-mask", "Done",
                       "[alice/tiny-bert-coreml](http://hub/alice/tiny-bert-coreml)"]
    assert rows[5][2] == "fill-mask · float16"  # the options it was asked for tell it apart
    assert rows[1][4] == "[pull request](http://hub/a/b/discussions/2)"
    assert rows[2][3] == "Failed" and rows[2][4] == "The model (x) is too large. Try a smaller one."
    assert rows[3][4] == "Validate"  # the stage: the live percent is the job view's
    assert rows[4][4].endswith("x …") and len(rows[4][4]) <= 120  # cut between words
    assert rows[5][4] == "Failed validation in float16 only: convert in float32"


def test_workers_note():
    assert "No worker is connected" in render.workers_note([])
    assert "No worker" not in render.workers_note([], starting=True) and "starting" in render.workers_note([], starting=True)
    note = render.workers_note([{"os": "Linux", "queues": "default"}, {"os": "Darwin", "queues": "macos,default"}])
    assert "1 Linux worker" in note and "1 Mac runner" in note
    assert "no Mac runner" in render.workers_note([{"os": "Linux", "queues": "default"}])


def test_signed_in():
    assert 'data-signed-in="yes"' in render.signed_in("alice") and "alice" in render.signed_in("alice")
    assert 'data-signed-in="no"' in render.signed_in(None)


# ---------------------------------------------------------------------- compression and program


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """A tiny llama (hidden 64: its MLP layers pass coremltools' 2048-element threshold)
    converted with int8 and validated, once: its report as a job's status carries it (JSON)."""
    import json

    from converters.export import convert
    from converters.options import ConversionOptions
    from tests.models import build_model

    root = tmp_path_factory.mktemp("render-int8")
    folder = build_model("llama", root / "llama", hidden_size=64, intermediate_size=128)
    options = ConversionOptions.from_strings(quantize="int8", sequence_length="32", minimum_deployment_target="iOS18")
    return json.loads(json.dumps(convert(str(folder), "text-generation", root / "out", options).report_json))


def finished(report: dict) -> dict:
    return status(state="finished", stage="done", percent=100, pushed=True, report=report,
                  validation=report["validation"], links={"repo": "http://hub/alice/tiny-llama-coreml"})


def test_the_compression_section_shows_scheme_sizes_and_quality_against_its_bar(compressed):
    from converters.wording import megabytes

    entry = compressed["packages"][0]["compression"]
    html = render.results(finished(compressed))
    assert html.index('data-role="compression"') < html.index('data-role="validation-table"')
    section = html.split('data-role="compression"', 1)[1].split('<div class="cm-validation">', 1)[0]
    assert "<h4>Compression: int8</h4>" in section
    row = section.split('<tr data-package="model" data-scheme="int8">', 1)[1].split("</tr>", 1)[0]
    assert "linear symmetric quantization" in row and "per channel" in row
    assert f">{render.number(entry['bits_per_weight'])}<" in row
    size = f"{megabytes(entry['size_before_bytes'])} → {megabytes(entry['size_after_bytes'])} ({entry['size_ratio']:.2f}×)"
    assert size in row and entry["size_ratio"] < 0.85
    assert f"{entry['weights_compressed']} compressed" in row and "0 left float" in row

    quality = compressed["validation"]["quality"]
    table = section.split('data-role="quality-table"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr data-passed=") == 2  # one row per mode
    for mode in ("fp32", "fp16"):
        numbers = quality["packages"]["model"][mode]
        line = table.split(f'data-mode="{mode}"', 1)[1].split("</tr>", 1)[0]
        assert f"{render.number(numbers['top1_agreement'], 'top1_agreement')} (bar ≥ 90.0%)" in line
        assert f"{render.number(numbers['mean_kl_divergence'])} (bar ≤ 0.04879)" in line
        assert f"{render.number(numbers['perplexity_ratio'])} (bar ≤ 1.05)" in line
        assert f"PyTorch {numbers['perplexity_pytorch']:,.2f} → package {numbers['perplexity_package']:,.2f}" in line
        assert line.count("cm-pass") == 3
    assert render.MODES["fp16"] in table
    assert f"The bar: {render.escape(quality['bar']['reason'])}." in section


def test_a_quality_number_past_its_bar_is_marked(compressed):
    import copy

    report = copy.deepcopy(compressed)
    report["validation"]["quality"]["packages"]["model"]["fp16"]["perplexity_ratio"] = 1.2
    table = render.quality_table(report["validation"])
    fp16 = table.split('data-mode="fp16"', 1)[1].split("</tr>", 1)[0]
    assert 'data-passed="no"' in table.split('data-mode="fp16"', 1)[0][-30:]
    assert ('<td class="cm-num" data-metric="perplexity_ratio" data-passed="no">1.2 (bar ≤ 1.05) '
            "<span class=cm-fail>✗</span>") in fp16


def test_where_the_model_can_run_says_which_unit_the_scheme_suits(compressed):
    from converters import wording

    html = render.compute_units_section(compressed["validation"], compressed)
    notes = html.split('data-role="placement-notes"', 1)[1]
    assert '<li data-scheme="int8">' in notes and "Neural Engine" in notes.split("</li>")[0]
    assert render.escape(wording.DECOMPRESSION_NOTE) in notes
    assert 'data-role="compute-units"' in html
    # float packages: no note; a compressed package without a compute-units analysis: the note alone
    assert "placement-notes" not in render.compute_units_section(compressed["validation"], _float(compressed))
    alone = render.compute_units_section({}, compressed)
    assert "Where the model can run" in alone and "placement-notes" in alone and "compute-units" not in alone


def _float(report: dict) -> dict:
    """The same report as an uncompressed conversion's."""
    packages = [{k: v for k, v in p.items() if k != "compression"} for p in report["packages"]]
    validation = {k: v for k, v in report["validation"].items() if k != "quality"}
    return {**report, "packages": packages, "validation": validation, "options": {**report["options"], "quantize": "none"}}


PROGRAM = {"fused_attention": True, "stateful": False, "weight_bits": 4.52,
           "op_counts": {"linear": 15, "constexpr_blockwise_shift_scale": 8, "scaled_dot_product_attention": 2,
                         "mul": 27, "add": 18, "reshape": 12, "softmax": 2, "gather": 1, "silu": 2, "cast": 5}}


def test_the_program_section_when_the_engine_reports_it(compressed):
    report = {**compressed, "packages": [{**compressed["packages"][0], "program": PROGRAM}]}
    html = render.results(finished(report))
    program = html.split('data-role="program"', 1)[1]
    assert "<td data-role='fused-attention'>yes</td>" in program and "<td data-role='stateful'>no</td>" in program
    assert ">4.52<" in program
    assert ("mul 27, add 18, linear 15, reshape 12, constexpr_blockwise_shift_scale 8, cast 5, "
            "scaled_dot_product_attention 2, silu 2, …") in program  # the 8 most frequent
    older = {**compressed, "packages": [{k: v for k, v in compressed["packages"][0].items() if k != "program"}]}
    assert 'data-role="program"' not in render.results(finished(older))  # absent (an older report): skipped


def test_a_core_ai_packages_program_says_only_what_an_aimodel_has(compressed):
    """Issue 24's walk-through: a Core AI job's Program table said "Fused attention: no" and an
    empty "Weight bits", Core ML's words: an .aimodel has neither (formats.Format.program_facts)."""
    from converters.formats import CORE_AI, CORE_ML

    aimodel = {"fused_attention": False, "stateful": True, "weight_bits": None, "op_counts": {"matmul": 3}, "format": "aimodel"}
    package = {**compressed["packages"][0], "part": "model"}
    alone = render.program_section({"packages": [{**package, "format": CORE_AI.name, "program": aimodel}]})
    assert "Fused attention" not in alone and "Weight bits" not in alone
    assert "<td data-role='stateful'>yes</td>" in alone and "matmul 3" in alone
    both = render.program_section({"packages": [{**package, "format": CORE_ML.name, "program": PROGRAM},
                                                {**package, "format": CORE_AI.name, "program": aimodel}]})
    assert "<th>Fused attention</th>" in both and "<th>Weight bits</th>" in both
    assert "model (Core ML)" in both and "model (Core AI)" in both and both.count(">—<") == 2  # the .aimodel's two


def test_an_uncompressed_package_has_no_compression_section_but_its_program(compressed):
    report = _float(compressed)
    html = render.results(finished(report))
    assert 'data-role="compression"' not in html and "placement-notes" not in html
    assert 'data-role="compute-units"' in html
    with_program = {**report, "packages": [{**report["packages"][0], "program": PROGRAM}]}
    assert 'data-role="program"' in render.results(finished(with_program))


def test_compression_text_is_escaped(compressed):
    evil = "<script>alert(1)</script>"
    package = compressed["packages"][0]
    report = {**compressed, "packages": [{**package, "part": evil, "program": {**PROGRAM, "op_counts": {evil: 1}},
                                          "compression": {**package["compression"], "granularity": evil}}]}
    html = render.results(finished(report))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_try_it_is_offered_for_pushed_text_jobs_and_shows_both_sides():
    llm = status(state="finished", stage="done", pushed=True, task="text-generation",
                 report={"task": "text-generation", "packages": [{"inputs": [{"name": "inputIds"}]}]})
    assert render.try_kind(llm) == "generate"
    assert render.try_kind(replace(llm, pushed=False)) is None and render.try_kind(replace(llm, state="failed")) is None
    vision = replace(llm, report={"task": "image-classification", "packages": [{"inputs": [{"name": "image"}]}]})
    assert render.try_kind(vision) == "classify-image"
    segmentation = replace(llm, report={"task": "semantic-segmentation", "packages": [{"inputs": [{"name": "image"}]}]})
    assert render.try_kind(segmentation) == "segment"  # the mask drawn beside PyTorch's (converters/try_image.segment)
    features = replace(llm, report={"task": "feature-extraction", "packages": [{"inputs": [{"name": "image"}]}]})
    assert render.try_kind(features) is None
    assert render.try_unavailable(llm) is None
    weights_only = replace(llm, report={**llm.report, "tokenizer_missing": "the repo has no tokenizer files"})
    note = render.try_unavailable(weights_only)
    assert "can&#x27;t be tried here: the repo has no tokenizer files" in note and "its base model" in note
    html = render.try_result({
        "kind": "generate", "mode": "fp16", "prompt": "Hi <b>", "prompt_tokens": 3, "matching_tokens": 4,
        "package": {"text": " there", "tokens": 5, "tokens_per_second": 12.5, "stopped": "length"},
        "pytorch": {"text": " there friend", "tokens": 8, "tokens_per_second": 40.0}})
    assert "Package (fp16 emulation)" in html and "12.5 tokens/s" in html and "40 tokens/s" in html
    assert "The first 4 of 8 tokens are the same." in html and "stopped when full (8 tokens)" in html
    assert "<b>" not in html  # the prompt is escaped
    scores = render.try_result({"kind": "classify", "mode": "fp32",
                                "package": {"label": "POSITIVE", "scores": [["POSITIVE", 0.98]]},
                                "pytorch": {"label": "POSITIVE", "scores": [["POSITIVE", 0.981]]}})
    assert "Package (exact fp32)" in scores and "POSITIVE 98.0%" in scores


def test_jobs_of_one_model_can_be_told_apart_everywhere_they_are_named():
    def job(**options):
        return status(model="HuggingFaceTB/SmolLM2-135M", task="text-generation",
                      options={"format": "coreml", "precision": "float16", "quantize": "none", "kv_cache": "none",
                               "minimum_deployment_target": "iOS17", **options})

    plain, stateful = job(), job(kv_cache="stateful", minimum_deployment_target="iOS18")
    int4 = job(quantize="int4", kv_cache="stateful", minimum_deployment_target="iOS18")
    coreai = job(format="coreai", precision="float32")
    assert render.job_identity(plain) == "SmolLM2-135M · text-generation · float16 · iOS17"
    assert render.job_identity(int4) == "SmolLM2-135M · text-generation · int4 · stateful · iOS18"
    assert render.job_identity(coreai) == "SmolLM2-135M · text-generation · float32 · Core AI"
    names = [render.job_identity(j) for j in (plain, stateful, int4, coreai)]
    assert len(set(names)) == 4
    assert "int4 · stateful · iOS18" in render.job_status(int4) and "int4 · stateful" in render.job_rows([int4])[0][2]
    assert render.job_variant(status(task="fill-mask", options={})) == "fill-mask"  # an older job: what is known


def test_messages_in_the_page_never_name_command_line_flags():
    html = render.message("Drop --kv-cache stateful, or set --minimum-target iOS18 and --group-size auto; see --hub-name.", "error")
    assert "--" not in html
    assert "Drop KV cache stateful, or set Minimum deployment target iOS18 and Group size auto; see the tokenizer repo." in html


def test_the_engines_refusals_speak_of_options_by_name():
    """Shared with the CLI, so they name options as the form does, not by flag."""
    from converters.configs import config_class_for
    from converters.errors import UserInputError
    from converters.options import ConversionOptions
    from converters.plan import check_request
    from tests.models import MODELS

    refusals = []
    for model_type, options in (("bert", {"kv_cache": "stateful", "minimum_deployment_target": "iOS18"}),
                                ("bert", {"quantize": "lut6", "group_size": "4"}),
                                ("llama", {"kv_cache": "stateful", "minimum_deployment_target": "iOS18"})):
        task = "fill-mask" if model_type == "bert" or "quantize" in options else "text-classification"
        cfg = config_class_for(model_type)(MODELS[model_type][0](), task, ConversionOptions.from_strings(**options))
        with pytest.raises(UserInputError) as refused:
            check_request(cfg)  # every refusal the engine decides before any work
        refusals.append(str(refused.value))
    assert all("--" not in text for text in refusals), refusals
    assert "Set the KV cache to none." in refusals[0] and "Set the KV cache to none." in refusals[2]


def test_a_push_refused_after_the_work_says_the_model_converted():
    failed = status(state="failed", stage="push", error_kind="user_input", validation={"passed": True, "checks": []},
                    error="Your token may not create or write to alice/x: it is read-only.")
    html = render.outcome(failed)
    assert "The model converted and passed validation, but it could not be pushed." in html
    assert "cannot be converted as given" not in html and "(during:" not in html


def test_a_push_refused_after_the_work_offers_the_kept_package():
    failed = status(state="failed", stage="push", error_kind="user_input", validation={"passed": True, "checks": []},
                    error="Your token may not create or write to alice/tiny-bert-coreml: it is read-only.",
                    kept_package={"file": "tiny-bert-coreml.zip", "size_bytes": 2_500_000,
                                  "expires_at": "2026-11-25T12:00:00+00:00"})
    html = render.outcome(failed)
    assert ("Your model converted and passed its checks, but it could not be pushed to alice/tiny-bert-coreml."
            in html and 'data-kept="yes"' in html and "it is read-only" in html)
    assert ("Download the package below (2.5 MB zip, kept until 2026-11-25 12:00 UTC), or fix the access and "
            "convert again.") in html
    assert "cannot be converted as given" not in html and "--" not in html and "Report this problem" not in html


def test_try_says_what_runs_and_what_the_numbers_mean():
    status_ = JobStatus(job_id="cv-1", options={"format": "coreai"})
    assert "runs the pushed .aimodel in Apple's Core AI runtime" in render.try_note("generate", status_)
    # swift-transformers loads .mlpackages: a Core AI try does not say it drives the .aimodel (walk-through, issue 24).
    assert "swift-transformers" not in render.try_note("generate", status_)
    assert "continues your prompt greedily next to the PyTorch model" in render.try_note("generate", status_)
    assert "driven as swift-transformers" in render.try_note("generate", JobStatus(job_id="cv-1"))
    both = render.try_note("generate", JobStatus(job_id="cv-1", options={"format": "both"}))
    assert "runs the pushed Core ML package (the .aimodel beside it was validated, not tried here)" in both
    assert "reference executor" in render.try_note("generate", JobStatus(job_id="cv-1", options={"format": "coreml"}))
    html = render.try_result({"kind": "similarity", "mode": "fp16", "package": {"similarity": 0.81, "seconds": 0.1},
                              "pytorch": {"similarity": 0.8102, "seconds": 0.2}}, {"text": "A cat sat.", "other": "A dog\nran."})
    assert "«<span class=\"cm-text\">A cat sat.</span>» and «<span class=\"cm-text\">A dog⏎ran.</span>»" in html
    assert "1 means the same meaning" in html
    generated = render.try_result({"kind": "generate", "mode": "fp16", "prompt": "Hi", "matching_tokens": 2,
                                   "package": {"text": " a\nb", "tokens": 2}, "pytorch": {"text": " a\nb", "tokens": 2}})
    assert "a⏎b" in generated  # a newline shown, not breaking the row


def test_a_passed_packages_size_is_shown_compressed_or_not():
    done = status(state="finished", stage="done", pushed=True, links={"repo": "http://hub/a/b"},
                  validation={"passed": True, "checks": []},
                  report={"packages": [{"path": "m.mlpackage", "size_bytes": 270_000_000}]})
    assert "Size: m.mlpackage: 270.0 MB." in render.outcome(done)


def test_a_try_says_what_it_waits_for_and_how_far_it_is():
    queued = render.try_waiting(TryStatus("queued", position=2, waiting_for="1 try ahead; a conversion is running on the only worker"))
    assert "Queued: 1 try ahead; a conversion is running on the only worker…" in queued
    assert "Queued (position 2)…" in render.try_waiting(TryStatus("queued", position=2))
    running = render.try_waiting(TryStatus("running", progress={"message": "The package: 9 of 16 tokens", "fraction": 0.6}))
    assert "The package: 9 of 16 tokens…" in running and 'value="0.600"' in running
    assert "Running the package and the PyTorch model…" in render.try_waiting(TryStatus("running"))


def test_a_finished_job_says_which_devices_its_package_fits():
    """The result: the package's memory while it runs (its size and cache as written) and a verdict
    per device class, in the page's words."""
    state = {"type": "state", "shape": [28, 1, 8, 4096, 128], "dtype": "float16", "flexibility": "fixed"}
    report = {"task": "text-generation",
              "options": {"kv_cache": "stateful", "sequence_length": "4096", "minimum_deployment_target": "iOS18"},
              "packages": [{"path": "m.mlpackage", "size_bytes": 3_600_000_000, "outputs": [{"name": "logits", "shape": []}],
                            "states": [{**state, "name": "keyCache"}, {**state, "name": "valueCache"}]}]}
    done = status(state="finished", stage="done", pushed=True, links={"repo": "http://hub/a/b"},
                  validation={"passed": True, "checks": []}, report=report)
    html = render.results(done)
    section = html[html.index('data-role="device-fit"'):]
    # the logits' range shape is not in the package's description: the activation is the attention over the cache
    assert ("Needs about 4.3 GB while it runs at 4 k context: weights 3.6 GB, KV cache 470 MB, "
            "largest activation 268 MB (estimated).") in section
    assert "too large for iPhone 15 (6 GB) at 4 k context" in section
    assert "fits iPhone 15 Pro and newer (8 GB) and iPad with M1 or later (8 GB) only with the increased memory" in section
    assert 'data-device="iphone-6" data-fit="too large"' in section and 'data-device="mac-16" data-fit="fits"' in section
    assert "larger than the Neural Engine takes (about 1 GB on iPhone and iPad, 2 GB on a Mac)" in section
    assert "--" not in section
    # nothing converted: no section
    assert 'data-role="device-fit"' not in render.results(status(state="failed", stage="convert", error="x", report=None))


def test_a_compressed_packages_checks_are_named_in_words():
    """Issue 24's walk-through: an int4 SmolLM2's table read "mean_kl_divergence",
    "perplexity_ratio" and "continuation_runs", a Core AI one "bundle_loads", where every other
    row reads words."""
    from converters.report import Check

    rows = [Check("model", "passage, 121 tokens (int4)", "logits", "fp32", "mean_kl_divergence", 0.27, 0.34, True),
            Check("model", "passage, 121 tokens (int4)", "logits", "fp32", "perplexity_ratio", 1.22, 1.4, True),
            Check("model", "continuation, 8 tokens", "logits", "fp32", "continuation_runs", 1.0, 1.0, True, True),
            Check("model", "metadata.json, Apple's loader rules", "metadata.json", "coreai", "bundle_loads", 1.0, 1.0,
                  True, True)]
    html = render.validation_section({"passed": True, "checks": [row.to_dict() for row in rows]})
    for key in ("mean_kl_divergence", "perplexity_ratio", "continuation_runs", "bundle_loads"):
        assert key not in html
    assert "mean KL divergence (nats)" in html and "perplexity ratio" in html and "continuation ran" in html
    assert "the bundle loads" in html


def test_the_job_views_device_fit_uses_the_models_config_as_the_form_does():
    """Issue 24's walk-through: a stateful SmolLM2's job view said "342 MB … largest activation
    25 MB" where the form had said 518 MB: its logits have no shape in the report, so the page
    left them out. The job's report now carries the model's config; the page uses it."""
    from converters import device_fit
    from converters.options import ConversionOptions

    config = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
              "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192}
    state = {"dtype": "float16", "shape": [30, 1, 3, 2048, 64]}
    report = {"task": "text-generation",
              "options": {"kv_cache": "stateful", "precision": "float16", "sequence_length": "auto",
                          "minimum_deployment_target": "iOS18"},
              "packages": [{"path": "model.mlpackage", "size_bytes": 270_000_000, "format": "coreml",
                            "states": [{"name": "keyCache", **state}, {"name": "valueCache", **state}],
                            "outputs": [{"name": "logits", "dtype": "float16", "shape": []}]}]}
    options = ConversionOptions.from_strings(kv_cache="stateful", minimum_deployment_target="iOS18")
    form = device_fit.from_config(config, "text-generation", 270_000_000, options)
    with_config = render.device_fit_section({**report, "source_config": config})
    assert device_fit.summary(form) in with_config  # the same words as before Convert
    assert "largest activation 201 MB" in with_config
    assert "largest activation 201 MB" not in render.device_fit_section(report)  # what the page said without it


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="  # 1×1


def test_a_photo_or_a_clip_try_shows_both_sides_drawn():
    """Depth: the photo and both maps as images, with how far apart they are; detection: the
    photo with the boxes and each side's detections; labels: both sides' probabilities; a clip:
    both transcripts and their token ids. A photo kind needs no tokenizer: nothing says it is missing."""
    depth_job = status(state="finished", stage="done", pushed=True, task="depth-estimation",
                       report={"task": "depth-estimation", "tokenizer_missing": "the repo has no tokenizer files",
                               "packages": [{"inputs": [{"name": "image"}]}]})
    assert render.try_kind(depth_job) == "depth" and render.try_unavailable(depth_job) is None
    assert "depth map of your photo" in render.try_note("depth", depth_job)
    depth = render.try_result({"kind": "depth", "mode": "fp16", "photo": PNG, "psnr_db": 61.234, "relative_error": 0.00042,
                               "package": {"map": PNG, "seconds": 0.5}, "pytorch": {"map": PNG, "seconds": 0.1}})
    assert depth.count(f"src='data:image/png;base64,{PNG}'") == 3
    assert "data-role='package-map'" in depth and "data-role='pytorch-map'" in depth
    assert "PSNR 61.2 dB, mean relative error 0.04%" in depth and "Package (fp16 emulation)" in depth
    detect = render.try_result({"kind": "detect", "mode": "fp32", "threshold": 0.5, "drawn": PNG,
                                "package": {"detections": [{"label": "<cat>", "score": 0.91, "box": [1, 2, 3, 4]}], "seconds": 1},
                                "pytorch": {"detections": [], "seconds": 1}})
    assert "data-role='drawn'" in detect and "&lt;cat&gt; 0.91" in detect and "<cat>" not in detect
    assert "nothing above the threshold" in detect and "the package&#x27;s red, PyTorch&#x27;s blue" in detect
    labels = render.try_result({"kind": "zero-shot", "mode": "fp32", "probability": "softmax", "photo": PNG,
                                "package": {"label": "a dog", "probabilities": [["a dog", 0.7], ["a cat", 0.3]]},
                                "pytorch": {"label": "a dog", "probabilities": [["a cat", 0.31], ["a dog", 0.69]]}})
    rows = labels.split("<tbody>")[1]
    assert rows.index("a dog") < rows.index("a cat") and "70.0%" in rows and "69.0%" in rows and "31.0%" in rows
    assert "add up to 100%" in labels
    classes = render.try_result({"kind": "classify-image", "mode": "fp32", "photo": PNG,
                                 "package": {"label": "tabby", "scores": [["tabby", 0.6]]},
                                 "pytorch": {"label": "tabby", "scores": [["tabby", 0.61]]}})
    assert "tabby 60.0%" in classes and "tabby 61.0%" in classes
    speech_job = replace(depth_job, task="automatic-speech-recognition",
                         report={"task": "automatic-speech-recognition", "packages": [{"inputs": [{"name": "audio"}]}]})
    assert render.try_kind(speech_job) == "transcribe" and "WhisperKit" in render.try_note("transcribe", speech_job)
    heard = render.try_result({"kind": "transcribe", "mode": "fp16", "clip_seconds": 2.5, "matching_tokens": 1,
                               "package": {"text": "hello <world>", "token_ids": [5, 6], "seconds": 1.0},
                               "pytorch": {"text": "", "token_ids": [5, 7], "seconds": 0.5}})
    assert "hello &lt;world&gt;" in heard and "(no words: see the token ids)" in heard
    assert ">5 6</code>" in heard and ">5 7</code>" in heard and "The first 1 of 2 tokens are the same." in heard
    assert "<details open>" in heard  # a side without words: its token ids shown at once
    broken = render.try_result({"kind": "transcribe", "mode": "fp16", "clip_seconds": 1, "matching_tokens": 2,
                                "package": {"text": "\ufffd\ufffd\ufffd", "token_ids": [5, 6], "seconds": 1.0},
                                "pytorch": {"text": "hi there", "token_ids": [5, 6], "seconds": 0.5}})
    assert broken.count("(no words: see the token ids)") == 1 and "The same tokens." in broken
    readable = render.try_result({"kind": "transcribe", "mode": "fp16", "clip_seconds": 1, "matching_tokens": 2,
                                  "package": {"text": "hi there", "token_ids": [5, 6], "seconds": 1.0},
                                  "pytorch": {"text": "hi there", "token_ids": [5, 6], "seconds": 0.5}})
    assert "<details>" in readable and "<details open>" not in readable
