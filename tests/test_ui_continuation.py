"""The result view shows the continuation check (validation["continuation"]) next to the
validation table: per run "Core ML (fp16): «text» / PyTorch: «text»", matching or not,
model text escaped; nothing when the section is absent (older reports, other tasks, skipped)."""

from __future__ import annotations

import pytest

from ui import render

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


def finished(validation: dict) -> dict:
    return {"job_id": "cv-1", "state": "finished", "stage": "done", "percent": 100, "pushed": True,
            "validation": validation, "report": {"validation": validation}, "links": {}, "model": "alice/llama"}


def test_each_run_next_to_pytorch_marked_matching_or_not():
    html = render.continuation_section(VALIDATION)
    assert 'data-role="continuation"' in html and 'data-passed="no"' in html
    assert "Continuation check: <span class=\"cm-fail\">failed</span>" in html
    assert "for 8 tokens" in html and "«<span class=\"cm-text\">The capital of &lt;France&gt; is</span>»" in html
    fp32, fp16 = html.split("<li ")[1:]
    assert fp32.startswith('data-passed="yes"><strong>Core ML (fp32)</strong>: «')
    assert "/ <strong>PyTorch</strong>: «" in fp32 and "✓ matching" in fp32 and "(8/8 tokens)" in fp32
    assert "driven as swift-transformers, non-stateful" in fp32
    assert fp16.startswith('data-passed="no"><strong>Core ML (fp16)</strong>: «<span class="cm-text"> Lyon\nand</span>»')
    assert "✗ not matching" in fp16 and "(3/8 tokens)" in fp16


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
    assert render.continuation_label({"mode": "coreml-CPU_AND_NE"}) == "Core ML (CPU_AND_NE)"
    assert render.continuation_label({"package": "decoder", "mode": "fp16"}) == "Core ML (decoder, fp16)"


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
    assert "(no text)" in failed and "✗ not matching" in failed and "(0/8 tokens)" in failed
    assert "KeyError: &lt;&#x27;inputIds&#x27;&gt;" in failed
    assert unchecked.startswith('data-passed="unchecked"') and "not checked" in unchecked
    assert "does not fit the package" in unchecked


def test_the_continuation_check_row_reads_as_a_share():
    html = render.validation_section({"passed": True, "checks": [
        {"package": "model", "inputs": "continuation, 8 tokens", "output": "logits", "mode": "fp16",
         "metric": "continuation_match", "value": 1.0, "threshold": 1.0, "passed": True, "higher_is_better": True}]})
    assert "greedy continuation matching" in html and "100.0%" in html
