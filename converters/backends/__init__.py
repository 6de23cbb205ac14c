"""Stages 3 and 5, the output formats: a backend turns a captured torch program into a
package, saves it, describes it, compresses it, refuses what its format cannot take, and
gives validation a runner for what it saved.

Core ML (the coreml/ package) and Core AI (coreai/) today, each holding all that knows its
format: conversion, saving, compression, its runners. A new output format is one more
package (or module) here that implements `Backend` and one line in `BACKENDS` — nothing
outside backends/ asks for a format by its name (tests/test_backends.py adds a third one in
a test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from ..errors import UserInputError


class Runner(Protocol):
    """Runs a saved package on this machine, for validation and Try it. A runner may have its
    own `modes` (a runtime that runs the package as it is) and their `mode_words`."""

    state_names: list[str]

    def make_state(self) -> dict: ...

    def predict(self, inputs: dict, mode: str = "fp32", state: dict | None = None) -> dict: ...


class DeviceRun(Protocol):
    """A saved package loaded on one compute unit of this machine's hardware (a Mac's CPU, GPU
    or Neural Engine): validation's rows for that unit."""

    unit: str  # the compute unit: "CPU_AND_NE"
    mode: str  # the report's mode of its rows: "coreml-CPU_AND_NE"
    words: str  # the mode as people read it: "Core ML, CPU_AND_NE"
    float16: bool  # whether the unit computes in float16 whatever the package says

    def predict(self, feeds: list[dict], stateful: bool) -> list[dict]: ...

    def placement(self) -> dict: ...


class Backend(Protocol):
    name: str  # the option's value (`--format`) and the report's "format"
    label: str  # the format as people read it: "Core ML"
    package_words: str  # what its package is, for an error: "a Core ML package (.mlpackage folder with a Manifest.json)"
    float16_safe_norms: bool  # whether a float16 capture for it takes float16_safe.py's norms
    image_inputs: bool  # whether its image inputs scale pixels themselves (else the program does)
    keeps_source_lines: bool  # whether its package records each op's Python source line (torch then records a stack trace an op)
    converts_in_chunks: bool  # whether `keep_chunk` and `stitch` work: a big decoder a few layers at a time (chunks.py)
    modes: tuple[str, ...] | None  # the modes its runner runs a package in (None: validation's fp32 and fp16 emulation)

    def decompositions(self) -> dict:
        """The decomposition table its converter reads torch.export's program in ({}: core ATen,
        what coremltools reads); capture.py decomposes with it (decompose.py)."""

    def refusal(self, cfg, options) -> str | None:
        """Why this model (`cfg`) and these options cannot become this format's package, or
        None; asked at plan time (plan.check_request) for every format the options ask for."""

    def check_validation_time(self, plan, time_limit: float | None) -> None:
        """Refuse (UserInputError), before any weights load, a validation that would not finish
        within `time_limit` seconds (a job's limit), or warn in `plan.warnings`; asked only when
        validation runs."""

    def owns(self, path: Path) -> bool:
        """Whether `path` is (by its name, or what it holds) a package of this format."""

    def check_package(self, path: Path) -> None:
        """Refuse (UserInputError) a `path` that `owns` claims but that is not a saved package."""

    def convert(self, plan, captured):
        """The in-memory package for one part (`captured`: capture.Captured)."""

    def compress(self, plan, part: str, artifact):
        """The in-memory package with its weights compressed as `plan.options.quantize` asks
        (transforms/: each format its own compressor); what it did goes to `plan.compression[part]`."""

    def compression_entry(self, plan, part: str, size_bytes: int, info: dict) -> dict | None:
        """The report's compression entry of a saved, compressed part (`plan.compression[part]`
        finished with the saved package's figures; `info`: `describe`'s)."""

    def package_path(self, plan, part: str) -> str:
        """Where the part's package goes, relative to the output folder."""

    def save(self, plan, part: str, artifact, path: Path) -> None:
        """Write the package, with its descriptions and metadata, to `path`."""

    def discard(self, artifact) -> None:
        """Let go of what an in-memory package keeps on disk, once it is saved or replaced."""

    def keep_chunk(self, plan, part: str, artifact, scratch: Path):
        """Set one converted chunk of a model's layers (chunks.py) aside for `stitch`, on disk
        (in `scratch` or the backend's own place): its weights must not stay in memory."""

    def stitch(self, plan, part: str, chunks: list, scratch: Path):
        """One in-memory package running the kept chunks in order, the way `convert` returns
        one; its weights may live in `scratch`."""

    def describe(self, path: Path) -> dict:
        """Inputs, outputs, states and metadata of a saved package, as saved."""

    def runner(self, path: Path) -> Runner:
        """A runner for the saved package on any OS (validation's exact and fp16 modes);
        raises errors.UnsupportedOpError naming ops it cannot run."""

    def unit_analysis(self, info: dict, runner: Runner) -> dict | None:
        """Where each op of the package may run, by compute unit (the report's
        `compute_units`), for a format with published placement rules; else None."""

    def device_runtime(self) -> tuple[bool, str]:
        """Whether this machine runs the format's packages on its own hardware (Core ML on a
        Mac), and what that runtime is or why there is none (the report's `runtime`)."""

    def device_runs(self, path: Path) -> list[DeviceRun]:
        """The saved package loaded on each compute unit, for validation's on-device rows;
        asked only where `device_runtime` says yes; [] for a format without them."""

    def validation_kind(self, on_device: bool) -> str:
        """What ran its packages in validation, for the report's `kind`."""

    def validates_itself(self, plan, part: str) -> bool:
        """Whether its package for `part` is judged by its own checks (`validate_itself`: a
        package driven as its app drives it, like Core AI's LLM bundle) instead of validation's
        common input sets."""

    def validate_itself(self, plan, model, part: str, path: Path, earlier: dict | None, progress=None) -> dict:
        """Validation's section with this package's rows joined to `earlier`'s (None: the first)."""


def _coreml() -> Backend:
    from .coreml import CoreMLBackend  # numpy and the families only: coremltools loads when a package is made

    return CoreMLBackend()


def _coreai() -> Backend:
    from .coreai import CoreAIBackend  # torch (and then coreai-torch) loads only when an .aimodel is made

    return CoreAIBackend()


# name -> a factory of the backend; a new output format is one module and one line here.
BACKENDS: dict[str, Callable[[], Backend]] = {"coreml": _coreml, "coreai": _coreai}


def backend_for(name: str = "coreml") -> Backend:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise UserInputError(f"Unknown output format '{name}'. Choose one of: {', '.join(BACKENDS)}.") from None


def all_backends() -> list[Backend]:
    """Every registered backend, in `BACKENDS`' order."""
    return [factory() for factory in BACKENDS.values()]


def backend_for_package(path: str | Path, check: bool = True) -> Backend:
    """The backend that made the saved package at `path` (the first whose `owns` claims it),
    with its shape checked (`check_package`) unless `check` is False; UserInputError when no
    backend claims it."""
    path = Path(path)
    for backend in all_backends():
        if backend.owns(path):
            if check:
                backend.check_package(path)
            return backend
    raise UserInputError(f"{path} is not " + " or ".join(b.package_words for b in all_backends()) + ".")
