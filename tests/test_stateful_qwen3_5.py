"""A stateful Qwen3.5 (issue 27, converters/configs/qwen3_5.py): keyCache/valueCache for its
full-attention layer, convState and recurrentState for its Gated DeltaNet layers — one conversion,
validated by the pipeline and driven as swift-transformers drives it, equal to transformers run
with its own cache; a package that does not carry a linear layer's state fails the continuation
check; the recurrent kinds not held are still refused."""

from __future__ import annotations

import numpy as np
import pytest

from converters.configs import config_class_for
from converters.errors import UserInputError
from converters.export import convert
from converters.options import ConversionOptions
from converters.package_info import describe_package
from tests.test_stateful_kv_cache import assert_validated_both_ways

CONTEXT = 32
L, F = "linear_attention", "full_attention"
# Three linear layers around one full-attention layer (layer 0 linear: the probe of written cache
# slots is layer 2's). Linear layers: 2 key heads and 4 value heads of 8, kernel 4, so conv
# channels 2·16 + 32 = 64.
_TINY = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
             linear_value_head_dim=8, layer_types=[L, L, F, L], max_position_embeddings=512, pad_token_id=0, bos_token_id=1,
             eos_token_id=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                              "mrope_section": [2, 1, 1]})
STATEFUL = ConversionOptions.from_strings(sequence_length=CONTEXT, minimum_deployment_target="iOS18", kv_cache="stateful")
PROMPT = 4  # tests.test_stateful_kv_cache._drive_as_swift_transformers' prompt length


def _model():
    import torch
    import transformers as tf

    config = tf.Qwen3_5TextConfig(**_TINY)
    config.architectures = ["Qwen3_5ForCausalLM"]
    torch.manual_seed(0)
    model = tf.Qwen3_5ForCausalLM(config).eval()
    # Slow decays, so the recurrent state carries the earlier tokens: transformers' initialisation
    # draws each head's A from 0.01 to 16, and a head past 1 forgets a token within a few (e^-A·1.3 a token).
    with torch.no_grad():
        for layer in model.model.layers:
            if hasattr(layer, "linear_attn"):
                layer.linear_attn.A_log.uniform_(np.log(0.01), np.log(0.2))
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(the transformers model, the conversion's result): a weight-only tiny checkpoint converted
    stateful at a 32-token context, validated by the pipeline."""
    folder = tmp_path_factory.mktemp("qwen3_5")
    model = _model()
    model.save_pretrained(folder / "model")
    return model, convert(str(folder / "model"), "text-generation", folder / "out", STATEFUL)


def _cached_logits(model, ids: list[int]):
    """transformers with its own cache (DynamicCache: conv and recurrent states for the linear
    layers), as generate() runs it: the prompt, then one token per call; each call's last row."""
    import torch
    from transformers import DynamicCache

    cache, rows = DynamicCache(config=model.config), []
    with torch.no_grad():
        for total in range(PROMPT, len(ids) + 1):
            new = ids[:total] if total == PROMPT else ids[total - 1 : total]
            rows.append(model(torch.tensor([new]), past_key_values=cache, use_cache=True).logits[0, -1].float())
    return torch.stack(rows).numpy(), cache


def test_the_package_keeps_keys_for_attention_layers_and_two_states_for_linear_ones(converted):
    _, result = converted
    info = describe_package(result.packages[0])
    assert [i["name"] for i in info["inputs"]] == ["inputIds", "causalMask"]
    assert {s["name"]: (s["shape"], s["dtype"]) for s in info["states"]} == {
        "keyCache": ([1, 1, 2, CONTEXT, 16], "float16"), "valueCache": ([1, 1, 2, CONTEXT, 16], "float16"),  # layer 2
        "convState": ([3, 1, 64, 3], "float16"),  # layers 0, 1, 3: kernel − 1 inputs of 64 channels
        "recurrentState": ([3, 1, 4, 8, 8], "float16"),  # 4 value heads, key size 8, value size 8
    }
    validation = result.report_json["validation"]
    assert_validated_both_ways(validation)
    runs = validation["continuation"]["runs"]
    # All 8 tokens: the context is the key cache's, not a linear state's axis.
    assert all(run["passed"] and "stateful" in run["driven_as"] and run["tokens_compared"] == 8 for run in runs), runs
    # The device fit the result and the card show: the key cache's context, every state's bytes,
    # what the estimate before converting counts.
    from converters import device_fit

    model, _ = converted
    footprint = device_fit.from_report(result.report_json, model.config.to_dict())
    written = 2 * (1 * 2 * CONTEXT * 16) * 2 + 3 * 64 * 3 * 2 + 3 * 4 * 8 * 8 * 2
    assert (footprint.context, footprint.kv_cache) == (CONTEXT, written)
    assert footprint.kv_cache == device_fit.kv_cache_bytes(model.config.to_dict(), CONTEXT)


def test_driven_as_swift_transformers_it_computes_what_transformers_computes_with_its_cache(converted):
    """A 4-token prompt (causalMask one slot longer), then one token per call to the end of the
    context: every step's logits are those of transformers run with its own cache, and of the
    model run uncached on the whole sequence; without the linear layers' carried states they
    would not be."""
    import torch

    from tests.test_stateful_kv_cache import _drive_as_swift_transformers

    model, result = converted
    ids = [int(i) for i in np.random.default_rng(1).integers(3, 128, CONTEXT - 1)]
    got = _drive_as_swift_transformers(result.packages[0], ids)
    want, _ = _cached_logits(model, ids)
    with torch.no_grad():
        uncached = model(torch.tensor([ids])).logits[0, PROMPT - 1 :].float().numpy()
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(uncached - want).max() < 1e-5 * scale
    assert np.abs(got - want).max() < 0.01 * scale, np.abs(got - want).max()
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_the_wrappers_states_are_transformers_cache_states_from_a_fresh_start():
    """In PyTorch: the stateful wrapper called as swift-transformers calls the package (fresh zero
    states, the prompt with a mask one slot longer, then one token per call) leaves in convState
    and recurrentState what transformers' own cache holds — its conv state is the last kernel
    inputs, zeros before the prompt — and its logits are transformers'; the model's linear layers
    are transformers' own again after each call."""
    import torch

    model = _model()
    cfg = config_class_for("qwen3_5_text")(model.config, "text-generation", STATEFUL)
    cfg.check_options()
    wrapper = cfg.wrap(model)
    ids = [int(i) for i in np.random.default_rng(2).integers(3, 128, 9)]
    rows = []
    with torch.no_grad():
        for total in range(PROMPT, len(ids) + 1):
            new = ids[:total] if total == PROMPT else ids[total - 1 : total]
            rows.append(wrapper(torch.tensor([new]), torch.zeros(1, 1, 1, total + 1))[0][0, -1])
            if total == PROMPT:  # after the first call only
                prefilled = wrapper.convState.clone()
    want, cache = _cached_logits(model, ids)
    assert np.abs(torch.stack(rows).numpy() - want).max() < 1e-5 * max(1.0, float(np.abs(want).max()))
    for slot, layer in enumerate((0, 1, 3)):
        theirs = cache.layers[layer]
        assert torch.allclose(wrapper.convState[slot], theirs.conv_states[0][..., -3:], atol=1e-6)
        assert torch.allclose(wrapper.recurrentState[slot], theirs.recurrent_states[0], atol=1e-5)
    with torch.no_grad():  # the prompt's projections, the last 3 kept; a 2-token prompt would keep a zero first
        mixed = model.model.layers[0].linear_attn.in_proj_qkv(
            model.model.layers[0].input_layernorm(model.model.embed_tokens(torch.tensor([ids[:PROMPT]]))))
    assert torch.allclose(prefilled[0, 0], mixed[0, -3:].T, atol=1e-6)
    assert all("forward" not in vars(layer.linear_attn) for layer in model.model.layers if hasattr(layer, "linear_attn"))


class _Forgetting:
    """The package's executor, except that one linear state is not carried from call to call: it is
    put back as it was before the call (a conv window never shifted, a recurrent state never updated)."""

    def __init__(self, executor, name: str):
        self.executor, self.name = executor, name

    def make_state(self):
        return self.executor.make_state()

    def predict(self, feed, mode="fp32", state=None):
        before = state[self.name].copy()
        outputs = self.executor.predict(feed, mode=mode, state=state)
        state[self.name][...] = before
        return outputs


@pytest.mark.parametrize("state", ["convState", "recurrentState"])
def test_the_continuation_check_fails_when_a_linear_state_is_not_carried(converted, state):
    """The pipeline's continuation check (swift-transformers' loop, 16 new tokens): it passes for
    the package and fails for the same package whose convState or recurrentState stays as it was."""
    from converters.backends.coreml.executor import ReferenceExecutor
    from converters.validation import continuation

    model, result = converted
    package = result.packages[0]
    info, executor = describe_package(package), ReferenceExecutor(package)
    prompt = [int(i) for i in np.random.default_rng(4).integers(3, 128, 5)]
    tokens, scores = continuation.pytorch_greedy(model, prompt, 16, eos=set())
    reference = continuation.Reference(None, prompt, set(), tokens, scores, 16)
    carried = continuation.run_package(reference, executor, info, "model", "fp32", atol=1e-3)
    forgotten = continuation.run_package(reference, _Forgetting(executor, state), info, "model", "fp32", atol=1e-3)
    assert carried["passed"] and carried["matching_tokens"] == 16, carried
    assert forgotten["passed"] is False and forgotten["stopped"] != "error" and forgotten["matching_tokens"] < 16, forgotten


@pytest.mark.parametrize("model_type, values, why", [
    # Qwen3-Next's linear layers project query, key, value and gate in one interleaved matrix.
    ("qwen3_next", {}, "its linear_attention layers keep a recurrent state"),
    ("jamba", {}, "its linear_attention layers keep a recurrent state"),  # Mamba layers, typed linear_attention
    # Linear layers only: no key cache, which swift-transformers needs to drive a package statefully.
    ("qwen3_5_text", dict(layer_types=[L, L], num_hidden_layers=2), "it has no full-attention layer"),
])
def test_the_recurrent_kinds_not_held_are_still_refused_before_any_work(model_type, values, why):
    from transformers import AutoConfig

    hf_config = AutoConfig.for_model(model_type, **values)
    with pytest.raises(UserInputError) as refused:
        config_class_for(model_type)(hf_config, "text-generation", STATEFUL).check_options()
    assert f"A stateful KV cache is not supported for {model_type} yet: {why}" in str(refused.value)
    assert "Set the KV cache to none" in str(refused.value)


def test_a_core_ai_llm_bundle_of_qwen3_5_is_refused_before_any_work(tmp_path):
    """Apple's LLM bundle keeps a key and a value cache only (CoreAILanguageModel): refused at plan
    time, naming the Core ML format that holds the linear layers' states, and nothing is written.
    (Before: the capture failed in transformers' linear layer, calling a cache it did not have.)"""
    _model().save_pretrained(tmp_path / "model")
    with pytest.raises(UserInputError) as refused:
        convert(str(tmp_path / "model"), "text-generation", tmp_path / "out",
                ConversionOptions.from_strings(format="coreai", sequence_length=CONTEXT))
    assert ("Core AI output is not available for this qwen3_5_text model: its linear-attention layers keep a convolution "
            "window and a recurrent state") in str(refused.value)
    assert "Choose the Core ML format" in str(refused.value) and not (tmp_path / "out").exists()


def test_state_bytes_of_qwen3_5_0_8b():
    """The states of Qwen3.5-0.8B's text model (the values of its published config.json: 24 layers,
    three linear to one full-attention, 2 key/value heads of 256, linear layers of 16 key and 16
    value heads of 128, kernel 4) in float16 at a 2048-token context: 33.6 MiB, where a key/value slot
    for every layer would be 96 MiB."""
    import transformers as tf

    from converters.configs.gemma4 import cache_bytes
    from converters.configs.qwen3_5 import cache_layout

    config = tf.Qwen3_5TextConfig(hidden_size=1024, intermediate_size=3584, num_hidden_layers=24, num_attention_heads=8,
                                  num_key_value_heads=2, head_dim=256, linear_num_key_heads=16, linear_num_value_heads=16,
                                  linear_key_head_dim=128, linear_value_head_dim=128, linear_conv_kernel_dim=4,
                                  full_attention_interval=4, vocab_size=248320)
    states = {spec.name: spec.shape for spec in cache_layout(config).states(2048)}
    assert states == {"keyCache": (6, 1, 2, 2048, 256), "valueCache": (6, 1, 2, 2048, 256),
                      "convState": (18, 1, 6144, 3), "recurrentState": (18, 1, 16, 128, 128)}
    assert cache_bytes(cache_layout(config), 2048) == 2 * 12 * 2**20 + 663_552 + 9 * 2**20  # 33.6 MiB
    # device_fit's estimate before converting (no torch there: its own reading of the config) agrees,
    # from transformers' saved config and from the Hub's config.json, which nests the text model's
    from converters.device_fit import kv_cache_bytes

    for context in (64, 2048):
        exact = cache_bytes(cache_layout(config), context)
        assert kv_cache_bytes(config.to_dict(), context) == exact
        hub = {k: v for k, v in config.to_dict().items() if k != "layer_types"}
        assert kv_cache_bytes({"model_type": "qwen3_5", "text_config": {**hub, "full_attention_interval": 4}}, context) == exact


def test_try_it_continues_a_prompt_as_transformers_generate_does(converted, tmp_path):
    """Try it on the package, as the page runs it, against transformers' own greedy `generate`."""
    from tests.test_stateful_kv_cache import assert_try_it_continues_as_generate

    model, result = converted
    assert_try_it_continues_as_generate(model, result.packages[0], result.packages[0].parent.parent / "model", tmp_path / "model")
