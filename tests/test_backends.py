"""A backend owns its format (converters/backends/): adding one is a package implementing
`Backend`, a line in `BACKENDS` and its words for people in `converters/formats.py` (which the
option table's choices are made from) — the plan, the pipeline, compression, the package
look-up and validation's report reach it through the protocol, never by its name.

A third, fake format is registered here (the test stands for its module) and a tiny BERT
goes through the pipeline to it, its weights "compressed" by its own compressor."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest

import converters.backends as backends
import converters.export as export
from converters import formats
from converters.errors import UserInputError
from converters.options import OPTIONS, Choice, ConversionOptions
from converters.plan import make_plan
from converters.source import open_source

ROOT = Path(__file__).resolve().parent.parent


class FakeBackend:
    """A format that writes each part's interface as JSON: what a new backend implements."""

    name = "fake"
    label = "Fake"
    package_words = "a fake package (.fake folder with an interface.json)"
    float16_safe_norms = False
    image_inputs = False
    keeps_source_lines = False
    converts_in_chunks = False
    modes = ("fake",)
    calls: list = []

    def decompositions(self):
        return {}

    def refusal(self, cfg, options):
        self.calls.append(("refusal", cfg.task))
        return "Fake output takes float32 only." if options.precision != "float32" else None

    def check_validation_time(self, plan, time_limit):
        self.calls.append(("check_validation_time", time_limit))
        raise UserInputError("Validating a fake package would take forever.")

    def owns(self, path):
        return Path(path).suffix == ".fake"

    def check_package(self, path):
        if not (Path(path) / "interface.json").exists():
            raise UserInputError(f"{path} is not {self.package_words}.")

    def convert(self, plan, captured):
        self.calls.append(("convert", captured.part, captured.exporter))
        return {"inputs": [spec.name for spec in plan.cfg.inputs(captured.part)],
                "outputs": [spec.name for spec in plan.cfg.outputs(captured.part)]}

    def compress(self, plan, part, artifact):
        self.calls.append(("compress", part, plan.options.quantize))
        plan.compression[part] = {"scheme": plan.options.quantize}
        return {**artifact, "compressed": True}

    def compression_entry(self, plan, part, size_bytes, info):
        return {**plan.compression.pop(part), "size_after_bytes": size_bytes}

    def package_path(self, plan, part):
        return f"{plan.source.name}-{part}.fake"

    def save(self, plan, part, artifact, path):
        self.calls.append(("save", part, artifact.get("compressed", False)))
        path.mkdir(parents=True, exist_ok=True)
        (path / "interface.json").write_text(json.dumps(artifact))

    def discard(self, artifact):
        pass

    def keep_chunk(self, plan, part, artifact, scratch):
        raise AssertionError("a fake package converts whole")

    def stitch(self, plan, part, chunks, scratch):
        raise AssertionError("a fake package converts whole")

    def describe(self, path):
        saved = json.loads((Path(path) / "interface.json").read_text())
        return {"inputs": [{"name": n} for n in saved["inputs"]], "outputs": [{"name": n} for n in saved["outputs"]],
                "states": [], "metadata": {}, "program": None}

    def runner(self, path):
        raise AssertionError("validation is not run in these tests")

    def unit_analysis(self, info, runner):
        return None

    def device_runtime(self):
        return False, "no fake hardware here"

    def device_runs(self, path):
        return []

    def validation_kind(self, on_device):
        return "the fake runtime"

    def validates_itself(self, plan, part):
        return False

    def validate_itself(self, plan, model, part, path, earlier, progress=None):
        raise AssertionError("validation is not run in these tests")


@pytest.fixture
def fake(monkeypatch):
    """The fake format registered (one line in BACKENDS, one entry in formats.FORMATS) and offered
    by the `format` option (whose choices the table made from FORMATS when it was imported)."""
    FakeBackend.calls = []
    monkeypatch.setitem(backends.BACKENDS, "fake", FakeBackend)
    entry = formats.Format("fake", "Fake (.fake)", makes=("fake",), label="Fake", package_suffix=".fake", repo_suffix="fake")
    monkeypatch.setitem(formats.FORMATS, "fake", entry)
    row = OPTIONS["format"]
    monkeypatch.setitem(OPTIONS, "format", replace(row, choices=(*row.choices, Choice(entry.name, entry.choice))))
    return FakeBackend


def _options(**given) -> ConversionOptions:
    return ConversionOptions.from_strings(**{"format": "fake", "precision": "float32", **given})


def test_the_plan_asks_the_new_format_for_its_refusal(fake, tiny_model):
    source = open_source(str(tiny_model("bert")))
    plan = make_plan(source, "fill-mask", _options())
    assert plan.options.formats == ("fake",) and ("refusal", "fill-mask") in fake.calls
    with pytest.raises(UserInputError, match="Fake output takes float32 only"):
        make_plan(source, "fill-mask", _options(precision="float16"))


def test_the_pipeline_converts_compresses_and_saves_through_the_protocol(fake, tiny_model, tmp_path, monkeypatch):
    folder = tiny_model("bert")
    result = export.convert(str(folder), "fill-mask", tmp_path, _options(quantize="int8"), validate=False)
    assert fake.calls == [("refusal", "fill-mask"), ("convert", "model", "torch.export"), ("compress", "model", "int8"),
                          ("save", "model", True)]
    [package] = result.packages
    [entry] = result.report_json["packages"]
    assert package == tmp_path / "bert-model.fake" and entry["format"] == "fake"
    assert entry["compression"] == {"scheme": "int8", "size_after_bytes": entry["size_bytes"]}
    assert backends.backend_for_package(package).name == "fake"  # the validation CLI's and Try it's look-up

    # Its validation-time check runs before any weights load.
    monkeypatch.setattr(export, "load", lambda plan: pytest.fail("weights loaded before the validation-time check"))
    fake.calls = []
    with pytest.raises(UserInputError, match="would take forever"):
        export.convert(str(folder), "fill-mask", tmp_path / "again", _options())
    assert fake.calls[-1] == ("check_validation_time", None)


def test_a_folder_no_backend_claims_is_refused_naming_every_format(fake, tmp_path):
    with pytest.raises(UserInputError, match=r"is not a Core ML package .* or a Core AI model .* or a fake package"):
        backends.backend_for_package(tmp_path / "model.bin")
    with pytest.raises(UserInputError, match="is not a fake package"):
        backends.backend_for_package(tmp_path / "empty.fake")


def test_nothing_outside_backends_names_a_format():
    """A format's name ("coreml", "coreai", "both") stands in backends/ and formats.py only: nothing else compares
    with it, keys a table by it or spells it — the option table's choices, the words a
    conversion, a repo name, a card and the page give each format come from converters/formats.py.
    (worker/settings.py's Redis key prefix is the service's name, not a format's.)"""
    names = set(backends.BACKENDS) | set(formats.FORMATS)
    allowed = {("worker/settings.py", "KEY_PREFIX")}
    found = []
    for path in [ROOT / "app.py", *sorted(p for folder in ("converters", "worker", "ui") for p in (ROOT / folder).rglob("*.py"))]:
        where = path.relative_to(ROOT).as_posix()
        if where.startswith("converters/backends/") or where == "converters/formats.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assigned = {id(node.value): target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    for target in node.targets if isinstance(target, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and (where, assigned.get(id(node))) not in allowed:
                found.append(f"{where}:{node.lineno} {node.value!r}")
    assert not found, found
