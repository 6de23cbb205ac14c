"""The conversion report and its validation section, typed.

The engine returns the report typed (`ConversionResult.report`, a `ConversionReport`); its
JSON (`to_json`) is the file `--report` writes and the job's status. `ConversionReport.from_json`
reads that JSON back and `to_json` gives exactly that data again, so a reader can work with
these classes and still write what the engine wrote (keys it does not know yet are kept as
they were).

Every reader of a report says how validation went through the same two methods:
`ValidationReport.summary()` (one line: passed; FAILED with the worst failure; skipped) and
`ValidationReport.failures()` (each failed check, worst first, formatted once). The CLI, the
model card, the UI's result view and its report link all use them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from . import formats


def _with_extra(cls, data: dict):
    """An instance of the dataclass `cls` from JSON, keeping keys it does not know in
    `extra` (keys a newer engine adds survive a round trip)."""
    known = {f.name for f in fields(cls)} - {"extra"}
    instance = cls(**{k: v for k, v in data.items() if k in known})
    instance.extra = {k: v for k, v in data.items() if k not in known}
    return instance

# Metrics that are a share (shown as a percentage) and metrics where higher is better.
SHARE_METRICS = frozenset({"finite_share", "top1_agreement", "label_agreement", "continuation_match", "ranking_agreement", "min_box_iou"})
HIGHER_IS_BETTER = SHARE_METRICS | {"psnr_db", "cosine_similarity", "executor_supports_all_ops", "shape_matches"}
# How bad a failed check is, worst first: the package cannot run or has the wrong shape; it
# computes non-finite values; it picks other tokens or labels; its numbers are too far off.
_SEVERITY = {
    "executor_supports_all_ops": 0,
    "shape_matches": 0,
    "finite_share": 1,
    "continuation_match": 2,
    "top1_agreement": 2,
    "label_agreement": 2,
    "ranking_agreement": 2,
}
_LATER = 3  # any other metric: a distance (max_abs_diff, psnr_db, cosine_similarity)


def number(value, metric: str | None = None) -> str:
    """A check's value or threshold as a person reads it: shares in %, tiny and huge values
    in scientific notation, non-finite values as the engine writes them ("inf")."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if metric in SHARE_METRICS:
        return f"{value:.1%}"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.4g}"


@dataclass
class Check:
    """One row of validation: which output, inputs and mode, which metric, its value, the
    threshold and whether it passed (validation/compare.py measures them)."""

    package: str
    inputs: str
    output: str
    mode: str
    metric: str
    value: float
    threshold: float
    passed: bool
    higher_is_better: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["value"] = _json_number(self.value)
        data["threshold"] = _json_number(self.threshold)
        return data


def _json_number(value: float):
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return round(value, 6) if abs(value) >= 1e-4 else float(f"{value:.3e}")


def check_from_json(data: dict) -> Check:
    """A check row as `Check.to_dict` wrote it (older rows may lack `higher_is_better`; tests
    and old reports may lack where it was measured)."""
    metric = str(data.get("metric", ""))
    higher = data.get("higher_is_better")
    return Check(
        package=str(data.get("package", "")),
        inputs=str(data.get("inputs", "")),
        output=str(data.get("output", "")),
        mode=str(data.get("mode", "")),
        metric=metric,
        value=_float(data.get("value")),
        threshold=_float(data.get("threshold")),
        passed=bool(data.get("passed")),
        higher_is_better=metric in HIGHER_IS_BETTER if higher is None else bool(higher),
    )


def _float(value) -> float:
    """A number from the report ("nan", "inf" and "-inf" are written as text)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------- continuation


@dataclass
class ContinuationRun:
    """One package driven in one mode, greedily continuing the prompt."""

    package: str = "model"
    mode: str = ""
    driven_as: str | None = None
    text: str | None = None
    token_ids: list[int] | None = None
    stopped: str | None = None  # "new_tokens", "eos", "length", "error"
    matching_tokens: int | None = None
    tokens_compared: int | None = None
    passed: bool | None = None  # None: not checked (the prompt does not fit the package)
    note: str | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> ContinuationRun:
        return _with_extra(cls, data)

    def to_json(self) -> dict:
        data: dict = {"package": self.package, "mode": self.mode}
        if self.driven_as is not None:
            data["driven_as"] = self.driven_as
        if self.text is not None or self.token_ids is not None:  # a run that could not be driven: text None
            data["text"] = self.text
        if self.token_ids is not None:
            data["token_ids"] = self.token_ids
        if self.stopped is not None:
            data["stopped"] = self.stopped
        data.update(matching_tokens=self.matching_tokens, tokens_compared=self.tokens_compared, passed=self.passed)
        for key in ("note", "error"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return {**data, **self.extra}

    @property
    def label(self) -> str:
        """'Core ML (fp16)', 'Core ML (CPU_AND_GPU)', 'Core AI (runtime)' (formats.py: the
        format whose runner reports the mode); the package too when it is not the only one."""
        where = f"{self.package}, " if self.package and self.package != "model" else ""
        found = formats.mode(self.mode)
        made_by, mode = (found[0], found[1].short) if found else (formats.format_of(None), str(self.mode or ""))
        return f"{made_by.label} ({where}{mode})" if mode or where else made_by.label


@dataclass
class ContinuationReport:
    """validation["continuation"]: PyTorch's greedy continuation of a real prompt, and each
    package's, driven as swift-transformers drives it (text generation only)."""

    prompt: str = ""
    prompt_ids: list[int] = field(default_factory=list)
    new_tokens: int | None = None
    pytorch_text: str = ""
    pytorch_token_ids: list[int] = field(default_factory=list)
    runs: list[ContinuationRun] = field(default_factory=list)
    passed: bool | None = None  # None: nothing could be compared
    extra: dict = field(default_factory=dict)

    _KEYS = ("prompt", "prompt_ids", "new_tokens", "pytorch", "runs", "passed")

    @classmethod
    def from_json(cls, data: dict) -> ContinuationReport:
        pytorch = data.get("pytorch") or {}
        return cls(
            prompt=data.get("prompt", ""),
            prompt_ids=list(data.get("prompt_ids") or []),
            new_tokens=data.get("new_tokens"),
            pytorch_text=pytorch.get("text", ""),
            pytorch_token_ids=list(pytorch.get("token_ids") or []),
            runs=[ContinuationRun.from_json(run) for run in data.get("runs") or []],
            passed=data.get("passed"),
            extra={k: v for k, v in data.items() if k not in cls._KEYS},
        )

    def to_json(self) -> dict:
        return {
            "prompt": self.prompt,
            "prompt_ids": self.prompt_ids,
            "new_tokens": self.new_tokens,
            "pytorch": {"text": self.pytorch_text, "token_ids": self.pytorch_token_ids},
            "runs": [run.to_json() for run in self.runs],
            "passed": self.passed,
            **self.extra,
        }


# ---------------------------------------------------------------------- validation

# What a person reads for a check's metric and mode (the report keeps the short keys).
METRIC_LABELS = {
    "finite_share": "finite values",
    "max_abs_diff": "max abs difference",
    "psnr_db": "PSNR (dB)",
    "top1_agreement": "top-1 agreement",
    "cosine_similarity": "cosine similarity",
    "label_agreement": "label agreement",
    "relative_error": "mean relative error",
    "ranking_agreement": "label ranking agreement",
    "min_box_iou": "smallest box IoU",
    "executor_supports_all_ops": "all ops runnable",
    "continuation_match": "greedy continuation matching",
    # A compressed package's quality on real text, and its continuation (which may drift from PyTorch's).
    "mean_kl_divergence": "mean KL divergence (nats)",
    "perplexity_ratio": "perplexity ratio",
    "continuation_runs": "continuation ran (its text may drift)",
    "bundle_loads": "the bundle loads",  # a Core AI bundle read by Apple's loader rules
}
MODE_LABELS = {name: mode.label for each in formats.FORMATS.values() for name, mode in each.modes.items()}


@dataclass
class ValidationReport:
    """The report's `validation` section: every check row with its number and threshold,
    where the packages can run, and the continuation check. `passed` is None when nothing
    was validated (`skipped`: the user asked for that)."""

    passed: bool | None = None
    message: str = ""
    checks: list[Check] = field(default_factory=list)
    skipped: bool = False
    kind: str = ""  # what ran the packages: the reference executor, Core ML on a Mac
    runtime: str = ""
    modes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compute_units: dict = field(default_factory=dict)  # part -> {basis, units, reasons, op_counts}
    placement: dict = field(default_factory=dict)  # part -> compute unit -> measured placement (macOS)
    continuation: ContinuationReport | None = None
    seconds: float | None = None
    extra: dict = field(default_factory=dict)

    _KEYS = ("passed", "skipped", "kind", "runtime", "modes", "message", "notes", "checks", "compute_units",
             "placement", "continuation", "seconds")

    @classmethod
    def from_json(cls, data: dict | None) -> ValidationReport:
        data = data or {}
        continuation = data.get("continuation")
        return cls(
            passed=data.get("passed"),
            message=data.get("message") or "",
            checks=[check_from_json(c) for c in data.get("checks") or []],
            skipped=bool(data.get("skipped")),
            kind=data.get("kind") or "",
            runtime=data.get("runtime") or "",
            modes=list(data.get("modes") or []),
            notes=list(data.get("notes") or []),
            compute_units=dict(data.get("compute_units") or {}),
            placement=dict(data.get("placement") or {}),
            continuation=ContinuationReport.from_json(continuation) if isinstance(continuation, dict) else None,
            seconds=data.get("seconds"),
            extra={k: v for k, v in data.items() if k not in cls._KEYS},
        )

    @classmethod
    def skipped_because(cls, reason: str = "validation was skipped (--no-validate)") -> ValidationReport:
        return cls(passed=None, skipped=True, message=reason)

    def to_json(self) -> dict:
        checks = [c.to_dict() for c in self.checks]
        if self.skipped:
            return {"passed": self.passed, "skipped": True, "message": self.message, "checks": checks, **self.extra}
        data = {
            "passed": self.passed,
            "kind": self.kind,
            "runtime": self.runtime,
            "modes": self.modes,
            "message": self.message,
            "notes": self.notes,
            "checks": checks,
            "compute_units": self.compute_units,
            "placement": self.placement,
        }
        if self.continuation is not None:
            data["continuation"] = self.continuation.to_json()
        if self.seconds is not None:
            data["seconds"] = self.seconds
        return {**data, **self.extra}

    # --- what a person reads --------------------------------------------------------

    @property
    def verdict(self) -> str:
        if self.skipped:
            return "skipped"
        return {True: "passed", False: "FAILED"}.get(self.passed, "not run")

    @property
    def failed_checks(self) -> list[Check]:
        """The failed rows, worst first (see _SEVERITY; an exact-mode failure before a float16
        one; then in the order they were measured)."""
        failed = [(i, c) for i, c in enumerate(self.checks) if not c.passed]
        failed.sort(key=lambda item: (_SEVERITY.get(item[1].metric, _LATER), item[1].mode != "fp32", item[0]))
        return [c for _, c in failed]

    @property
    def errors(self) -> list[str]:
        """Why validation could not run a package at all (the reference executor lacks an op):
        the engine writes these reasons, joined by '; ', as the message."""
        if not any(c.metric == "executor_supports_all_ops" and not c.passed for c in self.checks):
            return []
        return [e for e in self.message.split("; ") if e]

    def failure(self, check: Check) -> str:
        """One failed check as a line a person reads: 'model/token_scores fp16 (text, 8 tokens):
        PSNR (dB) 12.5, needs ≥ 30'."""
        if check.metric == "executor_supports_all_ops":
            reason = next((e for e in self.errors if e.startswith(f"{check.package}:")), None)
            if reason:
                return reason
        where = "/".join(p for p in (check.package, check.output) if p and p != "-") or "check"
        if check.mode:
            where += f" {check.mode}"
        if check.inputs and check.inputs != "-":
            where += f" ({check.inputs})"
        bound = "≥" if check.higher_is_better else "≤"
        return (f"{where}: {METRIC_LABELS.get(check.metric, check.metric)} {number(check.value, check.metric)}, "
                f"needs {bound} {number(check.threshold, check.metric)}")

    @property
    def only_float16_fails(self) -> bool:
        """Every failed check is a float16 one and the exact (fp32) runs passed: the conversion is
        right, float16 arithmetic is what drifts, so a float32 package is the remedy."""
        failed = self.failed_checks
        exact = [c for c in self.checks if c.mode == "fp32"]
        return bool(failed) and all(c.mode == "fp16" for c in failed) and bool(exact) and all(c.passed for c in exact)

    def failures(self) -> list[str]:
        """Every failed check as a line, worst first."""
        return [self.failure(c) for c in self.failed_checks]

    def summary(self) -> str:
        """One line: 'passed — all 10 checks passed', 'FAILED — 4 of 8 checks failed; worst:
        …', 'skipped — validation was skipped (--no-validate)'."""
        if self.skipped or self.passed is None:
            return f"{self.verdict} — {self.message or 'nothing was validated'}"
        if self.passed:
            return "passed — the one check passed" if len(self.checks) == 1 else f"passed — all {len(self.checks)} checks passed"
        failed = self.failed_checks
        if not failed:
            return f"FAILED — {self.message or 'no check could be run'}"
        return f"FAILED — {len(failed)} of {len(self.checks)} checks failed; worst: {self.failure(failed[0])}"


# ---------------------------------------------------------------------- the conversion


@dataclass
class SourceInfo:
    id: str | None = None  # the Hub ID (None for a local folder)
    revision: str | None = None
    path: str | None = None  # this machine's folder (a job's public report leaves it out)

    def to_json(self) -> dict:
        data = {"id": self.id, "revision": self.revision}
        return data if self.path is None else {**data, "path": self.path}


@dataclass
class ArchitectureInfo:
    model_type: str | None = None
    class_name: str | None = None  # the transformers class converted ("class" in JSON)
    parameters: int | None = None
    family: str | None = None  # "decoder", "encoder", "encoder-decoder", "vision"
    tested: bool = True  # False: outside the tested list, converted by its family (configs/generic.py)

    def to_json(self) -> dict:
        return {"model_type": self.model_type, "class": self.class_name, "parameters": self.parameters,
                "family": self.family, "tested": self.tested}

    def untested_mark(self, validation: "ValidationReport") -> str | None:
        """"architecture not in the tested list — validated: passed" (None for a tested one)."""
        if self.tested:
            return None
        verdict = "passed" if validation.passed else "skipped" if validation.skipped or validation.passed is None else "failed"
        return f"architecture not in the tested list ({self.family} family) — validated: {verdict}"


@dataclass
class ProgramInfo:
    """A package's `program` entry (package_info.program_summary): what its program computes."""

    fused_attention: bool = False  # attention runs as Core ML's fused scaled_dot_product_attention
    stateful: bool = False  # the package keeps Core ML states (a KV cache)
    weight_bits: float | None = None  # mean bits per stored weight element: 16 float16, 32 float32, fewer compressed
    op_counts: dict = field(default_factory=dict)  # op type -> count, `const` excluded, most frequent first
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> ProgramInfo:
        return _with_extra(cls, data)

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**data, **self.extra}


@dataclass
class PackageReport:
    """One package written: its part, where, how it was captured, its interface, its program."""

    part: str = "model"
    format: str | None = None  # the backend that wrote it (formats.py); None: an older report
    path: str = ""
    exporter: str | None = None  # "torch.export" or "torch.jit.trace"
    float16_safe_norms: int | None = None
    size_bytes: int | None = None
    inputs: list[dict] = field(default_factory=list)  # package_info.describe_package's features
    outputs: list[dict] = field(default_factory=list)
    states: list[dict] = field(default_factory=list)
    program: ProgramInfo | None = None  # None: a report written before packages had this entry
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> PackageReport:
        program = data.get("program")
        typed = isinstance(program, dict)  # else absent (older reports) or not ours: kept as it was
        known = {f.name for f in fields(cls)} - {"program", "extra"}
        report = cls(**{k: v for k, v in data.items() if k in known})
        report.extra = {k: v for k, v in data.items() if k not in known and not (k == "program" and typed)}
        report.program = ProgramInfo.from_json(program) if typed else None
        return report

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("program", "extra")}
        if self.format is None:  # a report written before packages named their format
            del data["format"]
        if self.program is not None:
            data["program"] = self.program.to_json()
        return {**data, **self.extra}


@dataclass
class ConversionReport:
    """What one conversion did: source, task, architecture, options, packages, tool versions,
    timings, warnings and validation: what `export.convert` returns (`result.report`); its JSON
    (`to_json`) is the `--report` file and a job's report."""

    task: str
    requested_task: str | None = None
    source: SourceInfo = field(default_factory=SourceInfo)
    tokenizer_repo: str | None = None  # the repo the packages name (co.huggingface.exporters.name)
    tokenizer_missing: str | None = None  # why the source's tokenizer was not used (source_tokenizer.py)
    architecture: ArchitectureInfo = field(default_factory=ArchitectureInfo)
    options: dict = field(default_factory=dict)  # ConversionOptions.to_dict()
    packages: list[PackageReport] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    validation: ValidationReport = field(default_factory=ValidationReport)
    extra: dict = field(default_factory=dict)

    _KEYS = ("source", "requested_task", "task", "tokenizer_repo", "tokenizer_missing", "architecture", "options", "packages", "versions",
             "timings", "warnings", "validation")

    @classmethod
    def from_json(cls, data: dict) -> ConversionReport:
        source = data.get("source") or {}
        architecture = data.get("architecture") or {}
        return cls(
            task=data.get("task"),
            requested_task=data.get("requested_task"),
            source=SourceInfo(source.get("id"), source.get("revision"), source.get("path")),
            tokenizer_repo=data.get("tokenizer_repo"),
            tokenizer_missing=data.get("tokenizer_missing"),
            architecture=ArchitectureInfo(architecture.get("model_type"), architecture.get("class"),
                                          architecture.get("parameters"), architecture.get("family"),
                                          architecture.get("tested", True) is not False),
            options=dict(data.get("options") or {}),
            packages=[PackageReport.from_json(p) for p in data.get("packages") or []],
            versions=dict(data.get("versions") or {}),
            timings=dict(data.get("timings") or {}),
            warnings=list(data.get("warnings") or []),
            validation=ValidationReport.from_json(data.get("validation")),
            extra={k: v for k, v in data.items() if k not in cls._KEYS},
        )

    def to_json(self) -> dict:
        data = {"source": self.source.to_json()}
        if self.requested_task is not None:
            data["requested_task"] = self.requested_task
        data["task"] = self.task
        if self.tokenizer_repo is not None:
            data["tokenizer_repo"] = self.tokenizer_repo
        if self.tokenizer_missing is not None:
            data["tokenizer_missing"] = self.tokenizer_missing
        data.update(
            architecture=self.architecture.to_json(),
            options=self.options,
            packages=[p.to_json() for p in self.packages],
            versions=self.versions,
            timings=self.timings,
            warnings=self.warnings,
            validation=self.validation.to_json(),
        )
        return {**data, **self.extra}

    def summary(self) -> str:
        return self.validation.summary()

    def untested_mark(self) -> str | None:
        return self.architecture.untested_mark(self.validation)

    def failures(self) -> list[str]:
        return self.validation.failures()
