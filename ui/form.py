"""The conversion form: its choices, defaults and one-line help, and turning what was
entered into a checked JobSpec (worker.spec), whose messages say what to fix."""

from __future__ import annotations

from dataclasses import dataclass

from converters.errors import UserInputError
from converters.options import DEPLOYMENT_TARGETS, NAMINGS, PRECISIONS, ConversionOptions, SequenceLength
from converters.tasks import TASKS
from worker.spec import NEW_REPO, PULL_REQUEST, JobSpec

DEFAULT_SEQUENCE_LENGTH = "128"
DEFAULT_TARGET = "iOS17"

PRECISION_CHOICES = [
    ("float16: half the size, runs on the Neural Engine (recommended)", "float16"),
    ("float32: exact, CPU and GPU only", "float32"),
]
NAMING_CHOICES = [
    ("swift-transformers (inputIds, attentionMask, logits: what Swift apps load)", "swift-transformers"),
    ("exporters (input_ids, attention_mask; coreml/<task>/ folders)", "exporters"),
]
RUNNER_CHOICES = [
    ("Any worker: reference executor, exact fp32 and fp16 device emulation", "any"),
    ("A Mac runner: also real Core ML on CPU, GPU and Neural Engine", "macos"),
]
PUSH_CHOICES = [
    ("A new repo in my account", NEW_REPO),
    ("A pull request to the model's repo", PULL_REQUEST),
]

HELP = {
    "model": "A Hub model ID (owner/name) or its URL. Type a few letters for suggestions.",
    "task": "What the package computes. The model's own task is preselected.",
    "precision": "float16 is what iPhones and Macs run fastest; float32 keeps every digit but stays off the Neural Engine.",
    "sequence_length": "Tokens per input: one number (128), a list (64,128,256) or a range (1-512). A range runs on the CPU only.",
    "runner": "Every package is checked against PyTorch. A Mac runner also runs it on real Core ML hardware.",
    "target": "The oldest iOS/macOS the package must run on. iOS18/macOS15 add stateful KV caches and fused attention.",
    "tolerance": "How close the package must stay to PyTorch, relative to the architecture's thresholds.",
    "push_anyway": "Off by default: a package that fails validation is not pushed.",
    "naming": "Input/output names and file layout. Keep swift-transformers unless your app expects the old exporters layout.",
    "kv_cache": "Text generation: stateful is swift-transformers' fastest path (iOS18+); the sequence length is the context size.",
    "push": "Where the converted package goes.",
    "push_repo": "Leave empty for <you>/<model>-coreml.",
    "private": "Only you (and your organisation) can see a private repo.",
}


def task_choices(tasks: list[str], default: str | None) -> list[tuple[str, str]]:
    """(label, value) pairs: 'fill-mask: scores for a masked token (the model's own task)'."""
    choices = []
    for task in tasks:
        summary = TASKS[task].summary if task in TASKS else ""
        label = f"{task}: {summary}" if summary else task
        if task == default:
            label += " (the model's own task)"
        choices.append((label, task))
    return choices


def sequence_note(text: str, modality: str | None = "text") -> tuple[str, str]:
    """(level, message) about a sequence length as typed: level is "error", "warning" or "info"."""
    if modality == "vision":
        return "info", "Vision models take a fixed image size; the sequence length is not used."
    try:
        sequence = SequenceLength.parse(text)
    except UserInputError as error:
        return "error", str(error)
    if sequence.kind == "range":
        return "warning", (
            f"A range ({sequence}) lets the app pass any length from {sequence.minimum} to {sequence.maximum}, "
            "but Core ML runs range-shaped models on the CPU only. A list of sizes (e.g. 64,128,256) keeps the "
            "GPU and Neural Engine."
        )
    if sequence.kind == "enumerated":
        return "info", f"The package accepts exactly these lengths: {sequence}. Pad inputs to the next one."
    return "info", f"The package takes exactly {sequence} tokens; shorter inputs are padded."


@dataclass
class FormValues:
    """What the form holds when Convert is clicked."""

    model: str
    task: str | None
    precision: str = "float16"
    sequence_length: str = DEFAULT_SEQUENCE_LENGTH
    runner: str = "any"
    minimum_target: str = DEFAULT_TARGET
    naming: str = "swift-transformers"
    push: str = NEW_REPO
    push_repo: str = ""
    private: bool = False
    push_even_if_invalid: bool = False
    kv_cache: str = "none"
    tolerance: str = "default"

    def options(self) -> ConversionOptions:
        return ConversionOptions.from_strings(
            precision=self.precision,
            sequence_length=(self.sequence_length or "").strip() or DEFAULT_SEQUENCE_LENGTH,
            minimum_deployment_target=self.minimum_target,
            naming=self.naming,
            kv_cache=self.kv_cache,
            tolerance=self.tolerance,
        )

    def to_spec(self, token: str | None, user: str | None) -> JobSpec:
        """A checked JobSpec; raises UserInputError with what to fix."""
        if not (self.model or "").strip():
            raise UserInputError("Enter a model first: a Hub ID such as 'openai-community/gpt2' or its URL.")
        if not self.task:
            raise UserInputError("Pick a task: the model's supported tasks appear once it is read from the Hub.")
        options = self.options()
        push_repo = (self.push_repo or "").strip() if self.push != PULL_REQUEST else ""
        return JobSpec.build(
            self.model,
            token=token,
            task=self.task,
            options=options.to_dict(),
            push=self.push or NEW_REPO,
            push_repo=push_repo or None,
            private=bool(self.private),
            push_even_if_invalid=bool(self.push_even_if_invalid),
            runner=self.runner or "any",
            user=user,
        )


TOLERANCE_CHOICES = [
    ("Strict (¼ of the difference)", "strict"),
    ("The architecture's (recommended)", "default"),
    ("Loose (4× the difference)", "loose"),
]

KV_CACHE_CHOICES = [
    ("None: each call reads the whole sequence (iOS 17+)", "none"),
    ("Stateful: keyCache/valueCache states, fastest generation (iOS 18+)", "stateful"),
]


def default_push_repo(user: str | None, model_name: str | None) -> str:
    """The placeholder of the target-repo field: where a new repo goes by default."""
    return f"{user or '<you>'}/{model_name or '<model>'}-coreml"


__all__ = [
    "DEPLOYMENT_TARGETS",
    "FormValues",
    "HELP",
    "KV_CACHE_CHOICES",
    "TOLERANCE_CHOICES",
    "NAMINGS",
    "NAMING_CHOICES",
    "PRECISIONS",
    "PRECISION_CHOICES",
    "PUSH_CHOICES",
    "RUNNER_CHOICES",
    "default_push_repo",
    "sequence_note",
    "task_choices",
]
