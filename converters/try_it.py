"""Try a converted package on your own text, photo or clip, beside the PyTorch model it came from.

What a Swift developer wants to see before wiring a model into an app: its answer. The kinds,
by task:
- "generate" (text-generation): the greedy continuation of a prompt, the package driven as
  swift-transformers drives it (continuation.drive) and PyTorch's, with tokens per second.
- "similarity" (feature-extraction on text: embedders): the cosine similarity of two
  sentences' mean-pooled embeddings (sentence-transformers' default pooling), from both.
- "classify" (text-classification): the label and the top scores of a text, from both.
- on a photo (try_image.py): "classify-image", "detect" (boxes drawn on it), "depth" (the
  two maps as images) and "zero-shot" (the image and text packages scoring typed labels).
- on a clip (try_audio.py): "transcribe", Whisper's three packages driven as WhisperKit
  drives them, beside transformers' generate.

The package runs in the backend's runner (the reference executor: exact fp32, or fp16 device
emulation for a float16 package). Its speed is the executor's on this CPU, not a device's:
the page says so. Inputs are bounded (MAX_CHARS, MAX_NEW_TOKENS). Runs in a worker.
"""

from __future__ import annotations

import base64
import binascii
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .backends import backend_for_package
from .errors import UserInputError
from .source_tokenizer import check_tokenizer

# torch, transformers and what imports them (the continuation driver, the families, loading)
# are imported where a package runs: the web process reads KINDS, MAX_CHARS and check_text from
# here and must not load torch for them.

MAX_CHARS = 500
MAX_NEW_TOKENS = 32
DEFAULT_NEW_TOKENS = 16
# Said by the page and by a try: the words a person reads when a repo's tokenizer can't be used.
NO_TOKENIZER = ("This model can't be tried here: {why}, so there is no way to turn your text into tokens. An app "
                "needs the tokenizer of the model this one was trained from (for a fine-tune, its base model): load "
                "that tokenizer and pass it to the model, as the model card shows.")
KINDS = {"text-generation": "generate", "feature-extraction": "similarity", "text-classification": "classify"}
PHOTO_KINDS = {"image-classification": "classify-image", "object-detection": "detect", "depth-estimation": "depth",
               "zero-shot-image-classification": "zero-shot", "semantic-segmentation": "segment"}
CLIP_KINDS = {"automatic-speech-recognition": "transcribe"}
BY_MODALITY = {"text": KINDS, "vision": PHOTO_KINDS, "audio": CLIP_KINDS}
# A package's first input names its modality: an image, or audio (Whisper's MelSpectrogram).
IMAGE_INPUTS, AUDIO_INPUTS = {"image", "pixel_values", "pixelValues"}, {"audio", "input_features", "melspectrogram_features"}
# The kinds that turn typed text into tokens: without the model's tokenizer they cannot run.
TOKENIZED = {"generate", "similarity", "classify", "zero-shot"}
# What a try's request may carry, before any decoding: a photo is shrunk by the page first
# (at most PHOTO_SIDE pixels a side), a clip is mono 16-bit at most MAX_CLIP_SECONDS long.
PHOTO_SIDE = 1024
MAX_CLIP_SECONDS = 30
MAX_MEDIA_BYTES = 8 * 1024 * 1024
# progress(message, fraction): what a try is doing, for the page while it waits.
Progress = Callable[[str, float], None]
PYTORCH_SHARE = 0.2  # of a generation's wait: PyTorch is quick beside the package in the executor


def _no_progress(message: str, fraction: float) -> None:
    pass


def kind_for(task: str | None, modality: str | None = "text") -> str | None:
    """Which try-it a package of `task` gets (None: none yet, e.g. a vision model's features)."""
    return BY_MODALITY.get(modality or "text", {}).get(task or "")


def kind_of_report(report: dict, task: str | None = None) -> str | None:
    """The try-it a conversion's report offers: its task's, for the modality its packages' inputs
    say; an image-and-text model's two towers score labels whichever task named them."""
    packages = report.get("packages") or []
    inputs = {i.get("name") for p in packages for i in p.get("inputs") or []}
    modality = "vision" if inputs & IMAGE_INPUTS else "audio" if inputs & AUDIO_INPUTS else "text"
    if modality == "vision" and {"image_embeds", "text_embeds"} <= {o.get("name") for p in packages for o in p.get("outputs") or []}:
        return PHOTO_KINDS["zero-shot-image-classification"]
    return kind_for(report.get("task") or task, modality)


def media(inputs: dict, key: str, what: str) -> bytes | None:
    """A photo's or a clip's bytes from a try's request (base64 in JSON), None when not given."""
    data = inputs.get(key)
    if not data:
        return None
    if not isinstance(data, str) or len(data) > MAX_MEDIA_BYTES * 4 // 3 + 4:
        raise UserInputError(f"The {what} is too large to try here: at most {MAX_MEDIA_BYTES // 2**20} MB.")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise UserInputError(f"The {what} did not arrive whole: choose it again.") from None


def check_text(text: str | None, what: str = "The text") -> str:
    text = (text or "").strip()
    if not text:
        raise UserInputError(f"{what} is empty: type something to try.")
    if len(text) > MAX_CHARS:
        raise UserInputError(f"{what} has {len(text)} characters; try it with at most {MAX_CHARS}.")
    return text


def run(kind: str, package: Path | list[Path], model_dir: Path, inputs: dict, mode: str,
        progress: Progress | None = None) -> dict:
    """`inputs`: {"text"} (and {"other"} for similarity, {"new_tokens"} for generate); a photo
    kind's {"photo"} (and zero-shot's {"text"}: the labels, one a line), a clip's {"audio"} (base64
    bytes: PNG or JPEG, WAV). `package`: the package, or a conversion's packages in their order
    (zero-shot: image then text; transcribe: Whisper's three). An .aimodel runs in Core AI's
    runtime, as it is (its one mode). `progress(message, fraction)` hears what the try is doing
    ("PyTorch: 5 of 16 tokens")."""
    progress = progress or _no_progress
    packages = list(package) if isinstance(package, (list, tuple)) else [package]
    package = packages[0]
    modes = backend_for_package(package, check=False).modes
    if modes:  # a runner with modes of its own (Core AI's runtime) runs the package as it is
        mode = modes[0]
    if kind == "generate":
        return generate(package, model_dir, check_text(inputs.get("text"), "The prompt"), mode,
                        int(inputs.get("new_tokens") or DEFAULT_NEW_TOKENS), progress)
    if kind == "similarity":
        return similarity(package, model_dir, check_text(inputs.get("text"), "The first sentence"),
                          check_text(inputs.get("other"), "The second sentence"), mode, progress)
    if kind == "classify":
        return classify(package, model_dir, check_text(inputs.get("text")), mode, progress=progress)
    if kind in PHOTO_KINDS.values():
        return _on_photo(kind, packages, model_dir, inputs, mode, progress)
    if kind == "transcribe":
        from . import try_audio  # torch

        progress("Transcribing the clip with the packages and with PyTorch", 0.1)
        return try_audio.transcribe(packages, model_dir, media(inputs, "audio", "clip"), mode)
    raise UserInputError(f"There is no try-it for '{kind}'.")


def _on_photo(kind: str, packages: list[Path], model_dir: Path, inputs: dict, mode: str, progress: Progress) -> dict:
    from . import try_image  # torch

    photo = media(inputs, "photo", "photo")
    progress("Running the package and the PyTorch model on the photo", 0.1)
    if kind == "depth":
        return try_image.depth(packages[0], model_dir, photo, mode)
    if kind == "detect":
        return try_image.detect(packages[0], model_dir, photo, mode)
    if kind == "classify-image":
        return try_image.classify(packages[0], model_dir, photo, mode)
    if kind == "segment":
        return try_image.segment(packages[0], model_dir, photo, mode)
    if len(packages) < 2:
        raise UserInputError("Labels are scored by the image package and the text package together: this conversion "
                             "has only one of them. Convert it again to try it.")
    labels = (inputs.get("text") or "").replace(",", "\n").splitlines()
    if any(len(label) > MAX_CHARS for label in labels):
        raise UserInputError(f"A label has more than {MAX_CHARS} characters; try shorter ones.")
    return try_image.zero_shot(packages[0], packages[1], model_dir, photo, labels, mode)


def _pretrained(cls, model_dir: Path):
    import torch

    # Safetensors only and never remote code, as everywhere in the service.
    return cls.from_pretrained(str(model_dir), use_safetensors=True, trust_remote_code=False,
                               torch_dtype=torch.float32).eval()


def _tokenizer(model_dir: Path):
    check = check_tokenizer(model_dir)
    if check.tokenizer is None:
        raise UserInputError(NO_TOKENIZER.format(why=check.missing))
    return check.tokenizer


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


# ---------------------------------------------------------------------- text generation


def _token_counter(progress: Progress, who: str, new_tokens: int, start: float, end: float):
    """on_token(count) for a greedy run: "<who>: 5 of 16 tokens", from `start` to `end`."""

    def on_token(count: int) -> None:
        progress(f"{who}: {count} of {new_tokens} tokens", round(start + (end - start) * count / new_tokens, 4))

    return on_token


def generate(package: Path, model_dir: Path, prompt: str, mode: str, new_tokens: int = DEFAULT_NEW_TOKENS,
             progress: Progress | None = None) -> dict:
    from transformers import AutoModelForCausalLM

    from .validation import continuation  # torch

    progress = progress or _no_progress
    new_tokens = max(1, min(int(new_tokens), MAX_NEW_TOKENS))
    progress("Loading the PyTorch model", 0.0)
    tokenizer, model = _tokenizer(model_dir), _pretrained(AutoModelForCausalLM, model_dir)
    ids = [int(i) for i in tokenizer(prompt, add_special_tokens=True)["input_ids"]]
    eos = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    pytorch_counter = _token_counter(progress, "PyTorch", new_tokens, 0.0, PYTORCH_SHARE)
    (reference, _), torch_seconds = _timed(lambda: continuation.pytorch_greedy(model, ids, new_tokens, eos, pytorch_counter))

    progress("Loading the package", PYTORCH_SHARE)
    backend = backend_for_package(package, check=False)
    layout = continuation.layout(backend.describe(package))
    if layout is None:
        raise UserInputError("This package takes no token ids: it cannot continue a prompt.")
    runner = backend.runner(package)
    package_counter = _token_counter(progress, "The package", new_tokens, PYTORCH_SHARE, 1.0)
    generation, package_seconds = _timed(
        lambda: continuation.drive(runner, mode, layout, ids, new_tokens, eos, on_token=package_counter, draft=reference))
    if generation.stopped == "length" and not generation.tokens:
        raise UserInputError(f"The prompt is {len(ids)} tokens: more than this package holds. Try a shorter one.")
    matching = next((i for i, (a, b) in enumerate(zip(reference, generation.tokens)) if a != b),
                    min(len(reference), len(generation.tokens)))

    def side(tokens: list[int], seconds: float) -> dict:
        return {"text": tokenizer.decode(tokens, skip_special_tokens=True), "tokens": len(tokens),
                "tokens_per_second": round(len(tokens) / seconds, 2) if seconds > 0 else None}

    return {"kind": "generate", "mode": mode, "prompt": prompt, "prompt_tokens": len(ids),
            "package": {**side(generation.tokens, package_seconds), "stopped": generation.stopped,
                        "driven_as": continuation.driven_as(layout)},
            "pytorch": side(reference, torch_seconds), "matching_tokens": matching}


# ---------------------------------------------------------------------- embedders and classifiers


def _text_feed(info: dict, ids: list[int]) -> tuple[dict[str, np.ndarray], int]:
    """The package's inputs for one text, as an app sends them: padded with 0 (mask 0) to the
    fixed length, to the first listed length that holds it, or exactly its length for a range."""
    inputs = {i["name"]: i for i in info["inputs"]}
    ids_name = next((n for n in ("inputIds", "input_ids") if n in inputs), None)
    if ids_name is None:
        raise UserInputError("This package takes no token ids: it cannot read text.")
    spec = inputs[ids_name]
    if spec.get("flexibility") == "range":
        low, high = spec["ranges"][-1]
        length = max(len(ids), low) if high < 0 or len(ids) <= high else None
    elif spec.get("flexibility") == "enumerated":
        length = next((s[-1] for s in sorted(spec["shapes"], key=lambda s: s[-1]) if s[-1] >= len(ids)), None)
    else:
        length = spec["shape"][-1] if spec["shape"][-1] >= len(ids) else None
    if length is None:
        raise UserInputError(f"The text is {len(ids)} tokens: more than this package takes. Try a shorter one.")
    padded = np.zeros((1, length), dtype=np.int32)
    padded[0, :len(ids)] = ids
    mask = (padded != 0).astype(np.int32)
    mask[0, :len(ids)] = 1
    feed = {ids_name: padded}
    for name in inputs:
        if name in ("attentionMask", "attention_mask"):
            feed[name] = mask
        elif name in ("tokenTypeIds", "token_type_ids"):
            feed[name] = np.zeros_like(padded)
    return feed, len(ids)


def _mean_pooled(hidden: np.ndarray, count: int) -> np.ndarray:
    """sentence-transformers' default pooling: the mean over the text's own tokens."""
    return np.asarray(hidden, dtype=np.float64)[0, :count].mean(axis=0)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def similarity(package: Path, model_dir: Path, first: str, second: str, mode: str,
               progress: Progress | None = None) -> dict:
    import torch
    from transformers import AutoModel

    from .configs.text import sentence_embedding  # torch
    from .loading import sentence_pooling  # torch

    progress = progress or _no_progress
    progress("Loading the PyTorch model and the package", 0.0)
    tokenizer, model = _tokenizer(model_dir), _pretrained(AutoModel, model_dir)
    backend = backend_for_package(package, check=False)
    info, runner = backend.describe(package), backend.runner(package)
    names = [o["name"] for o in info["outputs"]]
    # The package's own sentence embedding when it has one (its sentence-transformers recipe),
    # else the mean over the tokens of its hidden states; PyTorch pooled the same way.
    pooled = "sentence_embedding" in names
    recipe = (sentence_pooling(model_dir) if pooled else None) or {"mode": "mean", "normalize": False}
    output = "sentence_embedding" if pooled else next((n for n in names if n == "last_hidden_state"), names[0])

    def embed_package():
        vectors = []
        for text in (first, second):
            feed, count = _text_feed(info, [int(i) for i in tokenizer(text)["input_ids"]])
            value = runner.predict(feed, mode=mode)[output]
            vectors.append(np.asarray(value, dtype=np.float64).reshape(-1) if pooled else _mean_pooled(value, count))
        return vectors

    def embed_pytorch():
        vectors = []
        with torch.no_grad():
            for text in (first, second):
                encoded = tokenizer(text, return_tensors="pt")
                hidden = model(**encoded).last_hidden_state
                vectors.append(sentence_embedding(hidden, encoded["attention_mask"], recipe)[0].double().numpy())
        return vectors

    progress("The package: embedding both sentences", 0.5)
    (pa, pb), package_seconds = _timed(embed_package)
    progress("PyTorch: embedding both sentences", 0.8)
    (ta, tb), torch_seconds = _timed(embed_pytorch)
    pooling = f"{recipe['mode']} pooling" + (", normalized" if recipe["normalize"] else "") + (
        " (the package's sentence_embedding)" if pooled else " of last_hidden_state")
    return {"kind": "similarity", "mode": mode, "texts": [first, second], "pooling": pooling,
            "package": {"similarity": round(_cosine(pa, pb), 4), "seconds": round(package_seconds, 3)},
            "pytorch": {"similarity": round(_cosine(ta, tb), 4), "seconds": round(torch_seconds, 3)},
            "embedding_cosine": [round(_cosine(pa, ta), 4), round(_cosine(pb, tb), 4)]}


def classify(package: Path, model_dir: Path, text: str, mode: str, top: int = 3, progress: Progress | None = None) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification

    progress = progress or _no_progress
    progress("Loading the PyTorch model and the package", 0.0)
    tokenizer, model = _tokenizer(model_dir), _pretrained(AutoModelForSequenceClassification, model_dir)
    backend = backend_for_package(package, check=False)
    info, runner = backend.describe(package), backend.runner(package)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    def package_scores() -> dict[str, float]:
        feed, _ = _text_feed(info, [int(i) for i in tokenizer(text)["input_ids"]])
        outputs = runner.predict(feed, mode=mode)
        scores = next((v for v in outputs.values() if isinstance(v, dict)), None)
        if scores is None and "probabilities" in outputs:  # an .aimodel's classifier: the tensor itself
            scores = dict(zip(labels, np.asarray(outputs["probabilities"], dtype=np.float64).reshape(-1)))
        if scores is None:  # a package that returns logits, not a classifier's dictionary
            logits = np.asarray(next(iter(outputs.values())), dtype=np.float64).reshape(-1)
            scores = dict(zip(labels, _softmax(logits)))
        return {str(k): float(v) for k, v in scores.items()}

    def pytorch_scores() -> dict[str, float]:
        with torch.no_grad():
            logits = model(**tokenizer(text, return_tensors="pt")).logits[0].double().numpy()
        return dict(zip(labels, _softmax(logits)))

    progress("The package and PyTorch: classifying the text", 0.5)
    (ours, package_seconds), (theirs, torch_seconds) = _timed(package_scores), _timed(pytorch_scores)

    def side(scores: dict[str, float], seconds: float) -> dict:
        ranked = sorted(scores.items(), key=lambda item: -item[1])
        return {"label": ranked[0][0], "scores": [[k, round(v, 4)] for k, v in ranked[:top]], "seconds": round(seconds, 3)}

    return {"kind": "classify", "mode": mode, "text": text, "package": side(ours, package_seconds),
            "pytorch": side(theirs, torch_seconds)}


def _softmax(logits: np.ndarray) -> list[float]:
    shifted = np.exp(logits - logits.max())
    return (shifted / shifted.sum()).tolist()
