"""The form's option parsing (ui/form.py): what is entered becomes a checked JobSpec, the
sequence-length note warns about CPU-only ranges, and mistakes come back as messages."""

from __future__ import annotations

import pytest

from converters.errors import UserInputError
from converters.options import OPTIONS
from ui import form
from worker.spec import NEW_REPO, PULL_REQUEST

TOKEN = "hf_alice_write_token"


def values(**overrides) -> form.FormValues:
    base = dict(model="alice/tiny-bert", task="fill-mask")
    base.update(overrides)
    option_values = {name: base.pop(name) for name in list(base) if name in OPTIONS}
    return form.FormValues(**base, option_values=option_values)


def test_defaults_make_the_default_job():
    spec = values().to_spec(TOKEN, "alice")
    assert spec.repo_id == "alice/tiny-bert" and spec.task == "fill-mask" and spec.user == "alice"
    assert spec.options.precision == "float16" and str(spec.options.sequence_length) == "auto"
    assert spec.options.minimum_deployment_target == "iOS17" and spec.options.naming == "swift-transformers"
    assert spec.push.kind == NEW_REPO and spec.push.repo_id is None and spec.push.private is None  # like the source
    assert spec.runner == "any" and not spec.push_even_if_invalid
    assert spec.push_repo_id == "alice/tiny-bert-coreml"
    assert TOKEN not in repr(spec) and TOKEN not in str(spec.to_json())


def test_every_option_reaches_the_spec():
    spec = values(model="https://huggingface.co/alice/tiny-bert/tree/v1", precision="float32", sequence_length=" 64, 128 ",
                  runner="macos", minimum_deployment_target="iOS18", naming="exporters", push_repo=" alice/custom ", visibility=form.PRIVATE,
                  push_even_if_invalid=True).to_spec(TOKEN, "alice")
    assert spec.repo_id == "alice/tiny-bert" and spec.revision == "v1"
    assert spec.options.precision == "float32" and spec.options.sequence_length.sizes == (64, 128)
    assert spec.options.minimum_deployment_target == "iOS18" and spec.options.naming == "exporters"
    assert spec.runner == "macos" and spec.queue_name == "macos"
    assert spec.push.repo_id == "alice/custom" and spec.push.private and spec.push_even_if_invalid


def test_a_pull_request_ignores_the_repo_name_field():
    spec = values(push=PULL_REQUEST, push_repo="alice/ignored", visibility=form.PRIVATE).to_spec(TOKEN, "alice")
    assert spec.push.kind == PULL_REQUEST and spec.push.repo_id is None and spec.push.private is None
    assert spec.push_repo_id == "alice/tiny-bert"


def test_an_empty_sequence_length_means_the_default():
    assert str(values(sequence_length="  ").options().sequence_length) == "auto"


@pytest.mark.parametrize("overrides, expected", [
    ({"model": ""}, "Enter a model first"),
    ({"task": None}, "Pick a task"),
    ({"sequence_length": "lots"}, "Sequence length 'lots' is not understood"),
    ({"sequence_length": "512-1"}, "from a smaller to a larger number"),
    ({"model": "not a model"}, "not a valid Hub model ID"),
    ({"push_repo": "https://evil/x"}, "must be a plain Hub ID"),
    ({"task": "juggling"}, "Unknown task 'juggling'"),
])
def test_mistakes_come_back_as_messages(overrides, expected):
    with pytest.raises(UserInputError, match=expected):
        values(**overrides).to_spec(TOKEN, "alice")


def test_no_token_asks_to_sign_in():
    with pytest.raises(UserInputError, match="token is needed"):
        values().to_spec(None, None)


def test_sequence_notes():
    level, text = form.sequence_note("1-512")
    assert level == "warning" and "GPU or CPU" in text and "64,128,256" in text and "CPU only" not in text
    level, text = form.sequence_note("512", kv_cache="stateful")
    assert level == "info" and "up to 511 tokens" in text and "exactly" not in text and "GPU" in text
    assert form.sequence_note("64,128")[0] == "info" and "exactly these lengths" in form.sequence_note("64,128")[1]
    assert form.sequence_note("128") == ("info", "The package takes exactly 128 tokens; shorter inputs are padded.")
    assert form.sequence_note("abc")[0] == "error"
    assert form.sequence_note("1-512", "vision")[0] == "info"


# Llama 3.2 3B's shape (tied 128 k vocabulary, grouped-query attention): 6.4 GB in float16.
LLAMA_3B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 3072, "intermediate_size": 8192,
            "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
            "vocab_size": 128256, "tie_word_embeddings": True, "max_position_embeddings": 131072}


def test_a_stateful_context_says_the_memory_its_kv_cache_takes():
    level, text = form.sequence_note("4096", kv_cache="stateful", config=LLAMA_3B)
    # keyCache and valueCache: 2 x 28 layers x 8 heads x 4096 x 128 x 2 bytes
    assert level == "info" and text.endswith("A 4,096-token context's KV cache takes 470 MB of memory.")
    assert "KV cache" not in form.sequence_note("4096", kv_cache="stateful")[1]  # no model read yet
    assert "KV cache" not in form.sequence_note("128", config=LLAMA_3B)[1]  # no cache kept


def test_a_length_left_to_the_model_is_said_as_the_conversion_will_resolve_it():
    """ "auto": a stateful context of min(2048, the model's maximum), else 128 tokens a call."""
    level, text = form.sequence_note("auto", kv_cache="stateful", config=LLAMA_3B)
    assert "up to 2,047 tokens (the cache holds 2,048)." in text and "2,048-token context's KV cache" in text
    small = {**LLAMA_3B, "max_position_embeddings": 512}
    assert "up to 511 tokens (the cache holds 512)." in form.sequence_note("auto", kv_cache="stateful", config=small)[1]
    assert "the model's own maximum, if smaller" in form.sequence_note("", kv_cache="stateful")[1]  # no model read yet
    assert form.sequence_note("auto", config=LLAMA_3B)[1] == "The package takes exactly 128 tokens; shorter inputs are padded."
    assert "auto" not in form.sequence_note("auto")[1]


def test_before_convert_the_form_says_which_devices_the_package_fits():
    """The page's own check handler, for a 3 B model: in float16 at 4 k context it is too large
    for most devices (a warning, right above Convert); in 4 bits it fits more, and says how."""
    from ui.models import ModelSummary

    demo, handler, by_id = _check_handler()
    summary = ModelSummary(text="meta/llama-3b", repo_id="meta/llama-3b", model_type="llama", config=LLAMA_3B,
                           tasks=["text-generation"], default_task="text-generation", modality="text")
    entered = {"task": "text-generation", "kv-cache": "stateful", "minimum-deployment-target": "iOS18",
               "sequence-length": "4096", "quantize": "none"}

    def said(**changed):
        values = {**entered, **changed}
        data = {c: values.get(getattr(c, "elem_id", None), getattr(c, "value", None)) for c in handler.inputs}
        data[next(c for c in handler.inputs if c.elem_id is None)] = summary  # the model's summary (a State)
        return handler.fn(data)[by_id["option-check"]]

    full = said()
    assert 'data-level="warning"' in full and 'data-role="device-fit"' in full
    assert ("Needs about 7.9 GB while it runs at 4 k context: weights 6.4 GB, KV cache 470 MB, "
            "largest activation 1.1 GB (estimated).") in full
    assert "too large for iPhones (6 and 8 GB), iPad with M1 or later (8 GB) and Macs with 8 GB at 4 k context" in full
    assert "Neural Engine" in full and "--" not in full
    eight_bit = said(quantize="int8")
    assert "weights 3.2 GB" in eight_bit and ("fits iPhone 15 Pro and newer (8 GB) and iPad with M1 or later (8 GB) "
                                              "only with the increased memory limit entitlement; too large for "
                                              "iPhone 15 (6 GB) at 4 k context.") in eight_bit
    four_bit = said(quantize="int4", **{"sequence-length": "2048"})  # the context chosen: half the cache
    assert 'data-level="info"' in four_bit and "KV cache 235 MB" in four_bit
    assert "Fits iPhones (6 and 8 GB), iPads (8 and 16 GB) and Macs (8 and 16 GB)." in four_bit
    # a refusal is said instead (stateful needs iOS 18)
    refused = said(**{"minimum-deployment-target": "iOS17"})
    assert 'data-level="error"' in refused and "device-fit" not in refused


SMOLLM2 = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576, "intermediate_size": 1536,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
           "vocab_size": 49152, "max_position_embeddings": 8192, "tie_word_embeddings": True}


def test_a_core_ai_llm_form_counts_its_growing_cache_and_speaks_core_ais_words():
    """Issue 24's walk-through: the Core AI SmolLM2 form showed no KV cache (its result then counted
    189 MB), said the package "takes exactly 128 tokens", and offered Core ML's compute units to
    validate on. The check handler: the cache at the context it grows to, the same in the note and
    the device fit, and validation in Core AI's own words (a Mac runner adds nothing to an .aimodel)."""
    from html import unescape

    from converters.formats import BOTH, CORE_AI, CORE_ML
    from ui.models import ModelSummary

    demo, handler, by_id = _check_handler()
    summary = ModelSummary(text="HuggingFaceTB/SmolLM2-135M-Instruct", repo_id="HuggingFaceTB/SmolLM2-135M-Instruct",
                           model_type="llama", config=SMOLLM2, tasks=["text-generation", "feature-extraction"],
                           default_task="text-generation", modality="text")
    shown = {}

    def check(**entered):
        values = {"task": "text-generation", **entered}
        data = {c: values.get(getattr(c, "elem_id", None), getattr(c, "value", None)) for c in handler.inputs}
        data[next(c for c in handler.inputs if c.elem_id is None)] = summary  # the model's summary (a State)
        out = handler.fn(data)
        shown.update(target=out[by_id["minimum-deployment-target"]], format=out[by_id["format"]], kv=out[by_id["kv-cache"]])
        return unescape(out[by_id["option-check"]]), unescape(out[by_id["sequence-note"]]), out[by_id["runner"]]

    fit, note, runner = check(format=CORE_AI.name, runner="macos")
    assert "at its full 8 k context (its KV cache grows with the text up to there)" in fit and "KV cache 189 MB" in fit
    assert ("grows with the text up to its context, 8,192 tokens (the model's maximum): 189 MB at its full size" in note
            and "exactly" not in note)
    assert runner["choices"] == [(CORE_AI.validated_on, "any")] and runner["value"] == "any"  # the Mac choice is gone
    assert "Core ML" not in str(runner) and "reference executor" not in str(runner)
    # No iOS17 target for an .aimodel: it runs on Apple's 27 releases, as the format field says.
    assert shown["target"]["visible"] is False
    assert "The .aimodel runs on iOS 27 and macOS 27 (Core AI is in beta): there is no older deployment target" \
        in shown["format"]["info"]
    # No cache to choose for an .aimodel (it always grows one): the field sets the context it grows to, without
    # Core ML's words (swift-transformers, "each call reads the whole sequence", iOS 17+/18+).
    kv = shown["kv"]
    assert kv["label"] == "KV cache: the context it grows to" and kv["visible"] is True
    assert "the .aimodel always holds a KV cache, grown with the text up to its context" in kv["info"]
    assert [v for _, v in kv["choices"]] == list(OPTIONS["kv_cache"].values)
    assert not any(w in str(kv) for w in ("swift-transformers", "whole sequence", "iOS", "Core ML"))
    fit, note, runner = check(format=CORE_AI.name, **{"kv-cache": "stateful", "sequence-length": "1024"})
    assert "at its full 1 k context" in fit and "up to its context, 1,024 tokens (the sequence length)" in note
    # Core ML: no cache unless asked for, its own words and both choices.
    fit, note, runner = check(format=CORE_ML.name, runner="macos")
    assert "KV cache" not in fit and "at 128 tokens" in fit and "exactly 128 tokens" in note
    assert runner["choices"] == [(CORE_ML.validated_on, "any"), (CORE_ML.on_a_mac, "macos")] and runner["value"] == "macos"
    assert shown["target"] == {"__type__": "update", "visible": True, "label": "Minimum deployment target",
                               "info": OPTIONS["minimum_deployment_target"].help}
    assert "there is no older deployment target" not in shown["format"]["info"]
    assert shown["kv"] == {"__type__": "update", "visible": True, "label": "KV cache", "info": OPTIONS["kv_cache"].help,
                           "choices": [(c.text, c.value) for c in OPTIONS["kv_cache"].choices]}
    # Both: the target is the .mlpackage's, and the .aimodel beside it runs on the 27 releases.
    check(format=BOTH.name)
    assert shown["target"]["visible"] is True and shown["target"]["label"] == "Minimum deployment target of the .mlpackage"
    assert shown["target"]["info"].startswith("The oldest iOS/macOS the .mlpackage must run on")
    assert "The .aimodel beside it runs on iOS 27 and macOS 27" in shown["target"]["info"]
    # and the KV cache choice is the .mlpackage's: the .aimodel beside it grows its own.
    assert shown["kv"]["label"] == "KV cache of the .mlpackage" and shown["kv"]["choices"][0][0].startswith("None: each call")
    assert "The .aimodel beside it always holds a KV cache, grown with the text up to its context" in shown["kv"]["info"]
    # An embedder in Core AI: no bundle, no cache.
    fit, note, runner = check(format=CORE_AI.name, task="feature-extraction")
    assert "KV cache" not in fit and "grows" not in note


def _check_handler():
    import app

    demo = app.build_demo(on_spaces=False)
    handler = next(f for f in demo.fns.values() if f.name == "check")
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    return demo, handler, by_id


def test_task_choices_mark_the_models_own_task():
    choices = form.task_choices(["feature-extraction", "fill-mask"], "fill-mask")
    assert choices == [("feature-extraction: hidden states (embeddings)", "feature-extraction"),
                       ("fill-mask: scores for a masked token (the model's own task)", "fill-mask")]


def test_choices_cover_what_the_engine_accepts():
    from converters.options import DEPLOYMENT_TARGETS, KV_CACHES, NAMINGS, PRECISIONS, TOLERANCES
    from worker.spec import PUSH_KINDS, RUNNERS

    assert [v for _, v in form.option_field("precision")["choices"]] == list(PRECISIONS)
    assert [v for _, v in form.option_field("naming")["choices"]] == list(NAMINGS)
    assert [v for _, v in form.option_field("kv_cache")["choices"]] == list(KV_CACHES)
    assert [v for _, v in form.option_field("tolerance")["choices"]] == list(TOLERANCES)
    assert [v for _, v in form.runner_field(None)["choices"]] == list(RUNNERS)
    assert [v for _, v in form.PUSH_CHOICES] == list(PUSH_KINDS)
    assert form.option_field("minimum_deployment_target")["value"] in DEPLOYMENT_TARGETS
    assert all(len(text) < 160 for text in form.HELP.values()), "help must stay one line"


def test_default_push_repo():
    assert form.default_push_repo("alice", "tiny-bert") == "alice/tiny-bert-coreml"
    assert form.default_push_repo(None, None) == "<you>/<model>-coreml"


# ---------------------------------------------------------------------- the Size choice


def test_size_choices_name_each_scheme_with_its_size_and_the_target_it_needs():
    sizes = {"none": 270_000_000, "int8": 136_000_000, "lut8": 137_000_000, "lut6": 103_000_000,
             "int4": 76_000_000, "lut4": 68_000_000, "mixed": 89_000_000}
    choices = dict((value, label) for label, value in form.size_choices(sizes, "float16", "iOS17"))
    assert list(choices) == list(OPTIONS["quantize"].values)
    assert choices["none"] == "Full (float16) · about 270 MB"
    assert choices["int8"] == "Half — 8-bit (int8) · about 136 MB"
    # what the option table says each choice needs, on the target's platform
    assert choices["int4"].endswith("· about 76 MB · needs iOS18") and choices["mixed"].endswith("needs iOS18")
    assert "needs" not in choices["lut4"] and "needs" not in choices["lut6"]
    mac = dict((v, label) for label, v in form.size_choices(sizes, "float32", "macOS14"))
    assert mac["none"].startswith("Full (float32)") and mac["int4"].endswith("needs macOS15")
    old = dict((v, label) for label, v in form.size_choices(None, "float16", "iOS15"))
    assert old["int8"] == "Half — 8-bit (int8) · needs iOS16" and "about" not in old["none"]
    assert all("needs" not in label for label, _ in form.size_choices(None, "float16", "iOS18"))
    # No package made has a deployment target (Core AI): no choice needs one.
    assert all("needs" not in label for label, _ in form.size_choices(sizes, "float16", None))


def test_the_form_presents_weight_compression_as_size():
    field = form.option_field("quantize")
    assert field["label"] == "Size" and field["info"] == form.HELP["quantize"] and field["value"] == "none"
    assert [v for _, v in field["choices"]] == list(OPTIONS["quantize"].values)
    assert dict((v, label) for label, v in field["choices"])["int4"].endswith("needs iOS18")  # the default target is iOS17
    assert values(quantize="int8", minimum_deployment_target="iOS18").to_spec(TOKEN, "alice").options.quantize == "int8"


# ---------------------------------------------------------------------- the size estimate


def test_estimate_bytes_follows_each_schemes_storage():
    from converters.size_estimate import WeightShape, estimate_bytes

    layer = WeightShape((64, 128))  # 8192 weights: compressed
    n = 64 * 128

    def bits(scheme, **settings):
        return estimate_bytes([layer], scheme, **settings) * 8

    assert bits("none") == n * 16 and bits("none", float_bits=32) == n * 32
    assert bits("int8") == n * 8 + 64 * 16  # one scale per output channel
    assert bits("int4") == n * 4 + n // 32 * 16  # one scale per block of 32 inputs
    assert bits("int4", block_size=64) == n * 4 + n // 64 * 16
    assert bits("lut4") == n * 4 + 64 // 16 * 16 * 16  # a 16-entry table per 16 output channels
    assert bits("lut6", grouped=False) == n * 6 + 64 * 16  # one 64-entry table for the weight
    assert bits("mixed") == bits("int4")
    # what stays float: small weights, norms and biases, shapes that do not divide
    for weight in (WeightShape((32, 64)), WeightShape((4096,), "other"), WeightShape((100, 100), "other")):
        assert estimate_bytes([weight], "int4") == estimate_bytes([weight], "none")
    assert estimate_bytes([WeightShape((64, 100))], "int4") == 64 * 100 * 2  # 100 inputs: no block of 32
    assert estimate_bytes([WeightShape((72, 128))], "lut4") == 72 * 128 * 2  # 72 channels: no group of 16
    # mixed: embeddings and the output head at 8 bits
    for role in ("embedding", "head"):
        assert estimate_bytes([WeightShape((64, 128), role)], "mixed") == estimate_bytes([layer], "int8")


def test_weight_shapes_come_from_the_config_on_the_meta_device(tiny_model):
    from transformers import AutoConfig

    from converters.size_estimate import weight_shapes

    config = AutoConfig.from_pretrained(tiny_model("llama"))
    shapes = weight_shapes(config, "text-generation")
    # 2 layers x 7 linear layers, the embedding, the head; the norms are "other"
    assert _roles(shapes) == {"layer": 14, "embedding": 1, "head": 1, "other": 5}
    assert sum(w.elements for w in shapes) == sum(p.numel() for p in _model(tiny_model("llama")).parameters())
    features = weight_shapes(config, "feature-extraction")  # the base model: no head
    assert _roles(features) == {"layer": 14, "embedding": 1, "other": 5}
    config.tie_word_embeddings = True  # one matrix for the embedding and the head: one weight, 8 bits in mixed
    assert _roles(weight_shapes(config, "text-generation")) == {"layer": 14, "embedding": 1, "other": 5}


def _roles(shapes) -> dict[str, int]:
    roles: dict[str, int] = {}
    for weight in shapes:
        roles[weight.role] = roles.get(weight.role, 0) + 1
    return roles


def _model(folder):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(folder)


@pytest.fixture(scope="module")
def engine_sizes(tmp_path_factory):
    """A llama of 2.5 M parameters (weights dominate its package) converted with each scheme,
    unvalidated: (estimate, what the engine reports) by scheme."""
    from converters.export import convert
    from converters.loading import load_hf_config
    from converters.options import ConversionOptions
    from converters.size_estimate import estimates, weight_shapes
    from tests.models import build_model

    root = tmp_path_factory.mktemp("size-estimate")
    folder = build_model("llama", root / "llama", hidden_size=256, intermediate_size=1024, head_dim=64, vocab_size=1024)
    weights = weight_shapes(load_hf_config(folder), "text-generation")
    found = {}
    # lut6 at iOS17: one table per weight; lut4 at iOS18: a table per 16 channels (lut8's k-means is too slow here)
    for scheme, target in (("none", "iOS18"), ("int8", "iOS18"), ("int4", "iOS18"), ("mixed", "iOS18"),
                           ("lut4", "iOS18"), ("lut6", "iOS17")):
        options = ConversionOptions.from_strings(quantize=scheme, sequence_length="32", minimum_deployment_target=target)
        (package,) = convert(str(folder), "text-generation", root / scheme, options, validate=False).report_json["packages"]
        found[scheme] = (estimates(weights, options, "text-generation")[scheme], package)
    return found


@pytest.mark.slow
def test_the_estimate_is_within_ten_percent_of_the_packages_the_engine_writes(engine_sizes):
    for scheme, (estimate, package) in engine_sizes.items():
        size = package["size_bytes"]
        assert abs(estimate / size - 1) < 0.10, f"{scheme}: estimated {estimate}, the package is {size}"
        entry = package.get("compression")
        if entry:  # the weights alone, as the compression transform counts them: within 2 %
            assert entry["size_after_bytes"] == size
            assert abs(estimate / entry["weight_bytes_after"] - 1) < 0.02, scheme
    float_size = engine_sizes["none"][1]["size_bytes"]
    assert engine_sizes["int4"][0] < 0.32 * engine_sizes["none"][0] and engine_sizes["int4"][1]["size_bytes"] < 0.32 * float_size


def test_the_size_choice_shows_sizes_once_a_model_is_chosen(tiny_model):
    """The page's own handler: the Size field (under the task, hidden until a model is read)
    gets each choice's expected size for the chosen model and task."""
    import json

    import app
    from ui.models import ModelSummary

    demo = app.build_demo(on_spaces=False)
    handler = next(f for f in demo.fns.values() if f.name == "sizes")
    (size_field,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "quantize"]
    assert size_field.label == "Size" and not size_field.visible and size_field not in handler.inputs
    inspect = next(f for f in demo.fns.values() if f.name == "inspect")
    assert size_field in inspect.outputs  # shown with the tasks
    summary = ModelSummary(text="alice/tiny-llama", repo_id="alice/tiny-llama", model_type="llama",
                           config=json.loads((tiny_model("llama") / "config.json").read_text()),
                           tasks=["text-generation", "feature-extraction"], default_task="text-generation")
    entered = {"task": "text-generation", "precision": "float16", "minimum-deployment-target": "iOS17",
               "block-size": "32", "group-size": "16", "format": OPTIONS["format"].default}

    def data(chosen):  # the handler's inputs: the model's summary (a State), the task and five options
        return {c: entered.get(getattr(c, "elem_id", None), chosen) for c in handler.inputs}

    choices = dict((v, label) for label, v in handler.fn(data(summary))[size_field]["choices"])
    assert all(" · about " in label and label.split(" · about ")[1].split(" ")[1] == "MB" for label in choices.values())
    assert choices["int4"].endswith("needs iOS18") and "needs" not in choices["int8"]
    assert all("about" not in label for label, _ in handler.fn(data(None))[size_field]["choices"])  # no model yet


def test_a_gated_models_copy_is_public_only_when_the_user_confirms_its_licence_allows_it():
    assert values(visibility=form.PUBLIC).to_spec(TOKEN, "alice").push.private is False  # an open model: as chosen
    with pytest.raises(UserInputError, match="gated or private: its copy goes to a public repo only if you confirm"):
        values(visibility=form.PUBLIC, restricted=True).to_spec(TOKEN, "alice")
    assert values(visibility=form.PUBLIC, restricted=True, confirmed_public=True).to_spec(TOKEN, "alice").push.private is False
    assert values(restricted=True).to_spec(TOKEN, "alice").push.private is None  # the worker makes it private
    note = form.restricted_note("alice/gated-llama", gated=True, private=False, visibility=form.AUTO)
    assert note == "alice/gated-llama is gated (its authors grant access on conditions), so its copy is pushed to a private repo."
    assert "tick the box below only if its licence lets you publish it" in form.restricted_note("a/b", True, False, form.PUBLIC)
    assert form.restricted_note("a/b", False, False, form.PUBLIC) is None


def test_choices_made_for_another_model_are_reset_and_said_so():
    changes, notes = form.adapt_to_model("alice/llama", "alice/minilm", ["feature-extraction"], "stateful",
                                         "alice/llama-int4-coreml")
    assert changes == {"kv_cache": "none", "push_repo": ""}
    assert notes == ["KV cache set back to None: only text-generation models keep one.",
                     "The repo name you typed for alice/llama was cleared: this model goes to its own repo by default."]
    assert form.adapt_to_model("alice/llama", "alice/qwen", ["text-generation"], "stateful", "") == ({}, [])
    assert form.adapt_to_model(None, "alice/minilm", ["fill-mask"], "none", "alice/mine") == ({}, [])  # typed first
