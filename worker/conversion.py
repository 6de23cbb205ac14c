"""The one place the worker calls the conversion engine (converters.export.convert).

Converting and validating are the engine's job; this adapter passes the worker's progress
callback and the repo the packages name for their tokenizer. The report's `validation` entry
is {"passed": bool | None, "kind": str, "checks": [...], "message": str, ...}.
"""

from __future__ import annotations

from pathlib import Path

from converters.options import ConversionOptions
from converters.source import ModelSource


def convert_and_validate(source: ModelSource, task: str, output_dir: Path, options: ConversionOptions, progress,
                         hub_name: str | None = None):
    """`hub_name`: the repo the packages name for their tokenizer (co.huggingface.exporters.name)."""
    from converters.export import convert
    from converters.memory import settle_imports

    from .settings import calibration_cache, job_timeout, layers_per_chunk

    settle_imports()  # a spawned job process (macOS) imported the engine just now

    # The engine lives in this repo: it always validates and always returns a `validation` entry;
    # what could not finish within the job's time limit is refused before any work.
    return convert(source, task, output_dir, options, progress=progress, validate=True, hub_name=hub_name,
                   time_limit=job_timeout(), layers_per_chunk=layers_per_chunk(), calibration_cache=calibration_cache())
