"""Validation: prove a package computes what the PyTorch model computes (one set of checks;
the backend supplies the runner: for Core ML, the reference executor).

For each package and each deterministic input set, the PyTorch wrapper (the model plus
the package's pre/post-processing, fp32) gives the reference; the package runs in its
backend's runner in two modes (exact fp32, and fp16 device emulation), or in the runner's
own modes (a format's runtime that executes the package as it is), and, where the backend
has this machine's hardware (Core ML on a Mac), on each compute unit. Every comparison is a
row with its number and threshold. For text generation, each package also greedily
continues a real prompt, driven as swift-transformers drives it, token by token against
PyTorch (continuation.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..configs import ExportConfig
from ..configs.base import OutputKind
from ..report import METRIC_LABELS, Check, number  # the words and numbers every other reader shows
from ..source_tokenizer import load_tokenizer
from ..errors import UnsupportedOpError
from . import continuation, quality
from .compare import (Rows, classifier_reading, cosine_similarity, finite_share, label_agreement, max_abs_diff, psnr_db,
                      min_box_iou, relative_error, top1_agreement)
from .inputs import input_sets
from . import zero_shot
from . import whisperkit

MODES = ("fp32", "fp16")
MODE_WORDS = {"fp32": "exact fp32", "fp16": "fp16 emulation"}  # in progress lines; a runner adds its own (`mode_words`)


class _Steps:
    """Validation's progress: each package an equal share; within one, a step per group of
    checks (an input set in one mode, the passage in one mode, a continuation), said as it
    starts: "text, 128 tokens (fp16 emulation), 3 of 8"."""

    def __init__(self, report: Callable[[float, int, str], None] | None, packages: int):
        self.report, self.packages = report or (lambda done, total, detail: None), packages
        self.package, self.done, self.count, self.prefix = -1, 0, 1, ""
        self.words = dict(MODE_WORDS)

    def mode(self, mode: str) -> str:
        """A mode as people read it: 'fp16 emulation'."""
        return self.words.get(mode, mode)

    def begin(self, name: str, count: int) -> None:
        """The next package, with `count` groups of checks."""
        self.package, self.done, self.count = self.package + 1, 0, max(count, 1)
        self.prefix = f"{name}, " if self.packages > 1 else ""

    def before(self, what: str) -> None:
        """Said before the first package's checks."""
        self.report(0, 1, what)

    def next(self, what: str) -> None:
        self.done += 1
        self.within(0.0, what)

    def within(self, share: float, what: str) -> None:
        """`share` (0 to 1) of the group begun by `next` done."""
        done = self.package * self.count + self.done - 1 + min(share, 1.0)
        self.report(done, self.packages * self.count, f"{self.prefix}{what}, {self.done} of {self.count}")


def validate(
    cfg: ExportConfig,
    model: torch.nn.Module,
    packages: dict[str, Path] | list[tuple[str, Path, object]],
    source_path: Path,
    modes: tuple[str, ...] = MODES,
    backend=None,
    progress: Callable[[float, int, str], None] | None = None,
) -> dict:
    """Validate `packages` converted from `model` with `cfg`; returns the report's
    `validation` section. `packages`: {part: path}, run and described by `backend`
    (backends.Backend), or [(part, path, backend)] when packages of
    several formats are judged together. A runner with its own `modes` (a runtime that
    executes the package as it is) is run in those instead of the emulation modes; where a
    backend has this machine's hardware (`device_runtime`), each of its `device_runs` adds
    rows of its own.
    `progress(done, total, detail)` hears of each group of checks as it starts."""
    if isinstance(packages, dict):
        if backend is None:
            raise TypeError("validate: packages given as {part: path} need the backend that runs them")
        packages = [(part, path, backend) for part, path in packages.items()]
    if cfg.options.precision == "float32":
        # A float32 package computes in float32 on every unit that runs it (the CPU and GPU; the
        # Neural Engine never takes it): float16 emulation rows would describe no device.
        modes = tuple(m for m in modes if m != "fp16") or ("fp32",)
    started = time.perf_counter()
    tokenizer = load_tokenizer(source_path, cfg.attributes.vocab_size) if cfg.modality == "text" else None
    on_device, device_note = _device_runtime([backend for _, _, backend in packages])
    checks: list[Check] = []
    errors: list[str] = []
    notes: list[str] = []
    placement: dict = {}
    units: dict = {}
    steps = _Steps(progress, len(packages))
    # Text generation: PyTorch's greedy continuation of a real prompt, which each package
    # must reproduce when driven as swift-transformers drives it (continuation.py).
    greedy = None
    if any(continuation.applies(cfg, p) for p, _, _ in packages):
        steps.before("PyTorch's greedy continuation of the prompt")
        greedy = continuation.reference(cfg, model, tokenizer)
    runs: list[dict] = []
    # A compressed package is judged on real text by its scheme's quality bar (quality.py),
    # not by element-wise differences; float packages keep the element-wise checks.
    scheme = quality.scheme(cfg)
    bar = quality.bar_for(cfg) if scheme else None
    if scheme and bar is None:
        errors.append(f"no quality bar for compression scheme {scheme!r}: validation cannot judge this package")
    quality_numbers: dict = {}
    ran_modes: list[str] = []
    device_modes: list[str] = []
    for part, path, backend in packages:
        try:
            executor = backend.runner(path)
        except UnsupportedOpError as error:
            steps.begin(Path(path).name, 1)
            errors.append(f"{part}: {error}: validation cannot vouch for this package")
            checks.append(Check(part, "-", "-", "fp32", "executor_supports_all_ops", 0.0, 1.0, False, True))
            continue
        package_modes = getattr(executor, "modes", None) or modes
        steps.words.update(getattr(executor, "mode_words", {}))
        ran_modes += [m for m in package_modes if m not in ran_modes]
        info = backend.describe(path)
        analysis = backend.unit_analysis(info, executor)  # where each op may run, for a format with such rules
        if analysis is not None:
            units[part] = analysis
        module = cfg.reference_module(model, part).eval()
        feeder = cfg.fed_by(part)
        encoder = cfg.wrap(model, feeder).eval() if feeder else None
        devices = backend.device_runs(path) if on_device else []  # [] for a format with no on-device runs
        steps.words.update({device.mode: device.words for device in devices})
        device_modes += [device.mode for device in devices if device.mode not in device_modes]
        sets = list(input_sets(cfg, part, tokenizer, encoder))
        logits = _generated_scores(cfg, part)
        passage = bar is not None and tokenizer is not None and bool(logits)
        continues = greedy is not None and continuation.applies(cfg, part)
        steps.begin(Path(path).name, len(sets) * (len(package_modes) + len(devices))
                    + len(package_modes) * (passage + continues))
        for inputs in sets:
            rows, constant = _input_set_checks(cfg, part, module, executor, inputs, package_modes, devices, bar, steps)
            checks += rows
            notes += constant
        if passage:
            rows, numbers = quality.passage_checks(cfg, part, module, executor, tokenizer, package_modes, bar, scheme, logits,
                                                   before_mode=lambda name, mode: steps.next(f"{name} ({steps.mode(mode)})"))
            checks += rows
            quality_numbers[part] = numbers
        if continues:
            checks += _continuation(cfg, greedy, executor, info, part, package_modes, runs, steps, compressed=bar is not None)
        for device in devices:
            placement.setdefault(part, {})[device.unit] = device.placement()
        getattr(executor, "close", lambda: None)()

    if bar is None and zero_shot.applies(cfg, [part for part, _, _ in packages]):  # an image-text model's two towers together
        rows, more = zero_shot.checks(cfg, model, packages, tokenizer, modes, lambda mode: _precision_key(cfg, mode))
        checks += rows
        notes += more
    if whisperkit.applies(cfg, [part for part, _, _ in packages]) and (bar is not None or not scheme):
        # Whisper, driven as WhisperKit drives it: every token for a float package, the scheme's
        # next-token agreement as the share decoded before a first difference for a compressed one
        checks += whisperkit.checks(cfg, model, packages, modes, bar.min_top1 if bar else 1.0)
    passed = not errors and all(c.passed for c in checks)
    failed = [c for c in checks if not c.passed]
    if errors:
        message = "; ".join(errors)
    elif failed:
        # A compressed package is named as such, with a failed passage check first if any.
        worst = next((c for c in failed if c.inputs.startswith("passage")), failed[0]) if scheme else failed[0]
        bound = "≥" if worst.higher_is_better else "≤"
        message = (
            f"{len(failed)} of {len(checks)} checks failed, e.g. {worst.output} ({worst.mode}, {worst.inputs}): "
            f"{METRIC_LABELS.get(worst.metric, worst.metric)} {number(worst.value, worst.metric)}, "
            f"needs {bound} {number(worst.threshold, worst.metric)}"
        )
        if scheme:
            message = f"the {scheme} compression loses too much quality to ship: {message}"
    else:
        message = f"all {len(checks)} checks passed"
    result = {
        "passed": passed,
        "kind": _kind(on_device, [backend for _, _, backend in packages]),
        "runtime": device_note,
        "modes": ran_modes + device_modes,
        "message": message,
        "notes": notes,
        "checks": [c.to_dict() for c in checks],
        "compute_units": units,
        "placement": placement,
    }
    if scheme:
        result["quality"] = {"scheme": scheme, "bar": vars(bar) if bar else None, "passage": quality.PASSAGE_FILE.name, "packages": quality_numbers}
    if greedy is not None:
        result["continuation"] = continuation.section(greedy, runs)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _input_set_checks(cfg, part: str, module, executor, inputs, modes, devices: list, bar,
                      steps: _Steps) -> tuple[list[Check], list[str]]:
    """One input set's check rows in each mode (and on each of the machine's compute units), and notes
    on reference outputs too constant to prove anything."""
    with torch.no_grad():
        reference = _reference_outputs(cfg, part, module(*inputs.torch_args))
    notes = [
        f"{part}: PyTorch's {name} is constant for {inputs.name}, so comparing it proves little"
        for name, value in reference.items()
        if value.dtype.kind == "f" and value.size > 1 and np.ptp(value) == 0
    ]
    checks: list[Check] = []
    feeds = inputs.steps or [inputs.package]
    for mode in modes:
        steps.next(f"{inputs.name} ({steps.mode(mode)})")
        state = executor.make_state()
        actual = _joined([executor.predict(feed, mode=mode, state=state) for feed in feeds])
        checks += _judge(cfg, part, inputs, reference, actual, mode, _precision_key(cfg, mode), bar)
    for device in devices:
        steps.next(f"{inputs.name} ({steps.mode(device.mode)})")
        actual = _joined(device.predict(feeds, stateful=bool(executor.state_names)))
        precision = "float16" if device.float16 else _precision_key(cfg, "fp32")
        checks += _judge(cfg, part, inputs, reference, actual, device.mode, precision, bar)
    return checks, notes


def skipped(reason: str = "validation was skipped (--no-validate)") -> dict:
    return {"passed": None, "skipped": True, "message": reason, "checks": []}


def _kind(on_device: bool, backends: list) -> str:
    """What ran the packages, each format's words once, in the order the packages came."""
    kinds: list[str] = []
    for backend in backends:
        kind = backend.validation_kind(on_device)
        if kind not in kinds:
            kinds.append(kind)
    return "; ".join(kinds)


def _device_runtime(backends: list) -> tuple[bool, str]:
    """Whether any of the packages' formats runs on this machine's hardware here, and what
    the machine's runtime is (or why there is none), each format's words once."""
    on_device, notes = False, []
    for backend in backends:
        here, note = backend.device_runtime()
        on_device = on_device or here
        if note and note not in notes:
            notes.append(note)
    return on_device, "; ".join(notes)


def _precision_key(cfg: ExportConfig, mode: str) -> str:
    if mode not in MODES:  # a runtime that runs the package as it is, in its own precision
        return cfg.options.precision
    return "float32" if mode == "fp32" and cfg.options.precision == "float32" else "float16"


def _reference_outputs(cfg: ExportConfig, part: str, values: tuple) -> dict[str, np.ndarray]:
    names = [spec.name for spec in cfg.outputs(part)]
    return {name: value.detach().float().numpy() if value.is_floating_point() else value.numpy() for name, value in zip(names, values)}


def _judge(cfg, part, inputs, reference: dict, actual: dict, mode: str, precision: str, bar) -> list[Check]:
    if bar is not None:
        return quality.compare(cfg, part, inputs, reference, actual, mode, bar)
    return _compare(cfg, part, inputs, reference, actual, mode, precision)


def _generated_scores(cfg, part: str) -> str | None:
    """The next-token scores output of a text-generation part, else None."""
    if cfg.task != "text-generation":
        return None
    return next((spec.name for spec in cfg.outputs(part) if spec.kind == OutputKind.TOKEN_SCORES), None)


def _compare(cfg, part, inputs, reference: dict, actual: dict, mode: str, precision: str) -> list[Check]:
    tol = cfg.validation_tolerances()
    rows = Rows(part, inputs.name, mode)
    row = rows.add
    labels = cfg.class_labels()
    kinds = {spec.name: spec.kind for spec in cfg.outputs(part)}
    for name, ref in reference.items():
        kind = kinds[name]
        if kind == OutputKind.CLASS_PROBABILITIES and labels:
            probabilities, got, margin = classifier_reading(ref, actual, labels)
            # A different label is an error only if PyTorch's margin between the two exceeds
            # the tolerance (random or undecided models have near-ties).
            row("classLabel", "label_agreement", float(margin <= tol.atol[precision]), 1.0, True)
            row(name, "max_abs_diff", max_abs_diff(probabilities, got), tol.atol[precision], False)
            continue
        got = np.asarray(actual[name])
        if got.shape != ref.shape:
            row(name, "shape_matches", 0.0, 1.0, True)
            continue
        if kind == OutputKind.LABEL_MAP:
            row(name, "label_agreement", label_agreement(ref, got), tol.min_label_agreement[precision], True)
            continue
        scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
        row(name, "finite_share", finite_share(got), 1.0, True)
        row(name, "max_abs_diff", max_abs_diff(ref, got), tol.atol[precision] * scale, False)
        row(name, "psnr_db", psnr_db(ref, got), tol.min_psnr[precision], True)
        if kind == OutputKind.TOKEN_SCORES:
            positions = inputs.valid_positions
            row(name, "top1_agreement", top1_agreement(ref[0], got[0], tol.atol[precision] * scale, positions), tol.min_top1[precision], True)
        if kind == OutputKind.EMBEDDINGS:
            row(name, "cosine_similarity", cosine_similarity(ref, got), tol.min_cosine[precision], True)
        if kind == OutputKind.DEPTH_MAP:
            row(name, "relative_error", relative_error(ref, got), tol.atol[precision], False)
        if kind == OutputKind.CLASS_SCORES:  # a detector's best class per detection
            row(name, "top1_agreement", top1_agreement(ref[0], got[0], tol.atol[precision] * scale), tol.min_top1[precision], True)
        if kind == OutputKind.BOXES:
            row(name, "min_box_iou", min_box_iou(ref, got), 1 - 2 * tol.atol[precision], True)
    return rows


def _continuation(cfg, greedy, executor, info: dict, part: str, modes, runs: list[dict], steps: _Steps,
                  compressed: bool = False) -> list[Check]:
    """Drive `part` as swift-transformers does in each mode; its runs go to `runs`, and its
    check rows are returned. A compressed package's greedy text may drift from PyTorch's
    (its quality is judged on the passage): its row checks that it can be driven."""
    tol = cfg.validation_tolerances()
    total = len(greedy.tokens)
    rows = []
    for mode in modes:
        steps.next(f"continuation, 0 of {total} tokens ({steps.mode(mode)})")
        run = continuation.run_package(greedy, executor, info, part, mode, tol.atol[_precision_key(cfg, mode)],
                                       on_token=_token_counter(steps, total, mode))
        if run is None:
            continue
        if compressed and run["passed"] is not None:
            drove = run.get("stopped") != "error"
            run.update(passed=drove, note="compressed package: the greedy text may drift from PyTorch's; quality is judged on the passage")
            rows.append(Check(part, f"continuation, {greedy.new_tokens} tokens", "logits", mode, "continuation_runs", float(drove), 1.0, drove, True))
            runs.append(run)
            continue
        runs.append(run)
        row = continuation.check_row(greedy, run)
        rows += [row] if row else []
        # A driving error or a near-tie stays with its run in the continuation section.
    return rows


def _token_counter(steps: _Steps, total: int, mode: str) -> Callable[[int], None]:
    def on_token(count: int) -> None:
        steps.within(count / max(total, 1), f"continuation, {count} of {total} tokens ({steps.mode(mode)})")

    return on_token


def _joined(step_outputs: list[dict]) -> dict:
    """Outputs of successive stateful steps, joined along the sequence axis; one step as is."""
    if len(step_outputs) == 1:
        return step_outputs[0]
    return {name: np.concatenate([np.asarray(o[name]) for o in step_outputs], axis=1) for name in step_outputs[0]}


