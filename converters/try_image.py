"""Try an image model's package on a photo, beside the PyTorch model it came from (issue 29):
a depth map, detections, or a photo's zero-shot labels — each the package's answer and
PyTorch's, with the images a page shows side by side (PNG, base64).

The photo is the person's (bytes of a PNG or JPEG) or, without one, the sample validation
uses (gradients and a checkerboard). It is resized to the package's input size, as an app
does before handing Core ML a pixel buffer. PyTorch's side is the model with the same
preprocessing (the family's wrapper), so the two answers differ only by the package. The
package runs in the backend's runner, as Try it's text kinds do (converters/try_it.py).
Not wired into the page yet: the worker's try and the panel take text today.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np

from .backends import backend_for_package
from .errors import UserInputError
from .source_tokenizer import check_tokenizer
from .validation.compare import psnr_db, relative_error
from .validation.inputs import _ids, synthetic_image
from .validation.zero_shot import probabilities

# torch, transformers and the families are imported where a package runs (as in try_it.py).

MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PHOTO_PIXELS = 40_000_000
MAX_LABELS = 16
DETECTION_THRESHOLD = 0.5
MAX_DETECTIONS = 20
COLOURS = {"package": (255, 64, 64), "pytorch": (64, 160, 255)}  # boxes on the drawn photo


def photo(data: bytes | None, height: int, width: int) -> np.ndarray:
    """The photo as the package's image input takes it: RGB 0..255, [1, 3, height, width]."""
    if data is None:
        return synthetic_image(height, width)
    from PIL import Image, ImageOps, UnidentifiedImageError

    if len(data) > MAX_PHOTO_BYTES:
        raise UserInputError(f"The photo is {len(data) / 2**20:.1f} MB; try one of at most {MAX_PHOTO_BYTES // 2**20} MB.")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PHOTO_PIXELS:
                raise UserInputError(f"The photo is {image.width}×{image.height} pixels; try a smaller one.")
            image = ImageOps.exif_transpose(image).convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UserInputError(f"The file is not a photo this page can read (PNG or JPEG): {error}") from None
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[None].copy()


def _family(model_dir: Path, task: str):
    from .configs import config_class_for
    from .loading import load_hf_config, load_preprocessor
    from .options import ConversionOptions

    hf_config = load_hf_config(model_dir)
    return config_class_for(hf_config.model_type)(hf_config, task, ConversionOptions(), load_preprocessor(model_dir))


def _program_input(cfg, pixels: np.ndarray, part: str = "model"):
    """What the package's program receives from Core ML for these pixels (its scale and bias applied)."""
    import torch

    spec = cfg.inputs(part)[0]
    bias = np.asarray(spec.image["bias"], dtype=np.float32).reshape(1, 3, 1, 1)
    return torch.from_numpy(pixels * spec.image["scale"] + bias)


def _pretrained(cls, model_dir: Path):
    import torch

    return cls.from_pretrained(str(model_dir), use_safetensors=True, trust_remote_code=False, torch_dtype=torch.float32).eval()


def _runner(package: Path):
    backend = backend_for_package(package, check=False)
    return backend, backend.runner(package)


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - start, 3)


def _png(array: np.ndarray) -> str:
    """An RGB [H, W, 3] or grey [H, W] uint8 array as a base64 PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _predict(runner, feed: dict, mode: str) -> dict:
    return {name: np.asarray(value) for name, value in runner.predict(feed, mode=mode, state=runner.make_state()).items()}


# ---------------------------------------------------------------------- depth


def depth(package: Path, model_dir: Path, data: bytes | None, mode: str) -> dict:
    """The package's depth map and PyTorch's, drawn in grey on one scale (PyTorch's range: white is
    its largest value), and how far apart they are (PSNR, mean relative error)."""
    import torch
    from transformers import AutoModelForDepthEstimation

    cfg = _family(model_dir, "depth-estimation")
    height, width = cfg.image_size()
    pixels = photo(data, height, width)
    wrapper = cfg.wrap(_pretrained(AutoModelForDepthEstimation, model_dir))
    _, runner = _runner(package)
    ours, package_seconds = _timed(lambda: _predict(runner, {cfg.inputs()[0].name: pixels}, mode)["predicted_depth"])
    with torch.no_grad():
        theirs, torch_seconds = _timed(lambda: wrapper(_program_input(cfg, pixels))[0].numpy())
    low, high = float(theirs.min()), float(theirs.max())

    def grey(value: np.ndarray) -> str:
        scaled = (value.reshape(value.shape[-2:]) - low) / (high - low if high > low else 1.0)
        return _png((np.clip(scaled, 0, 1) * 255).round().astype(np.uint8))

    return {"kind": "depth", "mode": mode, "photo": _png(pixels[0].transpose(1, 2, 0).astype(np.uint8)),
            "package": {"map": grey(ours), "seconds": package_seconds},
            "pytorch": {"map": grey(theirs), "seconds": torch_seconds},
            "psnr_db": round(psnr_db(theirs, ours), 2), "relative_error": round(relative_error(theirs, ours), 5)}


# ---------------------------------------------------------------------- detection


def _detections(scores: np.ndarray, boxes: np.ndarray, labels: list[str], height: int, width: int, threshold: float) -> list[dict]:
    """Detections whose best class passes `threshold`, best first, with corner boxes in pixels."""
    scores, boxes = scores.reshape(-1, scores.shape[-1]), boxes.reshape(-1, 4)
    best = scores.argmax(-1)
    found = []
    for query in np.argsort(-scores.max(-1)):
        score = float(scores[query, best[query]])
        if score < threshold or len(found) == MAX_DETECTIONS:
            break
        cx, cy, w, h = (float(v) for v in boxes[query])
        found.append({"label": labels[best[query]] if best[query] < len(labels) else str(best[query]), "score": round(score, 4),
                      "box": [round((cx - w / 2) * width, 1), round((cy - h / 2) * height, 1),
                              round((cx + w / 2) * width, 1), round((cy + h / 2) * height, 1)]})
    return found


def _drawn(pixels: np.ndarray, detections: dict[str, list[dict]]) -> str:
    from PIL import Image, ImageDraw

    image = Image.fromarray(pixels[0].transpose(1, 2, 0).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for who, found in detections.items():
        for detection in found:
            draw.rectangle(detection["box"], outline=COLOURS[who], width=2)
            draw.text((detection["box"][0] + 2, detection["box"][1] + 1), f"{detection['label']} {detection['score']:.2f}",
                      fill=COLOURS[who])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def detect(package: Path, model_dir: Path, data: bytes | None, mode: str, threshold: float = DETECTION_THRESHOLD) -> dict:
    """The package's detections and PyTorch's above `threshold`, and the photo with both drawn
    (the package's boxes red, PyTorch's blue)."""
    import torch
    from transformers import AutoModelForObjectDetection

    cfg = _family(model_dir, "object-detection")
    height, width = cfg.image_size()
    pixels = photo(data, height, width)
    wrapper = cfg.wrap(_pretrained(AutoModelForObjectDetection, model_dir))
    _, runner = _runner(package)
    labels = cfg.labels()
    ours, package_seconds = _timed(lambda: _predict(runner, {cfg.inputs()[0].name: pixels}, mode))
    with torch.no_grad():
        theirs, torch_seconds = _timed(lambda: [value.numpy() for value in wrapper(_program_input(cfg, pixels))])
    found = {"package": _detections(ours["scores"], ours["boxes"], labels, height, width, threshold),
             "pytorch": _detections(theirs[0], theirs[1], labels, height, width, threshold)}
    return {"kind": "detect", "mode": mode, "threshold": threshold, "drawn": _drawn(pixels, found),
            "package": {"detections": found["package"], "seconds": package_seconds},
            "pytorch": {"detections": found["pytorch"], "seconds": torch_seconds}}


# ---------------------------------------------------------------------- zero-shot labels


def zero_shot(image_package: Path, text_package: Path, model_dir: Path, data: bytes | None, labels: list[str], mode: str) -> dict:
    """Each label's probability for the photo, as the two packages give it (their embeddings, the
    scale and bias in their metadata, softmax or sigmoid as it says) and as PyTorch's model does."""
    import torch
    from transformers import AutoModel

    labels = [label.strip() for label in labels if label and label.strip()]
    if not 2 <= len(labels) <= MAX_LABELS:
        raise UserInputError(f"Give between 2 and {MAX_LABELS} labels, one a line.")
    check = check_tokenizer(model_dir)
    if check.tokenizer is None:
        raise UserInputError(f"This model can't be tried here: {check.missing}, so there is no way to turn the labels into tokens.")
    cfg = _family(model_dir, "zero-shot-image-classification")
    image_part, text_part = cfg.zero_shot_parts
    height, width = cfg.image_size()
    pixels = photo(data, height, width)
    model = _pretrained(AutoModel, model_dir)
    cfg.wrap(model, image_part)  # SigLIP 2: the position embeddings for the package's grid
    backend, image_runner = _runner(image_package)
    _, text_runner = _runner(text_package)
    metadata = backend.describe(image_package).get("metadata") or {}
    scale = float(metadata.get("co.huggingface.exporters.logit_scale", cfg.scores["logit_scale"]))
    bias = float(metadata.get("co.huggingface.exporters.logit_bias", cfg.scores.get("logit_bias", 0.0)))
    kind = metadata.get("co.huggingface.exporters.probability", cfg.probability)
    length = int(backend.describe(text_package)["inputs"][0]["shape"][-1])
    encoded = [_ids(check.tokenizer, cfg, length, label) for label in labels]
    ids, mask = np.stack([e[0] for e in encoded]), np.stack([e[1] for e in encoded])

    def package_scores() -> np.ndarray:
        image = _predict(image_runner, {"image": pixels}, mode)["image_embeds"].reshape(-1)
        texts = np.stack([_predict(text_runner, {"input_ids": ids[i:i + 1], "attention_mask": mask[i:i + 1]}, mode)["text_embeds"]
                          .reshape(-1) for i in range(len(labels))])
        return scale * texts @ image + bias

    ours, package_seconds = _timed(package_scores)
    with torch.no_grad():
        theirs, torch_seconds = _timed(lambda: cfg.zero_shot_logits(model, _program_input(cfg, pixels, image_part),
                                                                     torch.from_numpy(ids), torch.from_numpy(mask)).numpy().reshape(-1))

    def side(scores: np.ndarray, seconds: float) -> dict:
        ranked = sorted(zip(labels, probabilities(scores, kind)), key=lambda item: -item[1])
        return {"label": ranked[0][0], "probabilities": [[label, round(float(p), 4)] for label, p in ranked], "seconds": seconds}

    return {"kind": "zero-shot", "mode": mode, "probability": kind, "photo": _png(pixels[0].transpose(1, 2, 0).astype(np.uint8)),
            "package": side(ours, package_seconds), "pytorch": side(theirs, torch_seconds)}

