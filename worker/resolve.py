"""The resolve stage: everything about the source repo that can be checked before any
weights are downloaded, so a bad request fails in seconds with a message saying what to do.

Checks, in order: the repo exists and the token may read it (private, revision), gated
access, safetensors weights (never pickle), config.json without remote code, architecture
and task supported, options this model can honour, size within this worker's limit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from converters.errors import UserInputError
from converters.source import HubReference, check_config, check_files, hub_api, hub_errors, inspect_hub_model

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


def resolve(spec: JobSpec, token: str | None, scratch: Path) -> Resolved:
    from converters.configs import config_class_for
    from converters.loading import load_hf_config, resolve_task

    ref = HubReference(spec.repo_id, spec.revision)
    where = f"The model '{ref.repo_id}'"
    info = inspect_hub_model(ref, token)
    with hub_errors(ref, token):
        # Gated repos show their metadata to anyone; their files need the user's access.
        hub_api(token).auth_check(ref.repo_id, token=token or False)
    files = [s.rfilename for s in info.siblings or []]
    check_files(files, where)

    config_dir = scratch / "config"
    config_files = ["config.json"] + [n for n in ("preprocessor_config.json",) if n in files]
    with hub_errors(ref, token):
        for name in config_files:
            _download(ref.repo_id, name, info.sha, token, config_dir)
    config = _read_json(config_dir / "config.json", where)
    check_config(config, where)
    config_cls = config_class_for(config["model_type"])
    hf_config = load_hf_config(config_dir)
    task = resolve_task(spec.task, config_cls, hf_config)
    preprocessor = _read_json(config_dir / "preprocessor_config.json", where) if len(config_files) > 1 else {}
    config_cls(hf_config, task, spec.options, preprocessor).check_options()

    parameters = info.safetensors.total if info.safetensors else None
    weight_bytes = sum(s.size or 0 for s in info.siblings or [] if s.rfilename.endswith(".safetensors"))
    check_size(ref.repo_id, parameters, weight_bytes)
    return Resolved(ref.repo_id, info.sha, config["model_type"], task, parameters, weight_bytes)


def check_size(repo_id: str, parameters: int | None, weight_bytes: int) -> None:
    """Refuse models above this worker's limits (parameters, or bytes of weights)."""
    max_params = capabilities.parameter_limit()
    max_bytes = settings.max_bytes()
    if parameters is None and weight_bytes:
        parameters = weight_bytes // 2  # weights stored as 16-bit floats at most: a lower bound
    advice = (
        "Pick a smaller model, or run it on a worker with more memory "
        "(self-hosting: raise COREML_CONVERTER_MAX_PARAMS / COREML_CONVERTER_MAX_BYTES)."
    )
    if max_params and parameters and parameters > max_params:
        raise UserInputError(
            f"The model '{repo_id}' is too large for this worker: {_count(parameters)} parameters, "
            f"and this worker converts models up to {_count(max_params)} parameters. {advice}"
        )
    if max_bytes and weight_bytes > max_bytes:
        raise UserInputError(
            f"The model '{repo_id}' is too large for this worker: {_size(weight_bytes)} of weights, "
            f"and this worker takes up to {_size(max_bytes)}. {advice}"
        )


def _download(repo_id: str, filename: str, revision: str, token: str | None, folder: Path) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            token=token or False,
            local_dir=folder,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    )


def _read_json(path: Path, where: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserInputError(f"{where} has a {path.name} that is not valid JSON ({error}).") from None


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
