"""The iOS static-shape Core AI LLM bundle (converters/backends/coreai/static_bundle.py): text generation
with the Core AI format and the iOS LLM bundle becomes the functions Apple's StaticShapeEngine runs
(load_embeddings, gather_embeddings_<q>, extend_<ctx>_<q>, prompt_opt_<ctx>_<q>), and it is driven
as that engine drives it (backends/coreai/static_runtime.py), in coreai-core's own runtime. Apple's
sources: apple/coreai-models at 86b363d (the lines are quoted in those modules and docs/core-ai.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters.backends.coreai import static_bundle as ios
from converters.backends.coreai.backend import CoreAIBackend
from converters.backends.coreai.runtime import MODE
from converters.backends.coreai.static_runtime import StaticShapeEngine, batch, causal_mask, forward_graph, max_query
from converters.export import convert
from converters.options import ConversionOptions
from tests.models import build_model

pytestmark = pytest.mark.slow

# The 16 functions of a 512-token context: ctx 256 and 512, q 8, 16 and 64 (base.py:864-867).
NAMES_512 = ["load_embeddings", "gather_embeddings_8", "gather_embeddings_16", "gather_embeddings_64",
             *[f"{base}_{ctx}_{q}" for base in ("extend", "prompt_opt") for ctx in (256, 512) for q in (8, 16, 64)]]


def _options(**given) -> ConversionOptions:
    return ConversionOptions.from_strings(**{"format": "coreai", "llm_bundle": "ios", **given})


def _cfg(folder, options=None, task="text-generation"):
    import transformers

    from converters.configs import config_class_for

    hf = transformers.AutoConfig.from_pretrained(folder)
    return config_class_for(hf.model_type)(hf, task, options or _options())


@pytest.fixture(scope="module")
def ios_bundle(tiny_model, tmp_path_factory):
    """A tiny Llama (context 512) converted to the iOS bundle and validated (once for this file)."""
    return convert(str(tiny_model("llama")), "text-generation", tmp_path_factory.mktemp("ios"), _options())


@pytest.fixture(scope="module")
def torch_llama(tiny_model):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(tiny_model("llama")).eval()


def test_the_asset_holds_the_ladders_functions_with_the_contracts_interfaces(ios_bundle, tiny_model):
    aimodel = ios_bundle.packages[0]
    folder = aimodel.parent
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["language"]["max_context_length"] == 512  # the top rung: the engine needs an extend this long (engine:92-105)
    assert meta["language"]["vocab_size"] == 128 and meta["kind"] == "llm" and meta["assets"] == {"main": "llama.aimodel"}
    saved = ios.interface(aimodel)
    assert sorted(saved) == sorted(NAMES_512) == sorted(ios.function_names(512))
    assert ios.problems(aimodel, _cfg(tiny_model("llama")), 512) == []
    # The contract, spelled out for two of them (H 32, V 128, L 2, kv·hd 2 × 8).
    table = ("embedding_table", "float16", [128, 1, 32])
    assert saved["load_embeddings"] == {"inputs": [], "outputs": [table], "states": []}
    assert saved["gather_embeddings_16"]["outputs"] == [("gathered_embeddings", "float16", [1, 16, 1, 32])]
    assert sorted(saved["extend_512_8"]["inputs"]) == sorted([
        ("transformer_input", "float16", [1, 8, 1, 32]), ("position_ids", "uint16", [1, 8]), ("in_step", "int32", [1]),
        ("causal_mask", "float16", [1, 512, 1, 8]), table])
    assert saved["extend_512_8"]["outputs"] == [("out_logits", "float16", [1, 1, 8, 128])]
    assert saved["extend_256_64"]["states"] == [("key_cache", "float16", [2, 1, 16, 1, 256]), ("value_cache", "float16", [2, 1, 16, 1, 256])]
    assert saved["prompt_opt_256_64"]["outputs"] == [("out_logits", "float16", [])]  # the scalar: no head (qwen3.py:217-218)
    assert ios.is_static(aimodel) and CoreAIBackend().describe(aimodel)["inputs"][0]["shape"] == [1, 8, 1, 32]
    # The engine's init runs on the file itself (the contract, load_embeddings); its caches carry the Neural
    # Engine's interleave, which the Linux runtime mishandles, so driving it here is refused with the reason.
    engine = StaticShapeEngine(aimodel, 512, 128)
    try:
        assert engine.interleaved and engine.caches["key_cache"].shape == (2, 1, 16, 1, 512)
        with pytest.raises(ValueError, match="interleaved layout"):
            engine.inference([1, 2, 3])
    finally:
        engine.close()


def test_validation_drives_it_as_static_shape_engine_does(ios_bundle):
    validation = ios_bundle.report_json["validation"]
    assert validation["passed"] is True, validation["message"]
    assert "driven as StaticShapeEngine drives it" in validation["kind"]
    assert {row["mode"] for row in validation["checks"]} == {MODE}
    assert {"bundle_loads", "engine_accepts", "max_abs_diff", "top1_agreement", "continuation_match"} <= {
        row["metric"] for row in validation["checks"]}
    run = validation["continuation"]["runs"][0]
    assert run["driven_as"].startswith("StaticShapeEngine") and run["passed"] and run["matching_tokens"] == 8
    assert run["token_ids"] == validation["continuation"]["pytorch"]["token_ids"]
    assert any(ios.LAYOUT_NOTE in note for note in validation["notes"])


def test_a_long_prompt_goes_through_prompt_opt_and_the_text_crosses_into_the_512_cache(torch_llama, tiny_model, tmp_path):
    """250 prompt tokens (3 × prompt_opt_256_64, then extend_256_64 for the last 58), then 10 tokens
    one by one: extend_256_8 on the realigned batch up to position 255, then extend_512_8 on the
    shared cache's first 512 slots. The continuation is PyTorch's, each row within float16's bar."""
    from converters.validation.continuation import Reference, compare, pytorch_greedy

    prompt = [int(i) for i in np.random.default_rng(1).integers(3, 128, 250)]
    engine = StaticShapeEngine(ios.twin(_cfg(tiny_model("llama")), torch_llama, 512, tmp_path), 512, 128)
    try:
        assert engine.max_query == 64 and not engine.interleaved
        tokens, rows, stopped = ios.generate(engine, prompt, 10, set())
        calls = list(engine.calls)
    finally:
        engine.close()
    assert calls[:4] == [("prompt_opt_256_64", 0, 64), ("prompt_opt_256_64", 64, 64), ("prompt_opt_256_64", 128, 64),
                         ("extend_256_64", 192, 58)]
    assert calls[4:] == [("extend_256_8", 248, n) for n in range(3, 9)] + [("extend_512_8", 256, n) for n in range(1, 4)]
    assert stopped == "new_tokens" and len(tokens) == 10
    want_tokens, want_rows = pytorch_greedy(torch_llama, prompt, 10, set())
    tolerances = _cfg(tiny_model("llama")).validation_tolerances()
    atol = tolerances.atol["float16"]
    result = compare(Reference(None, prompt, set(), want_tokens, want_rows), tokens, atol)
    assert result["passed"] and result["matching_tokens"] == 10, result
    want, got = np.stack(want_rows), np.stack(rows)
    assert np.abs(want - got).max() <= atol * max(1.0, float(np.abs(want).max()))


def test_the_engines_graph_choice_by_hand():
    """forwardGraph (engine:268-298), the batch alignment (:390-393), the mask (:302-326), no model."""
    names = sorted(NAMES_512[4:])
    assert max_query(names) == 64 and max_query([]) == 64
    assert forward_graph(names, 250, 0, prefill=True) == "prompt_opt_256_64"  # more than 64 left: q 64
    assert forward_graph(names, 58, 192, prefill=False) == "extend_256_64"  # the smallest q ≥ 58
    assert forward_graph(names, 10, 250, prefill=False) == "extend_256_16"
    assert forward_graph(names, 1, 255, prefill=False) == "extend_256_8"  # ctx: the smallest > the position
    assert forward_graph(names, 1, 256, prefill=False) == "extend_512_8"
    with pytest.raises(ValueError, match="No graph with cache_len > 512 and seq_len = 8"):
        forward_graph(names, 1, 512, prefill=False)
    assert batch(250, 8, 251) == (248, 3)  # a decode step resends tokens 248…250
    assert batch(250, 16, 260) == (240, 16)  # the batch ends at slot 255; the rest is the next call's
    assert batch(0, 64, 250) == (0, 64) and batch(192, 64, 250) == (192, 58)
    mask = causal_mask(256, 8, 3, 248)
    assert mask.dtype == np.float16 and mask.shape == (1, 256, 1, 8)
    assert (mask[0, :249, 0, 0] == 0).all() and (mask[0, 249:, 0, 0] == -40000).all()
    assert (mask[0, :251, 0, 2] == 0).all() and mask[0, 251, 0, 2] == -40000
    assert (mask[0, :, 0, 3:] == -40000).all()  # rows without a real token: all masked


def test_what_the_ios_bundle_refuses_says_why(tiny_model, tmp_path):
    backend = CoreAIBackend()
    llama = tiny_model("llama")

    def refusal(folder, task="text-generation", **given):
        options = _options(**given)
        return backend.refusal(_cfg(folder, options, task), options)

    assert refusal(llama) is None
    assert "float16 weights for now" in refusal(llama, quantize="int4")
    assert "choose float16" in refusal(llama, precision="float32")
    assert "sliding window of 512 tokens" in refusal(tiny_model("gemma2"))
    short = build_model("llama", tmp_path / "short", max_position_embeddings=128)
    assert "at least 256 tokens" in refusal(short)
    assert "for text generation by a decoder" in refusal(tiny_model("bert"), task="fill-mask")
    assert ios.context_for(_cfg(build_model("llama", tmp_path / "odd", max_position_embeddings=3000))) == 2048  # a rung
    # Asked of a Core ML package alone, it is refused at plan time rather than ignored.
    from converters.errors import UserInputError
    from converters.plan import check_request

    with pytest.raises(UserInputError, match="The iOS LLM bundle is a Core AI package: choose the Core AI format"):
        check_request(_cfg(llama, _options(format="coreml")))
    check_request(_cfg(llama, _options(format="both")))  # the .aimodel beside the .mlpackage takes it
    assert ios.context_for(_cfg(build_model("llama", tmp_path / "long", max_position_embeddings=32768))) == 4096


def test_the_programs_take_the_models_own_embedding_rows_and_tied_head(tiny_model):
    """Gemma scales its embeddings inside the module (transformers' GemmaTextScaledWordEmbedding, × √H) and
    ties its head: the table holds the scaled rows and the head reads them over that scale, so the transformer
    program (eager, before conversion) gives the model's own logits (it was 0.2 off reading the raw weight)."""
    import torch
    import transformers

    folder = tiny_model("gemma")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    table_module, gather, transformer, tied = ios._modules(model, _cfg(folder), 256)
    assert tied
    ids = torch.tensor([[7, 70, 10, 71, 13, 5, 9, 17]], dtype=torch.int32)
    mask = torch.full((1, 256, 1, 8), -40000.0, dtype=torch.float16)
    for row in range(8):
        mask[0, :row + 1, 0, row] = 0
    cache = torch.zeros(2, 1, 16, 1, 256, dtype=torch.float16)
    table = table_module()
    with torch.no_grad():
        got = transformer(False)(gather(ids, table), torch.arange(8).to(torch.uint16)[None], torch.zeros(1, dtype=torch.int32),
                                 mask, cache, cache.clone(), table)
        want = model(input_ids=ids.long()).logits
    assert got.shape == (1, 1, 8, 128) and got.dtype == torch.float16
    assert (got[0, 0].float() - want[0]).abs().max() < 2e-3
