"""The generic path (converters/configs/generic.py): a model type outside the registry is
converted with the family transformers says it belongs to, marked "not in the tested list",
and validation decides. Tiny models of every modality, built from transformers configs
(tests/models.py UNLISTED); those that cannot convert must say which op in which layer."""

from __future__ import annotations

import pytest

from converters.configs import ARCHITECTURES, config_class_for
from converters.configs.generic import family_of
from converters.errors import ArchitectureNotConvertible, UnsupportedArchitecture
from converters.export import convert
from converters.options import ConversionOptions
from converters.report import ConversionReport
from tests.models import UNLISTED

OPTIONS = ConversionOptions.from_strings(sequence_length=16)

# model type -> (family, the task converted here). Each converts and passes validation.
CONVERTS = {
    "olmo2": ("decoder", "text-generation"),  # its own norm placement (post-attention norms, QK norm)
    "stablelm": ("decoder", "text-generation"),  # partial rotary, LayerNorm
    "starcoder2": ("decoder", "text-generation"),  # a code LLM
    "gpt_neo": ("decoder", "text-generation"),  # an older decoder with local attention layers
    "phi": ("decoder", "text-generation"),  # parallel attention and MLP, partial rotary
    "cohere": ("decoder", "text-generation"),  # logit scale, parallel block
    "granite": ("decoder", "feature-extraction"),  # multipliers on embeddings, residuals, logits
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
    assert set(CONVERTS) | set(FAILS) == set(UNLISTED)
    assert {family for family, *_ in [*CONVERTS.values(), *FAILS.values()]} == {"decoder", "encoder", "encoder-decoder", "vision"}


@pytest.mark.parametrize("model_type, family", [
    ("llama", "decoder"), ("xlnet", "decoder"), ("bert", "encoder"), ("electra", "encoder"), ("t5", "encoder-decoder"),
    ("marian", "encoder-decoder"), ("vit", "vision"), ("swin", "vision"), ("resnet", "vision"),
])
def test_the_family_is_what_transformers_says(model_type, family):
    assert family_of(model_type) == family


@pytest.mark.parametrize("model_type, why", [
    ("whisper", "speech or audio"),
    ("wav2vec2", "speech or audio"),
    ("clip", "image-and-text"),
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
    result = convert(str(tiny_model(model_type)), task, tmp_path, OPTIONS)
    report = ConversionReport.from_json(result.report)
    assert report.validation.passed is True, report.validation.message
    assert report.validation.notes == []  # live outputs, not a constant
    assert result.report["architecture"]["tested"] is False and result.report["architecture"]["family"] == family
    assert report.untested_mark() == _mark(model_type, family, "passed")


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


def test_validation_runs_for_an_unlisted_architecture_even_when_skipping_was_asked(tiny_model, tmp_path):
    result = convert(str(tiny_model("phi")), "feature-extraction", tmp_path, OPTIONS, validate=False)
    assert result.report["validation"]["passed"] is True
    assert any("not in the tested list" in w for w in result.report["warnings"])


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
