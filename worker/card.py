"""The model card pushed with a conversion: Hub metadata (base_model, tags, pipeline tag),
the options used, weight compression (sizes, and quality on real text against its bar), the
program's make-up, the validation table with its numbers, the continuation check, where the
model can run, the devices it fits, which repo the package names for its tokenizer, and a
Swift snippet (for text generation: the swift-transformers 1.3 API, read in its source:
Sources/Models/LanguageModel.swift, Sources/Models/LanguageModelTypes.swift,
Sources/Generation/Generation.swift).

When the package is pushed although validation failed (the user asked for it), the
card's first lines say so; the same text is the description of a pull request.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCardData

from converters import device_fit
from converters.formats import FORMATS, format_of
from converters.errors import UserInputError
from converters.options import ConversionOptions, SequenceLength
from converters.report import ConversionReport, ValidationReport, number
from converters.wording import (DECOMPRESSION_NOTE, QUALITY_METRICS, bar_reason, compressed_packages, continuation_reach,
                                continuation_verdict, perplexities, placement_note, quality_cell, quality_rows,
                                size_change, top_ops, weights_line, yes_no)

from . import card_speech, card_vision

# Our task names -> the Hub's pipeline tags (most are the same).
PIPELINE_TAGS = {
    "semantic-segmentation": "image-segmentation",
}
VISION_FEATURES = "image-feature-extraction"

SWIFT_TRANSFORMERS_URL = "https://github.com/huggingface/swift-transformers"
SWIFT_TRANSFORMERS_FROM = "1.3.0"
# The tokenizer files swift-transformers' LanguageModel downloads from the named repo.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json")
MARKDOWN_SPECIAL = set("\\`*_[]#|~!")


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


def option_cell(key: str, value, options: dict) -> str:
    """An option's value in the Options used table; the deployment target, a Core ML package's
    alone, is said as not used by a conversion that made none (an .aimodel runs on the systems
    its format names: converters/formats.py)."""
    if key == "minimum_deployment_target":
        try:
            applies = ConversionOptions.from_dict(options).deployment_target_applies
        except UserInputError:  # an older or foreign report: as it was asked
            applies = True
        if not applies:
            fixed = [format_of(name) for name in format_of(options.get("format")).makes]
            return "not used: " + "; ".join(f"the {f.package_suffix} runs on {f.runs_on}" for f in fixed)
    return f"`{value}`"


def warning_lines(validation: dict) -> list[str]:
    """The card's first lines when what we push is not proven to match PyTorch: it failed
    validation (or was not validated) and was pushed anyway, at the converting person's request."""
    report = ValidationReport.from_json(validation)
    if report.passed is True:
        return []
    if report.passed is False:
        lines = [
            "> **Warning: this Core ML package FAILED validation** against the PyTorch model, and was pushed anyway.",
            f"> Validation {_plain(report.summary())}.",
        ]
    else:
        lines = [
            "> **Warning: this Core ML package was NOT validated** against the PyTorch model, and was pushed anyway.",
        ]
    return lines + [
        "> It was pushed because the person converting it asked to push even if validation fails. "
        "Its outputs may differ from the original model's; check them before use.",
        "",
    ]


def card_title(source_repo: str, package_paths: list[str]) -> str:
    """The card's heading, in the words of the formats whose packages the repo holds
    (converters/formats.py): "Core AI conversion of …" for .aimodels alone, both formats named
    when it holds both; a package no format's ending names (WhisperKit's folders) is the default
    format's. The commit's title (conversion_title) stays as it is: it finds an open pull request."""
    def holding(path: str):
        return next((f for f in FORMATS.values() if f.package_suffix and path.endswith(f.package_suffix)), format_of(None))

    held = [f for f in FORMATS.values() if any(holding(p) is f for p in package_paths)] or [format_of(None)]
    if len(held) == 1:
        return f"{held[0].label} conversion of {source_repo}"
    return f"{' and '.join(f.label for f in held)} packages of {source_repo}"


def card_body(*, source_repo: str, revision: str, source_url: str, report: dict, package_paths: list[str],
              tokenizer_files: list[str] | None = None, terms: list[str] | None = None,
              other_packages: list[str] | None = None) -> str:
    """`tokenizer_files`: which of TOKENIZER_FILES the named tokenizer repo has (None: not known);
    `other_packages`: what earlier conversions left in the repo (the title names their formats too)."""
    validation = report.get("validation") or {}
    lines = warning_lines(validation)
    task = report["task"]
    lines += [
        f"# {card_title(source_repo, [*package_paths, *(other_packages or [])])}",
        "",
        f"Converted from [{source_repo}]({source_url}) (revision `{revision[:12]}`) for **{task}** "
        "with Core ML Converter.",
        "",
        *([*terms, ""] if terms else []),
        *untested_lines(report),
        "## Packages",
        "",
        "| package | inputs | outputs | states |",
        "| --- | --- | --- | --- |",
    ]
    for path, package in zip(package_paths, report.get("packages", [])):
        inputs = ", ".join(f"`{i['name']}` {shape_text(i)}" for i in package.get("inputs", []))
        outputs = ", ".join(f"`{o['name']}`" for o in package.get("outputs", []))
        states = ", ".join(f"`{s['name']}` {shape_text(s)}" for s in package.get("states") or []) or "none"
        lines.append(f"| `{path}` | {inputs} | {outputs} | {states} |")
    context = _context_tokens(report.get("options") or {})
    if context and report.get("task") == "text-generation":
        lines += ["", f"Context: prompt and generated tokens together fit in **{context} tokens**."]
    lines += ["", "## Options used", "", "| option | value |", "| --- | --- |"]
    for key, value in report.get("options", {}).items():
        lines.append(f"| {key.replace('_', ' ')} | {option_cell(key, value, report.get('options') or {})} |")
    versions = report.get("versions") or {}
    if versions:
        lines.append("| tools | " + ", ".join(f"{k} {v}" for k, v in versions.items()) + " |")
    for title, section in (("Compression", compression_section(report)), ("Program", program_section(report))):
        if section:
            lines += ["", f"## {title}", ""] + section
    lines += ["", "## Validation", ""] + validation_section(validation)
    continuation = continuation_section(validation)
    if continuation:
        lines += ["", "## Continuation check", ""] + continuation
    where = placement_section(report)
    if where:
        lines += ["", "## Where the model can run", ""] + where
    fit = device_fit_section(report)
    if fit:
        lines += ["", "## Device fit", ""] + fit
    # WhisperKit reads the tokenizer from the variant folder, which holds a copy (its snippet says so).
    tokenizer = [] if card_speech.is_whisperkit(package_paths) else tokenizer_section(source_repo, report, tokenizer_files)
    if tokenizer:
        lines += ["", "## Tokenizer", ""] + tokenizer
    coreml_paths = [p for p in package_paths if not p.endswith(AIMODEL)]
    if coreml_paths:
        lines += ["", "## Use it in Swift", ""] + card_vision.image_sizes_section(report) + swift_snippet(task, report, coreml_paths)
    coreai_paths = [p for p in package_paths if p.endswith(AIMODEL)]
    if coreai_paths:
        lines += ["", "## Use it in Swift with Core AI (iOS/macOS 27)", ""] + core_ai_snippet(report, package_paths, coreai_paths)
    return "\n".join(lines) + "\n"


AIMODEL = ".aimodel"
CORE_AI_DOCS = "https://developer.apple.com/documentation/coreai"


CORE_AI_MODELS = "https://github.com/apple/coreai-models"


def bundle_folder(path: str) -> str | None:
    """The Core AI LLM bundle folder an .aimodel path names (`<name>/<name>.aimodel`), or None."""
    folder, _, file = path.rpartition("/")
    return folder if file.endswith(AIMODEL) and folder.rpartition("/")[2] == file.removesuffix(AIMODEL) else None


def core_ai_snippet(report: dict, package_paths: list[str], coreai_paths: list[str]) -> list[str]:
    """An LLM bundle: Apple's CoreAILanguageModel (coreai-models); any other .aimodel: Apple's raw
    Core AI Swift API (developer.apple.com/documentation/coreai)."""
    bundles = [p for p in coreai_paths if bundle_folder(p)] if report.get("task") == "text-generation" else []
    ios = (report.get("options") or {}).get("llm_bundle") == "ios"
    lines = core_ai_bundle_snippet(bundles[0], ios) if bundles else []
    others = [p for p in coreai_paths if p not in bundles]
    if others:
        lines += ([""] if lines else []) + core_ai_model_snippet(report, package_paths, others)
    return lines


def core_ai_bundle_snippet(path: str, ios: bool = False) -> list[str]:
    """Load, generate and stream with `CoreAILanguageModel(resourcesAt:)` — the folder, never the
    .aimodel (ModelBundle.swift:148-151) — as coreai-models' README shows it (models/qwen3/README.md:49-60),
    through Foundation Models' LanguageModelSession; streaming is that session's `streamResponse(to:)`.
    The iOS bundle loads the same way: the engine is chosen by its function names (EngineFactory.swift:137-152)."""
    folder = bundle_folder(path)
    name = folder.rpartition("/")[2]
    kind, driven = ("the **iOS** kind: fixed shapes for the iPhone's Neural Engine, which CoreAILanguageModel runs with its "
                    "StaticShapeEngine, chosen by the bundle's functions",
                    "driven as StaticShapeEngine drives it — the prompt in calls of up to 64 tokens, then each new token in "
                    "its fixed-size window, greedy —") if ios else \
        ("the macOS kind: one program whose cache grows with the text",
         "driven as CoreAILanguageModel drives it — the prompt, then one token per call with growing position ids, greedy —")
    return [
        f"`{folder}/` is a **Core AI LLM bundle** in Apple's layout (`{name}{AIMODEL}`, `metadata.json` 0.2, `tokenizer/`), "
        f"{kind}: what Apple's [`CoreAILanguageModel`]({CORE_AI_MODELS}) (the coreai-models Swift package) loads. It **needs iOS 27 / "
        f"macOS 27** (Core AI is in beta; see [Apple's documentation]({CORE_AI_DOCS})). It was validated by running its program "
        f"in coreai-core's own runtime (on a Linux CPU), {driven} against PyTorch.",
        "",
        f"Add the Swift package `{CORE_AI_MODELS}` (product `CoreAILM`) to your app, download the whole `{folder}/` folder and "
        "add it to your target as a folder reference; then hand the **folder** (not the `.aimodel`) to the model:",
        "",
        "```swift",
        "import CoreAILanguageModels",
        "import FoundationModels",
        "",
        "@available(iOS 27.0, macOS 27.0, *)",
        "func chat() async throws {",
        f'    let modelURL = Bundle.main.url(forResource: "{name}", withExtension: nil)!  // the bundle folder',
        "    let model = try await CoreAILanguageModel(resourcesAt: modelURL)",
        "    let session = LanguageModelSession(model: model)",
        "",
        "    // Generate: the whole answer at once.",
        '    let response = try await session.respond(to: "What is the capital of France?")',
        "    print(response.content)",
        "",
        "    // Stream: the answer as it is written.",
        '    for try await partial in session.streamResponse(to: "Tell me about Paris.") {',
        "        print(partial.content)",
        "    }",
        "}",
        "```",
        "",
        "On a Mac, coreai-models' command-line runner takes the same folder: "
        f"`swift run -c release llm-runner --model path/to/{name} --prompt \"Hello\"`.",
    ]


def core_ai_model_snippet(report: dict, package_paths: list[str], coreai_paths: list[str]) -> list[str]:
    """Apple's Core AI Swift API (developer.apple.com/documentation/coreai: `AIModel(contentsOf:)`,
    `loadFunction(named:)`, `InferenceFunction.run(inputs:states:)`); it needs iOS/macOS 27. Embedders
    and encoders stay bare .aimodel files: Apple's Swift package has no embedder API."""
    packages = dict(zip(package_paths, report.get("packages") or []))
    first = packages.get(coreai_paths[0], {})
    name = coreai_paths[0].split("/")[-1].removesuffix(AIMODEL)
    inputs = ", ".join(f"`{i['name']}` ({i.get('dtype')} {shape_text(i)})" for i in first.get("inputs", []))
    states = [s["name"] for s in first.get("states") or []]
    lines = [
        f"`{name}{AIMODEL}` is the same model in Apple's new Core AI format: it **needs iOS 27 / macOS 27** "
        f"(Core AI is in beta; see [Apple's documentation]({CORE_AI_DOCS})). It was validated by running it in "
        "coreai-core's own runtime (on a Linux CPU), against PyTorch.",
        "",
        f"Add `{name}{AIMODEL}` to your app target, then call its `main` function with NDArray inputs: {inputs}.",
    ]
    if states:
        lines.append(f"Its KV cache is runtime state ({', '.join(f'`{n}`' for n in states)}): pass a view of each "
                     "state on every call, zeros for a new conversation.")
    lines += [
        "",
        "```swift",
        "import CoreAI",
        "",
        "@available(iOS 27.0, macOS 27.0, *)",
        "func run(_ inputs: [String: NDArray]) async throws -> InferenceFunction.Outputs {",
        f'    let url = Bundle.main.url(forResource: "{name}", withExtension: "aimodel")!',
        "    let model = try await AIModel(contentsOf: url)",
        '    guard let function = try model.loadFunction(named: "main") else { fatalError("no main function") }',
        "    return try await function.run(inputs: inputs)" + ("  // and states: the KV cache views" if states else ""),
        "}",
        "```",
    ]
    if report.get("task") == "text-generation":
        lines += ["", "swift-transformers' `LanguageModel` loads Core ML packages only: drive the `.aimodel` with your "
                      "own loop (token ids in, `logits` out, one row per position)."]
    elif report.get("task") in ("feature-extraction", "sentence-similarity", "fill-mask"):
        lines += ["", "Apple's coreai-models Swift package has no embedder or encoder API (its products are language, "
                      "diffusion, segmentation, speech and object detection models): this raw API is how an app runs it."]
    return lines


def untested_lines(report: dict) -> list[str]:
    """For an architecture outside the converter's tested list: that, and validation's verdict."""
    typed = ConversionReport.from_json(report)
    mark = typed.untested_mark()
    if not mark:
        return []
    return [f"**{typed.architecture.model_type}: {mark[0].upper() + mark[1:]}.** The converter has no tests for this "
            "architecture; it was converted with its family's wrappers, and validation against PyTorch (below) is "
            "what vouches for the package.", ""]


def validation_section(validation: dict) -> list[str]:
    report = ValidationReport.from_json(validation)
    if report.passed is None:
        return [report.message or "Not validated."]
    kind = f" ({_plain(report.kind)})" if report.kind else ""
    lines = [f"Validation {_plain(report.summary())}{kind}.", ""]
    if report.checks:
        lines += ["| package | output | mode | metric | value | threshold | result |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for c in report.checks:
            lines.append(
                f"| {c.package} | `{c.output}` | {c.mode} | {c.metric} | "
                f"{number(c.value, c.metric)} | {number(c.threshold, c.metric)} | {'pass' if c.passed else 'FAIL'} |"
            )
    return lines


# ---------------------------------------------------------------------- compression and program


def compression_section(report: dict) -> list[str]:
    """Each compressed package's scheme, size before and after, and its quality on real text
    against the scheme's bar (absent: nothing)."""
    packages = compressed_packages(report)
    if not packages:
        return []
    lines = ["| package | scheme | method | granularity | bits per weight | size | weights |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for part, entry in packages:
        lines.append(
            f"| {_plain(part)} | `{entry.get('scheme')}` | {_plain(entry.get('method'))} | "
            f"{_plain(entry.get('granularity'))} | {number(entry.get('bits_per_weight'))} | {size_change(entry)} | "
            f"{weights_line(entry)} |")
    rows = quality_rows(report.get("validation"))
    if rows:
        labels = [label for _, label, _, _ in QUALITY_METRICS]
        lines += ["", "Quality on a passage of real English prose, against PyTorch (float32), in each mode:", "",
                  f"| package | mode | {' | '.join(labels)} | perplexity | result |",
                  "| --- | --- | " + "--- | " * len(labels) + "--- | --- |"]
        for row in rows:
            cells = {c["label"]: quality_cell(c) for c in row["checks"]}
            verdicts = [c["passed"] for c in row["checks"]]
            result = "not judged" if None in verdicts or not verdicts else "pass" if all(verdicts) else "FAIL"
            lines.append(f"| {_plain(row['part'])} | {_plain(row['mode'])} | "
                         + "".join(f"{cells.get(label, '')} | " for label in labels)
                         + f"{perplexities(row['numbers'])} | {result} |")
        reason = bar_reason(report.get("validation"))
        if reason:
            lines += ["", f"The bar: {_plain(reason)}."]
    return lines


# The Program table's facts: (key in report.ProgramInfo, column, how a value reads), each said
# only of a format whose programs have it (formats.Format.program_facts).
PROGRAM_FACTS = (("fused_attention", "fused attention", yes_no), ("stateful", "stateful", yes_no),
                 ("weight_bits", "weight bits", number))


def program_section(report: dict) -> list[str]:
    """What each package's program holds (report["packages"][i]["program"]; absent: nothing), in
    its format's words as the page says it (ui/render.py): an .aimodel has no Core ML fused
    attention op or weight bits ("—"; the columns only when some package has them), and with two
    formats each row names its package's."""
    shown = [(p.get("part") or "model", p["program"], format_of(p.get("format"))) for p in report.get("packages") or []
             if isinstance(p.get("program"), dict)]
    if not shown:
        return []
    facts = [fact for fact in PROGRAM_FACTS if any(fact[0] in fmt.program_facts for _, _, fmt in shown)]
    named = len({fmt.name for _, _, fmt in shown}) > 1
    lines = ["| package | " + "".join(f"{heading} | " for _, heading, _ in facts) + "most frequent ops |",
             "| --- | " + "--- | " * len(facts) + "--- |"]
    for part, program, fmt in shown:
        cells = "".join(f"{words(program.get(key)) if key in fmt.program_facts else '—'} | " for key, _, words in facts)
        label = f"{part} ({fmt.label})" if named else part
        lines.append(f"| {_plain(label)} | {cells}{_plain(top_ops(program.get('op_counts')))} |")
    return lines


def shape_text(info: dict) -> str:
    """An input's shapes as a caller meets them: [1, 128]; a range as [1, 1…2048] (any length
    in it); a list of shapes as [1, 64] | [1, 128]."""
    if info.get("flexibility") == "range" and info.get("ranges"):
        dims = [str(lo) if lo == hi else f"{lo}…{'any' if hi < 0 else hi}" for lo, hi in info["ranges"]]
        return "[" + ", ".join(dims) + "]"
    if info.get("flexibility") == "enumerated" and info.get("shapes"):
        return " | ".join(str(list(shape)) for shape in info["shapes"])
    return str(list(info.get("shape") or []))


UNIT_WORDS = {"yes": "yes", "partial": "partly", "no": "no", "default_shape": "at the default shape only"}


def swift_compute_units(report: dict) -> str:
    """The MLComputeUnits that fit where the first package can run: the Neural Engine only when the
    package can use it at every call (a range-shaped package uses it at one shape only, so the GPU,
    as in Apple's stateful Llama recipe), else the GPU, else the CPU."""
    units = ((report.get("validation") or {}).get("compute_units")) or {}
    first = next(iter(units.values()), {}).get("units") or {}
    if first.get("neural_engine") == "yes":
        return ".all"
    if first.get("gpu", "yes") != "no":
        return ".cpuAndGPU"
    return ".cpuOnly"


def placement_section(report: dict) -> list[str]:
    """Where each package can run (validation["compute_units"]) and, for compressed weights, which
    compute unit suits their scheme."""
    units = ((report.get("validation") or {}).get("compute_units")) or {}
    lines = []
    if units:
        lines += ["| package | CPU | GPU | Neural Engine | why |", "| --- | --- | --- | --- | --- |"]
        for part, info in units.items():
            cells = " | ".join(UNIT_WORDS.get((info.get("units") or {}).get(key), "?")
                               for key in ("cpu", "gpu", "neural_engine"))
            reasons = "; ".join(_plain(r) for r in info.get("reasons") or []) or "no restriction found"
            lines.append(f"| {_plain(part)} | {cells} | {reasons} |")
    notes = []
    for _, entry in compressed_packages(report):
        note = placement_note(entry.get("scheme"))
        if note and note not in notes:
            notes.append(note)
    if notes:
        lines += ([""] if lines else []) + [f"- {note}" for note in notes] + [f"- {DECOMPRESSION_NOTE}"]
    return lines


def device_fit_section(report: dict) -> list[str]:
    """The devices the package fits (converters/device_fit.py): its memory while it runs — its
    size and cache as written, the largest activation from the model's config.json in the job's
    snapshot while the worker has it — and a verdict per device class."""
    footprint = device_fit.from_report(report, source_config(report))
    if footprint is None:
        return []
    lines = [device_fit.summary(footprint), "",
             "| device | an app may use | with the increased memory limit entitlement | this package |",
             "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in device_fit.table(footprint)]
    return lines + ["", f"The raised limit is the `{device_fit.ENTITLEMENT}` entitlement. Apple publishes no "
                    "per-app limits: these are developers' measurements; in your app, `os_proc_available_memory()` "
                    "says what is left before loading."]


def source_config(report: dict) -> dict | None:
    """config.json of the job's own snapshot (report["source"]["path"]), while it is there."""
    folder = (report.get("source") or {}).get("path")
    try:
        return json.loads((Path(folder) / "config.json").read_text()) if folder else None
    except (OSError, ValueError):
        return None


def continuation_section(validation: dict) -> list[str]:
    """Greedy text from the package next to PyTorch's, for the same prompt (absent: nothing)."""
    continuation = ValidationReport.from_json(validation).continuation
    if continuation is None or not continuation.runs:
        return []
    verdict = {True: "passed", False: "FAILED"}.get(continuation.passed, "not run (nothing could be compared)")
    lines = [
        f"Continuation check {verdict}: the prompt {_quote(continuation.prompt)} continued greedily by each package "
        f"and by the PyTorch model: {continuation_reach(continuation)}.",
        "",
    ]
    for run in continuation.runs:
        details = [f"driven as {run.driven_as}"] if run.driven_as else []
        details += [_plain(run.error)] if run.error else []
        more = "".join(f" — {d}" for d in details)
        extra = run.extra or {}
        if "same_text" in extra:  # split where the two part: what was counted is what is shown
            texts = f"both {_quote(extra.get('same_text'))}"
            if extra.get("own_rest") or extra.get("pytorch_rest"):
                texts += f", then the package {_quote(extra.get('own_rest'))} / PyTorch {_quote(extra.get('pytorch_rest'))}"
        else:
            text = _quote(run.text) if run.text is not None else "(no text)"
            texts = f"{text} / PyTorch: {_quote(continuation.pytorch_text)}"
        lines.append(f"- {run.label}: {continuation_verdict(run)}{more}. {texts}")
    return lines


def _plain(text) -> str:
    """Our own text (an error, a note) on one markdown line, escaped like model text."""
    return _quote(text)[1:-1]


def _quote(text) -> str:
    """Model text as literal text on one markdown line: «text», a newline shown as ⏎, HTML
    and markdown characters escaped (the text is whatever the model generated)."""
    text = str(text if text is not None else "").replace("\r\n", "\n").replace("\n", "⏎")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "«" + "".join("\\" + c if c in MARKDOWN_SPECIAL else c for c in text) + "»"


def tokenizer_section(source_repo: str, report: dict, tokenizer_files: list[str] | None = None) -> list[str]:
    """Which repo the package names for its tokenizer (metadata `co.huggingface.exporters.name`,
    what swift-transformers' LanguageModel downloads tokenizer.json, tokenizer_config.json and
    config.json from), and why that one."""
    repo = report.get("tokenizer_repo")
    inputs = {i.get("name") for p in report.get("packages") or [] for i in p.get("inputs") or []}
    if not repo or not inputs & {"inputIds", "input_ids"}:  # no tokenizer for an image model
        return []
    key = "`co.huggingface.exporters.name`"
    if report.get("tokenizer_missing"):
        return [
            f"**This model comes without a usable tokenizer**: {_plain(report['tokenizer_missing'])}. It was "
            "converted and checked on made-up token ids, which prove the package computes what the model "
            "computes, but no text was run through it.",
            "",
            "Your app needs the tokenizer the model was trained with (for a fine-tune, usually its base model's): "
            "load that tokenizer and pass it to the model (see below). The package's metadata "
            f"{key} names **`{repo}`**, which has no tokenizer for swift-transformers to download.",
        ]
    if repo == source_repo:
        lines = [
            f"The package's metadata {key} names **`{repo}`**, the source repo, which this package is added to "
            "and which holds the tokenizer: swift-transformers' `LanguageModel` downloads `tokenizer.json`, "
            f"`tokenizer_config.json` and `config.json` from that repo's `main` branch.",
            "",
            f"If `{repo}` is gated or private, that download has no token of your app's, so it fails: ship the "
            "tokenizer files with your app and pass the tokenizer in (see below).",
        ]
    else:
        lines = [
            f"The package's metadata {key} names **`{repo}`** — this repo, not the source `{source_repo}` — "
            "because this repo carries copies of the source's tokenizer and config files, so swift-transformers' "
            "`LanguageModel` can download `tokenizer.json`, `tokenizer_config.json` and `config.json` from it "
            "even when the source is gated or private.",
            "",
            "If this repo is private, that download fails without a token: ship the tokenizer files with your app "
            "and pass the tokenizer in (see below).",
        ]
    if tokenizer_files is not None:
        missing = [name for name in TOKENIZER_FILES[:2] if name not in tokenizer_files]
        if missing:
            lines += [
                "",
                f"**Note:** `{repo}` has no {' or '.join(f'`{m}`' for m in missing)}: swift-transformers needs "
                "`tokenizer.json` (and `tokenizer_config.json`, unless it knows the model type). Save the tokenizer "
                "with transformers (`AutoTokenizer.from_pretrained(...).save_pretrained(...)`) and add those files.",
            ]
    return lines


def swift_snippet(task: str, report: dict, package_paths: list[str]) -> list[str]:
    name = package_paths[0].split("/")[-1].removesuffix(".mlpackage") if package_paths else "Model"
    if task == "text-generation":
        return swift_transformers_snippet(name, report)
    if card_speech.is_whisperkit(package_paths):  # WhisperKit's three packages, one variant folder
        return card_speech.whisperkit_snippet(report, package_paths)
    if card_vision.is_image_text(report):  # two packages scored together
        return card_vision.image_text_snippet(report, package_paths, swift_compute_units(report))
    if task == "depth-estimation":
        return card_vision.depth_snippet(report, name, swift_compute_units(report))
    if card_vision.is_detection(report):  # scores and boxes, drawn
        return card_vision.detection_snippet(report, name, swift_compute_units(report))
    inputs = (report.get("packages") or [{}])[0].get("inputs", [])
    images = [i for i in inputs if i.get("type") == "image"]
    arrays = [i for i in inputs if i.get("type") != "image"]
    parameters = ", ".join(f"{_swift_name(i['name'])}: CVPixelBuffer" for i in images)
    lines = [
        "```swift",
        "import CoreML",
        "",
        f"func predict({parameters}) throws -> MLFeatureProvider {{",
        f'    let url = Bundle.main.url(forResource: "{name}", withExtension: "mlmodelc")!  // Xcode compiles the .mlpackage',
        "    let configuration = MLModelConfiguration()",
        f"    configuration.computeUnits = {swift_compute_units(report)}",
        "    let model = try MLModel(contentsOf: url, configuration: configuration)",
    ]
    for image in images:
        width, height = (image.get("shape") or [0, 0, 0, 0])[-1], (image.get("shape") or [0, 0, 0, 0])[-2]
        lines.append(f"    // {_swift_name(image['name'])}: a {width}×{height} image")
    for array in arrays:
        shape = ", ".join(f"{d}" for d in array.get("shape") or [])
        dtype = SWIFT_ARRAY_TYPES.get(array.get("dtype"), ".float32")
        lines.append(f"    let {_swift_name(array['name'])} = try MLMultiArray(shape: [{shape}], dataType: {dtype})"
                     + ("  // fill with the tokenizer's ids" if "id" in array["name"].lower() else ""))
    features = ", ".join(f'"{i["name"]}": {_feature_value(i)}' for i in inputs)
    lines += [
        f"    let input = try MLDictionaryFeatureProvider(dictionary: [{features}])",
        "    return try model.prediction(from: input)",
        "}",
        "```",
    ]
    return lines


SWIFT_ARRAY_TYPES = {"int32": ".int32", "float16": ".float16", "float32": ".float32", "float64": ".double"}


def _swift_name(name: str) -> str:
    """input_ids -> inputIds, pixel_values -> pixelValues: a Swift variable for an input."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _feature_value(info: dict) -> str:
    name = _swift_name(info["name"])
    return f"MLFeatureValue(pixelBuffer: {name})" if info.get("type") == "image" else name


def swift_transformers_snippet(name: str, report: dict) -> list[str]:
    """swift-transformers 1.3: product `Transformers` (modules Models, Generation, Tokenizers);
    `LanguageModel.loadCompiled(url:computeUnits:tokenizer:)` (throws, not async; picks the
    stateful KV-cache variant when the package has keyCache/valueCache states);
    `generate(config:prompt:callback:)` (async throws -> String: the prompt and the new text,
    decoded; the callback gets the same text so far after each token). Both need iOS 18 / macOS 15."""
    options = report.get("options") or {}
    caveats = swift_transformers_caveats(options)
    units = swift_compute_units(report)
    tokens = _context_tokens(options)
    budget = f"prompt + new tokens must fit in {tokens} tokens" if tokens else "prompt + new tokens must fit the package"
    lines = [
        f"With [swift-transformers]({SWIFT_TRANSFORMERS_URL}) {SWIFT_TRANSFORMERS_FROM} or later. Add the package "
        "(Xcode: File ▸ Add Package Dependencies…, product **Transformers**; or in `Package.swift`):",
        "",
        "```swift",
        "dependencies: [",
        f'    .package(url: "{SWIFT_TRANSFORMERS_URL}", from: "{SWIFT_TRANSFORMERS_FROM}"),',
        "],",
        "// in your target:",
        '// dependencies: [.product(name: "Transformers", package: "swift-transformers")]',
        "```",
        "",
        f"Add `{name}.mlpackage` to your app target (Xcode compiles it to `{name}.mlmodelc`), then:",
        "",
        "```swift",
        "import CoreML",
        "import Generation  // swift-transformers: GenerationConfig",
        "import Models      // swift-transformers: LanguageModel",
        "",
        "@available(iOS 18.0, macOS 15.0, *)",
        "func complete(_ prompt: String) async throws -> String {",
        f'    let url = Bundle.main.url(forResource: "{name}", withExtension: "mlmodelc")!',
        "    // Downloads the tokenizer from the repo the package names (see Tokenizer above).",
        f"    let model = try LanguageModel.loadCompiled(url: url, computeUnits: {units})",
        f"    let config = GenerationConfig(maxNewTokens: 32)  // greedy; {budget}",
        "    return try await model.generate(config: config, prompt: prompt) { textSoFar in",
        "        print(textSoFar)  // the prompt and the tokens generated so far, decoded",
        "    }",
        "}",
        "```",
        "",
        "With the tokenizer files shipped in your app instead (no download; needed when the named repo is "
        "gated or private):",
        "",
        "```swift",
        "import CoreML",
        "import Models",
        "import Tokenizers  // swift-transformers: AutoTokenizer",
        "",
        "@available(iOS 18.0, macOS 15.0, *)",
        "func loadModel(tokenizerFolder: URL) async throws -> LanguageModel {",
        "    // tokenizerFolder holds tokenizer.json and tokenizer_config.json",
        "    let tokenizer = try await AutoTokenizer.from(modelFolder: tokenizerFolder)",
        f'    let url = Bundle.main.url(forResource: "{name}", withExtension: "mlmodelc")!',
        f"    return try LanguageModel.loadCompiled(url: url, computeUnits: {units}, tokenizer: tokenizer)",
        "}",
        "```",
    ]
    if caveats:
        lines += [""] + [f"**Note:** {c}" for c in caveats]
    return lines


def _context_tokens(options: dict) -> int | None:
    """How many tokens swift-transformers can run the package with (LanguageModel.contextRange):
    a list of lengths -> the first (smallest), a range -> its upper bound, stateful -> the
    context size, a fixed length -> that length (swift-transformers pads to 128 whatever it is:
    swift_transformers_caveats says so when it is not 128)."""
    try:
        sequence = SequenceLength.parse(options.get("sequence_length") or None)
    except UserInputError:
        return None
    if options.get("kv_cache") == "stateful":
        # swift-transformers' causalMask is one slot longer than the tokens so far.
        return sequence.maximum - 1
    return sequence.maximum if sequence.kind == "range" else sequence.minimum


def swift_transformers_caveats(options: dict) -> list[str]:
    """What in these options swift-transformers 1.3 cannot run (read in its LanguageModel.swift)."""
    caveats = []
    target = str(options.get("minimum_deployment_target") or "")
    if target and target not in ("iOS18", "macOS15"):
        caveats.append(f"swift-transformers' `LanguageModel` itself needs iOS 18 / macOS 15 (it is declared "
                       f"`@available(macOS 15.0, iOS 18.0, …)`), hence the snippet's `@available`; the package runs from "
                       f"{target} when you call it with Core ML's own API.")
    if options.get("naming") == "exporters":
        caveats.append("this package uses the exporters names (`input_ids`, `attention_mask`); swift-transformers' "
                       "`LanguageModel` reads `inputIds` and stops on a package without it: convert with the "
                       "swift-transformers naming to use it there.")
    if options.get("kv_cache") == "stateful":
        caveats.append("the package keeps its KV cache in Core ML states; `LanguageModel` starts each `generate` from a "
                       "fresh state. Driving it yourself: a fresh `makeState()` per generation, `inputIds` = the new "
                       "tokens, `causalMask` zeros [1, 1, 1, T + 1] for T tokens so far (as swift-transformers sends), "
                       "or a -inf upper triangle [1, 1, n, n] at the prompt and zeros [1, 1, 1, T] per token: both are exact.")
        return caveats
    text = str(options.get("sequence_length") or "")
    if text.isdigit() and text != "128":
        caveats.append(f"swift-transformers pads every call to 128 tokens when `inputIds` has one fixed length, "
                       f"but this package takes exactly {text}: `LanguageModel` will fail on it. Convert with "
                       "sequence length 128, or a stateful KV cache.")
    elif "," in text:
        caveats.append(f"with a list of lengths ({text}) swift-transformers always runs the first one, "
                       f"{text.split(',')[0]} tokens.")
    return caveats


def licence_lines(source_repo: str, licence: str | None, gated: bool, private: bool, pushed_private: bool) -> list[str]:
    """The source's terms, which a copy carries: its licence, and its gate."""
    lines = [f"Licence: the source's, **`{licence}`**." if licence
             else f"Licence: {source_repo} states none; ask its authors before you redistribute it."]
    if gated or private:
        kind = "gated: its authors grant access on conditions" if gated else "private"
        lines += ["", f"The source model is {kind}. This copy " + (
            "was pushed private, so the same people can reach it; keep it so unless its licence lets you publish it."
            if pushed_private else "was made public by the person who converted it, who confirmed its licence allows it.")]
    return lines


def model_card(*, source_repo: str, revision: str, source_url: str, report: dict, package_paths: list[str],
               modality: str | None = None, tokenizer_files: list[str] | None = None, licence: str | None = None,
               terms: list[str] | None = None, other_packages: list[str] | None = None) -> str:
    """README.md for a new repo: YAML metadata (with the source's `licence`), then the body
    (`terms`: licence_lines, after the introduction)."""
    tags = [each.hub_tag for each in FORMATS.values()  # a tag per format the repo holds packages of
            if each.package_suffix and any(p.endswith(each.package_suffix) for p in package_paths)] + ["core-ml-converter"]
    if ValidationReport.from_json(report.get("validation")).passed is not True:
        tags.append("unvalidated")
    data = ModelCardData(
        base_model=source_repo,
        license=licence,
        tags=tags,
        pipeline_tag=pipeline_tag(report["task"], modality),
    )
    body = card_body(source_repo=source_repo, revision=revision, source_url=source_url, report=report,
                     package_paths=package_paths, tokenizer_files=tokenizer_files, terms=terms,
                     other_packages=other_packages)
    return f"---\n{data.to_yaml()}\n---\n\n{body}" + other_packages_section(other_packages or [])


def other_packages_section(paths: list[str]) -> str:
    """The packages an earlier conversion left in this repo, which this card does not describe."""
    if not paths:
        return ""
    listed = "\n".join(f"- `{path}`" for path in paths)
    return ("\n## Other packages in this repo\n\nThis repo also holds packages from earlier conversions, which the "
            "sections above do not describe (they describe this conversion's). Each one's details are in the commit "
            f"that added it.\n\n{listed}\n")
