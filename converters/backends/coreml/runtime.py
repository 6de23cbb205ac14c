"""Validation on a real Core ML runtime (macOS only): predict per compute unit, read
where Core ML placed each op (MLComputePlan, macOS 14.4+), stateful predict (macOS 15+).

On Linux `available()` is False with the reason, and the validator uses the reference
executor alone; the report says which kind of validation ran.
"""

from __future__ import annotations

import platform
from collections import Counter

import numpy as np

COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")


def macos_version() -> tuple[int, ...]:
    if platform.system() != "Darwin":
        return ()
    return tuple(int(p) for p in platform.mac_ver()[0].split(".") if p.isdigit())


def available() -> tuple[bool, str]:
    """Whether Core ML can run here, and why not."""
    if platform.system() != "Darwin":
        return False, f"Core ML needs macOS; this worker runs {platform.system()}"
    try:
        from coremltools import libcoremlpython  # noqa: F401 - the native Core ML bridge
    except ImportError as error:
        return False, f"coremltools has no Core ML bridge here ({error})"
    return True, f"macOS {'.'.join(map(str, macos_version()))}"


def load(package_path: str, compute_unit: str, function: str | None = None):
    """The package loaded by Core ML; `function`: one function of a multifunction package
    (coremltools' `function_name`, which sets `MLModelConfiguration.functionName`; the default
    function otherwise)."""
    import coremltools as ct

    units = getattr(ct.ComputeUnit, compute_unit)
    if function is None:
        return ct.models.MLModel(str(package_path), compute_units=units)
    return ct.models.MLModel(str(package_path), compute_units=units, function_name=function)


def predict(model, feeds: list[dict[str, np.ndarray]], stateful: bool) -> list[dict[str, np.ndarray]]:
    """Predictions for successive feeds; a stateful model carries one fresh state through
    them all (macOS 15+)."""
    state = model.make_state() if stateful else None
    results = []
    for inputs in feeds:
        feed = {name: _feed_value(model, name, value) for name, value in inputs.items()}
        results.append(model.predict(feed, state=state) if stateful else model.predict(feed))
    return results


def _feed_value(model, name: str, value: np.ndarray):
    """Image inputs are PIL images on macOS; tensors go as they are."""
    spec_input = next(i for i in model.get_spec().description.input if i.name == name)
    if spec_input.type.WhichOneof("Type") == "imageType":
        from PIL import Image

        pixels = np.clip(value[0].transpose(1, 2, 0), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, mode="RGB")
    return value


def placement(model, compute_unit: str) -> dict:
    """Per-op preferred device from MLComputePlan (macOS 14.4+): counts by device."""
    import coremltools as ct
    from coremltools.models.compute_device import MLCPUComputeDevice, MLGPUComputeDevice, MLNeuralEngineComputeDevice
    from coremltools.models.compute_plan import MLComputePlan

    if macos_version() < (14, 4):
        return {"available": False, "reason": "MLComputePlan needs macOS 14.4 or later"}
    plan = MLComputePlan.load_from_path(
        path=model.get_compiled_model_path(), compute_units=getattr(ct.ComputeUnit, compute_unit)
    )
    counts: Counter = Counter()
    names = {MLCPUComputeDevice: "cpu", MLGPUComputeDevice: "gpu", MLNeuralEngineComputeDevice: "neural_engine"}

    def visit(block):
        for operation in block.operations:
            usage = plan.get_compute_device_usage_for_mlprogram_operation(operation)
            if usage is not None:
                counts[names.get(type(usage.preferred_compute_device), "other")] += 1
            for inner in operation.blocks:
                visit(inner)

    program = plan.model_structure.program
    if program is None:
        return {"available": False, "reason": "not an ML Program"}
    for function in program.functions.values():
        visit(function.block)
    total = sum(counts.values())
    return {"available": True, "ops": total, "by_device": dict(counts)}


class DeviceRun:
    """A saved package loaded by Core ML on one compute unit of this Mac: validation's rows
    for that unit (`mode`), judged in the precision the unit computes in."""

    def __init__(self, package_path, compute_unit: str, function: str | None = None):
        self.unit = compute_unit
        self.mode = f"coreml-{compute_unit}"
        self.words = f"Core ML, {compute_unit}"
        # The GPU and the Neural Engine compute in float16 whatever the package says.
        self.float16 = compute_unit != "CPU_ONLY"
        self.model = load(package_path, compute_unit, function)

    def predict(self, feeds: list[dict[str, np.ndarray]], stateful: bool) -> list[dict[str, np.ndarray]]:
        return predict(self.model, feeds, stateful)

    def placement(self) -> dict:
        return placement(self.model, self.unit)
