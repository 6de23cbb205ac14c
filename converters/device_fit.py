"""Whether a package fits the devices people ship apps to: its load size and its memory while it
runs, against what an app may use on each device class (docs/device-fit.md has the table and
every source).

A package's memory while it runs, estimated (`Footprint`):
- weights: the package's size (what Core ML loads; compressed weights stay compressed when Core
  ML decompresses them on the fly, else they take their float16 size — coremltools' guide);
- KV cache: a stateful text-generation package's `keyCache` and `valueCache` states, float16
  (layers × key/value heads × context × head size, twice; Qwen3.5: its full-attention layers only,
  plus its linear-attention layers' `convState` and `recurrentState`, which do not grow with the
  context). A format whose LLM package always holds
  one (formats.Format.llm_cache: Core AI's bundle, whose states grow with the text up to its context)
  counts it at that whole context, said as such, stateful option or not;
- the largest activation of one call: the biggest of the logits (tokens × vocabulary: float16
  from iOS16/macOS13, float32 before — coremltools' default outputs), the attention scores (heads × tokens × context), the feed-forward layer (tokens × its
  width) and the hidden states, at the longest call the package takes (a stateful package's
  prompt can fill its whole context) — one tensor, so a call's working memory is at least this.
A speech model (Whisper's three WhisperKit packages, docs/whisperkit.md) has its own figure: the
three packages' weights; the decoder's KV cache, which WhisperKit holds outside the package as the
`key_cache` and `value_cache` inputs, float16 [1, d_model · decoder layers, 1, max target positions
(448)] each (TextDecoder.swift:137-147); the largest activation of the encoder over its 30 s window
(1500 positions: its attention scores or feed-forward layer) or of a decoder call (the logits).

Two ways in: before converting, from the model's config.json and the size estimate
(`from_config`); after, from the conversion's report (`from_report`: the package sizes, its
states and outputs as written). Pure Python: the web page imports it; no torch.

What an app may use (`DEVICES`), each limit with its source:
- iPhone and iPad: iOS kills an app past its memory limit (jetsam); the limit depends on the
  device, and the `com.apple.developer.kernel.increased-memory-limit` entitlement raises it "on
  supported devices" (Apple: developer.apple.com/documentation/bundleresources/entitlements/
  com.apple.developer.kernel.increased-memory-limit). Apple publishes no numbers:
  `os_proc_available_memory()` tells a running app what it has left (developer.apple.com/
  documentation/os/os_proc_available_memory). The numbers below are measured with it by
  developers, each cited at its device.
- Mac: no per-app limit, but Core ML runs an LLM on the GPU, and Metal's
  `recommendedMaxWorkingSetSize` — what the GPU can use "without affecting its runtime
  performance" — is two thirds of the memory on 8 and 16 GB Macs (as logged by llama.cpp's Metal
  backend, cited at each Mac).
- The Neural Engine: Apple's Stable Diffusion recipe splits its UNet into chunks "each with less
  than 1GB of weights", "required for Neural Engine deployment on iOS and iPadOS", not on macOS
  (github.com/apple/ml-stable-diffusion, README, --chunk-unet); ANEMLL's converter splits LLMs so
  that "iOS models are limited to 1GB per file, macOS supports up to ~2GB per file"
  (github.com/Anemll/Anemll, docs/convert.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import UserInputError
from .formats import Format, format_of
from .options import ConversionOptions, ImageSizes, SequenceLength, meets

GB = 10**9
MIB = 2**20
FLOAT16 = 2
DTYPE_BYTES = {"float16": 2, "float32": 4, "float64": 8, "int32": 4, "int8": 1}
# The states that hold keys and values over the context (Gemma 4's wider layers: the global pair);
# a package's other states (Qwen3.5's convState and recurrentState) hold no positions.
KV_CACHE_STATES = ("keyCache", "valueCache", "globalKeyCache", "globalValueCache")
# Tasks whose package scores every token of a vocabulary (their outputs are logits).
VOCABULARY_TASKS = ("text-generation", "fill-mask", "text2text-generation")
# Speech: WhisperKit's three packages, the cache outside them (docs/whisperkit.md).
SPEECH_TASKS = ("automatic-speech-recognition",)
SAMPLE_RATE = 16_000  # Whisper's audio: 16 kHz, 480000 samples = its 30 s window

# The Neural Engine's practical model size: Apple's Stable Diffusion recipe (github.com/apple/
# ml-stable-diffusion, README: --chunk-unet splits the UNet "in two approximately equal chunks
# (each with less than 1GB of weights) ... required for Neural Engine deployment on iOS and
# iPadOS. This is not required for macOS") and ANEMLL (github.com/Anemll/Anemll, docs/convert.md:
# "iOS models are limited to 1GB per file, macOS supports up to ~2GB per file").
NEURAL_ENGINE_MOBILE = 1 * GB
NEURAL_ENGINE_MAC = 2 * GB

ENTITLEMENT = "com.apple.developer.kernel.increased-memory-limit"


@dataclass(frozen=True)
class Device:
    """A device class: `name` as a person knows it, its memory (`ram_gb`), the memory an app may
    use by default (`app_limit`, bytes) and with the increased-memory-limit entitlement
    (`entitled_limit`; None: no such entitlement, a Mac), the Neural Engine's model size limit,
    and where each number comes from (`sources`)."""

    key: str
    name: str
    family: str  # "iPhone", "iPad" or "Mac"
    ram_gb: int
    app_limit: int
    entitled_limit: int | None
    neural_engine_limit: int
    sources: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.ram_gb} GB)"


DEVICES: tuple[Device, ...] = (
    # iPhone 12 Pro to iPhone 15 Plus have 6 GB. Measured on an iPhone 13 Pro with
    # os_proc_available_memory at launch: 3.12 GB, with the entitlement 4.20 GB
    # (github.com/a-ghorbani/pocketpal-ai/pull/651); taken as 3 GB without it, as on 8 GB iPhones
    # (a phone with less memory does not give an app more).
    Device("iphone-6", "iPhone 15", "iPhone", 6, 3 * GB, int(4.2 * GB), NEURAL_ENGINE_MOBILE,
           ("https://github.com/a-ghorbani/pocketpal-ai/pull/651",)),
    # Every iPhone from the 15 Pro on has 8 GB or more (Xcode 15's device files, reported by
    # appleosophy.com/2023/09/13/iphone-15-pro-now-officially-features-8-gb-ram). Measured on an
    # iPhone 15 Pro: 3 GB, with the entitlement 6 GB (github.com/introlab/rtabmap/pull/1446).
    Device("iphone-8", "iPhone 15 Pro and newer", "iPhone", 8, 3 * GB, 6 * GB, NEURAL_ENGINE_MOBILE,
           ("https://github.com/introlab/rtabmap/pull/1446",
            "https://appleosophy.com/2023/09/13/iphone-15-pro-now-officially-features-8-gb-ram")),
    # M-series iPads with 8 GB: up to 6 GB with the entitlement from iPadOS 15 (Artstudio Pro's
    # developers, macrumors.com/2021/09/17/ipados-15-up-to-12gb-ram-high-end-ipad-pro), ~6 GB on
    # iPadOS 26.0-26.3 and ~3 GB from iPadOS 26.4 (developer.apple.com/forums/thread/826325).
    Device("ipad-8", "iPad with M1 or later", "iPad", 8, 3 * GB, 6 * GB, NEURAL_ENGINE_MOBILE,
           ("https://macrumors.com/2021/09/17/ipados-15-up-to-12gb-ram-high-end-ipad-pro",
            "https://developer.apple.com/forums/thread/826325")),
    # iPad Pro with 16 GB (1 and 2 TB): ~5 GB per app before iPadOS 15 (mattedwards.org/2021/05/28,
    # from 9to5Mac), up to 12 GB with the entitlement (MacRumors, as above).
    Device("ipad-16", "iPad Pro", "iPad", 16, 5 * GB, 12 * GB, NEURAL_ENGINE_MOBILE,
           ("https://macrumors.com/2021/09/17/ipados-15-up-to-12gb-ram-high-end-ipad-pro",
            "https://mattedwards.org/2021/05/28/ipados-limits-ipad-pro-power-apps-only-able-to-use-up-to-5-gb-ram-each/")),
    # Metal's recommendedMaxWorkingSetSize as llama.cpp logs it: 5461.34 MB on an 8 GB M2 MacBook
    # Air (github.com/li-plus/chatglm.cpp/issues/76), 10922.67 MiB on a 16 GB M1 MacBook Air
    # (github.com/ise-uiuc/magicoder/issues/19).
    Device("mac-8", "Mac", "Mac", 8, int(5461.34 * MIB), None, NEURAL_ENGINE_MAC,
           ("https://github.com/li-plus/chatglm.cpp/issues/76",)),
    Device("mac-16", "Mac", "Mac", 16, int(10922.67 * MIB), None, NEURAL_ENGINE_MAC,
           ("https://github.com/ise-uiuc/magicoder/issues/19",)),
)

FITS, ENTITLED, TOO_LARGE = "fits", "with the entitlement", "too large"


@dataclass(frozen=True)
class Footprint:
    """A package's memory: `weights` (bytes it loads: all its packages together), `kv_cache`
    (its states), `activation` (the largest activation of one call, estimated), `context` (the
    tokens a stateful package's cache holds, else the longest sequence it takes; None for images),
    `stateful`, `largest_package` (the biggest single package, for the Neural Engine), `grows`
    (its cache grows with the text up to `context`, counted full) and `audio_seconds` (a speech
    model: the audio window its encoder takes; `context` is then its decoder's cache positions)."""

    weights: int
    kv_cache: int = 0
    activation: int = 0
    context: int | None = None
    stateful: bool = False
    largest_package: int = 0
    grows: bool = False
    audio_seconds: float | None = None

    @property
    def running(self) -> int:
        """Bytes while it runs: weights, cache and the largest activation."""
        return self.weights + self.kv_cache + self.activation


@dataclass(frozen=True)
class Verdict:
    device: Device
    level: str  # FITS, ENTITLED or TOO_LARGE
    limit: int  # the limit it was judged against (the entitled one when that decided)


def verdicts(footprint: Footprint, devices: tuple[Device, ...] = DEVICES) -> list[Verdict]:
    """Each device class: whether the package fits what an app may use there by default, only with
    the increased-memory-limit entitlement, or not at all."""
    found = []
    for device in devices:
        if footprint.running <= device.app_limit:
            found.append(Verdict(device, FITS, device.app_limit))
        elif device.entitled_limit and footprint.running <= device.entitled_limit:
            found.append(Verdict(device, ENTITLED, device.entitled_limit))
        else:
            found.append(Verdict(device, TOO_LARGE, device.entitled_limit or device.app_limit))
    return found


# ---------------------------------------------------------------------- before converting


def model_dimensions(config: dict) -> dict[str, int | None]:
    """The sizes the estimate needs, from a config.json as a dict (a multimodal model's
    `text_config` when the top level has none), under the names families use."""
    if not _first(config, "hidden_size", "n_embd", "d_model", "dim") and isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}
    hidden = _first(config, "hidden_size", "n_embd", "d_model", "dim")
    heads = _first(config, "num_attention_heads", "n_head", "num_heads", "encoder_attention_heads", "n_heads")
    kv_heads = _first(config, "num_key_value_heads", "num_kv_heads")
    if kv_heads is None and config.get("multi_query"):
        kv_heads = 1  # multi-query attention (GPT-BigCode, old Falcon)
    head_dim = _first(config, "head_dim")
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    intermediate = _first(config, "intermediate_size", "n_inner", "d_ff", "ffn_dim", "encoder_ffn_dim", "hidden_dim")
    return {
        "hidden": hidden,
        "heads": heads,
        "kv_heads": kv_heads or heads,
        "head_dim": head_dim,
        "layers": _first(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers"),
        "intermediate": intermediate or (4 * hidden if hidden else None),
        "vocab": _first(config, "vocab_size"),
        "max_positions": _first(config, "max_position_embeddings", "n_positions", "max_seq_len"),
        "image_size": _side(config.get("image_size")),
        "patch_size": _side(config.get("patch_size")),
        "channels": _first(config, "embedding_size") or (config.get("hidden_sizes") or [None])[0],
    }


def kv_cache_bytes(config: dict, context: int) -> int:
    """A stateful package's states, float16 (Core ML keeps states in float16): keyCache and
    valueCache [layers, 1, key/value heads, context, head size] each (Gemma 4: its layers' own
    shapes; Qwen3.5: its four states, `_qwen3_5_states`)."""
    dims = model_dimensions(config)
    if not (dims["layers"] and dims["kv_heads"] and dims["head_dim"]):
        return 0
    hybrid = _qwen3_5_states(config, dims, context)
    if hybrid is not None:
        return sum(math.prod(shape) for shape in hybrid) * FLOAT16
    layers = _gemma4_cache_layers(config, dims) or [(dims["kv_heads"], dims["head_dim"])] * dims["layers"]
    return sum(2 * heads * context * width * FLOAT16 for heads, width in layers)


def _gemma4_cache_layers(config: dict, dims: dict) -> list[tuple[int, int]] | None:
    """Gemma 4's layers that keep keys and values, as (key/value heads, head size), as its stateful
    package holds them (configs/gemma4.py, from transformers' Gemma4TextConfig): its full-attention
    layers `global_head_dim` wide (512 unless given) with `num_global_key_value_heads` heads when
    `attention_k_eq_v`, or as `per_layer_config` says; its last `num_kv_shared_layers` keep none."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    if text.get("model_type") != "gemma4_text":
        return None
    count = dims["layers"]
    types = list(text.get("layer_types") or [])[:count] or \
        ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(count)]
    types[-1] = "full_attention"  # transformers forces it
    overrides = {int(k): v for k, v in (text.get("per_layer_config") or {}).items() if isinstance(v, dict)}
    wide_heads = text.get("num_global_key_value_heads") if text.get("attention_k_eq_v") else None
    wide = (wide_heads or dims["kv_heads"], text.get("global_head_dim") or 512)
    base = (dims["kv_heads"], dims["head_dim"])
    layers = []
    for i in range(count - int(text.get("num_kv_shared_layers") or 0)):
        if overrides:  # a config saved by transformers lists each full-attention layer's shape
            own = overrides.get(i, {})
            layers.append((own.get("num_key_value_heads", base[0]), own.get("head_dim", base[1])))
        else:
            layers.append(wide if types[i] == "full_attention" else base)
    return layers


def _qwen3_5_states(config: dict, dims: dict, context: int) -> list[tuple[int, ...]] | None:
    """Qwen3.5's states at `context` (None: another model), shaped as configs/qwen3_5.py's
    HybridLayout.states shapes them (that module needs torch, this one may not import it;
    tests/test_stateful_qwen3_5.py checks the two agree): keyCache and valueCache for its
    full-attention layers only; convState [linear layers, 1, conv channels, kernel − 1] and
    recurrentState [linear layers, 1, value heads, key size, value size] for its linear-attention
    layers, whatever the context. A size its config.json leaves out is transformers' default
    (Qwen3_5TextConfig)."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    if text.get("model_type") != "qwen3_5_text":
        return None
    count = dims["layers"]
    interval = _first(text, "full_attention_interval") or 4
    types = list(text.get("layer_types") or [])[:count] or \
        ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(count)]
    size = lambda name, default: _first(text, name) or default
    key_heads, value_heads = size("linear_num_key_heads", 16), size("linear_num_value_heads", 32)
    key_size, value_size = size("linear_key_head_dim", 128), size("linear_value_head_dim", 128)
    channels = 2 * key_heads * key_size + value_heads * value_size
    linear = types.count("linear_attention")
    attention = (types.count("full_attention"), 1, dims["kv_heads"], context, dims["head_dim"])
    return [attention, attention, (linear, 1, channels, size("linear_conv_kernel_dim", 4) - 1),
            (linear, 1, value_heads, key_size, value_size)]


def activation_bytes(config: dict, task: str, tokens: int | None, context: int | None, element_bytes: int,
                     output_bytes: int | None = None) -> int:
    """The largest activation of one call of `tokens` tokens attending over `context` positions
    (an image model: its patches or its first feature map), `element_bytes` per element inside,
    `output_bytes` per element of the logits (default: the same)."""
    dims = model_dimensions(config)
    if tokens is None:  # an image model
        image = dims["image_size"]
        if not image:
            return 0
        if dims["patch_size"]:
            tokens = context = (image // dims["patch_size"]) ** 2 + 1
        else:  # a convolutional network: its stem's feature map at half the image's side
            return (dims["channels"] or 64) * (image // 2) ** 2 * element_bytes
    context = context or tokens
    candidates = [tokens * (dims["hidden"] or 0) * element_bytes, tokens * (dims["intermediate"] or 0) * element_bytes,
                  (dims["heads"] or 0) * tokens * context * element_bytes]
    if task in VOCABULARY_TASKS and dims["vocab"]:  # the logits, an output
        candidates.append(tokens * dims["vocab"] * (output_bytes or element_bytes))
    return max(candidates)


def at_largest_image(config: dict, image_sizes) -> dict:
    """The config as the package's largest image size sees it: a package of several sizes (or one
    chosen size) runs its biggest activation at the largest (`image_sizes`: the options' ImageSizes;
    auto: the model's own size)."""
    if image_sizes is None or image_sizes.auto:
        return config
    return {**config, "image_size": max(image_sizes.sizes)}


def element_sizes(options) -> tuple[int, int]:
    """(bytes per element inside the program, bytes per element of its outputs): a float16 program
    computes in float16 and, from iOS16/macOS13, returns float16 (coremltools' default outputs;
    float32 before)."""
    if options.precision == "float32":
        return 4, 4
    return FLOAT16, FLOAT16 if meets(options.minimum_deployment_target, ("iOS16", "macOS13")) else 4


def chosen_length(sequence: SequenceLength, stateful: bool, config: dict | None) -> int:
    """The longest call (a stateful package: its context) of the sequence length as chosen; one
    left to the model ("auto") resolved with its config as the conversion resolves it."""
    return sequence.for_model(stateful, model_dimensions(config or {})["max_positions"]).maximum


def holds_growing_cache(fmt: Format, task: str, keeps_cache: bool = True) -> bool:
    """Whether `fmt`'s package for `task` always holds a KV cache that grows with the text (Core AI's
    LLM bundle: text generation by a model whose family keeps a cache, `keeps_cache`)."""
    return fmt.llm_cache and task == "text-generation" and keeps_cache


def growing_context(config: dict, options, fmt: Format) -> int:
    """The context such a cache grows to (backends/coreai/bundle.py: context_length): the sequence
    length when a stateful cache was asked for, else the model's maximum (the format's own when the
    config names none); never past a sliding attention window."""
    if options.kv_cache == "stateful":
        context = chosen_length(options.sequence_length, True, config)
    else:
        context = model_dimensions(config)["max_positions"] or fmt.llm_context
    window = _first(config, "sliding_window")
    return min(context, window) if window else context


def prompt_call(fmt: Format, context: int) -> int:
    """The most tokens one call of a growing-cache package takes: its runtime's prompt call, at most
    the context less the next token."""
    return min(context - 1, fmt.llm_prompt_call) if fmt.llm_prompt_call else context


def from_config(config: dict, task: str, weight_bytes: int, options, modality: str | None = "text",
                keeps_cache: bool = True) -> Footprint:
    """The footprint the form shows before Convert: `weight_bytes` from the size estimate for the
    chosen Size, the cache and the activation from the model's config at the chosen context
    (`options`: ConversionOptions — sequence length, KV cache, precision, deployment target,
    format); a format whose LLM package always holds a cache counts it at the context it grows to
    (`keeps_cache`: the model's family keeps one). Two formats: the one needing more."""
    element, output = element_sizes(options)
    stateful = options.kv_cache == "stateful"
    if task in SPEECH_TASKS or modality == "audio":  # the form's task may still be "auto"
        return speech_footprint(config, weight_bytes, element)
    if modality == "vision":
        config = at_largest_image(config, getattr(options, "image_size", None))
        return Footprint(weight_bytes, 0, activation_bytes(config, task, None, None, element, output), None, False,
                         weight_bytes)
    found = []
    for fmt in map(format_of, options.formats):
        if holds_growing_cache(fmt, task, keeps_cache):
            context = growing_context(config, options, fmt)
            activation = activation_bytes(config, task, prompt_call(fmt, context), context, element, FLOAT16)
            found.append(Footprint(weight_bytes, kv_cache_bytes(config, context), activation, context, True,
                                   weight_bytes, grows=True))
            continue
        length = chosen_length(options.sequence_length, stateful, config)
        cache = kv_cache_bytes(config, length) if stateful else 0
        found.append(Footprint(weight_bytes, cache, activation_bytes(config, task, length, length, element, output),
                               length, stateful, weight_bytes))
    return max(found, key=lambda footprint: footprint.running)


# ---------------------------------------------------------------------- after converting


def from_report(report: dict, config: dict | None = None) -> Footprint | None:
    """The footprint of a conversion's packages, from its report: their sizes on disk and their
    states, measured (when it wrote the model in more than one format, an app loads one: the
    format needing more counts); the largest activation from the model's `config` as before
    converting when it is given, else from what the report shows (outputs with a known shape, the
    attention over the cache — a range-shaped output such as a stateful package's logits has
    none). A package whose format always holds a growing cache is counted at the context its
    states grow to. None when the report lists no package size."""
    packages = [p for p in report.get("packages") or [] if p.get("size_bytes")]
    if not packages:
        return None
    if str(report.get("task") or "") in SPEECH_TASKS:
        return _speech_measured(packages, report, config)
    by_format: dict[str, list[dict]] = {}
    for package in packages:
        by_format.setdefault(str(package.get("format") or ""), []).append(package)
    options = report.get("options") or {}
    try:
        parsed = ConversionOptions.from_strings(**{k: v for k, v in options.items()
                                                   if k in ("precision", "sequence_length", "minimum_deployment_target")})
    except UserInputError:  # an older or foreign report: the sizes still stand
        parsed = None
    found = [_measured(group, format_of(name or None), report, parsed, config) for name, group in by_format.items()]
    return max(found, key=lambda footprint: (footprint.running, footprint.weights))


def _measured(chosen: list[dict], fmt: Format, report: dict, parsed, config: dict | None) -> Footprint:
    """One format's packages' footprint (see from_report)."""
    weights = sum(p["size_bytes"] for p in chosen)
    # Every state is memory while it runs; the context is what the key/value caches hold (axis 3 of
    # Qwen3.5's recurrentState is its key size).
    cache = sum(_elements(_longest(s)) * DTYPE_BYTES.get(s.get("dtype"), FLOAT16)
                for p in chosen for s in p.get("states") or [])
    caches = [_longest(s) for p in chosen for s in p.get("states") or [] if s.get("name") in KV_CACHE_STATES]
    task = str(report.get("task") or "")
    contexts = [shape[3] for shape in caches if len(shape) == 5]
    grows = bool(contexts) and holds_growing_cache(fmt, task)
    stateful = (report.get("options") or {}).get("kv_cache") == "stateful" or grows
    image = any(i.get("type") == "image" for p in chosen for i in p.get("inputs") or [])
    context = None if image or parsed is None else chosen_length(parsed.sequence_length, stateful, config)
    if stateful and contexts:
        context = max(contexts)  # what the cache holds, as written
    tokens = prompt_call(fmt, context) if grows else context
    if config and image:  # the largest of the image sizes it takes, when the options chose them
        try:
            config = at_largest_image(config, ImageSizes.parse((report.get("options") or {}).get("image_size")))
        except UserInputError:
            pass
    if config and parsed is not None:
        element, output = element_sizes(parsed)
        activation = activation_bytes(config, task, tokens, context, element, FLOAT16 if grows else output)
    else:
        activation = 0
        for package in chosen:
            for feature in package.get("outputs") or []:
                activation = max(activation, _elements(_longest(feature)) * DTYPE_BYTES.get(feature.get("dtype"), 4))
        for shape in caches:  # [layers, 1, kv heads, context, head size]
            if len(shape) == 5:
                activation = max(activation, shape[2] * (tokens or shape[3]) * shape[3] * FLOAT16)
    return Footprint(weights, cache, activation, context, stateful, max(p["size_bytes"] for p in chosen), grows)


# ---------------------------------------------------------------------- speech


def speech_dimensions(config: dict) -> dict[str, int]:
    """A Whisper config's sizes (transformers' WhisperConfig defaults where it names none)."""
    get = lambda name, default: _first(config, name) or default
    d_model = get("d_model", 384)
    return {"d_model": d_model, "decoder_layers": get("decoder_layers", 4), "encoder_heads": get("encoder_attention_heads", 6),
            "encoder_ffn": get("encoder_ffn_dim", 4 * d_model), "decoder_ffn": get("decoder_ffn_dim", 4 * d_model),
            "vocab": get("vocab_size", 51865), "target_positions": get("max_target_positions", 448),
            "source_positions": get("max_source_positions", 1500)}


def speech_cache_bytes(config: dict) -> int:
    """The decoder's KV cache WhisperKit holds: key_cache and value_cache, float16
    [1, d_model · decoder layers, 1, max_target_positions] each."""
    dims = speech_dimensions(config)
    return 2 * dims["d_model"] * dims["decoder_layers"] * dims["target_positions"] * FLOAT16


def speech_activation_bytes(config: dict, element_bytes: int) -> int:
    """The largest activation: the encoder over its window (its two convolutions see twice the 1500
    positions; attention scores heads × 1500 × 1500; the feed-forward layer), or a decoder call
    (its float16 logits, its cross-attention's keys over the 1500 encoder positions)."""
    dims = speech_dimensions(config)
    source = dims["source_positions"]
    return max(dims["encoder_heads"] * source * source * element_bytes, source * dims["encoder_ffn"] * element_bytes,
               2 * source * dims["d_model"] * element_bytes, dims["vocab"] * FLOAT16)


def speech_window(config: dict) -> float:
    """The encoder's audio window in seconds: two mel frames per position, 100 frames a second (30 s)."""
    return 2 * speech_dimensions(config)["source_positions"] / 100


def speech_footprint(config: dict, weight_bytes: int, element_bytes: int) -> Footprint:
    """A Whisper conversion before converting: the three packages' weights, the decoder's cache at its
    max target positions, the largest activation, the 30 s window. The largest package (for the
    Neural Engine) is the encoder's or the decoder's share of the weights, by their parameters:
    a layer's attention and feed-forward (4 d² + 2 d·ffn; the decoder's cross-attention 4 d² more),
    the decoder's token embedding (vocabulary × d)."""
    dims = speech_dimensions(config)
    d = dims["d_model"]
    encoder = (_first(config, "encoder_layers") or 4) * (4 * d * d + 2 * d * dims["encoder_ffn"])
    decoder = dims["decoder_layers"] * (8 * d * d + 2 * d * dims["decoder_ffn"]) + dims["vocab"] * d
    largest = round(weight_bytes * max(encoder, decoder) / (encoder + decoder))
    return Footprint(weight_bytes, speech_cache_bytes(config), speech_activation_bytes(config, element_bytes),
                     dims["target_positions"], False, largest, audio_seconds=speech_window(config))


def _speech_measured(packages: list[dict], report: dict, config: dict | None) -> Footprint:
    """A Whisper conversion's packages as written: the cache from the decoder's key_cache and
    value_cache inputs, the window from the mel package's audio input."""
    inputs = {i.get("name"): i for p in packages for i in p.get("inputs") or []}
    caches = [inputs[name] for name in ("key_cache", "value_cache") if name in inputs]
    cache = sum(_elements(_longest(i)) * DTYPE_BYTES.get(i.get("dtype"), FLOAT16) for i in caches)
    positions = _longest(caches[0])[-1] if caches else speech_dimensions(config or {})["target_positions"]
    audio = _longest(inputs["audio"]) if "audio" in inputs else []
    seconds = _elements(audio) / SAMPLE_RATE if audio else speech_window(config or {})
    precision = (report.get("options") or {}).get("precision")
    if config:
        activation = speech_activation_bytes(config, 4 if precision == "float32" else FLOAT16)
    else:  # what the report shows: the outputs (the encoder's embeddings, the logits)
        activation = max((_elements(_longest(o)) * DTYPE_BYTES.get(o.get("dtype"), 4)
                          for p in packages for o in p.get("outputs") or []), default=0)
    return Footprint(sum(p["size_bytes"] for p in packages), cache, activation, positions, False,
                     max(p["size_bytes"] for p in packages), audio_seconds=seconds)


# ---------------------------------------------------------------------- in words


def gigabytes(size: int | float) -> str:
    """A memory size as the page and the card say it: '0.05 MB', '6.8 MB', '85 MB', '1.3 GB', '14 GB'."""
    gb, mb = size / GB, size / 1e6
    if gb >= 1:
        return f"{gb:.0f} GB" if gb >= 10 else f"{gb:.1f} GB"
    if mb >= 10:
        return f"{mb:,.0f} MB"
    return f"{mb:.1f} MB" if mb >= 1 else f"{mb:.2f} MB"


def context_words(footprint: Footprint) -> str:
    """'at 4 k context', 'at its full 8 k context' (a cache that grows), 'at 128 tokens', 'on a 30 s clip,
    its decoder's cache at 448 tokens' (a speech model), or '' (an image model)."""
    if footprint.audio_seconds is not None:
        return f"on a {footprint.audio_seconds:g} s clip, its decoder's cache at {footprint.context:,} tokens"
    if footprint.context is None:
        return ""
    if footprint.stateful:
        amount = f"{footprint.context // 1024} k" if footprint.context % 1024 == 0 else f"{footprint.context:,}-token"
        return f"at {'its full ' if footprint.grows else ''}{amount} context"
    return f"at {footprint.context:,} tokens"


def breakdown(footprint: Footprint) -> str:
    """'about 1.3 GB while it runs at 4 k context: weights 0.70 GB, KV cache 0.45 GB, largest activation 0.20 GB'
    (a cache that grows: 'at its full 8 k context (its KV cache grows with the text up to there): …')."""
    parts = [f"weights {gigabytes(footprint.weights)}"]
    if footprint.kv_cache:
        parts.append(f"KV cache {gigabytes(footprint.kv_cache)}")
    if footprint.activation:
        parts.append(f"largest activation {gigabytes(footprint.activation)}")
    where = context_words(footprint)
    if footprint.grows and footprint.kv_cache:
        where += " (its KV cache grows with the text up to there)"
    return f"about {gigabytes(footprint.running)} while it runs{' ' + where if where else ''}: {', '.join(parts)}"


def _names(found: list[Verdict]) -> str:
    """'iPhone 15 Pro and newer (8 GB), iPads (8 and 16 GB) and Macs with 16 GB': a family whose
    every class is listed is named once."""
    labels, done = [], set()
    for verdict in found:
        family = verdict.device.family
        if family in done:
            continue
        members = [v for v in found if v.device.family == family]
        memory = " and ".join(str(v.device.ram_gb) for v in members)
        if len(members) == len([d for d in DEVICES if d.family == family]) > 1:
            done.add(family)
            labels.append(f"{family}s ({memory} GB)")
        elif family == "Mac":
            done.add(family)
            labels.append(f"Macs with {memory} GB")
        else:
            labels.append(verdict.device.label)
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def fit_sentence(footprint: Footprint, devices: tuple[Device, ...] = DEVICES) -> str:
    """The verdict in plain words: 'Fits iPhone 15 Pro and newer (8 GB), iPads (8 and 16 GB) and
    Macs (8 and 16 GB); too large for iPhone 15 (6 GB) at 4 k context.'"""
    found = verdicts(footprint, devices)
    groups = {level: [v for v in found if v.level == level] for level in (FITS, ENTITLED, TOO_LARGE)}
    where = context_words(footprint)
    clauses = []
    if groups[FITS]:
        clauses.append(f"fits {_names(groups[FITS])}")
    if groups[ENTITLED]:
        clauses.append(f"fits {_names(groups[ENTITLED])} only with the increased memory limit entitlement")
    if groups[TOO_LARGE]:
        clauses.append(f"too large for {_names(groups[TOO_LARGE])}{' ' + where if where else ''}")
    text = "; ".join(clauses)
    return text[0].upper() + text[1:] + "."


def neural_engine_note(footprint: Footprint) -> str | None:
    """Said when a package is larger than the Neural Engine takes (Apple's and ANEMLL's recipes
    split models below 1 GB for iPhone and iPad, ~2 GB for a Mac)."""
    size = footprint.largest_package
    if size > NEURAL_ENGINE_MAC:
        return (f"At {gigabytes(size)} the package is larger than the Neural Engine takes (about 1 GB on iPhone and iPad, "
                "2 GB on a Mac): Core ML runs it on the GPU.")
    if size > NEURAL_ENGINE_MOBILE:
        return (f"At {gigabytes(size)} the package is larger than the Neural Engine takes on iPhone and iPad (about 1 GB): "
                "Core ML runs it on the GPU there.")
    return None


def summary(footprint: Footprint) -> str:
    """Everything in two or three sentences: the memory, the verdict, the Neural Engine."""
    needs = breakdown(footprint)
    text = f"Needs {needs} (estimated). {fit_sentence(footprint)}"
    note = neural_engine_note(footprint)
    return f"{text} {note}" if note else text


def table(footprint: Footprint, devices: tuple[Device, ...] = DEVICES) -> list[tuple[str, str, str, str]]:
    """One row per device class: (device, what an app may use, with the entitlement, verdict)."""
    rows = []
    for verdict in verdicts(footprint, devices):
        device = verdict.device
        entitled = gigabytes(device.entitled_limit) if device.entitled_limit else "—"
        word = {FITS: "fits", ENTITLED: "fits with the entitlement", TOO_LARGE: "too large"}[verdict.level]
        rows.append((device.label, gigabytes(device.app_limit), entitled, word))
    return rows


# ---------------------------------------------------------------------- helpers


def _first(config: dict, *names: str):
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _side(value) -> int | None:
    """An image or patch size given as one number or as [height, width] (the larger side)."""
    if isinstance(value, (list, tuple)) and value:
        value = max(v for v in value if isinstance(v, int)) if any(isinstance(v, int) for v in value) else None
    return value if isinstance(value, int) and value > 0 else None


def _longest(feature: dict) -> list[int]:
    """A feature's shape at its longest: a range's upper bounds (unbounded: its default shape),
    the largest of a list of shapes, else its shape."""
    shape = [int(d) for d in feature.get("shape") or []]
    if feature.get("flexibility") == "range" and feature.get("ranges"):
        return [hi if hi > 0 else (shape[i] if i < len(shape) else lo) for i, (lo, hi) in enumerate(feature["ranges"])]
    if feature.get("flexibility") == "enumerated" and feature.get("shapes"):
        return max(([int(d) for d in s] for s in feature["shapes"]), key=_elements)
    return shape


def _elements(shape) -> int:
    """Elements of a shape; 0 for an unknown one ([]: a range-shaped output's spec gives none)."""
    if not shape:
        return 0
    count = 1
    for size in shape:
        count *= max(int(size), 1)
    return count
