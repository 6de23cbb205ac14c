"""The card's Swift for a Whisper conversion: WhisperKit (argmax-oss-swift) loads the three
packages from the repo's variant folder, as its source reads them (docs/whisperkit.md):
`WhisperKit(WhisperKitConfig(model:, modelRepo:))` downloads `<variant>/…` and `transcribe`
returns the text."""

from __future__ import annotations

import re

WHISPERKIT_URL = "https://github.com/argmaxinc/argmax-oss-swift"
WHISPERKIT_FROM = "1.0.0"  # the release read (WhisperKit.swift, Configurations.swift at its 2026-05 head)
PACKAGES = ("MelSpectrogram", "AudioEncoder", "TextDecoder")


def is_whisperkit(package_paths: list[str]) -> bool:
    """The three packages WhisperKit loads, side by side in one folder."""
    names = {path.split("/")[-1].removesuffix(".mlpackage") for path in package_paths}
    folders = {path.rpartition("/")[0] for path in package_paths}
    return set(PACKAGES) <= names and len(folders) == 1


# validation/whisperkit.py's drive row: "…, WhisperKit's greedy decoding, <|fr|> <|transcribe|>, 24 tokens"
PROMPT = re.compile(r"greedy decoding, <\|([^|]+)\|> <\|(transcribe|translate)\|>, \d+ tokens")


def validated_language(report: dict) -> tuple[str, str] | None:
    """(language code, task) the packages were validated with — the model's own, from its generation
    config (validation/whisperkit.model_language) — read from the drive's validation row; None for an
    English-only model (no language token) or a report without the row."""
    for check in (report.get("validation") or {}).get("checks") or []:
        found = PROMPT.search(str(check.get("inputs") or "")) if check.get("metric") == "continuation_match" else None
        if found:
            return found.group(1), found.group(2)
    return None


def whisperkit_snippet(report: dict, package_paths: list[str]) -> list[str]:
    variant = package_paths[0].rpartition("/")[0] or "."
    repo = report.get("tokenizer_repo") or "<this repo>"
    language, task = validated_language(report) or ("en", "transcribe")
    decode = f'DecodingOptions(task: .{task}, language: "{language}")'
    return [
        f"With [WhisperKit]({WHISPERKIT_URL}) {WHISPERKIT_FROM} or later (Xcode: File ▸ Add Package Dependencies…, "
        "product **WhisperKit**). It downloads the "
        f"`{variant}/` folder of this repo (the three packages, the tokenizer and the configs) and transcribes:",
        "",
        "```swift",
        f'// dependencies: [.package(url: "{WHISPERKIT_URL}.git", from: "{WHISPERKIT_FROM}")]',
        '// target: .product(name: "WhisperKit", package: "argmax-oss-swift")',
        "import WhisperKit",
        "",
        f'let whisper = try await WhisperKit(WhisperKitConfig(model: "{variant}", modelRepo: "{repo}"))',
        f"let options = {decode}  // the language and task this model was validated with",
        'let results = try await whisper.transcribe(audioPath: "speech.wav", decodeOptions: options)',
        'print(results.map(\\.text).joined(separator: " "))',
        "```",
        "",
        *language_lines(report),
        "From a folder in your app instead: "
        f"`WhisperKitConfig(modelFolder: path)`, with `path` the `{variant}/` folder.",
    ]


def language_lines(report: dict) -> list[str]:
    """Which language token the packages were validated with, and why the app passes it: WhisperKit
    reads no generation_config.json (Models.swift:52) and prompts `<|en|>` when `DecodingOptions`
    names no language (TextDecoder.swift:183, Constants.defaultLanguageCode: Models.swift:1459)."""
    found = validated_language(report)
    if found is None:
        return []
    language, task = found
    return [f"Validated with the language token `<|{language}|>` and `<|{task}|>`: the model's own, from its generation "
            "config. WhisperKit does not read that file and prompts `<|en|>` unless `DecodingOptions` names a language, "
            f'so pass `language: "{language}"` as above (or leave it out and set `detectLanguage: true` to let the model choose).', ""]
