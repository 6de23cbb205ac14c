"""Validate an existing package against its source model, as the converter does after
converting:

    python -m converters.validate_package PACKAGE --source SOURCE --task TASK [--report FILE]

The options it was converted with are read from its metadata (or, for packages made by
other tools, from its input shapes). Exit codes: 0 passed, 1 failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .__main__ import print_validation, quiet_libraries
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
    from .export import validate_all
    from .loading import load_model
    from .plan import make_plan

    backend = backend_for_package(package)  # the format that made it runs and describes it
    info = backend.describe(package)
    model_source = open_source(source, token=token)
    # The conversion's own plan for the options the package was made with: the same family,
    # task and refusals as converting it again would meet.
    plan = make_plan(model_source, task, options_from_package(info))
    cfg = plan.cfg
    part = info["metadata"].get("coreml_converter_part", cfg.parts()[0])
    if part not in cfg.parts():
        raise UserInputError(f"{package} is the {part} of a model, but task '{cfg.task}' has parts {', '.join(cfg.parts())}.")
    warnings: list[str] = []  # loading's (the plan's are about converting, not checking)
    model = load_model(model_source.path, cfg, warnings)
    validation = validate_all(plan, model, [(part, package, backend)])  # a Core AI LLM bundle as Apple's app drives it
    return {"package": str(package), "source": model_source.display, "task": cfg.task, "warnings": warnings, "validation": validation}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m converters.validate_package", description=__doc__.split("\n\n")[0])
    parser.add_argument("package", type=Path, help="the .mlpackage (or Core AI .aimodel) to check")
    parser.add_argument("--source", required=True, help="the model it came from: folder, Hub ID or URL")
    parser.add_argument("--task", default="auto", help="the task it was converted for (default: the model's own)")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--token", default=None, help="Hugging Face token (default: $HF_TOKEN)")
    args = parser.parse_args(argv)
    quiet_libraries()
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
