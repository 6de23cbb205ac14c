"""The quality bars of compressed (lossy) packages, per compression scheme: what
validation/quality.py judges an int8, palettised or 4-bit package by, in place of the
element-wise thresholds (converters/tolerances.py) a float package meets. They are per
scheme, the same for every family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class QualityBar:
    """What a compressed (lossy) package must still do, judged on real inputs against the
    fp32 PyTorch model (converters/validation/quality.py). Element-wise differences do not
    fit a lossy package; these measure what a user sees: the same next token, nearly the
    same distribution, nearly the same perplexity on real text, the same label."""

    min_top1: float  # next-token (or per-token label) agreement on real text
    max_kl: float  # mean KL(PyTorch || package) per position, nats
    max_perplexity_ratio: float  # package perplexity / PyTorch perplexity on the passage
    min_cosine: float  # embeddings, probabilities and other values
    label_margin: float  # a classifier's label may flip only where PyTorch's top-2 margin is below this
    reason: str = ""


# Per compression scheme ("effective precision"). The perplexity bars are the issue's
# acceptance bars (int8 1.05, lut6 1.10, 4-bit 1.40; lut8 is at least as fine as int8). The
# KL bar is the log of the perplexity bar: the mean KL is the expected extra nats per token,
# which is what log(perplexity ratio) measures on the one passage, so the two bars agree
# and KL (a per-position average over the whole distribution) is the steadier of the two.
# Top-1 floors, from SmolLM2-135M on the passage (data-free coremltools compression):
# int8 per channel reaches 0.96-0.97 at KL 0.005, lut6 (a substitute 1-D k-means) 0.76 at
# KL 0.17, naive int4 per block 32 0.59 at KL 0.62, naive lut4 0.33 at KL 1.45.
# 8-bit floors sit at 0.90 (~8 positions of slack in 121: near-ties flip freely); 6-bit at
# 0.85; 4-bit at 0.70, about where that KL/top-1 relation crosses the 4-bit KL bar (ln 1.4),
# so a 4-bit package that meets its perplexity bar is not failed by top-1 alone. Cosine
# floors (embeddings, probabilities, other values; estimates, not yet measured on a real
# embedder): each bit removed costs ~6 dB of weight SNR, so 0.99 / 0.98 / 0.95 for 8 / 6 / 4
# bits. A classifier's label may flip only where PyTorch's top-2 probability margin is below
# the noise each scheme adds to a probability (0.02 / 0.05 / 0.10).
def _reason(what: str, ratio: float) -> str:
    """The bar in a reader's words: what a perplexity ratio means for the text the model writes."""
    less = round(100 - 100 / ratio)  # perplexity is 1 / the geometric-mean probability of each right word
    return (f"{what}: on real text, the right next word may get at most about {less}% less probability than from "
            f"the original ({ratio:.2f}x its perplexity): generated text stays close to the original's, though it can "
            "take another word where the original hesitated")


COMPRESSED_QUALITY = {
    "int8": QualityBar(0.90, math.log(1.05), 1.05, 0.99, 0.02, _reason("8-bit weights", 1.05)),
    "lut8": QualityBar(0.90, math.log(1.05), 1.05, 0.99, 0.02, _reason("8-bit palettes", 1.05)),
    "lut6": QualityBar(0.85, math.log(1.10), 1.10, 0.98, 0.05, _reason("6-bit palettes", 1.10)),
    "int4": QualityBar(0.70, math.log(1.40), 1.40, 0.95, 0.10, _reason("4-bit weights", 1.40)),
    "lut4": QualityBar(0.70, math.log(1.40), 1.40, 0.95, 0.10, _reason("4-bit palettes", 1.40)),
    "mixed": QualityBar(0.70, math.log(1.40), 1.40, 0.95, 0.10, _reason("4-bit layers with 8-bit embeddings and head", 1.40)),
}
