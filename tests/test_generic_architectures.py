"""The generic path (converters/configs/generic.py): a model type outside the registry is
converted with the family transformers says it belongs to, marked "not in the tested list",
and validation decides. Tiny models of every modality, built from transformers configs
(tests/models.py UNLISTED); those that cannot convert must say which op in which layer."""

from __future__ import annotations

import pytest

from converters.configs import ARCHITECTURES, config_class_for
from converters.configs.generic import family_of
from converters.errors import ArchitectureNotConvertible, UnsupportedArchitecture, UserInputError
from converters.export import convert
from converters.options import ConversionOptions
from tests.models import UNLISTED

OPTIONS = ConversionOptions.from_strings(sequence_length=16)
STATEFUL = ConversionOptions.from_strings(sequence_length=32, minimum_deployment_target="iOS18", kv_cache="stateful")

# model type -> (family, the task converted here). Each converts and passes validation.
CONVERTS = {
    "olmo2": ("decoder", "text-generation"),  # its own norm placement (post-attention norms, QK norm)
    "stablelm": ("decoder", "text-generation"),  # partial rotary, LayerNorm
    "starcoder2": ("decoder", "text-generation"),  # a code LLM
    "gpt_neo": ("decoder", "text-generation"),  # an older decoder with local attention layers
    "phi": ("decoder", "text-generation"),  # parallel attention and MLP, partial rotary
    "cohere": ("decoder", "text-generation"),  # logit scale, parallel block
    "granite": ("decoder", "feature-extraction"),  # multipliers on embeddings, residuals, logits
    "qwen3_5_text": ("decoder", "text-generation"),  # Gated DeltaNet + full attention, gated RMSNorm
    "gemma4_text": ("decoder", "text-generation"),  # per-layer inputs and head sizes, its MoE block
    "openai-gpt": ("decoder", "text-generation"),  # (1 - mask) * float32's minimum: -inf in float16, kept finite
    "diffllama": ("decoder", "text-generation"),  # differential attention, λ folded from the layer's parameters
    "jetmoe": ("decoder", "text-generation"),  # mixture of attention heads and of MLP experts (dense, configs/moe.py)
    "llama4_text": ("decoder", "text-generation"),  # rotary in complex numbers (configs/complex_rotary.py), NoPE layer, MoE
    "bert-generation": ("decoder", "text-generation"),  # BertGeneration's decoder half (is_decoder)
    "albert": ("encoder", "fill-mask"),  # factorised embeddings, shared layers
    "electra": ("encoder", "token-classification"),  # a discriminator
    "mpnet": ("encoder", "feature-extraction"),  # relative position buckets
    "roformer": ("encoder", "text-classification"),  # rotary positions in an encoder
    "mbart": ("encoder-decoder", "text2text-generation"),
    "pegasus": ("encoder-decoder", "text2text-generation"),  # sinusoidal positions
    "marian": ("encoder-decoder", "feature-extraction"),
    "swin": ("vision", "image-classification"),  # windowed attention
    "dinov2": ("vision", "feature-extraction"),  # self-supervised ViT
    "deit": ("vision", "image-classification"),  # two heads mapped to one Auto class
    "resnet": ("vision", "image-classification"),  # a CNN
    "levit": ("vision", "image-classification"),  # convolution + attention hybrid
}
# model type -> (family, task, the op named in the message, the layer named). They do not convert.
FAILS = {
    # OPT and BLOOM compute positions / ALiBi from the 0/1 mask, so they keep it and build their
    # own mask inside, with Tensor.new_ones — an op coremltools 9.0 has no converter for.
    "opt": ("decoder", "text-generation", "new_ones", "OPTDecoder"),
    "bloom": ("decoder", "text-generation", "new_ones", "BloomModel"),
    # BEiT's relative position bias writes into a tensor in a way coremltools cannot convert.
    "beit": ("vision", "image-classification", "select_scatter", "BeitRelativePositionBias"),
}


def test_the_unlisted_models_are_outside_the_registry_and_cover_every_family():
    assert not set(UNLISTED) & set(ARCHITECTURES)
    assert set(CONVERTS) | set(FAILS) | set(STATEFUL_CONVERTS) == set(UNLISTED)
    assert {family for family, *_ in [*CONVERTS.values(), *FAILS.values()]} == {"decoder", "encoder", "encoder-decoder", "vision"}


@pytest.mark.parametrize("model_type, family", [
    ("llama", "decoder"), ("xlnet", "decoder"), ("bert", "encoder"), ("electra", "encoder"), ("t5", "encoder-decoder"),
    ("marian", "encoder-decoder"), ("vit", "vision"), ("swin", "vision"), ("resnet", "vision"),
])
def test_the_family_is_what_transformers_says(model_type, family):
    assert family_of(model_type) == family


@pytest.mark.parametrize("model_type, why", [
    ("wav2vec2", "speech or audio"),
    ("blip-2", "image-and-text"),
    ("llava", "image-and-text"),
    ("videomae", "video"),
    ("encoder-decoder", "nests other models' configs"),
    ("no-such-model", "transformers does not know the architecture 'no-such-model'"),
])
def test_kinds_we_do_not_convert_are_refused_with_what_they_are(model_type, why):
    with pytest.raises(UnsupportedArchitecture, match=why) as refused:
        config_class_for(model_type)
    assert "Ask for it in an issue" in str(refused.value)


def test_a_registry_architecture_is_tested_and_an_unlisted_one_is_not():
    assert config_class_for("llama").tested and config_class_for("llama").family == "decoder"
    untested = config_class_for("olmo2")
    assert not untested.tested and untested.family == "decoder"


def _mark(model_type: str, family: str, verdict: str) -> str:
    return f"architecture not in the tested list ({family} family) — validated: {verdict}"


@pytest.mark.parametrize("model_type", sorted(CONVERTS))
def test_an_unlisted_architecture_converts_and_validation_passes(model_type, tiny_model, tmp_path):
    family, task = CONVERTS[model_type]
    # Phi's package is converted with validation "skipped": for an unlisted architecture it runs anyway.
    skip_asked = model_type == "phi"
    result = convert(str(tiny_model(model_type)), task, tmp_path, OPTIONS, validate=not skip_asked)
    report = result.report
    assert report.validation.passed is True, report.validation.message
    assert report.validation.notes == []  # live outputs, not a constant
    assert report.architecture.tested is False and report.architecture.family == family
    assert report.untested_mark() == _mark(model_type, family, "passed")
    if skip_asked:
        assert any("not in the tested list" in w for w in report.warnings)


# Stateful packages (keyCache/valueCache states, driven as swift-transformers drives them): mixtures
# of experts (top-2 of 4, converters/configs/moe.py) convert — Qwen3-MoE's and PhiMoE's uncached
# package is Gemma 4's, whose MoE block is on; PhiMoE's router scatters over the ranged token axis
# (backends/coreml/patches.py) — and the decoders above; the others are refused before any work,
# saying why. Gemma 4's stateful package (a pair of states per key shape, shared layers):
# tests/test_stateful_gemma4.py; Qwen3.5's (its linear layers' states, and the recurrent kinds
# still refused): tests/test_stateful_qwen3_5.py.
STATEFUL_CONVERTS = ("qwen3_moe", "phimoe", "bert-generation", "diffllama", "jetmoe", "llama4_text")
STATEFUL_REFUSED = {
    "openai-gpt": "its model keeps no keys and values between calls",
}


@pytest.mark.parametrize("model_type", STATEFUL_CONVERTS)
def test_an_unlisted_decoder_converts_stateful_and_validates(model_type, tiny_model, tmp_path):
    result = convert(str(tiny_model(model_type)), "text-generation", tmp_path, STATEFUL)
    validation = result.report_json["validation"]
    assert validation["passed"] is True, validation["message"]
    assert validation["notes"] == []
    steps = {row["inputs"].split("-token prompt")[1] for row in validation["checks"] if row["metric"] == "top1_agreement"}
    assert steps == {" + 8 cached steps (swift-transformers masks)", " + 8 cached steps (explicit masks)"}
    assert all(run["passed"] and "stateful" in run["driven_as"] for run in validation["continuation"]["runs"])


@pytest.mark.parametrize("model_type", sorted(STATEFUL_REFUSED))
def test_a_stateful_package_is_refused_before_any_work_for_a_cache_it_cannot_hold(model_type):
    hf_config = UNLISTED[model_type][0]()
    with pytest.raises(UserInputError) as refused:
        config_class_for(model_type)(hf_config, "text-generation", STATEFUL).check_options()
    message = str(refused.value)
    assert f"A stateful KV cache is not supported for {model_type} yet: {STATEFUL_REFUSED[model_type]}" in message
    assert "Set the KV cache to none" in message


@pytest.mark.parametrize("model_type, why", [
    ("rwkv", "its layers keep a recurrent state, not keys and values"),  # no layer_types: read from its forward
    ("xlnet", "its model keeps a cache of its own kind (mems)"),
])
def test_a_stateful_package_is_refused_for_a_decoder_whose_model_takes_no_keys_and_values(model_type, why):
    from transformers import AutoConfig

    with pytest.raises(UserInputError) as refused:
        config_class_for(model_type)(AutoConfig.for_model(model_type), "text-generation", STATEFUL).check_options()
    assert f"A stateful KV cache is not supported for {model_type} yet: {why}" in str(refused.value)


def test_dense_experts_compute_what_transformers_computes_and_are_switched_back():
    """The capture's dense expert evaluation (converters/configs/moe.py) against transformers' own
    implementation, for the expert layouts of the sweep: gated (Qwen3-MoE), Gemma 4's MoE block
    (its router scales per expert), and ungated experts with a bias (GPT-OSS's interleaved,
    clamped gate)."""
    import torch
    import transformers as tf

    from converters.configs.moe import dense_experts
    from tests.models import _DECODER, _like_trained_routers

    models = [
        tf.Qwen3MoeForCausalLM(UNLISTED["qwen3_moe"][0]()),
        tf.Gemma4ForCausalLM(UNLISTED["gemma4_text"][0]()),
        tf.GptOssForCausalLM(tf.GptOssConfig(**_DECODER, head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=64)),
    ]
    ids = torch.randint(3, 100, (1, 12), generator=torch.Generator().manual_seed(0))
    for model in models:
        model.eval()
        _like_trained_routers(model)
        with torch.no_grad():
            torch.nn.init.normal_(next(p for n, p in model.named_parameters() if "experts" in n and p.dim() == 3), std=0.5)
            own = model(ids).logits
            implementation = model.get_experts_implementation()
            with dense_experts(model) as switched:
                assert switched and model.config._experts_implementation == "coreml_dense"
                dense = model(ids).logits
            assert model.get_experts_implementation() == implementation
        assert torch.allclose(dense, own, rtol=1e-4, atol=1e-5), (type(model).__name__, (dense - own).abs().max())
    with dense_experts(tf.LlamaForCausalLM(tf.LlamaConfig(**_DECODER))) as switched:
        assert switched is False  # no experts: nothing to switch


# Decoders refused before any work (converters/configs/generic.py NOT_CONVERTED), each saying why.
REFUSED = {
    "cpmant": "it ignores the attention mask it is given",
}


@pytest.mark.parametrize("model_type", sorted(REFUSED))
def test_an_unlisted_decoder_that_cannot_convert_is_refused_before_any_work_saying_why(model_type):
    from converters.configs import model_tasks

    with pytest.raises(UnsupportedArchitecture) as refused:
        config_class_for(model_type)
    message = str(refused.value)
    assert message.startswith(f"The architecture '{model_type}' cannot be converted yet: {REFUSED[model_type]}")
    assert message.endswith("Ask for it in an issue.")
    assert family_of(model_type) == "decoder"  # transformers' word for it is kept; the refusal is ours
    with pytest.raises(UnsupportedArchitecture, match="cannot be converted yet"):  # what the form and the worker ask first
        model_tasks({"model_type": model_type, "architectures": ["X"]})


def test_text_generation_is_refused_for_a_model_whose_config_says_it_is_no_decoder():
    """BertGeneration's encoder half (is_decoder false) attends to later tokens: refused for
    text generation before any work; its decoder half (is_decoder true) converts (above)."""
    hf_config = UNLISTED["bert-generation"][0]()
    hf_config.is_decoder = False
    with pytest.raises(UserInputError) as refused:
        config_class_for("bert-generation")(hf_config, "text-generation", OPTIONS).check_options()
    assert "its config.json says is_decoder: false" in str(refused.value)
    hf_config.is_decoder = True
    config_class_for("bert-generation")(hf_config, "text-generation", OPTIONS).check_options()
    from transformers import AutoConfig

    japanese = AutoConfig.for_model("gpt_neox_japanese")  # is_decoder: false, never read: a decoder all the same
    assert japanese.is_decoder is False
    config_class_for("gpt_neox_japanese")(japanese, "text-generation", OPTIONS).check_options()


def test_a_sequence_longer_than_an_attention_chunk_is_refused_before_any_work():
    """Llama 4's chunked-attention layers see only their own chunk (8192 tokens in the real ones):
    within a chunk they are causal attention, beyond it their masks are not built yet."""
    hf_config = UNLISTED["llama4_text"][0]()
    hf_config.attention_chunk_size = 16
    with pytest.raises(UserInputError) as refused:
        config_class_for("llama4_text")(hf_config, "text-generation", STATEFUL).check_options()
    assert "Sequence length 32 is longer than this model's attention chunk (16 tokens" in str(refused.value)
    config_class_for("llama4_text")(hf_config, "text-generation", OPTIONS).check_options()  # 16 tokens: one chunk


@pytest.mark.parametrize("model_type", sorted(FAILS))
def test_an_unlisted_architecture_that_cannot_convert_names_the_op_and_layer(model_type, tiny_model, tmp_path):
    family, task, op, layer = FAILS[model_type]
    with pytest.raises(ArchitectureNotConvertible) as failed:
        convert(str(tiny_model(model_type)), task, tmp_path, OPTIONS)
    message = str(failed.value)
    assert f"'{model_type}' is not in the tested list" in message and f"as a {family} model" in message
    assert f"the op '{op}'" in message and f"({layer})" in message
    assert "ask for this architecture" in message
    assert failed.value.exit_code == 2
    assert not list(tmp_path.glob("*.mlpackage"))


def test_an_unlisted_decoder_keeps_the_additive_mask_when_it_gives_the_models_own_answer(tiny_model):
    import transformers

    folder = tiny_model("olmo2")
    hf_config = transformers.AutoConfig.from_pretrained(folder)
    cfg = config_class_for("olmo2")(hf_config, "text-generation", OPTIONS)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert cfg.mask_convention(model) is False  # the ready-made mask: fewer ops in the package
    opt_folder = tiny_model("opt")
    opt = config_class_for("opt")(transformers.AutoConfig.from_pretrained(opt_folder), "text-generation", OPTIONS)
    # OPT computes its positions from the 0/1 mask: a ready-made one gives another answer.
    assert opt.mask_convention(transformers.AutoModelForCausalLM.from_pretrained(opt_folder).eval()) is True


def test_only_finite_float32_extremes_are_clamped_for_float16_and_coremltools_pass_is_restored():
    """openai-gpt's mask, (1 - mask) * float32's minimum, is -inf in float16 and 0 * -inf = NaN:
    float32's extremes become float16's (what transformers uses for a float16 model). Values
    coremltools keeps in float32 (|v| < 1e38) and true infinities are left as they are."""
    import numpy as np
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    from converters.backends.coreml.patches import finite_float16_constants, finite_in_float16

    extremes = np.finfo(np.float32)
    value = np.array([extremes.min, -1e38, -7e4, 1.5, np.inf, -np.inf, extremes.max], dtype=np.float32)
    assert finite_in_float16(value).tolist() == [-65504.0, -65504.0, -7e4, 1.5, np.inf, -np.inf, 65504.0]
    assert finite_in_float16(np.array([1.0, -1e4], dtype=np.float32)) is None
    assert finite_in_float16(np.float32(extremes.min)).tolist() == -65504.0
    own = PASS_REGISTRY.passes["common::add_fp16_cast"]
    with finite_float16_constants():
        assert PASS_REGISTRY.passes["common::add_fp16_cast"] is not own
    assert PASS_REGISTRY.passes["common::add_fp16_cast"] is own
