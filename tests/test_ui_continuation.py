"""The result view shows the continuation check (validation["continuation"]) next to the
validation table: per run "Core ML (fp16): «text» / PyTorch: «text»", matching or not,
model text escaped; nothing when the section is absent (older reports, other tasks, skipped)."""

from __future__ import annotations

import pytest

from converters import wording
from ui import render
from worker.states import JobState
from worker.status import JobStatus

CONTINUATION = {
    "prompt": "The capital of <France> is", "new_tokens": 8,
    "pytorch": {"text": " Paris.<script>alert(1)</script>", "token_ids": [1, 2]},
    "runs": [
        {"package": "model", "mode": "fp32", "driven_as": "swift-transformers, non-stateful",
         "text": " Paris.<script>alert(1)</script>", "token_ids": [1, 2], "matching_tokens": 8, "passed": True},
        {"package": "model", "mode": "fp16", "driven_as": "swift-transformers, non-stateful",
         "text": " Lyon\nand", "token_ids": [3], "matching_tokens": 3, "passed": False},
    ],
    "passed": False,
}
VALIDATION = {"passed": True, "kind": "reference executor", "message": "all checks passed", "checks": [
    {"package": "model", "output": "logits", "mode": "fp16", "metric": "psnr_db", "value": 60.0, "threshold": 30.0,
     "passed": True}], "continuation": CONTINUATION}


def finished(validation: dict) -> JobStatus:
    return JobStatus(job_id="cv-1", state=JobState.FINISHED, stage="done", percent=100, pushed=True,
                     validation=validation, report={"validation": validation}, model="alice/llama")


def test_each_run_next_to_pytorch_marked_matching_or_not():
    html = render.continuation_section(VALIDATION)
    assert 'data-role="continuation"' in html and 'data-passed="no"' in html
    assert "Continuation check: <span class=\"cm-fail\">failed</span>" in html
    # It says how far it went as counted: PyTorch wrote 2 tokens of the 8 allowed.
    assert "up to 8 new tokens; PyTorch wrote 2 and stopped at its end-of-text token" in html
    assert "«<span class=\"cm-text\">The capital of &lt;France&gt; is</span>»" in html
    fp32, fp16 = html.split("<li ")[1:]
    assert fp32.startswith('data-passed="yes"><strong>Core ML (fp32)</strong>: <span class="cm-pass">✓ the same 8 tokens')
    assert "/ <strong>PyTorch</strong>: «" in fp32 and "driven as swift-transformers, non-stateful" in fp32
    assert fp16.startswith('data-passed="no"><strong>Core ML (fp16)</strong>: <span class="cm-fail">✗ differs at token 4')
    assert "«<span class=\"cm-text\"> Lyon⏎and</span>»" in fp16  # a newline shown, the quotes on one line


def test_a_near_tie_says_what_was_counted_and_the_texts_part_where_they_part():
    """The issue's case: "✓ matching (5/6 tokens)" beside visibly different texts."""
    run = {"package": "model", "mode": "fp16", "text": " Paris. The answer is:", "token_ids": [1, 2, 3, 4, 5, 9],
           "matching_tokens": 5, "tokens_compared": 6, "passed": True, "same_text": " Paris. The",
           "own_rest": " answer is:", "pytorch_rest": " United States has",
           "note": "step 6: the package chose token 9, PyTorch 6, a near-tie"}
    html = render.continuation_section({"continuation": {**CONTINUATION, "runs": [run], "passed": True,
                                                         "pytorch": {"text": " Paris. The United States has",
                                                                     "token_ids": [1, 2, 3, 4, 5, 6, 7, 8]}}})
    assert "8 new tokens" in html and "up to" not in html
    assert "✓ the same first 5 tokens; at token 6 PyTorch itself was torn" in html
    assert "the texts after it are not compared" in html
    assert 'both: «<span class="cm-text"> Paris. The</span>»' in html
    assert 'then the package: «<span class="cm-text"> answer is:</span>» · PyTorch: «<span class="cm-text"> United States has</span>»' in html


def test_model_text_is_escaped():
    html = render.continuation_section(VALIDATION)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_it_sits_next_to_the_validation_table_in_the_results():
    html = render.results(finished(VALIDATION))
    table, continuation = html.index('data-role="validation-table"'), html.index('data-role="continuation"')
    assert table < continuation


@pytest.mark.parametrize("validation", [
    {"passed": True, "kind": "reference executor", "message": "ok", "checks": []},  # an older report
    {"passed": None, "skipped": True, "message": "validation was skipped", "checks": []},
    {"passed": True, "checks": [], "continuation": None},
    {"passed": True, "checks": [], "continuation": {"prompt": "x", "runs": []}},
])
def test_absent_or_empty_continuation_shows_nothing(validation):
    assert render.continuation_section(validation) == ""
    assert 'data-role="continuation"' not in render.results(finished(validation))


def test_labels():
    assert wording.continuation_label({"mode": "coreml-CPU_AND_NE"}) == "Core ML (CPU_AND_NE)"
    assert wording.continuation_label({"package": "decoder", "mode": "fp16"}) == "Core ML (decoder, fp16)"


def test_a_run_that_failed_or_was_not_checked_says_why():
    runs = [
        {"package": "model", "mode": "fp16", "driven_as": "swift-transformers (right-padded to 8)", "text": None,
         "token_ids": [], "matching_tokens": 0, "tokens_compared": 8, "passed": False, "error": "KeyError: <'inputIds'>"},
        {"package": "model", "mode": "fp32", "text": "", "token_ids": [], "matching_tokens": 0, "tokens_compared": 0,
         "passed": None, "note": "the 9-token prompt does not fit the package: continuation not checked"},
    ]
    html = render.continuation_section({"continuation": {**CONTINUATION, "runs": runs, "passed": None}})
    failed, unchecked = html.split("<li ")[1:]
    assert 'data-role="continuation" data-passed="unchecked"' in html and "not checked</span></h4>" in html
    assert "(no text)" in failed and "✗ could not be run" in failed
    assert "KeyError: &lt;&#x27;inputIds&#x27;&gt;" in failed
    assert unchecked.startswith('data-passed="unchecked"') and "not checked" in unchecked
    assert "does not fit the package" in unchecked


def test_the_continuation_check_row_reads_as_a_share():
    html = render.validation_section({"passed": True, "checks": [
        {"package": "model", "inputs": "continuation, 8 tokens", "output": "logits", "mode": "fp16",
         "metric": "continuation_match", "value": 1.0, "threshold": 1.0, "passed": True, "higher_is_better": True}]})
    assert "greedy continuation matching" in html and "100.0%" in html
