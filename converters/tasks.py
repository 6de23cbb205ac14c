"""The task registry: which tasks exist, their exporters-era aliases, the task a checkpoint's
architecture was trained for, and the rule that picks the one `auto` means from that and the
pipeline tag (`automatic_task`), which the form, the worker and the engine share.

Which tasks a model type can be converted for is the families' to say (configs.model_tasks,
which returns a `ModelTasks`)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserInputError


@dataclass(frozen=True)
class Task:
    name: str
    auto_class: str  # the transformers Auto class that loads a model for this task
    modality: str  # "text", "vision" or "audio"
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
        Task("automatic-speech-recognition", "AutoModelForSpeechSeq2Seq", "audio",
             "speech to text: the three packages WhisperKit loads"),
        Task("zero-shot-image-classification", "AutoModelForZeroShotImageClassification", "vision",
             "image and text embeddings: an image scored against any labels"),
        Task("depth-estimation", "AutoModelForDepthEstimation", "vision", "a depth map of the image"),
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

# transformers architecture suffixes that name our tasks (Hub pipeline tags: PIPELINE_TASKS).
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
    ("ForDepthEstimation", "depth-estimation"),
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


# Hub pipeline tags -> the task we convert for.
PIPELINE_TASKS = {
    "text-generation": "text-generation",
    "fill-mask": "fill-mask",
    "feature-extraction": "feature-extraction",
    "sentence-similarity": "feature-extraction",
    "image-feature-extraction": "feature-extraction",
    "text-classification": "text-classification",
    "zero-shot-classification": "text-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    "multiple-choice": "multiple-choice",
    "text2text-generation": "text2text-generation",
    "translation": "text2text-generation",
    "summarization": "text2text-generation",
    "image-classification": "image-classification",
    "image-segmentation": "semantic-segmentation",
    "object-detection": "object-detection",
    "zero-shot-image-classification": "zero-shot-image-classification",
    "depth-estimation": "depth-estimation",
    "automatic-speech-recognition": "automatic-speech-recognition",
}
BASE_MODEL_TASK = "feature-extraction"  # served by any checkpoint: it needs no task head


def automatic_task(available: list[str], architectures: list[str] | None, pipeline_tag: str | None = None) -> str:
    """The model's own task (what `auto` converts for), one of `available`.

    The pipeline tag (the Hub's, or the model card's `pipeline_tag`) says what the model is
    for; `architectures` (config.json) says which task head its weights hold. The tag's task
    is taken when the checkpoint has the weights for it — it is the architecture's own task,
    or the base model (feature-extraction: a sentence-similarity model saved with an MLM
    head), or the architecture names no task. Otherwise the architecture's task (a wrong tag
    must not pick a head the checkpoint lacks, which would be initialised randomly), then
    the tag's, then the first available."""
    if not available:
        raise ValueError("no task available")
    trained_for = task_from_architectures(architectures)
    tagged = PIPELINE_TASKS.get(pipeline_tag or "")
    if tagged in available and (trained_for is None or tagged in (trained_for, BASE_MODEL_TASK)):
        return tagged
    for candidate in (trained_for, tagged):
        if candidate in available:
            return candidate
    return available[0]


@dataclass(frozen=True)
class ModelTasks:
    """What a model can be converted for, and which task is its own."""

    model_type: str
    available: tuple[str, ...]
    automatic: str

    def choose(self, requested: str | None) -> str:
        """The task to convert for: `requested`, or for 'auto' (or nothing) the model's own."""
        if not requested or requested.strip().lower() == "auto":
            return self.automatic
        task = normalize_task(requested)
        if task not in self.available:
            raise UserInputError(
                f"The task '{task}' is not available for {self.model_type} models. "
                f"Available for {self.model_type}: {', '.join(self.available)}."
            )
        return task
