"""Each output format as people read it: the choice the option table offers, and what a
conversion's name, a default repo name, the Hub's tags, the page's Try it note, validation
choices and program table, a saved report's rows and the device fit (what its LLM package holds)
say of it.

Beside backends/ (the machinery that makes each format's packages), the one module that names
a format: a new format adds its entry here, with its package in backends/ and its line in
`BACKENDS`. It imports nothing, and stands on the ground floor: the option table, the report,
the page and the card (none of which may load torch) read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Mode:
    """A way validation or Try it runs a package (a saved row's `mode`), in people's words."""

    short: str  # in a continuation run's label: "Core ML (fp16)"
    label: str  # in the report's tables: "fp16 (GPU / Neural Engine emulation)"
    words: str  # in progress lines and Try it's answer: "fp16 emulation"


@dataclass(frozen=True)
class Format:
    name: str  # the `format` option's value
    choice: str  # the form's words for the choice
    aliases: tuple[str, ...] = ()
    makes: tuple[str, ...] = ()  # the backends it runs (converters/backends/BACKENDS), in order
    label: str = ""  # "Core ML"
    short: str = ""  # what a conversion's name says of it ("Core AI"); "" for the default format
    repo_suffix: str = ""  # how a default repo name ends: "<model>-<variant>-coreml"
    hub_tag: str = ""  # the Hub tag of a repo holding its packages
    package_suffix: str = ""  # its packages' file name ending
    deployment_target: bool = False  # whether the minimum deployment target applies to its packages
    runs_on: str = ""  # else the systems its packages run on, in the form's words
    try_runs: str = ""  # the page's note: what runs a try of its package
    swift_transformers: bool = True  # whether a try drives its text generator as swift-transformers does
    modes: dict[str, Mode] = field(default_factory=dict)  # the modes its runners and devices report
    validated_on: str = ""  # the form's words for a validation on any worker
    on_a_mac: str = ""  # the form's words for what a Mac runner adds ("": nothing: the choice is not offered)
    program_facts: tuple[str, ...] = ("fused_attention", "stateful", "weight_bits")  # what its programs' table says
    # Its text-generation package, for a model whose family keeps a KV cache:
    llm_cache: bool = False  # always holds one, grown up to its context (else only a stateful cache asked for)
    llm_context: int = 0  # that context when the model's config names no maximum
    llm_prompt_call: int = 0  # the most prompt tokens its runtime sends in one call (0: the whole prompt)


EMULATION = {
    "fp32": Mode("fp32", "fp32, exact", "exact fp32"),
    "fp16": Mode("fp16", "fp16 (GPU / Neural Engine emulation)", "fp16 emulation"),
}
_UNITS = {"CPU_ONLY": "CPU only", "CPU_AND_GPU": "CPU and GPU", "CPU_AND_NE": "CPU and Neural Engine", "ALL": "all units"}

CORE_ML = Format(
    "coreml", "Core ML (.mlpackage): apps on iOS 15+ / macOS 12+ (recommended)", aliases=("mlpackage",),
    makes=("coreml",), label="Core ML", repo_suffix="coreml", hub_tag="coreml", package_suffix=".mlpackage",
    deployment_target=True,
    try_runs="A worker runs the pushed package in the reference executor (float16 packages in float16 emulation)",
    validated_on="Any worker: reference executor, exact fp32 and fp16 device emulation",
    on_a_mac="A Mac runner: also real Core ML on CPU, GPU and Neural Engine",
    modes={**EMULATION, **{f"coreml-{unit}": Mode(unit, f"Core ML, {words}", f"Core ML, {unit}") for unit, words in _UNITS.items()}},
)
CORE_AI = Format(
    "coreai", "Core AI (.aimodel): iOS/macOS 27, beta", aliases=("aimodel", "core-ai"),
    makes=("coreai",), label="Core AI", short="Core AI", repo_suffix="coreai", hub_tag="coreai", package_suffix=".aimodel",
    runs_on="iOS 27 and macOS 27 (Core AI is in beta)",
    try_runs="A worker runs the pushed .aimodel in Apple's Core AI runtime, on this server's CPU",
    swift_transformers=False,  # swift-transformers loads .mlpackages; Apple's own engine drives an .aimodel
    modes={"coreai": Mode("runtime", "Core AI runtime (the .aimodel, executed)", "Core AI runtime")},
    validated_on="Any worker: Apple's Core AI runtime runs the .aimodel, on the worker's CPU",
    program_facts=("stateful",),  # Core ML's fused attention op and weight encodings are not an .aimodel's
    # An LLM bundle's states grow from 256 slots up to metadata.json's max_context_length, the model's
    # max_position_embeddings or 2048 (backends/coreai/bundle.py: context_length, DEFAULT_CONTEXT); Apple's
    # engine sends a prompt of more than 1024 tokens in 512-token chunks (backends/coreai/runtime.py).
    llm_cache=True, llm_context=2048, llm_prompt_call=1024,
)
BOTH = Format(
    "both", "Both: an .mlpackage and an .aimodel", makes=("coreml", "coreai"), short="Core ML + Core AI",
    repo_suffix="coreml-coreai",
    try_runs="A worker runs the pushed Core ML package (the .aimodel beside it was validated, not tried here), in "
             "the reference executor (float16 packages in float16 emulation)",
    validated_on="Any worker: the .mlpackage in the reference executor (exact fp32 and fp16 device emulation), "
                 "the .aimodel in Apple's Core AI runtime",
    on_a_mac="A Mac runner: also the .mlpackage in real Core ML on CPU, GPU and Neural Engine",
)

# The `format` option's choices, the default first.
FORMATS: dict[str, Format] = {f.name: f for f in (CORE_ML, CORE_AI, BOTH)}
DEFAULT = CORE_ML.name


def format_of(name: str | None) -> Format:
    """The format a conversion was asked for (the default for an older job that names none)."""
    return FORMATS.get(name or DEFAULT, FORMATS[DEFAULT])


def mode(name: str | None) -> tuple[Format, Mode] | None:
    """The format whose runner or device reports the saved `mode`, and the mode's words."""
    for each in FORMATS.values():
        if name in each.modes:
            return each, each.modes[name]
    return None
