"""The model card pushed with a conversion: Hub metadata (base_model, tags, pipeline tag),
the options used, the validation table with its numbers, and a short Swift snippet.

When the package is pushed although validation failed (the user asked for it), the
card's first lines say so; the same text is the description of a pull request.
"""

from __future__ import annotations

from huggingface_hub import ModelCardData

from converters.options import ConversionOptions

# Our task names -> the Hub's pipeline tags (most are the same).
PIPELINE_TAGS = {
    "semantic-segmentation": "image-segmentation",
}
VISION_FEATURES = "image-feature-extraction"


def pipeline_tag(task: str, modality: str | None = None) -> str:
    if task == "feature-extraction" and modality == "vision":
        return VISION_FEATURES
    return PIPELINE_TAGS.get(task, task)


def conversion_title(task: str, options: dict) -> str:
    """Names one conversion: the commit message, and the title by which we find our open
    pull request for the same conversion again."""
    main = ("precision", "sequence_length", "minimum_deployment_target", "naming")
    # The other options (kv_cache, tolerance, ...) name the conversion when not at their default.
    defaults = ConversionOptions().to_dict()
    extras = "".join(f", {k.replace('_', ' ')} {v}" for k, v in options.items()
                     if k not in main and v not in (None, "") and v != defaults.get(k))
    return (
        f"Add Core ML conversion ({task}, {options['precision']}, sequence length {options['sequence_length']}, "
        f"{options['minimum_deployment_target']}, {options['naming']} naming{extras})"
    )


def warning_lines(validation: dict) -> list[str]:
    """The card's first lines when what we push is not proven to match PyTorch."""
    if validation.get("passed") is True:
        return []
    if validation.get("passed") is False:
        head = "> **Warning: this Core ML package FAILED validation** against the PyTorch model."
    else:
        head = "> **Warning: this Core ML package was NOT validated** against the PyTorch model."
    return [
        head,
        "> It was pushed because the person converting it asked to push anyway. "
        "Its outputs may differ from the original model's; check them before use.",
        "",
    ]


def card_body(*, source_repo: str, revision: str, source_url: str, report: dict, package_paths: list[str]) -> str:
    validation = report.get("validation") or {}
    lines = warning_lines(validation)
    task = report["task"]
    lines += [
        f"# Core ML conversion of {source_repo}",
        "",
        f"Converted from [{source_repo}]({source_url}) (revision `{revision[:12]}`) for **{task}** "
        "with Core ML Converter.",
        "",
        "## Packages",
        "",
        "| package | inputs | outputs |",
        "| --- | --- | --- |",
    ]
    for path, package in zip(package_paths, report.get("packages", [])):
        inputs = ", ".join(f"`{i['name']}` {i.get('shape', '')}" for i in package.get("inputs", []))
        outputs = ", ".join(f"`{o['name']}`" for o in package.get("outputs", []))
        lines.append(f"| `{path}` | {inputs} | {outputs} |")
    lines += ["", "## Options used", "", "| option | value |", "| --- | --- |"]
    for key, value in report.get("options", {}).items():
        lines.append(f"| {key.replace('_', ' ')} | `{value}` |")
    versions = report.get("versions") or {}
    if versions:
        lines.append("| tools | " + ", ".join(f"{k} {v}" for k, v in versions.items()) + " |")
    lines += ["", "## Validation", ""] + validation_section(validation)
    lines += ["", "## Use it in Swift", ""] + swift_snippet(task, report, package_paths)
    return "\n".join(lines) + "\n"


def validation_section(validation: dict) -> list[str]:
    if validation.get("passed") is None:
        return [validation.get("message") or "Not validated."]
    verdict = "passed" if validation["passed"] else "FAILED"
    lines = [f"Validation {verdict} ({validation.get('kind', 'validation')}). {validation.get('message', '')}".rstrip(), ""]
    checks = validation.get("checks") or []
    if checks:
        lines += ["| package | output | mode | metric | value | threshold | result |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for c in checks:
            lines.append(
                f"| {c.get('package', '')} | `{c.get('output', '')}` | {c.get('mode', '')} | {c.get('metric', '')} | "
                f"{_number(c.get('value'))} | {_number(c.get('threshold'))} | {'pass' if c.get('passed') else 'FAIL'} |"
            )
    return lines


def swift_snippet(task: str, report: dict, package_paths: list[str]) -> list[str]:
    name = package_paths[0].split("/")[-1].removesuffix(".mlpackage") if package_paths else "Model"
    if task == "text-generation":
        return [
            "With [swift-transformers](https://github.com/huggingface/swift-transformers):",
            "",
            "```swift",
            "import CoreML",
            "import Models  // swift-transformers",
            "",
            f'let compiled = try await MLModel.compileModel(at: Bundle.main.url(forResource: "{name}", withExtension: "mlpackage")!)',
            "let model = try LanguageModel.loadCompiled(url: compiled, computeUnits: .cpuAndGPU)",
            "```",
        ]
    inputs = (report.get("packages") or [{}])[0].get("inputs", [])
    features = ", ".join(f'"{i["name"]}": {i["name"]}' for i in inputs) or '"input": input'
    return [
        "```swift",
        "import CoreML",
        "",
        f'let url = Bundle.main.url(forResource: "{name}", withExtension: "mlmodelc")!  // Xcode compiles the .mlpackage',
        "let model = try MLModel(contentsOf: url)",
        f"let output = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: [{features}]))",
        "```",
    ]


def model_card(*, source_repo: str, revision: str, source_url: str, report: dict, package_paths: list[str],
               modality: str | None = None) -> str:
    """README.md for a new repo: YAML metadata, then the body."""
    tags = ["coreml", "core-ml-converter"]
    if (report.get("validation") or {}).get("passed") is not True:
        tags.append("unvalidated")
    data = ModelCardData(
        base_model=source_repo,
        tags=tags,
        pipeline_tag=pipeline_tag(report["task"], modality),
    )
    body = card_body(source_repo=source_repo, revision=revision, source_url=source_url, report=report,
                     package_paths=package_paths)
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)  # the engine writes non-finite numbers as text ("inf")
