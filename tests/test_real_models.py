"""Real pretrained weights (tests/real_models.py): the engine must convert and validate them.

Tiny random checkpoints cannot show what trained weights do — a trained LLM's residual stream
carries "massive activations" (SmolLM2-135M: ~25,000 on the first token from layer 12 on),
whose squares overflow float16 in a naive RMSNorm. One conversion per configuration, shared
by the module's tests.
"""

from __future__ import annotations

import time

import pytest

from converters.export import convert
from converters.options import ConversionOptions

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
STATEFUL = ConversionOptions.from_strings(kv_cache="stateful", minimum_deployment_target="iOS18", sequence_length=128)


def _convert(source, task, output_dir, options):
    started = time.perf_counter()
    result = convert(str(source), task, output_dir, options)
    result.report.extra["test_seconds"] = round(time.perf_counter() - started, 1)  # read when a run is looked into
    return result


def _failures(validation: dict) -> str:
    rows = [row for row in validation["checks"] if not row["passed"]]
    lines = [f"{r['mode']} {r['output']} ({r['inputs']}): {r['metric']} = {r['value']} vs {r['threshold']}" for r in rows]
    return validation["message"] + ("\n" + "\n".join(lines) if lines else "")


@pytest.fixture(scope="module")
def llm_default(real_llm, tmp_path_factory):
    return _convert(real_llm, "text-generation", tmp_path_factory.mktemp("smollm2-default"), ConversionOptions())


@pytest.fixture(scope="module")
def llm_stateful(real_llm, tmp_path_factory):
    return _convert(real_llm, "text-generation", tmp_path_factory.mktemp("smollm2-stateful"), STATEFUL)


@pytest.fixture(scope="module")
def encoder_default(real_encoder, tmp_path_factory):
    return _convert(real_encoder, "feature-extraction", tmp_path_factory.mktemp("minilm-default"), ConversionOptions())


def _transformers_generate(real_llm, prompt: str, new_tokens: int) -> tuple[list[int], str]:
    """The independent oracle: transformers' own `generate` (greedy, stopping at the tokenizer's
    EOS as swift-transformers does), none of the product's comparison code; the ids and their text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_llm)
    model = AutoModelForCausalLM.from_pretrained(real_llm, dtype=torch.float32).eval()
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id)
    ids = [int(t) for t in output[0, inputs.input_ids.shape[1]:]]
    return ids, tokenizer.decode(ids, skip_special_tokens=True)


@pytest.fixture(scope="module")
def transformers_greedy(real_llm) -> list[int]:
    """transformers' `generate` of the validation's prompt, 8 new tokens."""
    return _transformers_generate(real_llm, PROMPT, 8)[0]


def test_real_llm_loads_and_pytorch_says_paris(real_llm):
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((real_llm / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576 and config["vocab_size"] == 49152
    assert "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(real_llm)
    model = AutoModelForCausalLM.from_pretrained(real_llm, dtype=torch.float32).eval()
    assert model.dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    inputs = tokenizer(PROMPT, return_tensors="pt")
    assert tokenizer.decode(inputs.input_ids[0]) == PROMPT
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    continuation = tokenizer.decode(output[0, inputs.input_ids.shape[1]:])
    assert "Paris" in continuation, continuation


def test_real_encoder_loads_and_embeds_meaningfully(real_encoder):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_encoder)
    model = AutoModel.from_pretrained(real_encoder).eval()
    assert model.config.model_type == "bert" and model.config.num_hidden_layers == 6
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch.attention_mask.unsqueeze(-1).float()
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)  # the model's mean pooling
    similar, unrelated = (embeddings[0] @ embeddings[1]).item(), (embeddings[0] @ embeddings[2]).item()
    assert similar > 0.5 and similar > unrelated + 0.3, (similar, unrelated)


def _assert_continues_like_pytorch(validation: dict, driven_as: str, oracle: list[int]) -> None:
    """fp32 and fp16-emulated greedy continuations, driven as swift-transformers drives the
    package, equal transformers' own `generate` (`oracle`) for all 8 tokens — and so does the
    product's PyTorch side (no near-tie allowance used)."""
    continuation = validation["continuation"]
    assert continuation["prompt"] == PROMPT and "Paris" in continuation["pytorch"]["text"]
    assert len(oracle) == 8 and continuation["pytorch"]["token_ids"] == oracle
    runs = {run["mode"]: run for run in continuation["runs"]}
    assert set(runs) == {"fp32", "fp16"}
    for run in runs.values():
        assert driven_as in run["driven_as"]
        assert run["token_ids"] == oracle, run
        assert run["matching_tokens"] == run["tokens_compared"] == 8 and "note" not in run


def test_real_llm_default_float16_package_validates(llm_default, transformers_greedy):
    report = llm_default.report_json
    assert report["options"]["precision"] == "float16" and report["options"]["sequence_length"] == "128"
    assert report["validation"]["passed"] is True, _failures(report["validation"])
    # Every RMSNorm (two per layer and the final one) took its float16-safe form.
    assert report["packages"][0]["float16_safe_norms"] == 61
    fp16 = {row["metric"]: row["value"] for row in report["validation"]["checks"] if row["mode"] == "fp16" and row["inputs"].startswith("text")}
    assert fp16["top1_agreement"] == 1.0 and fp16["psnr_db"] > 40, fp16
    _assert_continues_like_pytorch(report["validation"], "right-padded to 128 with attentionMask", transformers_greedy)


def test_reading_the_default_package_ahead_gives_the_apps_calls_rows_bit_for_bit(llm_default, transformers_greedy, real_llm):
    """Validation and Try it read a padded package's tokens ahead along PyTorch's (one call for
    many: continuation.drive_padded). On real weights, in fp16 emulation: the same tokens as
    swift-transformers' call-by-call loop, each row read the loop's own row bit for bit, and
    where PyTorch's draft is left, the loop's tokens still."""
    import numpy as np
    from transformers import AutoTokenizer

    from converters.backends import backend_for_package
    from converters.validation import continuation

    class Recording:
        def __init__(self, runner):
            self.runner, self.calls = runner, []

        def predict(self, feed, mode, state=None):
            outputs = self.runner.predict(feed, mode=mode)
            self.calls.append((feed, np.asarray(outputs["logits"])[0]))
            return outputs

    package = llm_default.packages[0]
    backend = backend_for_package(package, check=False)
    layout, runner = continuation.layout(backend.describe(package)), backend.runner(package)
    prompt = llm_default.report_json["validation"]["continuation"]["prompt_ids"]
    eos = {AutoTokenizer.from_pretrained(real_llm).eos_token_id}

    def drive(draft=()):
        recording = Recording(runner)
        return continuation.drive(recording, "fp16", layout, prompt, 8, eos, draft=draft), recording.calls

    loop, loop_calls = drive()
    ahead, ahead_calls = drive(transformers_greedy)
    assert loop.tokens == ahead.tokens == transformers_greedy and (len(loop_calls), len(ahead_calls)) == (8, 2)
    assert all(np.array_equal(ahead_calls[1][0][name], loop_calls[-1][0][name]) for name in loop_calls[-1][0])
    for step, (_, rows) in enumerate(loop_calls):
        position = len(prompt) - 1 + step
        assert np.array_equal(rows[position], ahead_calls[0 if step == 0 else 1][1][position]), step
    elsewhere = list(transformers_greedy)
    elsewhere[3] = elsewhere[0]  # PyTorch wrote another fourth token
    left, left_calls = drive(elsewhere)
    assert left.tokens == loop.tokens and len(left_calls) == 2 + 4


def test_real_llm_stateful_package_validates(llm_stateful, transformers_greedy):
    report = llm_stateful.report_json
    assert report["options"]["kv_cache"] == "stateful" and report["options"]["minimum_deployment_target"] == "iOS18"
    assert report["validation"]["passed"] is True, _failures(report["validation"])
    # A prompt and 8 extends with swift-transformers' masks and with explicit ones, both modes.
    top1 = [row for row in report["validation"]["checks"] if row["metric"] == "top1_agreement"]
    assert {(row["mode"], row["inputs"].rsplit("(", 1)[1]) for row in top1} == {
        (mode, masks) for mode in ("fp32", "fp16") for masks in ("swift-transformers masks)", "explicit masks)")
    }
    assert all(row["value"] == 1.0 for row in top1)
    _assert_continues_like_pytorch(report["validation"], "stateful: prefill then one token per call, causalMask zeros [1,1,1,T+1]",
                                   transformers_greedy)


def test_the_real_stateful_package_fits_the_devices_the_form_said(llm_stateful, real_llm):
    """Device fit before converting (the size estimate, the config) and after (the package as
    written): the same cache and context, the weights within 2 %, the same verdict everywhere."""
    import json

    from converters import device_fit
    from converters.loading import load_hf_config
    from converters.size_estimate import estimates, weight_shapes

    report = llm_stateful.report_json
    config = json.loads((real_llm / "config.json").read_text())
    estimate = estimates(weight_shapes(load_hf_config(real_llm), "text-generation"), STATEFUL, "text-generation")["none"]
    before = device_fit.from_config(config, "text-generation", estimate, STATEFUL)
    after = device_fit.from_report(report, config)
    assert (after.kv_cache, after.context, after.activation) == (before.kv_cache, 128, before.activation)
    assert after.kv_cache == 2 * 30 * 3 * 128 * 64 * 2  # keyCache and valueCache as written
    assert abs(after.weights / before.weights - 1) < 0.02, (after.weights, before.weights)
    assert [v.level for v in device_fit.verdicts(after)] == [v.level for v in device_fit.verdicts(before)]


def test_real_encoder_float16_package_validates(encoder_default):
    report = encoder_default.report_json
    assert report["options"]["precision"] == "float16"
    assert report["validation"]["passed"] is True, _failures(report["validation"])
    fp16 = [row for row in report["validation"]["checks"] if row["mode"] == "fp16" and row["metric"] == "cosine_similarity"]
    assert fp16 and all(row["passed"] for row in fp16)
    # Its sentence-transformers config (mean pooling, then Normalize) is the package's first output.
    outputs = report["packages"][0]["outputs"]
    assert outputs[0]["name"] == "sentence_embedding" and "mean pooling" in outputs[0]["description"]
    assert "L2-normalized" in outputs[0]["description"] and outputs[0]["shape"][-1] == 384
    assert any(r["output"] == "sentence_embedding" and r["mode"] == "fp16" and r["passed"] for r in fp16)
    pooler = next(o for o in outputs if o["name"] == "pooler_output")
    assert "not a sentence embedding" in pooler["description"]


# ---------------------------------------------------------------------- try it (converters/try_it.py)


def test_try_it_continues_a_typed_prompt_on_the_real_stateful_llm_as_pytorch_does(llm_stateful, real_llm):
    """What the page's Try it runs in a worker: the package (fp16 emulation, driven as
    swift-transformers drives a stateful package) and PyTorch continue the same prompt alike."""
    from converters import try_it

    prompt = "The three primary colors are"
    result = try_it.run("generate", llm_stateful.packages[0], real_llm, {"text": prompt, "new_tokens": 12}, "fp16")
    assert result["package"]["tokens"] == result["pytorch"]["tokens"] == 12
    # The try's PyTorch side is transformers' own generate, and the package continues as it does,
    # every token (fp16 emulation is deterministic: 12 of 12 measured, no near-tie on this prompt).
    _, oracle = _transformers_generate(real_llm, prompt, 12)
    assert result["pytorch"]["text"] == result["package"]["text"] == oracle, (result, oracle)
    assert result["matching_tokens"] == 12, result
    assert result["package"]["text"].strip() and "stateful" in result["package"]["driven_as"]
    assert result["package"]["tokens_per_second"] > 0 and result["pytorch"]["tokens_per_second"] > 0


def test_try_it_compares_two_sentences_on_the_real_encoder_as_pytorch_does(encoder_default, real_encoder):
    from converters import try_it

    package = encoder_default.packages[0]
    related = try_it.run("similarity", package, real_encoder,
                         {"text": "A man is playing a guitar.", "other": "Someone plays an instrument."}, "fp16")
    unrelated = try_it.run("similarity", package, real_encoder,
                           {"text": "A man is playing a guitar.", "other": "The stock market fell today."}, "fp16")
    assert related["package"]["similarity"] > unrelated["package"]["similarity"] + 0.2, (related, unrelated)
    assert "sentence_embedding" in related["pooling"]  # the package's own, normalized, embedding
    for result in (related, unrelated):
        assert abs(result["package"]["similarity"] - result["pytorch"]["similarity"]) < 0.01, result
        assert min(result["embedding_cosine"]) > 0.999, result
