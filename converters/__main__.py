"""Command line: python -m converters SOURCE --task TASK --output DIR [--report FILE.json]

Exit codes: 0 done, 2 the input is wrong (the message says what to do), 1 our failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

from .errors import UserInputError
from .options import DEPLOYMENT_TARGETS, NAMINGS, ConversionOptions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m converters",
        description="Convert a transformers model (local folder, Hub ID or URL) to Core ML.",
    )
    parser.add_argument("source", help="a local folder, a Hub ID (owner/name[@revision]) or a Hub URL")
    parser.add_argument("--task", default="auto", help="task to convert for, or 'auto' (default) to use the model's own")
    parser.add_argument("--output", required=True, type=Path, help="folder to write the package(s) into")
    parser.add_argument("--report", type=Path, help="write the JSON report to this file")
    parser.add_argument("--precision", default="float16", help="float16 (default) or float32 compute precision")
    parser.add_argument(
        "--sequence-length",
        default="128",
        help="tokens: one number (128, default), a list (64,128,256) or a range (1-512; CPU only on device)",
    )
    parser.add_argument("--minimum-target", default="iOS17", help=f"minimum deployment target: {', '.join(DEPLOYMENT_TARGETS)}")
    parser.add_argument("--naming", default="swift-transformers", help=f"input names and file layout: {', '.join(NAMINGS)}")
    parser.add_argument(
        "--kv-cache", default="none",
        help="text-generation: 'stateful' keeps keys/values in Core ML states (keyCache/valueCache; iOS18+, "
        "--sequence-length is then the context size), 'none' (default) recomputes the whole sequence",
    )
    parser.add_argument(
        "--hub-name", default=None, metavar="OWNER/NAME",
        help="the Hub repo the package names for its tokenizer (metadata co.huggingface.exporters.name; "
        "swift-transformers downloads tokenizer.json, tokenizer_config.json and config.json from it): "
        "the repo you will push to, if the source is gated or private (default: the source's Hub ID, "
        "or the folder name for a local folder)",
    )
    parser.add_argument("--token", default=None, help="Hugging Face token for private or gated models (default: $HF_TOKEN)")
    parser.add_argument(
        "--tolerance", default="default",
        help="validation thresholds: strict (x0.25), default (the architecture's) or loose (x4) on the max difference",
    )
    parser.add_argument("--no-validate", action="store_true", help="skip validation against PyTorch (the report says so)")
    parser.add_argument("--verbose", action="store_true", help="show the libraries' own logs and warnings")
    return parser


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        _quiet_libraries()
    try:
        options = ConversionOptions.from_strings(
            precision=args.precision,
            sequence_length=args.sequence_length,
            minimum_deployment_target=args.minimum_target,
            naming=args.naming,
            kv_cache=args.kv_cache,
            tolerance=args.tolerance,
        )
        hub_name = hub_name_option(args.hub_name)
        from .export import convert

        result = convert(
            args.source, args.task, args.output, options,
            token=args.token or os.environ.get("HF_TOKEN"), validate=not args.no_validate, hub_name=hub_name,
        )
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - report our own failures with a trace
        traceback.print_exc()
        print(f"error: the conversion failed: {error}", file=sys.stderr)
        return 1
    report = result.report
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2))
    return print_outcome(report)


def hub_name_option(value: str | None) -> str | None:
    """--hub-name: a Hub repo ID (owner/name or its URL). swift-transformers reads the
    tokenizer at the repo's main branch only, so a revision is refused."""
    if value is None:
        return None
    from .source import parse_hub_reference

    try:
        reference = parse_hub_reference(value)
    except UserInputError as error:
        raise UserInputError(f"--hub-name: {error}") from None
    if reference.revision:
        raise UserInputError(
            f"--hub-name '{value}' names a revision: swift-transformers always reads the tokenizer from "
            "the repo's main branch. Give the repo ID alone (owner/name)."
        )
    return reference.repo_id


def print_outcome(report: dict) -> int:
    """What a person reads at the end of a run; the exit code (1 if validation failed)."""
    for package in report.get("packages", []):
        print(f"wrote {package['path']}")
    if report.get("tokenizer_repo"):
        print(f"tokenizer repo named in the package (co.huggingface.exporters.name): {report['tokenizer_repo']}")
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    validation = report["validation"]
    if validation.get("skipped"):
        print(f"validation: skipped — {validation['message']}")
        return 0
    print(f"validation ({validation['kind']}): {'passed' if validation['passed'] else 'FAILED'} — {validation['message']}")
    for part, analysis in validation.get("compute_units", {}).items():
        units = ", ".join(f"{unit}: {value}" for unit, value in analysis["units"].items())
        print(f"compute units ({part}): {units}")
    if not validation["passed"]:
        print("error: validation failed: the package does not compute what the PyTorch model computes.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
