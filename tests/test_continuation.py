"""Continuation check: the package, driven exactly as swift-transformers drives it, greedily
continues a real prompt token by token as PyTorch does (converters/validation/continuation.py).

Unit tests check what each call sends with a fake executor that records its feeds; the
rest convert tiny models (length 32) and run the real reference executor."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from converters.export import convert
from converters.options import ConversionOptions
from converters.validation import continuation as cont

CONTEXT = 32
VOCAB = 16
OTHER = 15  # the argmax of every row a driver should not read


class RecordingExecutor:
    """Answers each call with logits whose row `read` has the next scripted token as argmax
    (every other row: OTHER), and records every feed, mode and state."""

    def __init__(self, script: list[int]):
        self.script, self.calls, self.states = list(script), [], 0

    def make_state(self):
        self.states += 1
        return {"keyCache": np.zeros(1), "valueCache": np.zeros(1)}

    def predict(self, feed, mode="fp32", state=None):
        self.calls.append({"feed": {k: np.array(v) for k, v in feed.items()}, "mode": mode, "state": state})
        ids = next(v for k, v in feed.items() if "id" in k.lower())
        logits = np.zeros((1, ids.shape[1], VOCAB), dtype=np.float16)
        logits[0, :, OTHER] = 1
        row = self._row(feed, ids)
        logits[0, row, OTHER] = 0
        logits[0, row, self.script[len(self.calls) - 1]] = 2
        return {"logits": logits}

    @staticmethod
    def _row(feed, ids):
        mask = next((v for k, v in feed.items() if k in ("attentionMask", "attention_mask") and v.ndim == 2), None)
        return int(mask.sum()) - 1 if mask is not None else ids.shape[1] - 1


def _tensor(name, shape, dtype="int32", **extra):
    return {"name": name, "type": "tensor", "shape": list(shape), "dtype": dtype, "flexibility": "fixed", **extra}


def _padded_layout(length=8, names=("inputIds", "attentionMask")):
    info = {"inputs": [_tensor(names[0], (1, length)), _tensor(names[1], (1, length))], "states": []}
    return cont.layout(info)


def _stateful_layout(context=CONTEXT, mask_max=None):
    mask_max = mask_max or context
    info = {
        "inputs": [
            _tensor("inputIds", (1, 1), flexibility="range", ranges=[[1, 1], [1, context]]),
            _tensor("causalMask", (1, 1, 1, 1), "float16", flexibility="range", ranges=[[1, 1], [1, 1], [1, mask_max], [1, mask_max]]),
        ],
        "states": [{"name": n, "type": "state", "shape": [2, 1, 2, context, 8], "dtype": "float16"} for n in ("keyCache", "valueCache")],
    }
    return cont.layout(info)


# ----------------------------------------------------------------- feeds, with a fake executor


def test_padded_driving_right_pads_the_whole_sequence_every_step():
    executor = RecordingExecutor([7, 8, 9, 10])
    run = cont.drive(executor, "fp16", _padded_layout(8), [3, 4, 5], 4, eos={2})
    assert run.tokens == [7, 8, 9, 10] and run.stopped == "new_tokens"
    sequence = [3, 4, 5, 7, 8, 9, 10]
    for step, call in enumerate(executor.calls):
        count = 3 + step
        assert set(call["feed"]) == {"inputIds", "attentionMask"}
        ids, mask = call["feed"]["inputIds"], call["feed"]["attentionMask"]
        assert ids.dtype == np.int32 and ids.shape == (1, 8) and mask.dtype == np.int32 and mask.shape == (1, 8)
        assert ids[0].tolist() == sequence[:count] + [0] * (8 - count)
        assert mask[0].tolist() == [1] * count + [0] * (8 - count)
        assert call["mode"] == "fp16" and call["state"] is None


def test_padded_driving_stops_at_eos_and_at_the_length():
    executor = RecordingExecutor([7, 2, 9])
    run = cont.drive(executor, "fp32", _padded_layout(8), [3, 4, 5], 8, eos={2})
    assert (run.tokens, run.stopped, len(executor.calls)) == ([7, 2], "eos", 2)

    executor = RecordingExecutor([7, 8, 9, 10, 11])
    run = cont.drive(executor, "fp32", _padded_layout(5), [3, 4, 5], 8, eos={2})
    # 3 + 2 tokens fill L = 5; the third new token is read from that full call, a fourth would not fit.
    assert (run.tokens, run.stopped, len(executor.calls)) == ([7, 8, 9], "length", 3)


def test_driving_reports_each_token_as_it_is_written():
    counts = []
    run = cont.drive(RecordingExecutor([7, 8, 2]), "fp32", _padded_layout(8), [3, 4], 8, eos={2}, on_token=counts.append)
    assert run.stopped == "eos" and counts == [1, 2, 3]  # the EOS token counted too
    counts.clear()
    cont.drive(RecordingExecutor([7, 8, 9]), "fp32", _stateful_layout(), [3, 4], 3, eos=set(), on_token=counts.append)
    assert counts == [1, 2, 3]


def test_exporters_names_are_driven_by_the_package_input_names():
    executor = RecordingExecutor([7])
    layout = _padded_layout(6, ("input_ids", "attention_mask"))
    cont.drive(executor, "fp32", layout, [3, 4], 1, eos=set())
    assert set(executor.calls[0]["feed"]) == {"input_ids", "attention_mask"}
    assert cont.driven_as(layout) == "swift-transformers (right-padded to 6 with attention_mask)"


class RuleExecutor:
    """A padded package as a rule: each row's argmax is `rule(ids up to and including that
    row)` (a causal model), or, with `sees_all`, of the whole padded call (a package whose
    rows see later positions). Records the calls' feeds."""

    def __init__(self, rule, sees_all=False):
        self.rule, self.sees_all, self.calls = rule, sees_all, []

    def predict(self, feed, mode="fp32", state=None):
        self.calls.append({k: np.array(v) for k, v in feed.items()})
        ids = feed["inputIds"][0].tolist()
        logits = np.zeros((1, len(ids), VOCAB), dtype=np.float32)
        for row in range(len(ids)):
            logits[0, row, self.rule(ids if self.sees_all else ids[:row + 1])] = 1
        return {"logits": logits}


def _next_of(prefix):  # a causal rule with no fixed point: the tokens keep changing
    return (3 * sum(prefix) + len(prefix)) % (VOCAB - 3) + 3


def _call_by_call(rule, prompt, new_tokens, length=16, eos=frozenset({2}), sees_all=False):
    executor = RuleExecutor(rule, sees_all)
    return cont.drive(executor, "fp32", _padded_layout(length), prompt, new_tokens, set(eos)), executor.calls


def test_a_padded_package_reads_ahead_along_pytorchs_tokens_in_two_calls():
    prompt = [3, 4, 5]
    expected, calls = _call_by_call(_next_of, prompt, 6)
    assert len(calls) == 6
    executor, counts = RuleExecutor(_next_of), []
    run = cont.drive(executor, "fp32", _padded_layout(16), prompt, 6, {2}, draft=expected.tokens, on_token=counts.append)
    assert (run.tokens, run.stopped) == (expected.tokens, expected.stopped) and counts == [1, 2, 3, 4, 5, 6]
    # The first call and the app's last call, byte for byte: every other answer is a row of the last.
    assert len(executor.calls) == 2
    for got, sent in zip(executor.calls, (calls[0], calls[-1])):
        assert set(got) == set(sent) and all(np.array_equal(got[k], sent[k]) and got[k].dtype == sent[k].dtype for k in got)


def test_reading_ahead_goes_on_call_by_call_where_the_package_leaves_the_draft():
    prompt = [3, 4, 5]
    expected, _ = _call_by_call(_next_of, prompt, 7)
    draft = list(expected.tokens)
    draft[3] = (draft[3] + 1 - 3) % (VOCAB - 3) + 3  # PyTorch wrote another 4th token
    executor = RuleExecutor(_next_of)
    run = cont.drive(executor, "fp32", _padded_layout(16), prompt, 7, {2}, draft=draft)
    assert run.tokens == expected.tokens
    assert len(executor.calls) == 2 + 3  # the first, the read-ahead (tokens 2-4), then tokens 5, 6 and 7 one call each
    first_token_only = cont.drive(RuleExecutor(_next_of), "fp32", _padded_layout(16), prompt, 7, {2}, draft=[9, *draft[1:]])
    assert first_token_only.tokens == expected.tokens


def test_reading_ahead_stops_at_eos_and_at_the_length_as_call_by_call_does():
    def ends(prefix):  # EOS once the sequence is 7 long
        return 2 if len(prefix) >= 7 else _next_of(prefix)

    for rule, length in ((ends, 16), (_next_of, 7)):
        expected, calls = _call_by_call(rule, [3, 4, 5], 10, length=length)
        executor = RuleExecutor(rule)
        run = cont.drive(executor, "fp32", _padded_layout(length), [3, 4, 5], 10, {2}, draft=expected.tokens + [5, 6])
        assert (run.tokens, run.stopped) == (expected.tokens, expected.stopped) and len(executor.calls) == 2
    assert {expected.stopped for expected in (_call_by_call(ends, [3, 4, 5], 10)[0], _call_by_call(_next_of, [3, 4, 5], 10, length=7)[0])} == {"eos", "length"}


def test_a_package_whose_rows_see_later_positions_is_driven_call_by_call():
    prompt = [3, 4, 5]

    def whole(ids):  # the padding, or the draft, changes every row
        return (sum(ids) + 5 * sum(1 for i in ids if i)) % (VOCAB - 3) + 3

    expected, calls = _call_by_call(whole, prompt, 5, sees_all=True)
    draft = [(t + 1 - 3) % (VOCAB - 3) + 3 for t in expected.tokens]  # the first row differs when the draft is seen
    draft[0] = expected.tokens[0]
    executor = RuleExecutor(whole, sees_all=True)
    run = cont.drive(executor, "fp32", _padded_layout(16), prompt, 5, {2}, draft=draft)
    assert run.tokens == expected.tokens and len(executor.calls) == 1 + 1 + 4  # the check's call is extra, then one per token


def test_stateful_swift_driving_prefills_then_sends_one_token_with_zero_masks():
    executor = RecordingExecutor([7, 8, 9])
    layout = _stateful_layout()
    run = cont.drive(executor, "fp16", layout, [3, 4, 5], 3, eos={2})
    assert run.tokens == [7, 8, 9] and executor.states == 1
    state = executor.calls[0]["state"]
    expected = [([3, 4, 5], 3 + 1), ([7], 4 + 1), ([8], 5 + 1)]  # (ids, T + 1), T tokens so far
    for call, (ids, mask_length) in zip(executor.calls, expected):
        feed = call["feed"]
        assert set(feed) == {"inputIds", "causalMask"} and call["state"] is state
        assert feed["inputIds"].dtype == np.int32 and feed["inputIds"].tolist() == [ids]
        assert feed["causalMask"].dtype == np.float16 and feed["causalMask"].shape == (1, 1, 1, mask_length)
        assert not feed["causalMask"].any()
    assert "causalMask zeros [1,1,1,T+1]" in cont.driven_as(layout)


def test_stateful_explicit_driving_sends_apples_triangle_then_zeros():
    executor = RecordingExecutor([7, 8])
    run = cont.drive(executor, "fp32", _stateful_layout(), [3, 4, 5], 2, eos={2}, pattern=cont.EXPLICIT)
    assert run.tokens == [7, 8]
    prefill, extend = (call["feed"]["causalMask"] for call in executor.calls)
    assert prefill.shape == (1, 1, 3, 3)
    assert np.array_equal(np.isneginf(prefill[0, 0]), np.triu(np.ones((3, 3), bool), 1))
    assert not prefill[0, 0][np.tril(np.ones((3, 3), bool))].any()
    assert extend.shape == (1, 1, 1, 4) and not extend.any()
    assert executor.calls[1]["feed"]["inputIds"].tolist() == [[7]]


def test_stateful_driving_stops_before_the_mask_outgrows_the_package():
    executor = RecordingExecutor(list(range(3, 12)))
    run = cont.drive(executor, "fp32", _stateful_layout(context=8), [3, 4, 5], 8, eos=set())
    # swift's mask is one longer than the tokens: calls with masks 4..8 give 5 tokens.
    assert (len(run.tokens), run.stopped) == (5, "length")
    assert executor.calls[-1]["feed"]["causalMask"].shape == (1, 1, 1, 8)


def test_layout_reads_lengths_as_swift_transformers_does():
    enumerated = cont.layout({"inputs": [_tensor("inputIds", (1, 32), flexibility="enumerated", shapes=[[1, 32], [1, 16]])], "states": []})
    assert enumerated.length == 32 and enumerated.masks == []
    ranged = cont.layout({"inputs": [_tensor("inputIds", (1, 4), flexibility="range", ranges=[[1, 1], [4, 64]])], "states": []})
    assert ranged.length == 64
    assert cont.layout({"inputs": [_tensor("pixel_values", (1, 3, 8, 8), "float32")], "states": []}) is None


def _reference(tokens, logits):
    return cont.Reference("p", [3, 4], {2}, tokens, [np.asarray(row, dtype=np.float32) for row in logits])


def test_compare_is_exact_except_for_a_near_tie_in_pytorch():
    rows = [[0, 0, 0, 5, 0], [0, 0, 0, 0, 5], [0, 0, 0, 5, 4.99]]
    ref = _reference([3, 4, 3], rows)
    assert cont.compare(ref, [3, 4, 3], atol=0.01)["value"] == 1.0
    failed = cont.compare(ref, [3, 0, 3], atol=0.01)  # margin 5 at step 2
    assert (failed["passed"], failed["matching_tokens"], failed["value"]) == (False, 1, pytest.approx(1 / 3))
    tie = cont.compare(ref, [3, 4, 4, 1], atol=0.01)  # margin 0.01 <= 0.01 * max(1, 5)
    assert (tie["passed"], tie["matching_tokens"], tie["tokens_compared"], tie["value"]) == (True, 2, 3, 1.0)
    assert "near-tie" in tie["note"]


def test_without_a_tokenizer_fixed_synthetic_ids_and_the_config_eos_are_used():
    from converters.configs.attributes import ModelAttributes

    cfg = SimpleNamespace(attributes=ModelAttributes(SimpleNamespace(vocab_size=100, eos_token_id=[2, 7])))
    ids = cont.prompt_ids(cfg, None)
    assert ids == cont.prompt_ids(cfg, None) and len(ids) == 5 and all(3 <= i < 100 for i in ids)
    assert cont.eos_ids(cfg, None) == {2, 7}
    # An EOS id past the vocabulary can never be generated: not a stop token.
    cfg = SimpleNamespace(attributes=ModelAttributes(SimpleNamespace(vocab_size=100, eos_token_id=[2, 151645])))
    assert cont.eos_ids(cfg, None) == {2}


def test_a_tokenizer_is_used_only_when_it_really_tokenizes(tmp_path):
    """No tokenizer files, a tokenizer that encodes a sentence to nothing, or ids beyond the
    model's vocabulary: synthetic ids (None), each with its reason."""
    import json

    from converters.source_tokenizer import BEYOND_VOCABULARY, ENCODES_NOTHING, NO_FILES, UNREADABLE, check_tokenizer
    from tests.models import VOCAB_SIZE, build_tokenizer

    real = tmp_path / "real"
    build_tokenizer(real, "llama")
    usable = check_tokenizer(real, VOCAB_SIZE)
    assert usable.tokenizer is not None and usable.missing is None and usable.warning("text-generation") is None
    assert check_tokenizer(real, None).tokenizer is not None  # vocabulary unknown: not held against it
    assert check_tokenizer(real, 20).missing == BEYOND_VOCABULARY  # the words' ids run past 20

    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "config.json").write_text("{}")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "tokenizer.json").write_text("{not json")
    assert check_tokenizer(tmp_path / "damaged").missing == UNREADABLE
    assert (check_tokenizer(tmp_path / "none", VOCAB_SIZE).tokenizer, check_tokenizer(tmp_path / "none").missing) == (None, NO_FILES)

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"model_type": "qwen2"}))  # transformers 5 builds the class's tokenizer
    (tmp_path / "empty" / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    empty = check_tokenizer(tmp_path / "empty", VOCAB_SIZE)
    assert (empty.tokenizer, empty.missing) == (None, ENCODES_NOTHING)
    assert empty.warning("text-generation") == (
        f"No usable tokenizer in the repo ({ENCODES_NOTHING}): checks use synthetic token ids; the continuation is "
        "compared on ids.")
    assert empty.warning("fill-mask").endswith("checks use synthetic token ids.")


def test_only_text_generation_decoders_are_checked():
    from converters.configs import config_class_for
    from tests.models import MODELS

    def cfg(model_type, task):
        return config_class_for(model_type)(MODELS[model_type][0](), task)

    assert cont.applies(cfg("llama", "text-generation"), "model")
    assert not cont.applies(cfg("t5", "text2text-generation"), "decoder")  # fed by the encoder
    assert not cont.applies(cfg("t5", "text2text-generation"), "encoder")
    assert not cont.applies(cfg("llama", "feature-extraction"), "model")


# ----------------------------------------------------------------- real packages


@pytest.fixture(scope="module")
def llama_result(tiny_model, tmp_path_factory):
    calls = []
    result = convert(str(tiny_model("llama")), "text-generation", tmp_path_factory.mktemp("llama"),
                     ConversionOptions.from_strings(sequence_length=CONTEXT), progress=lambda *call: calls.append(call))
    result.progress_calls = calls  # (stage, fraction, message), as the job view hears them
    return result


def test_non_stateful_package_continues_the_prompt_as_pytorch_does(llama_result):
    validation = llama_result.report_json["validation"]
    assert validation["passed"], validation["message"]
    section = validation["continuation"]
    assert section["prompt"] == "The capital of France is" and section["new_tokens"] == 8 and section["passed"] is True
    assert len(section["pytorch"]["token_ids"]) == 8
    assert [run["mode"] for run in section["runs"]] == ["fp32", "fp16"]
    for run in section["runs"]:
        assert run["token_ids"] == section["pytorch"]["token_ids"] and run["matching_tokens"] == 8 and run["passed"]
        assert run["driven_as"] == f"swift-transformers (right-padded to {CONTEXT} with attentionMask)"
    rows = [r for r in validation["checks"] if r["metric"] == "continuation_match"]
    assert [(r["mode"], r["inputs"], r["output"], r["value"], r["threshold"]) for r in rows] == [
        ("fp32", "continuation, 8 tokens", "logits", 1.0, 1.0), ("fp16", "continuation, 8 tokens", "logits", 1.0, 1.0)]


def _growing(fractions: list[float]) -> bool:
    return all(a <= b for a, b in zip(fractions, fractions[1:]))


def test_conversion_and_validation_say_each_step_with_growing_fractions(llama_result):
    """The job view's bar moves within a part's conversion and through validation, never back."""
    calls = llama_result.progress_calls
    converting = [(f, m) for stage, f, m in calls if stage != "validate"]
    validating = [(f, m) for stage, f, m in calls if stage == "validate"]
    assert _growing([f for f, _ in converting]) and converting[-1][0] <= 0.9
    assert [m for _, m in converting if m.startswith("Converting model: ")] == [
        "Converting model: exporting the PyTorch program", "Converting model: converting to Core ML",
        "Converting model: saving the package"]
    assert _growing([f for f, _ in validating]) and validating[0][0] == 0.0 and validating[-1][0] == 1.0
    messages = [m for _, m in validating]
    groups = [m for m in messages if m.startswith("Validating: text")]
    total = int(groups[0].rsplit(" of ", 1)[1])
    assert groups[0] == f"Validating: text, {CONTEXT} tokens (exact fp32), 1 of {total}", messages
    assert f"Validating: text, {CONTEXT} tokens (fp16 emulation), 2 of {total}" in messages
    # the continuation, token by token, in each mode: the last groups
    assert f"Validating: continuation, 3 of 8 tokens (exact fp32), {total - 1} of {total}" in messages
    assert f"Validating: continuation, 8 of 8 tokens (fp16 emulation), {total} of {total}" in messages
    assert messages[-1] == llama_result.report_json["validation"]["message"]


def test_try_it_says_how_far_each_side_has_written(llama_result, tiny_model):
    from converters import try_it

    calls = []
    result = try_it.generate(llama_result.packages[0], tiny_model("llama"), "The capital of France is", "fp32", 3,
                             progress=lambda message, fraction: calls.append((message, fraction)))
    assert result["package"]["tokens"] == 3
    assert [m for m, _ in calls] == [
        "Loading the PyTorch model", "PyTorch: 1 of 3 tokens", "PyTorch: 2 of 3 tokens", "PyTorch: 3 of 3 tokens",
        "Loading the package", "The package: 1 of 3 tokens", "The package: 2 of 3 tokens", "The package: 3 of 3 tokens"]
    assert _growing([f for _, f in calls]) and calls[0][1] == 0.0 and calls[-1][1] == 1.0


def test_tampered_package_fails_the_continuation(llama_result, tiny_model, tmp_path):
    from tests.test_validation import _FP16, WEIGHTS, _blobs, _validate

    package = tmp_path / llama_result.packages[0].name
    shutil.copytree(llama_result.packages[0], package)
    weights = package / WEIGHTS
    data = bytearray(weights.read_bytes())
    dtype, size, offset = max((b for b in _blobs(data) if b[0] == _FP16), key=lambda b: b[1])
    values = np.frombuffer(bytes(data[offset:offset + size]), dtype=np.float16).copy()
    values[::3] *= -4
    data[offset:offset + size] = values.tobytes()
    weights.write_bytes(bytes(data))
    validation = _validate(package, tiny_model("llama"), "text-generation", tmp_path)
    assert validation["passed"] is False and validation["continuation"]["passed"] is False
    rows = [r for r in validation["checks"] if r["metric"] == "continuation_match"]
    assert {r["mode"] for r in rows if not r["passed"]} == {"fp32", "fp16"}
    assert all(0 <= r["value"] < 1 for r in rows)


def test_other_tasks_have_no_continuation(tiny_model, tmp_path):
    result = convert(str(tiny_model("gpt2")), "feature-extraction", tmp_path, ConversionOptions.from_strings(sequence_length=8))
    assert "continuation" not in result.report_json["validation"]


@pytest.fixture(scope="module")
def stateful(tiny_model, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from converters.configs import config_class_for
    from converters.package_info import describe_package
    from converters.backends.coreml.executor import ReferenceExecutor
    from converters.source_tokenizer import load_tokenizer

    folder = tiny_model("llama")
    options = ConversionOptions.from_strings(sequence_length=CONTEXT, minimum_deployment_target="iOS18", kv_cache="stateful")
    package = convert(str(folder), "text-generation", tmp_path_factory.mktemp("stateful"), options, validate=False).packages[0]
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    cfg = config_class_for("llama")(model.config, "text-generation", options)
    return SimpleNamespace(ref=cont.reference(cfg, model, load_tokenizer(folder)), executor=ReferenceExecutor(package),
                           info=describe_package(package), atol=cfg.validation_tolerances().atol)


def _stateful_runs(stateful, pattern):
    return [cont.run_package(stateful.ref, stateful.executor, stateful.info, "model", mode, stateful.atol["float16"], pattern)
            for mode in ("fp32", "fp16")]


def test_stateful_package_continues_the_prompt_when_driven_as_apples_recipe(stateful):
    for run in _stateful_runs(stateful, cont.EXPLICIT):
        assert run["passed"] and run["matching_tokens"] == 8, run
        assert run["token_ids"] == stateful.ref.tokens


def test_stateful_package_continues_the_prompt_when_driven_as_swift_transformers(stateful):
    for run in _stateful_runs(stateful, cont.SWIFT):
        assert run["passed"] and run["matching_tokens"] == 8, run


def test_try_it_says_plainly_that_a_model_without_a_tokenizer_cannot_be_tried(tmp_path):
    from converters import try_it
    from converters.errors import UserInputError

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(UserInputError, match="can't be tried here: the repo has no tokenizer files.*its base model"):
        try_it.run("generate", tmp_path / "model.mlpackage", tmp_path, {"text": "Hello"}, "fp32")


def test_the_texts_are_split_where_the_package_and_pytorch_part():
    class Words:
        def decode(self, ids, skip_special_tokens=True):
            return "".join(f" w{i}" for i in ids)

    ref = cont.Reference("p", [1], set(), [5, 6, 7, 8], [], 8, Words())
    assert cont.split_texts(ref, [5, 6, 9], 2) == {"same_text": " w5 w6", "own_rest": " w9", "pytorch_rest": " w7 w8"}
    assert cont.split_texts(cont.Reference(None, [1], set(), [5], [], 8, None), [5], 1) == {}  # no tokenizer: ids only
