"""Try an image model's package on a photo, beside the PyTorch model it came from (issue 29):
a depth map, detections, a segmentation mask, a photo's classes or its zero-shot labels — each the package's answer
and PyTorch's, with the images a page shows side by side (PNG, base64).

The photo is the person's (bytes of a PNG or JPEG) or, without one, the sample validation
uses (gradients and a checkerboard). It is resized to the package's input size, as an app
does before handing Core ML a pixel buffer. PyTorch's side is the model with the same
preprocessing (the family's wrapper), so the two answers differ only by the package. The
package runs in the backend's runner, as Try it's text kinds do; converters/try_it.py routes a
try here by its kind, and the page's panel and the worker's try hand the photo over as bytes.
"""

from __future__ import annotations

import base64
import io
import json
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
BEST_BELOW = 3  # detections shown from each side when none passes the threshold
COLOURS = {"package": (255, 64, 64), "pytorch": (64, 160, 255)}  # boxes on the drawn photo
DRAWN_SIDE = 320  # pixels: the drawn photo's shorter side, at least


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


def _family(model_dir: Path, task: str, package: Path | None = None):
    from .configs import config_class_for
    from .loading import load_hf_config, load_preprocessor
    from .options import ConversionOptions

    hf_config = load_hf_config(model_dir)
    # The image sizes the package was made for (its default one is what the photo is resized to).
    made_with = package and (backend_for_package(package).describe(package).get("metadata") or {}).get("coreml_converter_options")
    options = ConversionOptions.from_strings(image_size=json.loads(made_with).get("image_size") if made_with else None)
    return config_class_for(hf_config.model_type)(hf_config, task, options, load_preprocessor(model_dir))


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

    cfg = _family(model_dir, "depth-estimation", package)
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


# ---------------------------------------------------------------------- segmentation


def _palette(count: int) -> np.ndarray:
    """A distinct colour per class [count, 3] uint8: hues around the wheel, two brightnesses."""
    import colorsys

    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 1.0 if i % 2 else 0.8)]
                     for i in range(max(count, 1))], dtype=np.uint8)


def _mask_png(pixels: np.ndarray, labels: np.ndarray, palette: np.ndarray) -> str:
    """The class map in colour over the photo (half and half), enlarged (nearest) to at least DRAWN_SIDE."""
    image = pixels[0].transpose(1, 2, 0)
    drawn = (0.5 * image + 0.5 * palette[labels]).round().astype(np.uint8)
    scale = max(1, -(-DRAWN_SIDE // min(drawn.shape[:2])))
    return _png(drawn.repeat(scale, axis=0).repeat(scale, axis=1))


def segment(package: Path, model_dir: Path, data: bytes | None, mode: str, top: int = 8) -> dict:
    """The package's class per pixel (its `classLabels`, at the input's size) and PyTorch's — the
    model's logits upsampled bilinearly to the input and argmax'd, as the processor's
    post_process_semantic_segmentation does (the family's wrapper) — each drawn in colour over
    the photo, the classes each side finds (share of pixels), and the share of pixels they agree on."""
    import torch
    from transformers import AutoModelForSemanticSegmentation

    cfg = _family(model_dir, "semantic-segmentation", package)
    height, width = cfg.image_size()
    pixels = photo(data, height, width)
    model = _pretrained(AutoModelForSemanticSegmentation, model_dir)
    labels = [str(model.config.id2label.get(i, i)) for i in range(model.config.num_labels)]
    wrapper = cfg.wrap(model)
    _, runner = _runner(package)
    name = cfg.outputs()[0].name
    ours, package_seconds = _timed(lambda: _predict(runner, {cfg.inputs()[0].name: pixels}, mode)[name])
    with torch.no_grad():
        theirs, torch_seconds = _timed(lambda: wrapper(_program_input(cfg, pixels))[0].numpy())
    ours = np.clip(np.asarray(ours).reshape(height, width).round().astype(np.int64), 0, len(labels) - 1)
    theirs = np.asarray(theirs).reshape(height, width).astype(np.int64)
    palette = _palette(len(labels))

    def side(found: np.ndarray, seconds: float) -> dict:
        counts = np.bincount(found.reshape(-1), minlength=len(labels))
        ranked = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i]][:top]
        classes = [[labels[i], round(float(counts[i]) / found.size, 4), "#%02x%02x%02x" % tuple(palette[i])] for i in ranked]
        return {"mask": _mask_png(pixels, found, palette), "classes": classes, "seconds": seconds}

    return {"kind": "segment", "mode": mode, "photo": _png(pixels[0].transpose(1, 2, 0).astype(np.uint8)),
            "package": side(ours, package_seconds), "pytorch": side(theirs, torch_seconds),
            "agreement": round(float((ours == theirs).mean()), 4)}


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
    """The photo with both sides' boxes and labels, enlarged to at least DRAWN_SIDE pixels a side
    (a small model's 64×64 input) so that the labels can be read."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(pixels[0].transpose(1, 2, 0).astype(np.uint8))
    factor = max(1, -(-DRAWN_SIDE // min(image.size)))
    image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    # PyTorch's boxes first and wider, the package's on them: where both find the same box, both show;
    # the package's label at a box's top, PyTorch's at its bottom.
    for who, width, at_top in (("pytorch", 5, False), ("package", 2, True)):
        for detection in detections.get(who, []):
            box = [value * factor for value in detection["box"]]
            draw.rectangle(box, outline=COLOURS[who], width=width)
            corner = (box[0] + 6, box[1] + 4) if at_top else (box[0] + 6, max(box[1], box[3] - 19))
            draw.text(corner, f"{detection['label']} {detection['score']:.2f}", fill=COLOURS[who], font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _scores_and_boxes(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each query's class probabilities and (cx, cy, w, h) box: a DETR-family package's `scores`
    and `boxes`, or YOLOS's `logits` (softmax, its last "no object" class dropped) and `pred_boxes`."""
    if "scores" in outputs:
        return outputs["scores"], outputs["boxes"]
    logits = np.asarray(outputs["logits"], dtype=np.float64)
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return (shifted / shifted.sum(-1, keepdims=True))[..., :-1], outputs["pred_boxes"]


def detect(package: Path, model_dir: Path, data: bytes | None, mode: str, threshold: float = DETECTION_THRESHOLD) -> dict:
    """The package's detections and PyTorch's above `threshold`, and the photo with both drawn
    (the package's boxes red, PyTorch's blue); when neither side has one, each side's BEST_BELOW
    best, marked below the threshold."""
    import torch
    from transformers import AutoModelForObjectDetection

    cfg = _family(model_dir, "object-detection", package)
    height, width = cfg.image_size()
    pixels = photo(data, height, width)
    wrapper = cfg.wrap(_pretrained(AutoModelForObjectDetection, model_dir))
    _, runner = _runner(package)
    id2label = getattr(cfg.hf_config, "id2label", None) or {}  # YOLOS: the vision family has no labels() of its own
    labels = cfg.labels() if hasattr(cfg, "labels") else [str(id2label.get(i, f"LABEL_{i}")) for i in range(len(id2label))]
    ours, package_seconds = _timed(lambda: _predict(runner, {cfg.inputs()[0].name: pixels}, mode))
    with torch.no_grad():
        theirs, torch_seconds = _timed(lambda: [value.numpy() for value in wrapper(_program_input(cfg, pixels))])
    names = [spec.name for spec in cfg.outputs()]
    answers = {"package": _scores_and_boxes(ours), "pytorch": _scores_and_boxes(dict(zip(names, theirs)))}
    found = {who: _detections(*answer, labels, height, width, threshold) for who, answer in answers.items()}
    below = not any(found.values())  # nothing passed: each side's best few, said to be below the threshold
    if below:
        found = {who: _detections(*answer, labels, height, width, 0.0)[:BEST_BELOW] for who, answer in answers.items()}
    return {"kind": "detect", "mode": mode, "threshold": threshold, "below_threshold": below, "drawn": _drawn(pixels, found),
            "package": {"detections": found["package"], "seconds": package_seconds},
            "pytorch": {"detections": found["pytorch"], "seconds": torch_seconds}}


# ---------------------------------------------------------------------- classes


def classify(package: Path, model_dir: Path, data: bytes | None, mode: str, top: int = 5) -> dict:
    """The photo's top classes and their probabilities, from the package (Core ML's classifier:
    the class and each class's probability) and from PyTorch's model (softmax of its logits)."""
    import torch
    from transformers import AutoModelForImageClassification

    cfg = _family(model_dir, "image-classification", package)
    height, width = cfg.image_size()
    pixels = photo(data, height, width)
    model = _pretrained(AutoModelForImageClassification, model_dir)
    labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    wrapper = cfg.wrap(model)
    _, runner = _runner(package)

    def package_scores() -> dict[str, float]:
        outputs = runner.predict({cfg.inputs()[0].name: pixels}, mode=mode, state=runner.make_state())
        scores = next((value for value in outputs.values() if isinstance(value, dict)), None)
        if scores is None:  # a package that returns the probabilities as a tensor (an .aimodel)
            scores = dict(zip(labels, np.asarray(next(iter(outputs.values())), dtype=np.float64).reshape(-1)))
        return {str(k): float(v) for k, v in scores.items()}

    ours, package_seconds = _timed(package_scores)
    with torch.no_grad():
        theirs, torch_seconds = _timed(lambda: dict(zip(labels, wrapper(_program_input(cfg, pixels))[0].double().numpy().reshape(-1))))

    def side(scores: dict[str, float], seconds: float) -> dict:
        ranked = sorted(scores.items(), key=lambda item: -item[1])
        return {"label": ranked[0][0], "scores": [[k, round(float(v), 4)] for k, v in ranked[:top]], "seconds": seconds}

    return {"kind": "classify-image", "mode": mode, "photo": _png(pixels[0].transpose(1, 2, 0).astype(np.uint8)),
            "package": side(ours, package_seconds), "pytorch": side(theirs, torch_seconds)}


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
    cfg = _family(model_dir, "zero-shot-image-classification", image_package)
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

