"""The task registry: which tasks exist, their exporters-era aliases, and the task a
checkpoint's architecture was trained for (preflight.automatic_task picks the one `auto`
means from it and the pipeline tag)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserInputError


@dataclass(frozen=True)
class Task:
    name: str
    auto_class: str  # the transformers Auto class that loads a model for this task
    modality: str  # "text" or "vision"
    summary: str


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("feature-extraction", "AutoModel", "any", "hidden states (embeddings)"),
        Task("fill-mask", "AutoModelForMaskedLM", "text", "scores for a masked token"),
        Task("text-classification", "AutoModelForSequenceClassification", "text", "one label per text"),
        Task("token-classification", "AutoModelForTokenClassification", "text", "one label per token"),
        Task("question-answering", "AutoModelForQuestionAnswering", "text", "answer span in a context"),
        Task("multiple-choice", "AutoModelForMultipleChoice", "text", "pick one of several texts"),
        Task("text-generation", "AutoModelForCausalLM", "text", "next-token logits"),
        Task("text2text-generation", "AutoModelForSeq2SeqLM", "text", "encoder and decoder packages"),
        Task("image-classification", "AutoModelForImageClassification", "vision", "one label per image"),
        Task("semantic-segmentation", "AutoModelForSemanticSegmentation", "vision", "one label per pixel"),
        Task("object-detection", "AutoModelForObjectDetection", "vision", "boxes and their classes"),
    ]
}

# Names that huggingface/exporters used; scripts written for it keep working.
ALIASES = {
    "default": "feature-extraction",
    "causal-lm": "text-generation",
    "masked-lm": "fill-mask",
    "seq2seq-lm": "text2text-generation",
    "sequence-classification": "text-classification",
}

# transformers architecture suffixes that name our tasks (Hub pipeline tags: preflight.PIPELINE_TASKS).
_ARCHITECTURE_SUFFIXES = [
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("ForMaskedLM", "fill-mask"),
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForImageClassification", "image-classification"),
    ("ForImageClassificationWithTeacher", "image-classification"),
    ("ForSemanticSegmentation", "semantic-segmentation"),
    ("ForObjectDetection", "object-detection"),
]


def normalize_task(name: str) -> str:
    """Return the canonical task name for `name` (an alias is accepted)."""
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in TASKS:
        known = ", ".join(sorted(TASKS))
        aliases = ", ".join(f"{a} (= {t})" for a, t in sorted(ALIASES.items()))
        raise UserInputError(
            f"Unknown task '{name}'. Use one of: {known}, or 'auto' to pick it from the model's config. "
            f"Old exporters names are accepted too: {aliases}."
        )
    return key


def task_from_architectures(architectures: list[str] | None) -> str | None:
    """The task the checkpoint was trained for, read from config.json's `architectures`."""
    for arch in architectures or []:
        for suffix, task in _ARCHITECTURE_SUFFIXES:
            if arch.endswith(suffix):
                return task
    return None
