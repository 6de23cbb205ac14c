"""Conversion options: what a user may choose, their defaults, and parsing from text
(CLI flags and the web form) with messages that say what is accepted."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from .errors import UserInputError

PRECISIONS = ("float16", "float32")
NAMINGS = ("swift-transformers", "exporters")
KV_CACHES = ("none", "stateful")  # stateful: keyCache/valueCache Core ML states (iOS 18+)
# How far a package may differ from PyTorch: a factor on the architecture's max-difference
# thresholds (and the matching change of the PSNR floor).
TOLERANCES = {"strict": 0.25, "default": 1.0, "loose": 4.0}
# Core ML ML Programs need iOS 15 / macOS 12 at least; iOS 18 / macOS 15 adds states and
# the fused attention op.
DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")
DEFAULT_SEQUENCE_LENGTH = 128


@dataclass(frozen=True)
class SequenceLength:
    """Fixed (one size), enumerated (several sizes) or a range (min..max) of tokens."""

    sizes: tuple[int, ...] = (DEFAULT_SEQUENCE_LENGTH,)
    is_range: bool = False

    @property
    def kind(self) -> str:
        if self.is_range:
            return "range"
        return "fixed" if len(self.sizes) == 1 else "enumerated"

    @property
    def maximum(self) -> int:
        return max(self.sizes)

    @property
    def minimum(self) -> int:
        return min(self.sizes)

    def __str__(self) -> str:
        if self.is_range:
            return f"{self.sizes[0]}-{self.sizes[1]}"
        return ",".join(str(s) for s in self.sizes)

    @classmethod
    def parse(cls, text: str | int | None) -> "SequenceLength":
        if text is None or text == "":
            return cls()
        if isinstance(text, int):
            text = str(text)
        value = str(text).replace(" ", "")
        help_text = (
            "Use one number (128), a comma-separated list (64,128,256) or a range (1-512)."
        )
        if re.fullmatch(r"\d+", value):
            sizes: tuple[int, ...] = (int(value),)
            is_range = False
        elif re.fullmatch(r"\d+(,\d+)+", value):
            sizes = tuple(sorted({int(v) for v in value.split(",")}))
            is_range = False
        elif re.fullmatch(r"\d+(-|\.\.)\d+", value):
            low, high = (int(v) for v in re.split(r"-|\.\.", value))
            if low >= high:
                raise UserInputError(f"Sequence length range '{text}' must go from a smaller to a larger number. {help_text}")
            sizes, is_range = (low, high), True
        else:
            raise UserInputError(f"Sequence length '{text}' is not understood. {help_text}")
        if min(sizes) < 1:
            raise UserInputError(f"Sequence length '{text}' must be at least 1. {help_text}")
        if not is_range and len(sizes) > 128:
            raise UserInputError("Core ML accepts at most 128 enumerated shapes; use a range instead.")
        return cls(sizes, is_range)


@dataclass(frozen=True)
class ConversionOptions:
    precision: str = "float16"
    sequence_length: SequenceLength = field(default_factory=SequenceLength)
    minimum_deployment_target: str = "iOS17"
    naming: str = "swift-transformers"
    kv_cache: str = "none"
    tolerance: str = "default"

    def __post_init__(self):
        _check_choice("tolerance", self.tolerance, tuple(TOLERANCES))
        _check_choice("KV cache", self.kv_cache, KV_CACHES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("naming", self.naming, NAMINGS)
        _check_choice("minimum deployment target", self.minimum_deployment_target, DEPLOYMENT_TARGETS)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sequence_length"] = str(self.sequence_length)
        return data

    @classmethod
    def from_strings(
        cls,
        precision: str | None = None,
        sequence_length: str | int | None = None,
        minimum_deployment_target: str | None = None,
        naming: str | None = None,
        kv_cache: str | None = None,
        tolerance: str | None = None,
    ) -> "ConversionOptions":
        """Build options from loosely written text: 'fp16', 'ios18', '64,128' ..."""
        kwargs = {"sequence_length": SequenceLength.parse(sequence_length)}
        if kv_cache:
            kwargs["kv_cache"] = kv_cache.lower()
        if tolerance:
            kwargs["tolerance"] = tolerance.lower()
        if precision:
            kwargs["precision"] = {"fp16": "float16", "fp32": "float32"}.get(precision.lower(), precision.lower())
        if minimum_deployment_target:
            kwargs["minimum_deployment_target"] = _canonical_target(minimum_deployment_target)
        if naming:
            kwargs["naming"] = naming.lower()
        return cls(**kwargs)

    @classmethod
    def from_dict(cls, data: dict) -> "ConversionOptions":
        return cls.from_strings(
            precision=data.get("precision"),
            sequence_length=data.get("sequence_length"),
            minimum_deployment_target=data.get("minimum_deployment_target"),
            naming=data.get("naming"),
            kv_cache=data.get("kv_cache"),
            tolerance=data.get("tolerance"),
        )


def _canonical_target(text: str) -> str:
    for target in DEPLOYMENT_TARGETS:
        if target.lower() == text.strip().lower():
            return target
    return text


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserInputError(f"Unknown {what} '{value}'. Choose one of: {', '.join(choices)}.")
