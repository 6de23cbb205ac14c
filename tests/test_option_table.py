"""The option table (converters/options.py) is the one place an option is declared: every
row becomes a CLI flag, a JobSpec option that survives the queue's JSON, and a form field
with the row's label, help, choices and default. These tests walk the table, so a new row
is covered without touching them (a free-text row needs a sample value in SAMPLES)."""

from __future__ import annotations

import json
from dataclasses import fields

import gradio as gr
import pytest

import app
from converters.__main__ import build_parser
from converters.errors import UserInputError
from converters.options import DEPLOYMENT_TARGETS, OPTIONS, ConversionOptions, meets
from ui import form
from worker.spec import JobSpec

# A value other than the default for each free-text option (choices pick their own).
SAMPLES = {"sequence_length": "64,128", "image_size": "224,384", "block_size": "64", "group_size": "8"}


def other_value(name: str) -> str:
    """A valid value of option `name` that is not its default."""
    option = OPTIONS[name]
    if not option.choices:
        return SAMPLES[name]
    return next(value for value in reversed(option.values) if value != option.default)


def non_defaults() -> dict[str, str]:
    return {name: other_value(name) for name in OPTIONS}


@pytest.fixture(scope="module")
def demo():
    return app.build_demo(on_spaces=False)


def by_elem_id(demo, elem_id):
    (found,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id]
    return found


def handler(demo, name):
    return next(f for f in demo.fns.values() if f.name == name)


def test_the_table_is_the_dataclass():
    assert [f.name for f in fields(ConversionOptions)] == list(OPTIONS)
    for name, option in OPTIONS.items():
        assert option.name == name and option.label and option.help and option.cli_flags
        assert len(option.help) < 160 and "\n" not in option.help, f"{name}: help must stay one line"
        assert (option.choices and not option.parse) or (option.parse and not option.choices), name
        assert getattr(ConversionOptions(), name) == option.read(None) == option.read(option.default)
        if not option.choices:
            assert name in SAMPLES, f"give free-text option {name} a sample value in SAMPLES"
    assert ConversionOptions.from_strings() == ConversionOptions()


def test_every_row_is_a_cli_flag_with_its_aliases():
    parser = build_parser()
    by_flag = {flag: action for action in parser._actions for flag in action.option_strings}
    help_text = parser.format_help()
    for name, option in OPTIONS.items():
        for flag in option.cli_flags:
            assert by_flag[flag].dest == name and by_flag[flag].default is None, flag
            args = parser.parse_args(["model", "--output", "out", flag, other_value(name)])
            assert ConversionOptions.from_dict(vars(args)) == ConversionOptions.from_strings(**{name: other_value(name)})
        for value in option.values:
            assert value in help_text, f"--help lists {value}"
    # Unset flags are the table's defaults; the flags the tests and README use still parse.
    assert ConversionOptions.from_dict(vars(parser.parse_args(["model", "--output", "out"]))) == ConversionOptions()
    args = parser.parse_args(["m", "--output", "o", "--precision", "fp32", "--sequence-length", "8", "--minimum-target",
                              "ios18", "--naming", "exporters", "--kv-cache", "stateful", "--tolerance", "loose"])
    assert ConversionOptions.from_dict(vars(args)).to_dict() == {
        "format": "coreml", "precision": "float32", "sequence_length": "8", "image_size": "auto", "minimum_deployment_target": "iOS18", "naming": "exporters",
        "kv_cache": "stateful", "llm_bundle": "macos", "quantize": "none", "block_size": "32", "group_size": "auto", "tolerance": "loose"}
    assert "stateful needs iOS18 or macOS15" in " ".join(help_text.split())  # the row's minimum target


def test_every_row_round_trips_through_the_job_spec():
    values = non_defaults()
    spec = JobSpec.build("alice/tiny-bert", token="hf_token", user="alice", options=values)
    data = json.loads(json.dumps(spec.to_json()))
    assert data["options"] == ConversionOptions.from_strings(**values).to_dict()
    assert set(data["options"]) == set(OPTIONS)
    again = JobSpec.from_json(data)
    assert again.options == spec.options == ConversionOptions.from_strings(**values)
    for name in OPTIONS:
        assert getattr(again.options, name) != getattr(ConversionOptions(), name), name
    # Another option value is another job; an unknown option name is refused with the known ones.
    for name in OPTIONS:
        other = JobSpec.build("alice/tiny-bert", token="hf_token", user="alice", options={name: values[name]})
        assert other.job_id() != JobSpec.build("alice/tiny-bert", token="hf_token", user="alice").job_id(), name
    with pytest.raises(UserInputError, match="Unknown option\\(s\\): speculative. Known options: " + ", ".join(OPTIONS)):
        JobSpec.build("alice/tiny-bert", token="hf_token", options={"speculative": "yes"})


def test_every_row_is_a_form_field_with_its_label_help_choices_and_default(demo):
    submit = handler(demo, "submit")
    check = handler(demo, "check")
    for name, option in OPTIONS.items():
        field = by_elem_id(demo, name.replace("_", "-"))
        if name == form.SIZE_OPTION:  # the form presents weight compression as "Size", in its own words
            assert field.label == form.SIZE_LABEL and field.info == form.HELP[name]
        else:
            assert field.label == option.label and field.info == option.help, name
        assert field.value == option.default, name
        if option.choices:
            assert isinstance(field, (gr.Radio, gr.Dropdown))
            assert [c[1] for c in field.choices] == list(option.values), name
            assert [tuple(c) for c in field.choices] == form.option_field(name)["choices"], name
        else:
            assert isinstance(field, gr.Textbox)
        assert field in submit.inputs and field in check.inputs, f"{name} reaches the job and the option check"
    # What the fields hold becomes the spec's options, by name.
    values = non_defaults()
    spec = form.FormValues("alice/tiny-bert", "fill-mask", values).to_spec("hf_token", "alice")
    assert spec.options == ConversionOptions.from_strings(**values)


def test_handlers_take_and_return_dicts_keyed_by_component(demo):
    ours = [f for f in demo.fns.values() if f.fn is not None and f.fn.__module__ == "app"]
    assert all(f.inputs_as_dict for f in ours if f.inputs), [f.name for f in ours if f.inputs and not f.inputs_as_dict]
    # Polling with no job says the workers and stops the timer (no worker is awaited: this test's
    # queue cannot be reached), wherever the timer sits among the outputs.
    poll = handler(demo, "poll")
    (timer,) = [b for b in demo.blocks.values() if isinstance(b, gr.Timer)]
    result = poll.fn({component: None for component in poll.inputs}, None, None)
    assert timer in result and result[timer].active is False
    assert [type(component) for component in result if component is not timer] == [gr.HTML]


def test_messages_name_the_option_and_its_choices():
    for name, option in OPTIONS.items():
        if option.choices:
            with pytest.raises(UserInputError, match=f"Unknown {option.noun} 'bogus'. Choose one of: "
                                                     + ", ".join(option.values)):
                ConversionOptions.from_strings(**{name: "bogus"})
    with pytest.raises(TypeError, match="speculative"):  # a programming error, not the user's
        ConversionOptions.from_strings(speculative="yes")
    assert ConversionOptions.from_dict({"speculative": "yes"}) == ConversionOptions()  # older JSON: other keys ignored


def test_declared_minimum_targets_match_the_engine_check(tiny_model):
    """kv_cache=stateful declares iOS18/macOS15; configs/text.py refuses older targets (and
    compression's schemes, transforms/schemes.py: every refusal is the plan stage's)."""
    from transformers import AutoConfig

    from converters.configs import config_class_for
    from converters.plan import check_request

    declared = [(name, choice) for name, option in OPTIONS.items() for choice in option.choices if choice.needs]
    assert ("kv_cache", "stateful") in [(name, choice.value) for name, choice in declared]
    config = AutoConfig.from_pretrained(tiny_model("llama"))
    for name, choice in declared:
        for target in DEPLOYMENT_TARGETS:
            options = ConversionOptions.from_strings(**{name: choice.value, "minimum_deployment_target": target,
                                                        "sequence_length": "32"})
            cfg = config_class_for("llama")(config, "text-generation", options)
            check = lambda cfg=cfg: check_request(cfg)  # noqa: E731
            if meets(target, choice.needs):
                check()
            else:
                with pytest.raises(UserInputError, match="minimum deployment target"):
                    check()
    assert meets("macOS15", ("iOS18", "macOS15")) and not meets("iOS17", ("iOS18", "macOS15"))
