"""The Mac's validation path, run here: everything validation does with Core ML on a Mac, with
Core ML's own calls (load a package per compute unit, predict, MLComputePlan: the three
functions of converters/backends/coreml/runtime.py that need macOS) answered by a stand-in
that computes as those units do, with the reference executor (the CPU in float32, the GPU and
the Neural Engine in float16). What runs is the rest: which rows each unit gets, the tolerance
each is judged by, a stateful package's state carried through its calls, the report's kind,
modes and placement, and a unit that computes wrong failing the package.

The macOS part itself (the real MLModel and MLComputePlan) is test_validation.py's
test_real_compute_units_on_macos, which runs on a Mac and is skipped elsewhere."""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters.backends.coreml import CoreMLBackend
from converters.export import convert
from converters.options import ConversionOptions
from converters.validate_package import main as validate_main
from converters.backends.coreml import runtime as coreml_runtime

UNITS = coreml_runtime.COMPUTE_UNITS


class StandInMLModel:
    """coremltools' MLModel as validation calls it (get_spec, make_state, predict), computed by
    the reference executor in the precision `unit` computes in. `wrong_on`: a unit whose
    outputs come back shifted, as a miscompiled program's would."""

    loaded: list[tuple[str, str]] = []

    def __init__(self, path, unit: str, wrong_on: str | None):
        import coremltools as ct

        self.unit, self.wrong = unit, unit == wrong_on
        self.executor = CoreMLBackend().runner(path)
        self.spec = ct.utils.load_spec(str(path))
        self.mode = "fp32" if unit == "CPU_ONLY" else "fp16"
        self.states_made = 0
        StandInMLModel.loaded.append((str(path), unit))

    def get_spec(self):
        return self.spec

    def make_state(self):
        self.states_made += 1
        return self.executor.make_state()

    def predict(self, feed: dict, state=None) -> dict:
        outputs = self.executor.predict(feed, mode=self.mode, state=state)
        if self.wrong:
            outputs = {name: value + np.float32(0.5) if value.dtype.kind == "f" else value for name, value in outputs.items()}
        return outputs


@pytest.fixture
def mac(monkeypatch):
    """Core ML available, its calls answered by the stand-in; returns the models it loaded."""
    made: dict[str, StandInMLModel] = {}
    settings = {"wrong_on": None}

    def load(path, unit, function=None):  # `function`: a multifunction package's (none here)
        assert function is None
        made[unit] = StandInMLModel(path, unit, settings["wrong_on"])
        return made[unit]

    monkeypatch.setattr(coreml_runtime, "available", lambda: (True, "macOS 15.1 (stand-in)"))
    monkeypatch.setattr(coreml_runtime, "load", load)
    monkeypatch.setattr(coreml_runtime, "placement",
                        lambda model, unit: {"available": True, "ops": 1, "by_device": {"cpu": 1}, "unit": model.unit})
    return made, settings


@pytest.fixture(scope="module")
def packages(tiny_model, tmp_path_factory):
    """A float32 package and a stateful one, converted once (unvalidated: each test validates)."""
    made = {}
    for name, options in {"float32": {"sequence_length": 12, "precision": "float32"},
                          "stateful": {"sequence_length": 16, "minimum_deployment_target": "iOS18", "kv_cache": "stateful"}}.items():
        result = convert(str(tiny_model("llama")), "text-generation", tmp_path_factory.mktemp(name),
                         ConversionOptions.from_strings(**options), validate=False)
        made[name] = result.packages[0]
    return made


def _validation(packages, name: str, tiny_model, tmp_path) -> dict:
    report = tmp_path / "report.json"
    validate_main([str(packages[name]), "--source", str(tiny_model("llama")), "--task", "text-generation",
                   "--report", str(report)])
    return json.loads(report.read_text())["validation"]


def test_each_compute_unit_gets_its_rows_judged_in_the_precision_it_computes_in(mac, packages, tiny_model, tmp_path):
    made, _ = mac
    validation = _validation(packages, "float32", tiny_model, tmp_path)
    assert validation["passed"], validation["message"]
    assert validation["kind"] == "Core ML on this Mac and the reference executor"
    assert validation["runtime"] == "macOS 15.1 (stand-in)"
    assert validation["modes"] == ["fp32"] + [f"coreml-{unit}" for unit in UNITS]
    assert set(made) == set(UNITS)
    rows = [r for r in validation["checks"] if r["mode"].startswith("coreml-")]
    inputs = {r["inputs"] for r in validation["checks"] if r["mode"] == "fp32" and r["metric"] == "max_abs_diff"}
    for unit in UNITS:  # every input set, on every unit
        assert {r["inputs"] for r in rows if r["mode"] == f"coreml-{unit}" and r["metric"] == "max_abs_diff"} == inputs
    # A float32 package: the CPU computes it in float32 and is held to float32's bound; the GPU
    # and the Neural Engine compute in float16 whatever the package says, and get float16's.
    bound = {r["mode"]: r["threshold"] for r in validation["checks"] if r["metric"] == "psnr_db"}
    assert bound["coreml-CPU_ONLY"] == bound["fp32"] > bound["coreml-CPU_AND_GPU"] == bound["coreml-ALL"]
    assert validation["placement"]["model"]["CPU_AND_NE"]["unit"] == "CPU_AND_NE"


def test_a_unit_that_computes_wrong_fails_the_package_and_is_named(mac, packages, tiny_model, tmp_path):
    _, settings = mac
    settings["wrong_on"] = "CPU_AND_NE"
    validation = _validation(packages, "float32", tiny_model, tmp_path)
    assert not validation["passed"]
    failed = {r["mode"] for r in validation["checks"] if not r["passed"]}
    assert failed == {"coreml-CPU_AND_NE"}, failed
    assert "coreml-CPU_AND_NE" in validation["message"]


def test_a_stateful_package_carries_one_state_through_its_calls_on_each_unit(mac, packages, tiny_model, tmp_path):
    made, _ = mac
    validation = _validation(packages, "stateful", tiny_model, tmp_path)
    assert validation["passed"], validation["message"]
    sets = {r["inputs"] for r in validation["checks"] if r["mode"] == "coreml-ALL" and r["metric"] == "max_abs_diff"}
    assert sets, "no rows on Core ML for the stateful package"
    for unit in UNITS:  # one fresh state per input set, carried through its prefill and steps
        assert made[unit].states_made == len(sets), (unit, made[unit].states_made, sets)
