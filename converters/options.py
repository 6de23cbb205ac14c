"""Conversion options: what a user may choose. `ConversionOptions` is the option table:
each field is one row (`option(...)`: label, one-line help, default, choices or a parser
for free text, CLI flags, and the deployment target a choice needs). The CLI flags
(converters/__main__.py), JobSpec's options (worker/spec.py) and the form's option
fields (ui/form.py, app.py) are all built from it: a new option is one field here plus
the code that uses it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

from .formats import DEFAULT as DEFAULT_FORMAT, FORMATS, format_of
from .errors import UserInputError

# How far a package may differ from PyTorch: a factor on the architecture's max-difference
# thresholds (and the matching change of the PSNR floor). Keys: the tolerance option's choices.
TOLERANCES = {"strict": 0.25, "default": 1.0, "loose": 4.0}
DEFAULT_SEQUENCE_LENGTH = 128  # a package without a KV cache: the tokens of one call
# A stateful package's context unless chosen: what a chat app needs (Apple's stateful Llama
# recipe uses 2048), never more than the model's own maximum (max_position_embeddings).
DEFAULT_CONTEXT = 2048


@dataclass(frozen=True)
class SequenceLength:
    """Fixed (one size), enumerated (several sizes) or a range (min..max) of tokens; or
    "auto" (not chosen), which the model's config resolves (`for_model`): 128 tokens per call,
    and with a stateful KV cache a context of min(2048, the model's maximum). Until then an
    auto length reads as 128."""

    sizes: tuple[int, ...] = (DEFAULT_SEQUENCE_LENGTH,)
    is_range: bool = False
    auto: bool = False

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
        if self.auto:
            return "auto"
        if self.is_range:
            return f"{self.sizes[0]}-{self.sizes[1]}"
        return ",".join(str(s) for s in self.sizes)

    def for_model(self, stateful: bool, max_positions: int | None) -> "SequenceLength":
        """The length an auto one stands for with this model (a chosen one as it is): with a
        stateful KV cache min(2048, the model's maximum), else min(128, that maximum)."""
        if not self.auto:
            return self
        default = DEFAULT_CONTEXT if stateful else DEFAULT_SEQUENCE_LENGTH
        if isinstance(max_positions, int) and max_positions > 0:
            default = min(default, max_positions)
        return SequenceLength((default,))

    @classmethod
    def parse(cls, text: str | int | None) -> "SequenceLength":
        if text is None or str(text).strip().lower() in ("", "auto"):
            return cls(auto=True)
        if isinstance(text, int):
            text = str(text)
        value = str(text).replace(" ", "")
        help_text = (
            "Use one number (128), a comma-separated list (64,128,256), a range (1-512) or auto."
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


MAX_IMAGE_SIDE = 2048  # pixels a side: beyond it a vision package's activations outgrow an iPhone's memory
MAX_IMAGE_SIZES = 8  # sizes in one package: each is converted (and validated) on its own for most models


@dataclass(frozen=True)
class ImageSizes:
    """The square image sizes (pixels a side) a vision package takes: one, several (a list), or
    "auto" (not chosen: the model's image processor's size, which the model's config reads)."""

    sizes: tuple[int, ...] = ()  # () when auto

    @property
    def auto(self) -> bool:
        return not self.sizes

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.sizes) if self.sizes else "auto"

    @classmethod
    def parse(cls, text: str | int | None) -> "ImageSizes":
        value = "" if text is None else str(text).replace(" ", "").lower().rstrip(",")
        if value in ("", "auto"):
            return cls()
        help_text = "Type one size in pixels (384), a comma-separated list (224,384) or auto."
        if not re.fullmatch(r"\d+(,\d+)*", value):
            raise UserInputError(f"Image size '{text}' is not understood. {help_text}")
        sizes = [int(v) for v in value.split(",")]
        repeated = sorted({s for s in sizes if sizes.count(s) > 1})
        if repeated:
            raise UserInputError(f"Image size {repeated[0]} is listed twice in '{text}'. "
                                 f"Type each size once, e.g. {','.join(str(s) for s in sorted(set(sizes)))}.")
        if len(sizes) > MAX_IMAGE_SIZES:
            raise UserInputError(f"Image size '{text}' lists {len(sizes)} sizes: at most {MAX_IMAGE_SIZES} (a model whose "
                                 "position embeddings follow the size is converted once per size). Type fewer sizes.")
        if min(sizes) < 1 or max(sizes) > MAX_IMAGE_SIDE:
            raise UserInputError(f"Image size '{text}': each size must be between 1 and {MAX_IMAGE_SIDE} pixels. {help_text}")
        return cls(tuple(sorted(sizes)))


# ---------------------------------------------------------------------- the option table


@dataclass(frozen=True)
class Choice:
    """One accepted value of an option."""

    value: str
    label: str = ""  # what the form shows; the value itself when empty
    aliases: tuple[str, ...] = ()  # other spellings read from text ("fp16"); case never matters
    needs: tuple[str, ...] = ()  # the oldest deployment target it runs on, one per platform

    @property
    def text(self) -> str:
        return self.label or self.value


@dataclass(frozen=True)
class Option:
    """One row of the option table."""

    name: str  # the ConversionOptions field; the key in JobSpec, reports and the form
    label: str  # the form's label
    help: str  # one line: the form's info text and the CLI flag's help
    default: str  # as text, read like any value given
    choices: tuple[Choice, ...] = ()  # the accepted values; none: free text read by `parse`
    parse: Callable[[str], Any] | None = None
    flags: tuple[str, ...] = ()  # CLI flags; none: --<name-with-dashes>
    term: str = ""  # the option in messages ("Unknown precision 'fp8'"); none: the label

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(choice.value for choice in self.choices)

    @property
    def cli_flags(self) -> tuple[str, ...]:
        return self.flags or (f"--{self.name.replace('_', '-')}",)

    @property
    def noun(self) -> str:
        if self.term:
            return self.term
        acronym = len(self.label) > 1 and self.label[1].isupper()  # "KV cache" stays as it is
        return self.label if acronym else self.label[:1].lower() + self.label[1:]

    def read(self, text: Any) -> Any:
        """The value loosely written `text` stands for; None or blank: the default."""
        if text is None or not str(text).strip():
            text = self.default
        if self.parse is not None:
            return self.parse(text)
        given = str(text).strip()
        for choice in self.choices:
            if given.lower() in (choice.value.lower(), *(alias.lower() for alias in choice.aliases)):
                return choice.value
        raise UserInputError(f"Unknown {self.noun} '{given}'. Choose one of: {', '.join(self.values)}.")

    def check(self, value: Any) -> None:
        """Refuse a value that is not exactly one of the choices (values built in code)."""
        if self.choices and value not in self.values:
            raise UserInputError(f"Unknown {self.noun} '{value}'. Choose one of: {', '.join(self.values)}.")

    def needed_targets(self, value: Any) -> tuple[str, ...]:
        """The deployment targets `value` needs (one per platform), or () if any will do."""
        return next((choice.needs for choice in self.choices if choice.value == value), ())


_ROW = "option"  # the metadata key of a ConversionOptions field's row


def option(*, label: str, help: str, default: str, choices=(), parse=None, flags=(), term: str = "") -> Any:
    """A ConversionOptions field holding its row of the option table."""
    row = Option("", label, help, default, tuple(choices), parse, tuple(flags), term)
    return field(default=row.read(default), metadata={_ROW: row})


def meets(target: str, needs: tuple[str, ...]) -> bool:
    """Whether deployment target `target` is at least what `needs` asks on its platform:
    meets("iOS18", ("iOS18", "macOS15")) is True, meets("iOS17", ...) and meets("macOS14", ...) are not."""
    if not needs:
        return True
    platform = target.rstrip("0123456789")
    for need in needs:
        if need.rstrip("0123456789") == platform:
            return int(target[len(platform):]) >= int(need[len(platform):])
    return False


_STATES = ("iOS18", "macOS15")  # Core ML states (stateful models) arrive with iOS 18 / macOS 15
# coremltools' compressed-weight ops: per-channel int8 and per-tensor LUTs (any bits) from iOS 16 /
# macOS 13; int4, per-block and grouped-channel ones from iOS 18 / macOS 15 (converters/backends/coreml/compress.py).
_COMPRESSED = ("iOS16", "macOS13")
_COMPRESSED_4BIT = ("iOS18", "macOS15")


def _positive_int(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = str(text).strip()
        if not re.fullmatch(r"\d+", value) or int(value) < 1:
            raise UserInputError(f"The {what} '{text}' must be a whole number of at least 1.")
        return int(value)

    return parse


def _group_size(text: str) -> int | None:
    """A whole number of output channels per lookup table, or "auto" (None: chosen per scheme)."""
    if str(text).strip().lower() == "auto":
        return None
    return _positive_int("group size")(text)


@dataclass(frozen=True)
class ConversionOptions:
    """What a user may choose: the option table, one field (one row) per option."""

    # Which packages to make: the formats of formats.py, each made by its backends (backends/).
    format: str = option(
        label="Output format", default=DEFAULT_FORMAT, flags=("--format",),
        help="Core ML (.mlpackage) is what iOS and macOS apps load today; Core AI (.aimodel) is Apple's new "
             "format for iOS/macOS 27 (beta); both makes the two.",
        choices=[Choice(each.name, each.choice, aliases=each.aliases) for each in FORMATS.values()],
    )
    precision: str = option(
        label="Precision", default="float16",
        help="float16 is what iPhones and Macs run fastest; float32 keeps every digit but stays off the Neural Engine.",
        choices=[
            Choice("float16", "float16: half the size, runs on the Neural Engine (recommended)", aliases=("fp16",)),
            Choice("float32", "float32: exact, CPU and GPU only", aliases=("fp32",)),
        ],
    )
    sequence_length: SequenceLength = option(
        label="Sequence length", default="auto", parse=SequenceLength.parse,
        help="Tokens per input: 128, a list (64,128,256), a range (1-512) or auto (128; a stateful cache's context: 2048 or the model's maximum).",
    )
    # Vision: the square image sizes a package takes (converters/configs/image_sizes.py decides how).
    image_size: ImageSizes = option(
        label="Image size", term="image size", default="auto", parse=ImageSizes.parse,
        help="Vision: the side in pixels of the square photo the package takes: auto (the model's own), "
             "384, or a list (224,384) the app picks from.",
    )
    # ML Programs need iOS 15 / macOS 12 at least; iOS 18 / macOS 15 add states and the fused attention op.
    minimum_deployment_target: str = option(
        label="Minimum deployment target", default="iOS17", flags=("--minimum-target", "--minimum-deployment-target"),
        help="The oldest iOS/macOS the package must run on. iOS18/macOS15 add stateful KV caches and fused attention.",
        choices=[Choice(target) for target in (
            "iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")],
    )
    naming: str = option(
        label="Naming", default="swift-transformers",
        help="Names and file layout. camelCase (what swift-transformers reads) applies to text generation; "
             "other tasks keep input_ids.",
        choices=[
            Choice("swift-transformers", "swift-transformers (inputIds, attentionMask, logits: what Swift apps load)"),
            Choice("exporters", "exporters (input_ids, attention_mask; coreml/<task>/ folders)"),
        ],
    )
    # stateful: keyCache/valueCache Core ML states (checked with the model in configs/text.py)
    kv_cache: str = option(
        label="KV cache", default="none",
        help="Text generation: stateful is swift-transformers' fastest path (iOS18+); the sequence length is the context (auto: 2048 tokens).",
        choices=[
            Choice("none", "None: each call reads the whole sequence (iOS 17+)"),
            Choice("stateful", "Stateful: keyCache/valueCache states, fastest generation, on the GPU (iOS 18+)", needs=_STATES),
        ],
    )
    # Which of Apple's engines a Core AI text generator's bundle is for (converters/backends/coreai/bundle.py,
    # static_bundle.py): the macOS engine (one program, caches grown) or the iOS StaticShapeEngine (fixed shapes).
    llm_bundle: str = option(
        label="Core AI LLM bundle", term="Core AI LLM bundle", default="macos",
        help="Core AI text generation: macos grows its cache as the text grows (Mac GPU); ios is Apple's fixed-shape "
             "bundle for the iPhone's Neural Engine.",
        choices=[
            Choice("macos", "macOS: one program, its cache grown as the text grows (GPU)"),
            Choice("ios", "iOS: fixed shapes for the Neural Engine (float16, uncompressed)"),
        ],
    )
    # Weight compression after conversion (data-free, coremltools.optimize.coreml): converters/backends/coreml/compress.py
    quantize: str = option(
        label="Weight compression", term="weight compression", default="none",
        help="Smaller packages with compressed weights: int8 or lut8/lut6 keep quality; int4, lut4 and mixed are 3-4x smaller.",
        choices=[
            Choice("none", "None: float weights"),
            Choice("int8", "int8: 8-bit per channel, about half the size (iOS 16+)", needs=_COMPRESSED),
            Choice("lut8", "lut8: 8-bit palettized (iOS 16+; grouped channels from iOS 18)", needs=_COMPRESSED),
            Choice("lut6", "lut6: 6-bit palettized (iOS 16+; grouped channels from iOS 18)", needs=_COMPRESSED),
            Choice("int4", "int4: 4-bit per block, best on the GPU (iOS 18+)", needs=_COMPRESSED_4BIT),
            Choice("lut4", "lut4: 4-bit palettized (iOS 16+; grouped channels from iOS 18)", needs=_COMPRESSED),
            Choice("mixed", "mixed: 4-bit layers, 8-bit embeddings and output head (iOS 18+)", needs=_COMPRESSED_4BIT),
        ],
    )
    block_size: int = option(
        label="Block size", term="block size", default="32", parse=_positive_int("block size"),
        help="int4 and mixed: weights per scale along the input channels (smaller keeps more quality, costs more size).",
    )
    # auto (None): compress.lut_group_size picks it per scheme
    group_size: int | None = option(
        label="Group size", term="group size", default="auto", parse=_group_size,
        help="lut8/lut6/lut4 on iOS18+: output channels per lookup table; auto: 16, and 1 for lut4. "
             "Below iOS18: one table per weight.",
    )
    tolerance: str = option(
        label="Validation tolerance", term="tolerance", default="default",
        help="How close the package must stay to PyTorch, relative to the architecture's thresholds.",
        choices=[
            Choice("strict", "Strict (¼ of the difference)"),
            Choice("default", "The architecture's (recommended)"),
            Choice("loose", "Loose (4× the difference)"),
        ],
    )

    def __post_init__(self):
        for name, row in OPTIONS.items():
            row.check(getattr(self, name))

    def for_model(self, max_positions: int | None) -> "ConversionOptions":
        """These options with an auto sequence length resolved for a model whose maximum is
        `max_positions` (SequenceLength.for_model): what a conversion of it uses and reports."""
        return replace(self, sequence_length=self.sequence_length.for_model(self.kv_cache == "stateful", max_positions))

    @property
    def formats(self) -> tuple[str, ...]:
        """The backends to run, Core ML first (converters/backends/)."""
        return format_of(self.format).makes

    @property
    def deployment_target_applies(self) -> bool:
        """Whether the minimum deployment target applies: it is a Core ML package's (an .aimodel
        runs on iOS/macOS 27 alone)."""
        return any(format_of(name).deployment_target for name in self.formats)

    def to_dict(self) -> dict[str, str]:
        """Every option as text: what JobSpec, reports and package metadata store."""
        return {name: row.default if getattr(self, name) is None else str(getattr(self, name))  # None: "auto"
                for name, row in OPTIONS.items()}

    @classmethod
    def from_strings(cls, **text: Any) -> "ConversionOptions":
        """Options from loosely written text by option name ('fp16', 'ios18', '64,128' ...);
        a missing, None or blank value means the default."""
        unknown = sorted(set(text) - set(OPTIONS))
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**{name: row.read(text.get(name)) for name, row in OPTIONS.items()})

    @classmethod
    def from_dict(cls, data: dict, *, strict: bool = False) -> "ConversionOptions":
        """Options from stored JSON or a request. Other keys are ignored (what older versions
        wrote), or refused with a message when `strict` (what a client sends)."""
        unknown = sorted(set(data) - set(OPTIONS))
        if strict and unknown:
            raise UserInputError(f"Unknown option(s): {', '.join(unknown)}. Known options: {', '.join(OPTIONS)}.")
        return cls.from_strings(**{name: data.get(name) for name in OPTIONS})


# The table by option name, in the fields' order.
OPTIONS: dict[str, Option] = {f.name: replace(f.metadata[_ROW], name=f.name) for f in fields(ConversionOptions)}

PRECISIONS = OPTIONS["precision"].values
NAMINGS = OPTIONS["naming"].values
FORMATS = OPTIONS["format"].values
KV_CACHES = OPTIONS["kv_cache"].values
QUANTIZATIONS = OPTIONS["quantize"].values
DEPLOYMENT_TARGETS = OPTIONS["minimum_deployment_target"].values
