"""Where a part's package goes in the output folder, by the `naming` option: the Core ML
package's name, which the Core AI model takes too (with its own suffix and folder)."""

from __future__ import annotations

from ..options import ConversionOptions


def package_filename(model_name: str, task: str, options: ConversionOptions, part: str, part_count: int) -> str:
    """swift-transformers: '<name>.mlpackage'; exporters: 'coreml/<task>/<precision>_model.mlpackage';
    speech recognition: WhisperKit's '<name>/<part>.mlpackage' (MelSpectrogram, AudioEncoder, TextDecoder
    in one variant folder: docs/whisperkit.md)."""
    if task == "automatic-speech-recognition":
        return f"{model_name}/{part}.mlpackage"
    if options.naming == "exporters":
        prefix = f"{part}_" if part_count > 1 else ""
        return f"coreml/{task}/{prefix}{options.precision}_model.mlpackage"
    suffix = f"-{part}" if part_count > 1 else ""
    return f"{model_name}{suffix}.mlpackage"
