"""Command line: python -m converters SOURCE --task TASK --output DIR [--report FILE.json]

Exit codes: 0 done, 2 the input is wrong (the message says what to do), 1 our failure or the
Hub is unavailable (transient: the same command may work later).
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

from .errors import HubUnavailable, UserInputError
from .memory import settle_imports
from .options import OPTIONS, ConversionOptions, Option
from .report import ConversionReport
from .source import parse_hub_reference


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m converters",
        description="Convert a transformers model (local folder, Hub ID or URL) to Core ML.",
    )
    parser.add_argument("source", help="a local folder, a Hub ID (owner/name[@revision]) or a Hub URL")
    parser.add_argument("--task", default="auto", help="task to convert for, or 'auto' (default) to use the model's own")
    parser.add_argument("--output", required=True, type=Path, help="folder to write the package(s) into")
    parser.add_argument("--report", type=Path, help="write the JSON report to this file")
    for option in OPTIONS.values():  # the option table: one flag (and its aliases) per option
        parser.add_argument(*option.cli_flags, dest=option.name, default=None, help=_flag_help(option),
                            metavar=option.cli_flags[0].lstrip("-").replace("-", "_").upper())
    parser.add_argument(
        "--hub-name", default=None, metavar="OWNER/NAME",
        help="the Hub repo the package names for its tokenizer (metadata co.huggingface.exporters.name; "
        "swift-transformers downloads tokenizer.json, tokenizer_config.json and config.json from it): "
        "the repo you will push to, if the source is gated or private (default: the source's Hub ID, "
        "or the folder name for a local folder)",
    )
    parser.add_argument("--token", default=None, help="Hugging Face token for private or gated models (default: $HF_TOKEN)")
    parser.add_argument("--no-validate", action="store_true", help="skip validation against PyTorch (the report says so)")
    parser.add_argument("--verbose", action="store_true", help="show the libraries' own logs and warnings")
    return parser


def _flag_help(option: Option) -> str:
    """An option's --help line from its row: the help, the choices, what each needs, the default."""
    text = option.help
    if option.choices:
        text += f" One of: {', '.join(option.values)}."
        for choice in option.choices:
            if choice.needs:
                text += f" {choice.value} needs {' or '.join(choice.needs)}."
    return text.replace("%", "%%") + f" Default: {option.default}."


def quiet_libraries() -> None:
    """Library warnings and progress bars off (both command lines: this one and validate_package)."""
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        quiet_libraries()
    try:
        options = ConversionOptions.from_dict(vars(args))  # the option table's flags; unset: defaults
        hub_name = hub_name_option(args.hub_name)
        from .export import convert  # deferred: torch and transformers load only to convert (not for --help)

        settle_imports()
        result = convert(
            args.source, args.task, args.output, options,
            token=args.token or os.environ.get("HF_TOKEN"), validate=not args.no_validate, hub_name=hub_name,
        )
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code  # 2: change the request
    except HubUnavailable as error:  # transient and not ours: no trace, just what happened and to retry
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code  # 1: the same request may work later
    except Exception as error:  # noqa: BLE001 - report our own failures with a trace
        traceback.print_exc()
        print(f"error: the conversion failed: {error}", file=sys.stderr)
        return 1
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(result.report_json, indent=2))
    return print_outcome(result.report)


def hub_name_option(value: str | None) -> str | None:
    """--hub-name: a Hub repo ID (owner/name or its URL). swift-transformers reads the
    tokenizer at the repo's main branch only, so a revision is refused."""
    if value is None:
        return None
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


def print_outcome(report) -> int:
    """What a person reads at the end of a run (`report`: a ConversionReport, or its JSON);
    the exit code (1 if validation failed)."""
    if not isinstance(report, ConversionReport):
        report = ConversionReport.from_json(report)
    for package in report.packages:
        print(f"wrote {package.path}")
    if report.tokenizer_repo:
        print(f"tokenizer repo named in the package (co.huggingface.exporters.name): {report.tokenizer_repo}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if report.tokenizer_missing:
        print("note: an app needs this model's tokenizer to turn text into token ids. If the model uses its base "
              "model's tokenizer, convert again with --hub-name naming that repo: the package's metadata then points "
              "swift-transformers at it.", file=sys.stderr)
    mark = report.untested_mark()
    if mark:
        print(f"{report.architecture.model_type}: {mark}")
    return print_validation(report.validation)


FAILURES_SHOWN = 10  # the report file lists them all


def print_validation(validation) -> int:
    """validation: its summary, the failed checks, where it can run; the exit code (1 unless
    it passed or was skipped)."""
    if validation.skipped:
        print(f"validation: {validation.summary()}")
        return 0
    kind = f" ({validation.kind})" if validation.kind else ""
    print(f"validation{kind}: {validation.summary()}")
    failures = validation.failures()
    for line in failures[:FAILURES_SHOWN]:
        print(f"  failed: {line}")
    if len(failures) > FAILURES_SHOWN:
        print(f"  ... and {len(failures) - FAILURES_SHOWN} more failed checks (--report writes them all)")
    for part, analysis in validation.compute_units.items():
        units = ", ".join(f"{unit}: {value}" for unit, value in analysis["units"].items())
        print(f"compute units ({part}): {units}")
    if not validation.passed:
        print("error: validation failed: the package does not compute what the PyTorch model computes.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
