"""Validation: prove a package computes what the PyTorch model computes.

For each package and each deterministic input set, the PyTorch wrapper (the model plus
the package's pre/post-processing, fp32) gives the reference; the package runs in the
reference executor in two modes (exact fp32, and fp16 device emulation) and, on macOS,
on real Core ML compute units. Every comparison is a row with its number and threshold.
For text generation, each package also greedily continues a real prompt, driven as
swift-transformers drives it, token by token against PyTorch (continuation.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..configs import CoreMLConfig
from ..package_info import describe_package
from . import continuation, coreml_runtime
from .compare import Check, cosine_similarity, finite_share, label_agreement, max_abs_diff, psnr_db, top1_agreement
from .compute_units import analyse
from .executor import ReferenceExecutor, UnsupportedOpError
from .inputs import input_sets, load_tokenizer

MODES = ("fp32", "fp16")


def validate(
    cfg: CoreMLConfig,
    model: torch.nn.Module,
    packages: dict[str, Path],
    source_path: Path,
    modes: tuple[str, ...] = MODES,
    compute_units: tuple[str, ...] = coreml_runtime.COMPUTE_UNITS,
) -> dict:
    """Validate `packages` ({part: path}) converted from `model` with `cfg`; returns the
    report's `validation` section."""
    started = time.perf_counter()
    tokenizer = load_tokenizer(source_path) if cfg.modality == "text" else None
    on_device, device_note = coreml_runtime.available()
    checks: list[Check] = []
    errors: list[str] = []
    notes: list[str] = []
    placement: dict = {}
    units: dict = {}
    # Text generation: PyTorch's greedy continuation of a real prompt, which each package
    # must reproduce when driven as swift-transformers drives it (continuation.py).
    greedy = continuation.reference(cfg, model, tokenizer) if any(continuation.applies(cfg, p) for p in packages) else None
    runs: list[dict] = []
    for part, path in packages.items():
        try:
            executor = ReferenceExecutor(path)
        except UnsupportedOpError as error:
            errors.append(f"{part}: the reference executor cannot run op(s) {error}: validation cannot vouch for this package")
            checks.append(Check(part, "-", "-", "fp32", "executor_supports_all_ops", 0.0, 1.0, False, True))
            continue
        info = describe_package(path)
        units[part] = analyse(info, executor.op_summary)
        module = cfg.reference_module(model, part).eval()
        encoder = cfg.wrap(model, "encoder").eval() if part == "decoder" else None
        coreml_models = {cu: coreml_runtime.load(path, cu) for cu in compute_units} if on_device else {}
        for inputs in input_sets(cfg, part, tokenizer, encoder):
            with torch.no_grad():
                reference = _reference_outputs(cfg, part, module(*inputs.torch_args))
            notes += [
                f"{part}: PyTorch's {name} is constant for {inputs.name}, so comparing it proves little"
                for name, value in reference.items()
                if value.dtype.kind == "f" and value.size > 1 and np.ptp(value) == 0
            ]
            feeds = inputs.steps or [inputs.package]
            for mode in modes:
                state = executor.make_state()
                actual = _joined([executor.predict(feed, mode=mode, state=state) for feed in feeds])
                checks += _compare(cfg, part, inputs, reference, actual, mode, _precision_key(cfg, mode))
            for cu, coreml_model in coreml_models.items():
                actual = _joined(coreml_runtime.predict(coreml_model, feeds, stateful=bool(executor.state_names)))
                checks += _compare(cfg, part, inputs, reference, actual, f"coreml-{cu}", "float16" if cu != "CPU_ONLY" else _precision_key(cfg, "fp32"))
        if greedy is not None and continuation.applies(cfg, part):
            checks += _continuation(cfg, greedy, executor, info, part, modes, runs)
        for cu, coreml_model in coreml_models.items():
            placement.setdefault(part, {})[cu] = coreml_runtime.placement(coreml_model, cu)

    passed = not errors and all(c.passed for c in checks)
    failed = [c for c in checks if not c.passed]
    if errors:
        message = "; ".join(errors)
    elif failed:
        worst = failed[0]
        message = (
            f"{len(failed)} of {len(checks)} checks failed, e.g. {worst.output} ({worst.mode}, {worst.inputs}): "
            f"{worst.metric} = {worst.to_dict()['value']} against a threshold of {worst.to_dict()['threshold']}"
        )
    else:
        message = f"all {len(checks)} checks passed"
    result = {
        "passed": passed,
        "kind": "Core ML on this Mac and the reference executor" if on_device else "reference executor (Core ML not available here)",
        "runtime": device_note,
        "modes": list(modes) + ([f"coreml-{cu}" for cu in compute_units] if on_device else []),
        "message": message,
        "notes": notes,
        "checks": [c.to_dict() for c in checks],
        "compute_units": units,
        "placement": placement,
    }
    if greedy is not None:
        result["continuation"] = continuation.section(greedy, runs)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def skipped(reason: str = "validation was skipped (--no-validate)") -> dict:
    return {"passed": None, "skipped": True, "message": reason, "checks": []}


def _precision_key(cfg: CoreMLConfig, mode: str) -> str:
    return "float32" if mode == "fp32" and cfg.options.precision == "float32" else "float16"


def _reference_outputs(cfg: CoreMLConfig, part: str, values: tuple) -> dict[str, np.ndarray]:
    names = [spec.name for spec in cfg.outputs(part)]
    return {name: value.detach().float().numpy() if value.is_floating_point() else value.numpy() for name, value in zip(names, values)}


def _compare(cfg, part, inputs, reference: dict, actual: dict, mode: str, precision: str) -> list[Check]:
    tol = cfg.validation_tolerances()
    rows: list[Check] = []

    def row(output, metric, value, threshold, higher_is_better):
        # NaN compares false either way, so a NaN metric always fails.
        ok = value >= threshold if higher_is_better else value <= threshold
        rows.append(Check(part, inputs.name, output, mode, metric, value, threshold, bool(ok), higher_is_better))

    labels = cfg.class_labels()
    for name, ref in reference.items():
        if labels and name == "probabilities":
            got = _probabilities_vector(actual, labels)
            probabilities = ref.reshape(-1)
            predicted = labels.index(str(actual["classLabel"])) if str(actual.get("classLabel")) in labels else -1
            # A different label is an error only if PyTorch's margin between the two exceeds
            # the tolerance (random or undecided models have near-ties).
            margin = probabilities.max() - probabilities[predicted] if predicted >= 0 else np.inf
            row("classLabel", "label_agreement", float(margin <= tol.atol[precision]), 1.0, True)
            row(name, "max_abs_diff", max_abs_diff(probabilities, got), tol.atol[precision], False)
            continue
        got = np.asarray(actual[name])
        if got.shape != ref.shape:
            row(name, "shape_matches", 0.0, 1.0, True)
            continue
        if name == "classLabels":
            row(name, "label_agreement", label_agreement(ref, got), tol.min_label_agreement[precision], True)
            continue
        scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
        row(name, "finite_share", finite_share(got), 1.0, True)
        row(name, "max_abs_diff", max_abs_diff(ref, got), tol.atol[precision] * scale, False)
        row(name, "psnr_db", psnr_db(ref, got), tol.min_psnr[precision], True)
        if name in ("logits", "token_scores") and cfg.task in ("text-generation", "text2text-generation", "fill-mask", "token-classification"):
            positions = inputs.valid_positions
            row(name, "top1_agreement", top1_agreement(ref[0], got[0], tol.atol[precision] * scale, positions), tol.min_top1[precision], True)
        if name in ("last_hidden_state", "pooler_output"):
            row(name, "cosine_similarity", cosine_similarity(ref, got), tol.min_cosine[precision], True)
    return rows


def _continuation(cfg, greedy, executor, info: dict, part: str, modes, runs: list[dict]) -> list[Check]:
    """Drive `part` as swift-transformers does in each mode; its runs go to `runs`, and its
    check rows are returned."""
    tol = cfg.validation_tolerances()
    rows = []
    for mode in modes:
        run = continuation.run_package(greedy, executor, info, part, mode, tol.atol[_precision_key(cfg, mode)])
        if run is None:
            continue
        runs.append(run)
        row = continuation.check_row(greedy, run)
        rows += [row] if row else []
        # A driving error or a near-tie stays with its run in the continuation section.
    return rows


def _joined(step_outputs: list[dict]) -> dict:
    """Outputs of successive stateful steps, joined along the sequence axis; one step as is."""
    if len(step_outputs) == 1:
        return step_outputs[0]
    return {name: np.concatenate([np.asarray(o[name]) for o in step_outputs], axis=1) for name in step_outputs[0]}


def _probabilities_vector(actual: dict, labels: list[str]) -> np.ndarray:
    """A classifier's probabilities come as {label: p}; as a vector in label order."""
    value = actual["probabilities"]
    if isinstance(value, dict):
        return np.array([float(value[label]) for label in labels], dtype=np.float64)
    return np.asarray(value, dtype=np.float64).reshape(-1)
