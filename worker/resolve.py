"""The resolve stage: everything about the source repo that can be checked before any
weights are downloaded, so a bad request fails in seconds with a message saying what to do.

The checks are the engine's preflight (converters/preflight.py), the same the form runs:
the repo exists and the token may read it (private, revision), gated access, safetensors
weights (never pickle), config.json without remote code, architecture and task supported
(`auto`: the model's own, by the rule the form and the engine use), options this model can
honour, and — this worker's own — size within this worker's limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converters import preflight
from converters.source import HubReference

from . import capabilities, settings
from .spec import JobSpec


@dataclass(frozen=True)
class Resolved:
    repo_id: str
    revision: str  # the commit sha everything is read at
    model_type: str
    task: str  # concrete task ("auto" resolved)
    parameters: int | None
    weight_bytes: int
    gated: bool = False
    private: bool = False
    license: str | None = None
    base_model: tuple[str, ...] = ()


def resolve(spec: JobSpec, token: str | None, scratch: Path) -> Resolved:
    model = preflight.preflight(
        HubReference(spec.repo_id, spec.revision), token, scratch / "config",
        task=spec.task, options=spec.options,
        max_parameters=capabilities.parameter_limit(), max_bytes=settings.max_bytes(),
    )
    return Resolved(model.ref.repo_id, model.sha, model.model_type, model.task, model.parameters, model.weight_bytes,
                    model.gated, model.private, model.license, tuple(model.base_model))


def check_size(repo_id: str, parameters: int | None, weight_bytes: int) -> None:
    """Refuse models above this worker's limits (parameters, or bytes of weights)."""
    preflight.check_size(repo_id, parameters, weight_bytes, capabilities.parameter_limit(), settings.max_bytes())
