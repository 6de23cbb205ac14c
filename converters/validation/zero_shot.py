"""The zero-shot check of an image–text model's two packages: a few labels scored against an
image the way an app scores them — the image package's embedding against each label's text
package embedding, times the model's logit scale (plus its bias) — must rank the labels as
PyTorch's own model ranks them (its `logits_per_image`, computed with its own masks, not our
wrappers), and give the same probabilities (softmax for CLIP, sigmoid for SigLIP, as
transformers' zero-shot pipeline turns them into probabilities).

Each tower is also checked alone against PyTorch by the ordinary checks (cosine per row);
this one proves the two fit together and that the wrappers compute what the model does.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UnsupportedOpError
from ..report import Check
from .compare import Rows, max_abs_diff, ranking_agreement
from .inputs import _ids, image_inputs

LABELS = ["a dog", "a fish", "a city near the river", "a phone", "an image"]  # words the test models' tiny vocabulary has too
WHAT = f"zero-shot, {len(LABELS)} labels"


def applies(cfg, parts) -> bool:
    """Both towers of an image–text model are among the packages."""
    wanted = getattr(cfg, "zero_shot_parts", None)
    return bool(wanted) and set(wanted) <= set(parts)


def checks(cfg, model, packages: list[tuple[str, object, object]], tokenizer, modes, precision_of) -> tuple[list[Check], list[str]]:
    """Rows per mode (the image and text packages of one format together), and notes.
    `packages`: [(part, path, backend)]; `precision_of(mode)`: the tolerance key of a mode."""
    if tokenizer is None:
        return [], ["zero-shot ranking not checked: without a tokenizer the labels' texts cannot be encoded"]
    image_part, text_part = cfg.zero_shot_parts
    tol = cfg.validation_tolerances()
    image = image_inputs(cfg, image_part)
    length = cfg.options.sequence_length.maximum
    encoded = [_ids(tokenizer, cfg, length, label) for label in LABELS]
    ids = np.stack([e[0] for e in encoded])
    mask = np.stack([e[1] for e in encoded])
    with torch.no_grad():
        reference = cfg.zero_shot_logits(model, image.torch_args[0], torch.from_numpy(ids), torch.from_numpy(mask))
    reference = reference.detach().float().numpy().reshape(-1)
    expected = probabilities(reference, cfg.probability)
    rows: list[Check] = []
    by_format: dict[str, tuple[object, dict[str, object]]] = {}
    for part, path, backend in packages:
        by_format.setdefault(backend.name, (backend, {}))[1][part] = path
    for backend, paths in by_format.values():
        if image_part not in paths or text_part not in paths:
            continue
        try:
            image_runner, text_runner = backend.runner(paths[image_part]), backend.runner(paths[text_part])
        except UnsupportedOpError:  # the package's own rows already say it cannot be run
            continue
        try:
            for mode in getattr(image_runner, "modes", None) or modes:
                image_embeds = _run(image_runner, image.package, mode)["image_embeds"].reshape(1, -1)
                text_embeds = np.concatenate([
                    _run(text_runner, {"input_ids": ids[i:i + 1], "attention_mask": mask[i:i + 1]}, mode)["text_embeds"].reshape(1, -1)
                    for i in range(len(LABELS))])
                scores = cfg.scores["logit_scale"] * (image_embeds @ text_embeds.T).reshape(-1) + cfg.scores.get("logit_bias", 0.0)
                atol = tol.atol[precision_of(mode)]
                found = Rows(f"{image_part} + {text_part}", WHAT, mode)
                scale = max(1.0, float(np.abs(reference).max()))
                found.add("label_scores", "ranking_agreement", ranking_agreement(reference, scores, atol * scale), 1.0, True)
                found.add("label_probabilities", "max_abs_diff", max_abs_diff(expected, probabilities(scores, cfg.probability)), atol, False)
                rows += found
        finally:
            for runner in (image_runner, text_runner):
                getattr(runner, "close", lambda: None)()
    return rows, []


def _run(runner, feed: dict, mode: str) -> dict:
    return {name: np.asarray(value) for name, value in runner.predict(feed, mode=mode, state=runner.make_state()).items()}


def probabilities(scores: np.ndarray, kind: str) -> np.ndarray:
    """Label probabilities from scores, as the model's zero-shot pipeline computes them."""
    scores = scores.astype(np.float64)
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-scores))
    shifted = np.exp(scores - scores.max())
    return shifted / shifted.sum()
