"""The pipeline's seams (converters/export.py): plan -> capture -> backend convert ->
transforms -> backend save -> validate (the backend's runner) -> report."""

from __future__ import annotations

import pytest

import converters.backends as backends
import converters.export as export
from converters.backends.coreml import CoreMLBackend
from converters.errors import UserInputError
from converters.plan import make_plan
from converters.options import ConversionOptions
from converters.source import open_source


class RecordingBackend(CoreMLBackend):
    """Core ML underneath, recording which stage called it."""

    name = "recording"

    def __init__(self, calls):
        self.calls = calls

    def convert(self, plan, captured):
        self.calls.append(("convert", captured.part, captured.exporter))
        return super().convert(plan, captured)

    def save(self, plan, part, artifact, path):
        self.calls.append(("save", part, getattr(artifact, "transformed", False)))
        super().save(plan, part, artifact, path)

    def runner(self, path):
        self.calls.append(("runner", path.name))
        return super().runner(path)


def test_a_backend_and_a_transform_plug_in_without_touching_the_pipeline(monkeypatch, tiny_model, tmp_path):
    calls = []
    monkeypatch.setitem(backends.BACKENDS, "recording", lambda: RecordingBackend(calls))

    def mark(plan, part, artifact, backend):
        calls.append(("transform", part))
        artifact.transformed = True
        return artifact

    monkeypatch.setattr(export, "transforms_for", lambda plan: [mark])
    result = export.convert(str(tiny_model("t5")), "text2text-generation", tmp_path, backend="recording")
    assert result.report_json["validation"]["passed"] is True
    assert calls == [
        ("convert", "encoder", "torch.export"), ("transform", "encoder"), ("save", "encoder", True),
        ("convert", "decoder", "torch.export"), ("transform", "decoder"), ("save", "decoder", True),
        ("runner", "t5-encoder.mlpackage"), ("runner", "t5-decoder.mlpackage"),
    ]


def test_an_unknown_backend_is_refused():
    with pytest.raises(UserInputError, match="Unknown output format 'onnx'. Choose one of: coreml"):
        backends.backend_for("onnx")


def test_planning_refuses_before_loading_weights(tiny_model, tmp_path):
    """The plan stage reads config files only: a bad request fails before any weights load."""
    folder = tiny_model("llama")
    source = open_source(str(folder))
    plan = make_plan(source, "auto", ConversionOptions(), None)
    assert (plan.task, plan.parts, plan.hub_name) == ("text-generation", ["model"], source.name)
    with pytest.raises(UserInputError, match="stateful KV cache needs Core ML states"):
        make_plan(source, "auto", ConversionOptions.from_strings(kv_cache="stateful", minimum_deployment_target="iOS17"), None)
