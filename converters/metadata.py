"""Metadata written into every package: the keys swift-transformers and exporters-era
tools read (swift-transformers' Sources/Models/LanguageModel.swift reads
co.huggingface.exporters.name; README, "Command line", --hub-name), plus versions and the
options used."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version

from . import __version__
from .tasks import TASKS

PREFIX = "co.huggingface.exporters."


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def toolchain_versions() -> dict[str, str]:
    return {
        "converter": __version__,
        "coremltools": package_version("coremltools"),
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
    }


def package_metadata(*, name: str, task: str, architecture: str, precision: str, options: dict, part: str) -> dict[str, str]:
    """`name` (co.huggingface.exporters.name) is the Hub repo swift-transformers' LanguageModel
    downloads tokenizer.json, tokenizer_config.json and config.json from (main branch; a token
    only from the environment): the repo the package is pushed to when that repo carries those
    files, else the source repo; a folder name for a local conversion."""
    versions = toolchain_versions()
    metadata = {
        PREFIX + "name": name,
        PREFIX + "task": task,
        PREFIX + "architecture": architecture,
        PREFIX + "framework": "pytorch",
        PREFIX + "precision": precision,
        "transformers_version": versions["transformers"],
        "coreml_converter_version": versions["converter"],
        "coremltools_version": versions["coremltools"],
        "torch_version": versions["torch"],
        "coreml_converter_options": json.dumps(options, sort_keys=True),
    }
    if part != "model":
        metadata["coreml_converter_part"] = part
    return metadata


def package_description(source_display: str, cfg, part: str) -> str:
    """The one-line description every package carries (Core ML's short description, Core AI's
    model description): what the model is, its task, and the part."""
    return (f"{source_display} ({cfg.hf_config.model_type}) for {cfg.task}: {TASKS[cfg.task].summary}"
            + (f"; {part}" if part != "model" else "") + ". Converted by Core ML Converter.")
