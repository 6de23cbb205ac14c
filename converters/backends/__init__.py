"""Stages 3 and 5, the output formats: a backend turns a captured torch program into a
package, saves it, describes it, and gives validation a runner for what it saved.

Core ML (coreml.py) and Core AI (coreai.py) today; a new output format is one more module
here that implements `Backend` and one line in `BACKENDS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from ..errors import UserInputError


class Runner(Protocol):
    """Runs a saved package on this machine, for validation."""

    state_names: list[str]
    op_summary: dict

    def make_state(self) -> dict: ...

    def predict(self, inputs: dict, mode: str = "fp32", state: dict | None = None) -> dict: ...


class Backend(Protocol):
    name: str
    float16_safe_norms: bool  # whether a float16 capture for it takes float16_safe.py's norms
    image_inputs: bool  # whether its image inputs scale pixels themselves (else the program does)

    def convert(self, plan, captured):
        """The in-memory package for one part (`captured`: capture.Captured)."""

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
        raises UnsupportedOpError naming ops it cannot run."""


def _coreml() -> Backend:
    from .coreml import CoreMLBackend  # coremltools loads only when a package is made

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
