"""Validate an existing package against its source model, as the converter does after
converting:

    python -m converters.validate PACKAGE --source SOURCE --task TASK [--report FILE]

The options it was converted with are read from its metadata (or, for packages made by
other tools, from its input shapes). Exit codes: 0 passed, 1 failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .__main__ import _quiet_libraries, print_validation
from .backends import backend_for_package
from .errors import UserInputError
from .options import ConversionOptions
from .report import ValidationReport
from .source import open_source


def options_from_package(info: dict):
    metadata = info["metadata"]
    if "coreml_converter_options" in metadata:
        return ConversionOptions.from_dict(json.loads(metadata["coreml_converter_options"]))
    precision = metadata.get("co.huggingface.exporters.precision", "float16")
    lengths = [i["shape"][-1] for i in info["inputs"] if i["type"] == "tensor" and i["dtype"] == "int32" and i["shape"]]
    return ConversionOptions.from_strings(precision=precision, sequence_length=max(lengths) if lengths else None)


def validate_package(package: Path, source: str, task: str, token: str | None = None) -> dict:
    # Deferred: torch, transformers and coremltools load only to validate (not for --help).
    from .configs import config_class_for
    from .loading import load_hf_config, load_model, load_preprocessor, resolve_task
    from .validation.validate import validate

    backend = backend_for_package(package)  # the format that made it runs and describes it
    info = backend.describe(package)
    model_source = open_source(source, token=token)
    hf_config = load_hf_config(model_source.path)
    config_cls = config_class_for(hf_config.model_type)
    resolved = resolve_task(task, hf_config, source=model_source)
    cfg = config_cls(hf_config, resolved, options_from_package(info), load_preprocessor(model_source.path))
    part = info["metadata"].get("coreml_converter_part", cfg.parts()[0])
    if part not in cfg.parts():
        raise UserInputError(f"{package} is the {part} of a model, but task '{resolved}' has parts {', '.join(cfg.parts())}.")
    warnings: list[str] = []
    model = load_model(model_source.path, cfg, warnings)
    validation = validate(cfg, model, {part: package}, model_source.path, backend=backend)
    return {"package": str(package), "source": model_source.display, "task": resolved, "warnings": warnings, "validation": validation}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m converters.validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("package", type=Path, help="the .mlpackage (or Core AI .aimodel) to check")
    parser.add_argument("--source", required=True, help="the model it came from: folder, Hub ID or URL")
    parser.add_argument("--task", default="auto", help="the task it was converted for (default: the model's own)")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--token", default=None, help="Hugging Face token (default: $HF_TOKEN)")
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        report = validate_package(args.package, args.source, args.task, token=args.token or os.environ.get("HF_TOKEN"))
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))
    return print_validation(ValidationReport.from_json(report["validation"]))


if __name__ == "__main__":
    sys.exit(main())
