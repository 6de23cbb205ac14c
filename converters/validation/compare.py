"""Comparing a package's outputs with PyTorch's: the numbers every check row reports.

Each check is a row (report.Check): which output, which mode, which metric, its value, the
threshold and whether it passed. Thresholds come from the architecture's config (its `Tolerances`, converters/tolerances.py).
"""

from __future__ import annotations

import numpy as np

from ..report import Check


def max_abs_diff(reference: np.ndarray, actual: np.ndarray) -> float:
    diff = np.abs(reference.astype(np.float64) - actual.astype(np.float64))
    return float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0


def psnr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    """Peak signal-to-noise ratio of `actual` against `reference`, in dB (as Apple's ml-ane-transformers)."""
    reference = reference.astype(np.float64)
    noise = np.mean((reference - actual.astype(np.float64)) ** 2)
    if not np.isfinite(noise):
        return -np.inf
    peak = np.max(np.abs(reference)) if reference.size else 0.0
    if noise == 0:
        return np.inf
    if peak == 0:
        return -np.inf
    return float(20 * np.log10(peak) - 10 * np.log10(noise))


def cosine_similarity(reference: np.ndarray, actual: np.ndarray) -> float:
    a = reference.astype(np.float64).ravel()
    b = actual.astype(np.float64).ravel()
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("nan")
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm else float(np.array_equal(a, b))


def top1_agreement(reference: np.ndarray, actual: np.ndarray, atol: float, positions: int | None = None) -> float:
    """Share of positions whose top-1 index agrees. A disagreement counts only where the
    reference's margin between the two candidates exceeds `atol` (a near-tie may flip
    within the tolerance without being an error)."""
    ref = reference.reshape(-1, reference.shape[-1]).astype(np.float64)
    act = actual.reshape(-1, actual.shape[-1]).astype(np.float64)
    if positions is not None:
        ref, act = ref[:positions], act[:positions]
    if not np.all(np.isfinite(act)):
        return 0.0
    ref_top = ref.argmax(-1)
    act_top = act.argmax(-1)
    rows = np.arange(len(ref))
    margin = ref[rows, ref_top] - ref[rows, act_top]
    agree = (ref_top == act_top) | (margin <= atol)
    return float(agree.mean()) if len(agree) else 1.0


def relative_error(reference: np.ndarray, actual: np.ndarray) -> float:
    """Mean |difference| as a share of the mean |reference| (a depth map's error, whatever its unit)."""
    ref = reference.astype(np.float64)
    diff = np.abs(ref - actual.astype(np.float64))
    if not np.all(np.isfinite(diff)):
        return float("inf")
    scale = float(np.mean(np.abs(ref))) if ref.size else 0.0
    if scale == 0:
        return 0.0 if not diff.size or float(diff.max()) == 0 else float("inf")
    return float(np.mean(diff) / scale)


def ranking_agreement(reference: np.ndarray, actual: np.ndarray, atol: float) -> float:
    """Share of pairs of labels that `actual`'s scores order as `reference`'s do; a pair whose
    reference scores are within `atol` of each other (a near-tie) counts as agreeing."""
    ref, act = reference.astype(np.float64).ravel(), actual.astype(np.float64).ravel()
    if not np.all(np.isfinite(act)):
        return 0.0
    pairs = [(i, j) for i in range(len(ref)) for j in range(i + 1, len(ref))]
    agree = [abs(ref[i] - ref[j]) <= atol or np.sign(ref[i] - ref[j]) == np.sign(act[i] - act[j]) for i, j in pairs]
    return float(np.mean(agree)) if agree else 1.0


def min_box_iou(reference: np.ndarray, actual: np.ndarray) -> float:
    """The smallest intersection-over-union between each reference box and the package's box
    for the same detection; boxes are (center x, center y, width, height)."""
    def corners(boxes):
        boxes = boxes.reshape(-1, 4).astype(np.float64)
        half = boxes[:, 2:] / 2
        return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)

    ref, act = corners(reference), corners(actual)
    if not np.all(np.isfinite(act)):
        return 0.0
    if not len(ref):
        return 1.0
    low, high = np.maximum(ref[:, :2], act[:, :2]), np.minimum(ref[:, 2:], act[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    union = np.prod(ref[:, 2:] - ref[:, :2], axis=1) + np.prod(act[:, 2:] - act[:, :2], axis=1) - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 1.0)
    return float(iou.min())


def label_agreement(reference: np.ndarray, actual: np.ndarray) -> float:
    """Share of equal labels (per-pixel class maps)."""
    return float(np.mean(reference == actual)) if reference.size else 1.0


def finite_share(actual: np.ndarray) -> float:
    return float(np.mean(np.isfinite(actual.astype(np.float64)))) if actual.size else 1.0


class Rows(list):
    """The check rows of one package, input set and mode; `add` judges a value against its
    threshold (NaN compares false either way, so a NaN metric always fails)."""

    def __init__(self, package: str, inputs: str, mode: str):
        super().__init__()
        self.package, self.inputs, self.mode = package, inputs, mode

    def add(self, output: str, metric: str, value: float, threshold: float, higher_is_better: bool) -> None:
        ok = value >= threshold if higher_is_better else value <= threshold
        self.append(Check(self.package, self.inputs, output, self.mode, metric, value, threshold, bool(ok), higher_is_better))


def classifier_reading(reference: np.ndarray, actual: dict, labels: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """A classifier package's probabilities as a vector in label order (Core ML gives a
    {label: p} dictionary), PyTorch's, and PyTorch's margin between its own label and the
    package's (inf when the package names no known label)."""
    value = actual["probabilities"]
    if isinstance(value, dict):
        got = np.array([float(value[label]) for label in labels], dtype=np.float64)
    else:
        got = np.asarray(value, dtype=np.float64).reshape(-1)
    probabilities = reference.reshape(-1)
    if "classLabel" not in actual:  # a tensor-only package (an .aimodel): its label is its most probable one
        predicted = int(np.argmax(got)) if got.size == len(labels) else -1
    else:
        predicted = labels.index(str(actual["classLabel"])) if str(actual.get("classLabel")) in labels else -1
    margin = probabilities.max() - probabilities[predicted] if predicted >= 0 else np.inf
    return probabilities, got, float(margin)
