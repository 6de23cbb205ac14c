"""Quality of compressed (lossy) packages, judged on real inputs.

A compressed package (int8, int4, palettised weights) differs from PyTorch everywhere by
design, so element-wise bounds (max difference, PSNR) do not fit it. Instead, per scheme
(a `QualityBar`, quality_bars.py), in each mode:

- text generation, over a real public-domain passage (passage.txt, ~128 tokens):
  * top1_agreement: share of positions whose most likely next token is PyTorch's;
  * mean_kl_divergence: mean over positions of KL(PyTorch || package) of the next-token
    distributions, in nats (the expected extra nats per token);
  * perplexity_ratio: exp(mean NLL of each actual next token) of the package over PyTorch's;
- every output on the usual input sets (inputs.py: real text through the model's tokenizer):
  label agreement for classifiers (a flip counts where PyTorch's top-2 margin exceeds the
  bar's `label_margin`), top-1 agreement for per-token scores and label maps, cosine
  similarity for probabilities, embeddings and other values, and all values finite.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..configs.base import OutputKind
from .compare import Check, Rows, classifier_reading, cosine_similarity, finite_share, label_agreement
from .inputs import InputSet, _ids, sequence_lengths
from .quality_bars import COMPRESSED_QUALITY, QualityBar

PASSAGE_FILE = Path(__file__).with_name("passage.txt")


def scheme(cfg) -> str | None:
    """The package's compression scheme, or None for a float package."""
    value = getattr(cfg.options, "quantize", "none")
    return None if value in (None, "", "none") else str(value)


def bar_for(cfg) -> QualityBar | None:
    return COMPRESSED_QUALITY.get(scheme(cfg))


def passage() -> str:
    """The evaluation passage (its '#' header names the source)."""
    lines = PASSAGE_FILE.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("#")).strip()


def passage_inputs(cfg, part: str, tokenizer) -> InputSet | None:
    """The passage as the package takes it: padded to the longest sequence length (fixed or
    enumerated shapes), or prefilled at once with an explicit causal mask (stateful)."""
    if tokenizer is None:
        return None
    names = [spec.name for spec in cfg.inputs(part)]
    if cfg.states(part):
        context = cfg.options.sequence_length.maximum
        ids, mask = _ids(tokenizer, cfg, context - 1, passage())
        n = int(mask.sum())
        ids = ids[:n][None].astype(np.int32)
        triangle = np.triu(np.full((n, n), np.float32(-1e4)), 1)[None, None]
        feed = {"inputIds": ids, "causalMask": triangle}
        torch_args = (torch.from_numpy(ids), torch.ones_like(torch.from_numpy(ids)))
        return InputSet(f"passage, {n} tokens", feed, torch_args, n, [feed])
    length = sequence_lengths(cfg)[-1]
    ids, mask = _ids(tokenizer, cfg, length, passage())
    arrays = [ids[None], mask[None]]
    return InputSet(f"passage, {int(mask.sum())} tokens", dict(zip(names, arrays)), tuple(torch.from_numpy(a) for a in arrays), int(mask.sum()))


def token_metrics(reference: np.ndarray, actual: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    """Next-token metrics of package logits `actual` against PyTorch's `reference`, both
    [positions, vocab], for the token ids `ids` [positions] they were computed on."""
    ref = torch.log_softmax(torch.from_numpy(np.asarray(reference, np.float64)), -1)
    act = torch.log_softmax(torch.from_numpy(np.asarray(actual, np.float64)), -1)
    finite = bool(torch.isfinite(act).all())
    top1 = float((ref.argmax(-1) == act.argmax(-1)).double().mean()) if finite else 0.0
    kl = float((ref.exp() * (ref - act)).sum(-1).mean()) if finite else float("inf")
    targets = torch.from_numpy(np.asarray(ids[1:], np.int64))
    rows = torch.arange(len(targets))
    ref_nll = float(-ref[rows, targets].mean())
    act_nll = float(-act[rows, targets].mean()) if finite else float("inf")
    return {
        "top1_agreement": top1,
        "mean_kl_divergence": kl,
        "perplexity_pytorch": float(np.exp(ref_nll)),
        "perplexity_package": float(np.exp(act_nll)),
        "perplexity_ratio": float(np.exp(act_nll - ref_nll)),
    }


def passage_checks(cfg, part: str, module, executor, tokenizer, modes, bar: QualityBar, scheme_name: str, logits: str,
                   before_mode: Callable[[str, str], None] | None = None) -> tuple[list[Check], dict]:
    """The passage's check rows for a text-generation package, and the numbers by mode.
    `before_mode(input name, mode)` hears of each mode's run as it starts."""
    inputs = passage_inputs(cfg, part, tokenizer)
    if inputs is None:
        return [], {}
    n = inputs.valid_positions
    with torch.no_grad():
        outputs = module(*inputs.torch_args)
    names = [spec.name for spec in cfg.outputs(part)]
    reference = dict(zip(names, outputs))[logits].detach().float().numpy()[0, :n]
    ids = np.asarray(inputs.torch_args[0][0, :n])
    rows, numbers = [], {}
    for mode in modes:
        if before_mode:
            before_mode(inputs.name, mode)
        state = executor.make_state()
        got = [executor.predict(feed, mode=mode, state=state) for feed in (inputs.steps or [inputs.package])]
        actual = np.concatenate([np.asarray(o[logits]) for o in got], axis=1)[0, :n]
        metrics = token_metrics(reference, actual, ids)
        numbers[mode] = metrics
        for metric, threshold, higher in (
            ("top1_agreement", bar.min_top1, True),
            ("mean_kl_divergence", bar.max_kl, False),
            ("perplexity_ratio", bar.max_perplexity_ratio, False),
        ):
            value = metrics[metric]
            ok = value >= threshold if higher else value <= threshold
            rows.append(Check(part, f"{inputs.name} ({scheme_name})", logits, mode, metric, value, threshold, bool(ok), higher))
    return rows, numbers


def top1_floor(min_top1: float, positions: int) -> float:
    """The top-1 floor for a share measured on `positions` tokens: the bar less two standard
    errors of a share (sqrt(p(1-p)/n)). The passage (~121 positions) is the quality judge; a
    14-token sentence moves 7 points per token, so its floor is the bar's, widened by the noise a
    sample that small carries (0.70 on 14 tokens: 0.45)."""
    noise = 2 * math.sqrt(min_top1 * (1 - min_top1) / max(positions, 1))
    return round(max(0.0, min_top1 - noise), 4)


def compare(cfg, part, inputs, reference: dict, actual: dict, mode: str, bar: QualityBar) -> list[Check]:
    """A compressed package's rows for one input set: the element-wise rows of
    checks._compare replaced by agreement and similarity against the scheme's bar."""
    rows = Rows(part, inputs.name, mode)
    row = rows.add
    labels = cfg.class_labels()
    kinds = {spec.name: spec.kind for spec in cfg.outputs(part)}
    for name, ref in reference.items():
        kind = kinds[name]
        if kind == OutputKind.CLASS_PROBABILITIES and labels:
            probabilities, got, margin = classifier_reading(ref, actual, labels)
            row("classLabel", "label_agreement", float(margin <= bar.label_margin), 1.0, True)
            row(name, "cosine_similarity", cosine_similarity(probabilities, got), bar.min_cosine, True)
            continue
        got = np.asarray(actual[name])
        if got.shape != ref.shape:
            row(name, "shape_matches", 0.0, 1.0, True)
            continue
        if kind == OutputKind.LABEL_MAP:
            row(name, "label_agreement", label_agreement(ref, got), bar.min_top1, True)
            continue
        row(name, "finite_share", finite_share(got), 1.0, True)
        if kind == OutputKind.CACHE_UPDATE:  # judged by the decoding it feeds (the family's own drive)
            continue
        if kind == OutputKind.TOKEN_SCORES:
            n = inputs.valid_positions
            r = ref[0].reshape(-1, ref.shape[-1])[:n]
            g = got[0].reshape(-1, got.shape[-1])[:n]
            top1 = float(np.mean(r.argmax(-1) == g.argmax(-1))) if np.all(np.isfinite(g)) else 0.0
            row(name, "top1_agreement", top1, top1_floor(bar.min_top1, len(r)), True)
            continue
        row(name, "cosine_similarity", cosine_similarity(ref, got), bar.min_cosine, True)
    return rows
