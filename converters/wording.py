"""The words a conversion's report is said in, shared by the model card (worker/card.py), the
page (ui/render.py) and the command line (__main__.py): how a package is named ("SmolLM2-135M
· text-generation · int4 · stateful · iOS18"), a size, a compressed package's sizes and
weights, its quality on real text against its scheme's bar, where a scheme runs best, a
program's make-up, and the continuation check's verdict.

Each reader adds only its own markup (markdown for the card, HTML for the page, plain lines
for the CLI): the phrases are made here once. Validation's own summary and failed checks are
the typed report's (`report.ValidationReport.summary()` and `failures()`).

Light imports only (no torch): the web process reads it.
"""

from __future__ import annotations

from .formats import format_of
from .errors import UserInputError
from .options import ConversionOptions
from .report import ContinuationRun, number


# ---------------------------------------------------------------------- a conversion's name



def variant(task: str | None, options: dict | None) -> str:
    """What tells a conversion apart from another of the same model: "text-generation · int4 ·
    stateful · iOS18" (the options it was asked for; the defaults' words too, so a float16
    conversion reads as one)."""
    options = options or {}
    parts = [task or ""]
    if options:
        quantize = options.get("quantize") or "none"
        parts.append(quantize if quantize != "none" else options.get("precision") or "float16")
        if options.get("kv_cache") == "stateful":
            parts.append("stateful")
        if format_of(options.get("format")).short:  # the default format goes unsaid
            parts.append(format_of(options["format"]).short)
        if options.get("minimum_deployment_target") and _has_deployment_target(options):
            parts.append(options["minimum_deployment_target"])
    return " · ".join(p for p in parts if p)


def _has_deployment_target(options: dict) -> bool:
    """Whether the options made a Core ML package: the deployment target is its alone."""
    try:
        return ConversionOptions.from_dict(options).deployment_target_applies
    except UserInputError:  # options an older version stored: say the target, as it was asked
        return True


def identity(model: str | None, task: str | None, options: dict | None) -> str:
    """A conversion's name wherever it is shown: "SmolLM2-135M · text-generation · int4 · stateful · iOS18"."""
    name = str(model or "").split("/")[-1]
    return " · ".join(p for p in (name, variant(task, options)) if p)


def megabytes(size_bytes: int | float) -> str:
    """A package size as shown next to the choices and in reports: '0.15 MB', '6.8 MB', '1,350 MB'."""
    mb = size_bytes / 1e6
    if mb >= 10:
        return f"{mb:,.0f} MB"
    return f"{mb:.1f} MB" if mb >= 1 else f"{mb:.2f} MB"


# ---------------------------------------------------------------------- compression

# Where each compression scheme runs best: the gist of coremltools' optimization guide
# (docs-guides opt-overview, opt-quantization-perf, opt-palettization-perf), no more.
PLACEMENT_NOTES = {
    "int8": "Per-channel int8 weights: the quantization coremltools recommends for models that run on the Neural Engine.",
    "int4": ("Per-block int4 weights: coremltools finds these work really well on a Mac's GPU (runtime memory and, "
             "depending on the model, speed); on the Neural Engine it recommends per-channel scales (int8) instead."),
    "lut": ("Palettized (lookup-table) weights: coremltools finds these typically work best on the Neural Engine; "
            "on the GPU they may still save runtime memory."),
    "mixed": ("Mostly per-block int4 weights (embeddings and output head per-channel int8): like int4, suited to a "
              "Mac's GPU, per coremltools."),
}
DECOMPRESSION_NOTE = ("Depending on the hardware and compute unit, Core ML decompresses compressed weights either "
                      "before running (then the model runs as fast as its float16 version) or on the fly, moving less "
                      "data (coremltools' optimization guide).")
# The quality numbers on real text, against the scheme's bar: (metric, label, bar key, higher is better).
QUALITY_METRICS = (
    ("top1_agreement", "top-1 agreement", "min_top1", True),
    ("mean_kl_divergence", "mean KL divergence (nats)", "max_kl", False),
    ("perplexity_ratio", "perplexity ratio", "max_perplexity_ratio", False),
)


def compressed_packages(report: dict) -> list[tuple[str, dict]]:
    """(part, compression entry) of each compressed package (report["packages"][i]["compression"])."""
    return [(p.get("part") or "model", p["compression"]) for p in report.get("packages") or []
            if isinstance(p.get("compression"), dict)]


def size_change(entry: dict) -> str:
    """The package's size before and after compression, and their ratio: '0.22 MB → 0.15 MB (0.71×)'."""
    before, after, ratio = entry.get("size_before_bytes"), entry.get("size_after_bytes"), entry.get("size_ratio")
    if not before or not after:
        return ""
    return f"{megabytes(before)} → {megabytes(after)}" + (f" ({ratio:.2f}×)" if ratio else "")


def weights_line(entry: dict) -> str:
    share = entry.get("compressed_share")
    text = f"{entry.get('weights_compressed', 0)} compressed"
    if share is not None:
        text += f" ({number(share, 'top1_agreement')} of all weight values)"
    return text + f", {entry.get('float_weights_left', 0)} left float"


def quality_rows(validation: dict | None) -> list[dict]:
    """The quality numbers on real text (validation["quality"]: compressed text generation), one
    row per package and mode: {part, mode, numbers, checks}, each check {metric, label, value,
    bar, higher, passed} against the scheme's bar (passed None: no bar); [] when there are none."""
    quality = (validation or {}).get("quality") or {}
    bar = quality.get("bar") or {}
    rows = []
    for part, modes in (quality.get("packages") or {}).items():
        for mode, numbers in (modes or {}).items():
            checks = []
            for metric, label, key, higher in QUALITY_METRICS:
                value, threshold = numbers.get(metric), bar.get(key)
                if value is None:
                    continue
                passed = None if threshold is None else bool(value >= threshold if higher else value <= threshold)
                checks.append({"metric": metric, "label": label, "value": value, "bar": threshold, "higher": higher,
                               "passed": passed})
            rows.append({"part": part, "mode": mode, "numbers": numbers, "checks": checks})
    return rows


def quality_cell(check: dict) -> str:
    """'100.0% (bar ≥ 90.0%)'."""
    return f"{number(check['value'], check['metric'])} (bar {bar_text(check)})"


def perplexities(numbers: dict) -> str:
    """'PyTorch 120.91 → package 120.98'."""
    pytorch, package = numbers.get("perplexity_pytorch"), numbers.get("perplexity_package")
    if pytorch is None or package is None:
        return ""
    return f"PyTorch {pytorch:,.2f} → package {package:,.2f}"


def bar_reason(validation: dict | None) -> str:
    """Why the scheme's quality bar is where it is (validation/quality_bars.py COMPRESSED_QUALITY)."""
    return ((((validation or {}).get("quality") or {}).get("bar")) or {}).get("reason") or ""


def bar_text(check: dict) -> str:
    if check["bar"] is None:
        return "none"
    return f"{'≥' if check['higher'] else '≤'} {number(check['bar'], check['metric'])}"


def placement_note(scheme: str | None) -> str | None:
    """Where a compression scheme runs best (coremltools' guide), or None for float weights."""
    if not scheme or scheme == "none":
        return None
    return PLACEMENT_NOTES.get("lut" if scheme.startswith("lut") else scheme)


# ---------------------------------------------------------------------- the program


def top_ops(op_counts: dict | None, limit: int = 8) -> str:
    """'linear 15, mul 27, ...': the most frequent op types first."""
    counts = sorted((op_counts or {}).items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{op} {n}" for op, n in counts[:limit]) + (", …" if len(counts) > limit else "")


def yes_no(value) -> str:
    return {True: "yes", False: "no"}.get(value, "unknown")


# ---------------------------------------------------------------------- the continuation check


def continuation_label(run: dict) -> str:
    """'Core ML (fp16)', 'Core ML (CPU_AND_GPU)', with the package when there are several."""
    return ContinuationRun.from_json(run).label


def continuation_reach(continuation) -> str:
    """How far the continuation went, in tokens, as counted."""
    wrote = len(continuation.pytorch_token_ids or [])
    budget = continuation.new_tokens
    if budget and wrote < budget:
        return f"up to {budget} new tokens; PyTorch wrote {wrote} and stopped at its end-of-text token"
    return f"{wrote or budget} new tokens"


def continuation_verdict(run) -> str:
    """What the check counted, in words: all the same, the same up to a near-tie, or where they part."""
    same, compared = run.matching_tokens, run.tokens_compared
    if run.passed is None or same is None:
        return run.note or "not checked"
    if run.error:
        return "could not be run"
    if run.passed and (compared is None or same >= compared):  # older reports did not say what was compared
        return f"the same {same} token{'s' if same != 1 else ''}"
    if run.passed:
        return (f"the same first {same} token{'s' if same != 1 else ''}; at token {same + 1} PyTorch itself was torn "
                "between its word and the package's (a near-tie, which float16 rounding may tip), so the texts after "
                "it are not compared")
    of = f" of {compared}" if compared else ""
    return f"differs at token {same + 1}{of}: the first {same} are the same"
