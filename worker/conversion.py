"""The one place the worker calls the conversion engine (converters.export.convert).

Converting and validating are the engine's job; this adapter only passes the worker's
progress callback and makes sure the report always carries a `validation` entry of the
shape the rest of the worker reads:
    {"passed": bool | None, "kind": str, "checks": [...], "message": str, ...}
(`passed` None means the package was not validated).
"""

from __future__ import annotations

import inspect
from pathlib import Path

from converters.options import ConversionOptions
from converters.source import ModelSource


def convert_and_validate(source: ModelSource, task: str, output_dir: Path, options: ConversionOptions, progress):
    from converters.export import convert

    kwargs = {}
    if "validate" in inspect.signature(convert).parameters:
        kwargs["validate"] = True
    result = convert(source, task, output_dir, options, progress=progress, **kwargs)
    validation = result.report.get("validation")
    if not isinstance(validation, dict):
        validation = {
            "skipped": True,
            "passed": None,
            "checks": [],
            "message": "This version of the conversion engine does not validate packages.",
        }
    validation.setdefault("checks", [])
    validation.setdefault("message", "")
    result.report["validation"] = validation
    return result
