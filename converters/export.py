"""The conversion pipeline, one stage per module, in order:

    plan (plan.py)        source, config, task, options -> what to build; all refusals here
    capture (capture.py)  load the PyTorch model, wrap it, torch.export each part
    convert (backends/)   each backend turns each program into a package (Core ML, Core AI)
    calibrate (transforms/calibrate.py)  4-bit text generation: GPTQ on held-out text, in place
    transform (transforms/)  compression and other changes before saving
    save (backends/)      the package on disk, with its metadata
    validate (validation/)   one set of checks against PyTorch, run by the backend's runner
    report                what was done, as JSON (report.py reads it back typed)
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .backends import all_backends, backend_for
from .capture import EXPORT_FAILURES, capture, load
from .chunks import ChunkModule, chunk_config, chunk_view, chunked_model
from .diagnose import conversion_failure
from .errors import ConversionError, UserInputError
from .memory import release
from .metadata import toolchain_versions
from .options import ConversionOptions
from .package_info import directory_size
from .plan import Plan, make_plan
from .report import ArchitectureInfo, ConversionReport, PackageReport, SourceInfo, ValidationReport
from .source import ModelSource, open_source
from .source_tokenizer import check_tokenizer, load_tokenizer
from .transforms import transforms_for
from .transforms.calibrate import calibrate, calibrates
from .transforms.calibrate_chunks import ChunkCalibration
from .transforms.schemes import SCHEMES

# progress(stage, fraction, message). "resolve", "load" and "convert" share one span of
# fractions (0 to 0.9 when the last part is converted), "validate" has its own (0 to 1): the
# worker shows each span as its page stage, so fractions only grow within one.
Progress = Callable[[str, float, str], None]
# step(done, total, detail): `done` (may be fractional) of `total` steps of a long stage.
Steps = Callable[[float, int, str], None]
CALIBRATION_SPAN = (0.12, 0.5)  # GPTQ takes minutes where converting the parts takes seconds
CONVERSION_END = 0.9


@dataclass
class ConversionResult:
    report: ConversionReport  # what the conversion did, typed; `report_json` is the --report file's JSON
    packages: list[Path] = field(default_factory=list)

    @property
    def report_json(self) -> dict:
        """The report as the `--report` file and a job's status hold it."""
        return self.report.to_json()


def _no_progress(stage: str, fraction: float, message: str) -> None:
    pass


def convert(
    source: str | ModelSource,
    task: str,
    output_dir: str | Path,
    options: ConversionOptions | None = None,
    token: str | None = None,
    progress: Progress | None = None,
    validate: bool = True,
    hub_name: str | None = None,
    backend: str | None = None,
    layers_per_chunk: int | None = None,
    time_limit: float | None = None,
    calibration_cache: str | Path | None = None,
) -> ConversionResult:
    """Convert `source` (folder, Hub ID or URL) for `task` into package(s) under `output_dir`,
    then (unless `validate` is False) check them against the PyTorch model. `hub_name` is the
    repo the packages name for their tokenizer (default: the source's Hub ID or folder name).
    A big decoder converts a few layers at a time (chunks.py): `layers_per_chunk` sets how
    many (0: the whole model at once; None: by size). The options' `format` picks the
    backends (`backend` names one instead): with both, each part becomes an .mlpackage and
    an .aimodel, and validation judges each. `time_limit`: the seconds the caller allows (a
    job's limit), against which a slow validation is refused up front. `calibration_cache`: a
    directory where GPTQ's results are kept and taken again for the same weights and settings
    (transforms/calibration_cache.py; None: GPTQ always walks)."""
    progress = progress or _no_progress
    output_dir = Path(output_dir)
    timings: dict[str, float] = {}
    started = mark = time.perf_counter()

    progress("resolve", 0.0, "Reading the model")
    model_source = source if isinstance(source, ModelSource) else open_source(source, token=token)
    plan = make_plan(model_source, task, options or ConversionOptions(), hub_name)
    writers = [backend_for(name) for name in ((backend,) if backend else plan.options.formats)]
    timings["resolve"] = time.perf_counter() - mark
    tokenizer = check_tokenizer(plan.source.path, plan.cfg.attributes.vocab_size) if plan.cfg.modality == "text" else None
    if tokenizer is not None and tokenizer.missing:
        plan.warnings.append(tokenizer.warning(plan.task))
    if not plan.cfg.tested and not validate:
        validate = True
        plan.warnings.append("Validation runs even though skipping it was asked: this architecture is not in the "
                             "tested list, and validation is what says whether its package is right.")

    if validate:  # a format whose validation would outlast the job is refused before any weights load
        for writer in writers:
            writer.check_validation_time(plan, time_limit)

    progress("load", 0.1, "Loading the PyTorch model")
    mark = time.perf_counter()
    lazy = chunked_model(plan, layers_per_chunk)  # a big decoder: its layers a chunk at a time
    if lazy is not None and not all(writer.converts_in_chunks for writer in writers):
        chunked = " or ".join(b.label for b in all_backends() if b.converts_in_chunks)
        raise UserInputError(
            f"This model ({sum(p.numel() for p in lazy.model.parameters()) / 1e9:.1f} B parameters) converts a chunk "
            f"of layers at a time to fit in memory, and only {chunked} output is made that way so far. "
            f"Choose the {chunked} format for it.")
    model = load(plan) if lazy is None else None
    parameters = plan.parameters = sum(p.numel() for p in (model or lazy.model).parameters())
    timings["load"] = time.perf_counter() - mark
    cache = Path(calibration_cache) if calibration_cache else None
    calibrated = _calibrate(plan, model, progress, timings, cache) if lazy is None else False  # chunks: as each loads

    start = CALIBRATION_SPAN[1] if calibrated else 0.2
    packages, package_reports, built = _build_parts(plan, model, lazy, writers, output_dir, timings, progress, start)
    _copy_companions(plan, packages)

    if lazy is not None:  # too big to load whole: validated against the model streamed layer by layer
        model = lazy.streaming()
    elif calibrated and validate:  # validation judges the package against the model's own weights, not GPTQ's
        progress("convert", CONVERSION_END, "Loading the original weights again for validation")
        del model
        release(plan.parameters)
        model = load(plan)
    validation = _validate(plan, model, built, validate, progress, timings)
    del model, lazy
    release(plan.parameters)
    timings["total"] = time.perf_counter() - started
    progress("validate" if validate else "convert", 1.0, validation["message"])
    report = _report(plan, parameters, package_reports, timings, validation)
    if tokenizer is not None and tokenizer.missing:
        report.tokenizer_missing = tokenizer.missing
    return ConversionResult(report=report, packages=packages)


def _span(progress: Progress, stage: str, start: float, end: float, label: str) -> Steps:
    """Steps of a long stage as progress from `start` to `end`, each said as "<label>: <detail>"."""

    def step(done: float, total: int, detail: str) -> None:
        fraction = start + (end - start) * min(done / max(total, 1), 1.0)
        progress(stage, round(fraction, 4), f"{label}: {detail}")  # rounded: a step's end is the next one's start

    return step


def _no_steps(done: float, total: int, detail: str) -> None:
    pass


def _copy_companions(plan: Plan, packages: list[Path]) -> None:
    """The family's companion files (Whisper: tokenizer and configs), from the source into each
    folder that holds packages."""
    for folder in {Path(p).parent for p in packages}:
        for name in plan.cfg.companion_files():
            if (plan.source.path / name).is_file():
                shutil.copyfile(plan.source.path / name, folder / name)


def _build_parts(plan: Plan, model, lazy, writers: list, output_dir: Path, timings: dict, progress: Progress,
                 start: float) -> tuple[list[Path], list[dict], list[tuple]]:
    """Each part by each writer, sharing the progress from `start` to CONVERSION_END: (package
    paths, their report entries, (part, path, writer) for validation)."""
    packages, package_reports, built = [], [], []
    steps = [(part, writer) for writer in writers for part in plan.parts]
    share = (CONVERSION_END - start) / len(steps)
    for index, (part, writer) in enumerate(steps):
        label = f"Converting {part}" + (f" to {writer.label}" if len(writers) > 1 else "")
        if lazy is None:
            step = _span(progress, "convert", start + share * index, start + share * (index + 1), label)
            path, package_report = _build_part(plan, model, part, writer, output_dir, timings, step)
        else:
            progress("convert", start + share * index, label)
            path, package_report = _build_chunked(plan, lazy, part, writer, output_dir, timings, progress)
        packages.append(path)
        package_reports.append(package_report)
        built.append((part, path, writer))
    return packages, package_reports, built


def _calibration_tokenizer(plan: Plan):
    """The tokenizer GPTQ reads its text with, when the scheme calls for calibration (calibrate.py)."""
    if not calibrates(plan):
        return None
    tokenizer = load_tokenizer(plan.source.path, plan.cfg.attributes.vocab_size)
    if tokenizer is None:
        plan.warnings.append(f"Weight compression {plan.options.quantize}: no tokenizer to calibrate with; "
                             "the weights are compressed data-free (expect lower quality).")
    return tokenizer


def _calibrate(plan: Plan, model, progress: Progress, timings: dict, cache: Path | None = None) -> bool:
    """GPTQ on the model's decoder layers when the scheme calls for it (calibrate.py)."""
    tokenizer = _calibration_tokenizer(plan)
    if tokenizer is None:
        return False
    label = f"Calibrating {SCHEMES[plan.options.quantize].bits}-bit weights (GPTQ)"
    start, end = CALIBRATION_SPAN
    progress("convert", start, f"{label} on real text")
    plan.calibration = calibrate(plan, model, tokenizer, _span(progress, "convert", start, end, label), cache)
    timings["calibrate"] = plan.calibration["seconds"]
    return True


def _build_part(plan: Plan, model, part: str, writer, output_dir: Path, timings: dict,
                step: Steps = _no_steps) -> tuple[Path, dict]:
    """capture -> convert -> transforms -> save, for one part; its entry in the report."""
    artifact, exporter, safe_norms = _convert_part(plan, model, part, writer, timings, step=step)
    step(3, 4, "saving the package")
    return _save_part(plan, part, artifact, writer, output_dir, timings, exporter, safe_norms)


def _convert_part(plan: Plan, model, part: str, writer, timings: dict, module=None,
                  step: Steps = _no_steps) -> tuple[object, str, int]:
    """capture -> convert -> transforms: (the in-memory package, exporter, float16-safe norms).
    `step` hears of each as it starts (steps 0-2 of 4; saving is the 4th)."""
    captured = None
    try:
        step(0, 4, "exporting the PyTorch program")
        # A backend may capture a program of its own for a part (Core AI's LLM bundle: coreai/bundle.py).
        own = getattr(writer, "own_capture", None) if module is None else None
        captured = own(plan, model, part) if own else None
        if captured is None:
            captured = capture(plan, model, part, module, safe_norms=writer.float16_safe_norms, image_inputs=writer.image_inputs,
                               table=writer.decompositions(), source_lines=writer.keeps_source_lines)
        _add(timings, f"export_{part}", captured.seconds)
        mark = time.perf_counter()
        step(1, 4, f"converting to {writer.label}")
        artifact = writer.convert(plan, captured)
    except (ConversionError, *EXPORT_FAILURES) as error:
        raise conversion_failure(plan.cfg, part, error, getattr(captured, "program", None)) from error
    exporter, safe_norms = captured.exporter, captured.float16_safe_norms
    del captured  # the torch program can be as large as the model
    for transform in transforms_for(plan):
        step(2, 4, f"compressing the weights ({plan.options.quantize})")
        transformed = transform(plan, part, artifact, writer)
        if transformed is not artifact:
            writer.discard(artifact)
        artifact = transformed
    _add(timings, f"convert_{part}", time.perf_counter() - mark)
    return artifact, exporter, safe_norms


def _add(timings: dict, key: str, seconds: float) -> None:
    timings[key] = timings.get(key, 0.0) + seconds


def _build_chunked(plan: Plan, lazy, part: str, writer, output_dir: Path, timings: dict, progress: Progress) -> tuple[Path, dict]:
    """Each chunk of layers (chunks.py) loaded, converted, transformed and set aside on disk,
    its weights let go; then the chunks stitched into the part's one package."""
    chunks = lazy.chunks
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _calibration_tokenizer(plan)  # GPTQ a chunk at a time, carrying hidden states (calibrate_chunks.py)
    calibration = ChunkCalibration(plan, tokenizer) if tokenizer is not None else None
    scratch = Path(tempfile.mkdtemp(prefix=".chunks-", dir=output_dir))
    try:
        kept, exporters, safe_norms = [], set(), 0
        for chunk in chunks:
            fraction = 0.2 + 0.7 * chunk.index / len(chunks)
            progress("convert", fraction, f"Converting {part}: {chunk.describe()}")
            modules = lazy.chunk_modules(chunk)
            lazy.load(modules)
            try:
                if calibration is not None:  # before the chunk's plan is made: its compression reads the entry
                    plan.calibration = calibration.calibrate(lazy.model, lazy.chunk_layers(chunk), chunk.start,
                                                             _calibration_steps(plan, progress, fraction))
                chunk_plan = replace(plan, cfg=chunk_config(plan.cfg, chunk))
                with chunk_view(lazy.model, lazy.layout, chunk, plan.cfg.attributes.hidden_size) as layers:
                    module = ChunkModule(chunk_plan.cfg.wrap(lazy.model, part), layers, chunk)
                    artifact, exporter, norms = _convert_part(chunk_plan, lazy.model, part, writer, timings, module)
            finally:
                if calibration is not None:
                    calibration.forget(lazy.chunk_layers(chunk))
                lazy.release(modules)
            exporters.add(exporter)
            safe_norms += norms
            kept.append(writer.keep_chunk(chunk_plan, part, artifact, scratch))
            del artifact, module
            release(plan.parameters)
        if calibration is not None:
            _add(timings, "calibrate", calibration.seconds)
        progress("convert", 0.9, f"Joining the {len(chunks)} chunks of {part} into one package")
        mark = time.perf_counter()
        artifact = writer.stitch(plan, part, kept, scratch)
        for chunk_artifact in kept:
            writer.discard(chunk_artifact)
        del kept
        release(plan.parameters)
        _add(timings, f"stitch_{part}", time.perf_counter() - mark)
        path, entry = _save_part(plan, part, artifact, writer, output_dir, timings, " + ".join(sorted(exporters)), safe_norms)
        entry["chunks"] = [{"layers": [chunk.start, chunk.stop]} for chunk in chunks]
        return path, entry
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _calibration_steps(plan: Plan, progress: Progress, fraction: float) -> Steps:
    """GPTQ's layers said at the chunk's own point of the bar (the chunk's conversion follows)."""
    label = f"Calibrating {SCHEMES[plan.options.quantize].bits}-bit weights (GPTQ)"
    return lambda done, total, detail: progress("convert", fraction, f"{label}: {detail}")


def _save_part(plan: Plan, part: str, artifact, writer, output_dir: Path, timings: dict, exporter: str,
               safe_norms: int) -> tuple[Path, dict]:
    """The part's package on disk; its entry in the report."""
    mark = time.perf_counter()
    path = output_dir / writer.package_path(plan, part)
    writer.save(plan, part, artifact, path)
    writer.discard(artifact)
    del artifact
    release(plan.parameters)
    _add(timings, f"save_{part}", time.perf_counter() - mark)
    info = writer.describe(path)
    entry = {
        "part": part,
        "format": writer.name,
        "path": str(path),
        "exporter": exporter,
        "float16_safe_norms": safe_norms,
        "size_bytes": directory_size(path),
        "inputs": info["inputs"],
        "outputs": info["outputs"],
        "states": info["states"],
        "program": info["program"],  # fused attention, stateful, weight bits, op counts
    }
    if part in plan.compression:  # scheme, bits per weight, size before and after
        entry["compression"] = writer.compression_entry(plan, part, entry["size_bytes"], info)
    if entry.get("compression"):
        if plan.calibration:
            entry["compression"]["calibration"] = plan.calibration
    return path, entry


def _validate(plan: Plan, model, packages: list[tuple], validate: bool, progress: Progress, timings: dict) -> dict:
    # Deferred: validation loads coremltools (the reference executor); a conversion loads it only
    # when it validates or makes a Core ML package.
    from .validation.checks import skipped

    if not validate:
        plan.warnings.append("Validation was skipped: nothing checks that these packages compute what the model computes.")
        return skipped()
    progress("validate", 0.0, "Validating against PyTorch")
    mark = time.perf_counter()
    validation = validate_all(plan, model, packages, _span(progress, "validate", 0.0, 1.0, "Validating"))
    timings["validate"] = time.perf_counter() - mark
    return validation


def validate_all(plan: Plan, model, packages: list[tuple], steps: Steps | None = None) -> dict:
    """Validation's section for `packages` ([(part, path, backend)]): the common checks, and the
    rows of each package its backend validates itself (Core AI's LLM bundle, driven as Apple's
    app drives it) joined to them. The conversion and the validation CLI judge alike."""
    from .validation.checks import validate as validate_packages  # coremltools and torch: loaded to validate

    own = [entry for entry in packages if entry[2].validates_itself(plan, entry[0])]
    rest = [entry for entry in packages if entry not in own]
    validation = validate_packages(plan.cfg, model, rest, plan.source.path, progress=steps) if rest else None
    for part, path, writer in own:
        validation = writer.validate_itself(plan, model, part, path, validation, steps)
    return validation


def _report(plan: Plan, parameters: int, package_reports: list[dict], timings: dict, validation: dict) -> ConversionReport:
    source = plan.source
    return ConversionReport(
        source=SourceInfo(source.hub_id, source.revision, str(source.path)),
        requested_task=plan.requested_task,
        task=plan.task,
        tokenizer_repo=plan.hub_name,
        architecture=ArchitectureInfo(plan.hf_config.model_type, plan.cfg.model_class_label(), parameters,
                                      plan.cfg.family, plan.cfg.tested),
        options=plan.options.to_dict(),
        packages=[PackageReport.from_json(package) for package in package_reports],
        versions=toolchain_versions(),
        timings={k: round(v, 3) for k, v in timings.items()},
        warnings=plan.warnings,
        validation=ValidationReport.from_json(validation),
    )

