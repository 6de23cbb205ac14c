"""The card's Swift for a Whisper conversion: WhisperKit (argmax-oss-swift) loads the three
packages from the repo's variant folder, as its source reads them (docs/whisperkit.md):
`WhisperKit(WhisperKitConfig(model:, modelRepo:))` downloads `<variant>/…` and `transcribe`
returns the text."""

from __future__ import annotations

WHISPERKIT_URL = "https://github.com/argmaxinc/argmax-oss-swift"
WHISPERKIT_FROM = "1.0.0"  # the release read (WhisperKit.swift, Configurations.swift at its 2026-05 head)
PACKAGES = ("MelSpectrogram", "AudioEncoder", "TextDecoder")


def is_whisperkit(package_paths: list[str]) -> bool:
    """The three packages WhisperKit loads, side by side in one folder."""
    names = {path.split("/")[-1].removesuffix(".mlpackage") for path in package_paths}
    folders = {path.rpartition("/")[0] for path in package_paths}
    return set(PACKAGES) <= names and len(folders) == 1


def whisperkit_snippet(report: dict, package_paths: list[str]) -> list[str]:
    variant = package_paths[0].rpartition("/")[0] or "."
    repo = report.get("tokenizer_repo") or "<this repo>"
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
        'let results = try await whisper.transcribe(audioPath: "speech.wav")',
        'print(results.map(\\.text).joined(separator: " "))',
        "```",
        "",
        "The language and task go in `DecodingOptions(task: .transcribe, language: \"en\")`, passed as "
        "`transcribe(audioPath:decodeOptions:)`. From a folder in your app instead: "
        f"`WhisperKitConfig(modelFolder: path)`, with `path` the `{variant}/` folder.",
    ]
