"""The conversion form: its choices, defaults and one-line help, and turning what was
entered into a checked JobSpec (worker.spec), whose messages say what to fix. The engine's
options (precision, sequence length, ...) come from the option table (converters/options.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from converters import device_fit
from converters.errors import UserInputError
from converters.formats import format_of
from converters.options import OPTIONS, ConversionOptions, SequenceLength, meets
from converters.tasks import TASKS
from converters.wording import megabytes
from worker.spec import NEW_REPO, PULL_REQUEST, JobSpec, default_repo_name

ANY_WORKER, MAC_RUNNER = "any", "macos"


def runner_field(format_name: str | None, chosen: str | None = None) -> dict[str, Any]:
    """Where validation runs, in the chosen output format's words (converters/formats.py): its label,
    help, choices — what any worker runs, and what a Mac runner adds when it adds something (not
    offered otherwise: Core AI) — and the value, `chosen` while it is offered."""
    fmt = format_of(format_name)
    choices = [(fmt.validated_on, ANY_WORKER)] + ([(fmt.on_a_mac, MAC_RUNNER)] if fmt.on_a_mac else [])
    value = chosen if chosen in [v for _, v in choices] else ANY_WORKER
    if fmt.on_a_mac:
        return {"label": "Compute units to validate on", "info": HELP["runner"], "choices": choices, "value": value}
    return {"label": "Where to validate", "info": "Every package is checked against PyTorch.", "choices": choices,
            "value": value}


TARGET = "minimum_deployment_target"


def target_field(format_name: str | None) -> dict[str, Any]:
    """The minimum deployment target's field for the chosen output format, in its words
    (converters/formats.py): the target is a Core ML package's alone. Core ML: the option
    table's field; both formats: said of the .mlpackage, and where the .aimodel beside it runs;
    Core AI: hidden — its .aimodel runs on Apple's 27 releases, no older target (format_info says
    so)."""
    makes = [format_of(name) for name in format_of(format_name).makes]
    targeted = [f.package_suffix for f in makes if f.deployment_target]
    fixed = [f for f in makes if not f.deployment_target]
    option = OPTIONS[TARGET]
    if not targeted:
        return {"visible": False}
    if not fixed:
        return {"visible": True, "label": option.label, "info": option.help}
    packages = " and ".join(targeted)
    return {"visible": True, "label": f"{option.label} of the {packages}",
            "info": f"The oldest iOS/macOS the {packages} must run on: iOS18/macOS15 add stateful KV caches and fused "
                    "attention. " + " ".join(_runs_on(f, beside=True) for f in fixed)}


KV_CACHE = "kv_cache"


# Options that apply to some formats and tasks only: hidden until the form's check shows them.
LLM_BUNDLE = "llm_bundle"


def shown_before_a_model(name: str) -> bool:
    return name != LLM_BUNDLE


def llm_bundle_applies(format_name: str | None, task: str | None) -> bool:
    """The Core AI LLM bundle's engine (macOS or iOS) is a choice for a text generator whose
    formats include one that always holds a growing cache (Core AI's bundle)."""
    return task == "text-generation" and any(format_of(name).llm_cache for name in format_of(format_name).makes)


def kv_cache_field(format_name: str | None) -> dict[str, Any]:
    """The KV cache field for the chosen output format, in its words (converters/formats.py):
    the choice is a Core ML package's. Core ML: the option table's field; a format whose LLM
    package always holds a cache that grows with the text (Core AI) has no cache to choose — the
    field sets the context it grows to (a stateful cache: the sequence length; none: the model's
    maximum); both formats: said of the .mlpackage, and what the .aimodel beside it holds."""
    makes = [format_of(name) for name in format_of(format_name).makes]
    chosen = [f.package_suffix for f in makes if not f.llm_cache]
    growing = [f for f in makes if f.llm_cache]
    option = OPTIONS[KV_CACHE]
    table = [(choice.text, choice.value) for choice in option.choices]
    if not growing:
        return {"label": option.label, "info": option.help, "choices": table}
    grows = "always holds a KV cache, grown with the text up to its context"
    if not chosen:
        fmt = growing[0]
        return {"label": "KV cache: the context it grows to",
                "info": f"Text generation: the {fmt.package_suffix} {grows}. Choose how far it may grow.",
                "choices": [(f"The model's maximum context ({fmt.llm_context:,} tokens if its config names none)", "none"),
                            ("The sequence length: a shorter context, less memory", "stateful")]}
    packages = " and ".join(chosen)
    return {"label": f"{option.label} of the {packages}",
            "info": " ".join([option.help, *(f"The {f.package_suffix} beside it {grows}: the sequence length with a "
                                             "stateful cache, else the model's maximum." for f in growing)]),
            "choices": table}


def format_info(format_name: str | None) -> str:
    """The output format field's help, and where a chosen format's packages run when it has no
    deployment target to choose (Core AI: its .aimodel runs on Apple's 27 releases)."""
    fmt = format_of(format_name)
    fixed = [format_of(name) for name in fmt.makes] if not ConversionOptions(format=fmt.name).deployment_target_applies else []
    return " ".join([OPTIONS["format"].help, *(_runs_on(f) for f in fixed)])


def _runs_on(fmt, beside: bool = False) -> str:
    return (f"The {fmt.package_suffix}{' beside it' if beside else ''} runs on {fmt.runs_on}: "
            "there is no older deployment target to choose for it.")


PUSH_CHOICES = [
    ("A new repo in my account", NEW_REPO),
    ("A pull request to the model's repo", PULL_REQUEST),
]

# The weight compression option as someone new to it meets it: "Size", each choice named by
# what it stores and, once a model is chosen, the package size it gives that model.
SIZE_OPTION = "quantize"
SIZE_LABEL = "Size"
SIZE_HELP = ("Fewer bits per weight make smaller packages: 8-bit keeps quality, 6- and 4-bit cost some. "
             "Every package is checked against PyTorch.")
SIZE_NAMES = {
    "none": "Full ({precision})",
    "int8": "Half — 8-bit (int8)",
    "lut8": "Half — 8-bit palette (lut8)",
    "lut6": "6-bit palette (lut6)",
    "int4": "4-bit (int4), for the GPU",
    "lut4": "4-bit palette (lut4)",
    "mixed": "4-bit, with 8-bit embeddings (mixed)",
}

# One line of help per field: the engine options' from the option table, then the form's own.
HELP = {
    **{name: option.help for name, option in OPTIONS.items()},
    SIZE_OPTION: SIZE_HELP,
    "model": "A Hub model ID (owner/name) or its URL. Type a few letters for suggestions.",
    "task": "What the package computes. The model's own task is preselected.",
    "runner": "Every package is checked against PyTorch. A Mac runner also runs it on real Core ML hardware.",
    "push_anyway": "Off by default: a package that fails validation is not pushed.",
    "push": "Where the converted package goes.",
    "push_repo": "Leave empty for <you>/<model>-coreml, named with the size and cache you chose "
                 "(<model>-int4-stateful-coreml): one repo per conversion.",
    "private": "Only you (and your organisation) can see a private repo. A gated or private model's copy is "
               "private unless you choose otherwise.",
}

# Who can see the new repo. "auto": like the source — a gated or private model's copy is
# private, since its licence or its owner may not allow a public one.
AUTO, PRIVATE, PUBLIC = "auto", "private", "public"
VISIBILITY_CHOICES = [
    ("Like the model (private if it is gated or private)", AUTO),
    ("Private", PRIVATE),
    ("Public", PUBLIC),
]
CONFIRM_PUBLIC = "I may publish a copy of this model: its licence allows it"
# Text models' options a speech model's packages have no use for (WhisperKit fixes their shapes and names): hidden for it.
SPEECH_UNUSED = ("sequence_length", "kv_cache", "naming")


def restricted_note(repo_id: str, gated: bool, private: bool, visibility: str) -> str | None:
    """Said before Convert when the model is gated or private: where its copy goes and why."""
    if not (gated or private):
        return None
    kind = "gated (its authors grant access on conditions)" if gated else "private"
    if visibility == PUBLIC:
        return (f"{repo_id} is {kind}. A public copy would let anyone skip its conditions and may break its licence: "
                "tick the box below only if its licence lets you publish it.")
    return f"{repo_id} is {kind}, so its copy is pushed to a private repo."


def option_field(name: str) -> dict[str, Any]:
    """The form field of engine option `name`, from its row in the option table: label,
    info (its help), value (its default) and, unless it is free text, choices as
    (label, value) pairs. Weight compression is presented in the form's own words, as Size."""
    option = OPTIONS[name]
    spec: dict[str, Any] = {"label": option.label, "info": option.help, "value": option.default}
    if name == SIZE_OPTION:  # the form's own presentation: "Size"
        precision, target = (OPTIONS[n].default for n in ("precision", "minimum_deployment_target"))
        return {**spec, "label": SIZE_LABEL, "info": SIZE_HELP, "choices": size_choices(None, precision, target)}
    if option.choices:
        spec["choices"] = [(choice.text, choice.value) for choice in option.choices]
    return spec


def size_choices(sizes: dict[str, int] | None, precision: str, target: str | None) -> list[tuple[str, str]]:
    """The Size field's (label, value) pairs: each compression choice by what it stores, with
    the package size it gives the chosen model ("Half — 8-bit (int8) · about 68 MB"; `sizes`:
    bytes by choice, None before a model is chosen) and, when deployment target `target` is too
    old for it, the target it needs (the form's option check refuses it with the same reason;
    None: no package made has a target, as in Core AI)."""
    option = OPTIONS[SIZE_OPTION]
    choices = []
    for value in option.values:
        label = SIZE_NAMES.get(value, value).format(precision=precision)
        if sizes and sizes.get(value):
            label += f" · about {megabytes(sizes[value])}"
        needs = option.needed_targets(value)
        if target and not meets(target, needs):
            platform = target.rstrip("0123456789")
            label += f" · needs {next((n for n in needs if n.startswith(platform)), ' or '.join(needs))}"
        choices.append((label, value))
    return choices


def task_choices(tasks: list[str], default: str | None) -> list[tuple[str, str]]:
    """(label, value) pairs: 'fill-mask: scores for a masked token (the model's own task)'."""
    choices = []
    for task in tasks:
        summary = TASKS[task].summary if task in TASKS else ""
        label = f"{task}: {summary}" if summary else task
        if task == default:
            label += " (the model's own task)"
        choices.append((label, task))
    return choices


def sequence_note(text: str, modality: str | None = "text", kv_cache: str | None = None,
                  config: dict | None = None) -> tuple[str, str]:
    """(level, message) about a sequence length as typed: level is "error", "warning" or "info".
    Placement follows Apple's statement (developer forums thread 724930): range shapes run on the
    GPU or CPU, and on the Neural Engine only at the default shape; enumerated shapes each can.
    With the model's `config`, a stateful cache's note says the memory that context costs."""
    if modality == "vision":
        return "info", "Vision models take the photo size set in Image size (auto: the model's own); the sequence length is not used."
    if modality == "audio":
        return "info", ("Speech models take 30 seconds of audio and decode with WhisperKit's own cache and names: "
                        "the sequence length, KV cache and naming options are not used.")
    try:
        chosen = SequenceLength.parse(text)
    except UserInputError as error:
        return "error", str(error)
    stateful = kv_cache == "stateful"
    # Left to the model ("auto"): the length its config resolves, as the conversion will.
    sequence = chosen.for_model(stateful, device_fit.model_dimensions(config)["max_positions"] if config else None)
    capped = " (or the model's own maximum, if smaller)" if chosen.auto and not config else ""
    if stateful:
        context = sequence.maximum
        cache = device_fit.kv_cache_bytes(config, context) if config else 0
        cost = f" A {context:,}-token context's KV cache takes {device_fit.gigabytes(cache)} of memory." if cache else ""
        return "info", (
            f"The context: prompt and generated tokens together up to {context - 1:,} tokens "
            f"(the cache holds {context:,}){capped}. Each call takes any number of new tokens, a range shape: "
            f"Core ML runs it on the GPU or CPU.{cost}")
    if sequence.kind == "range":
        return "warning", (
            f"A range ({sequence}) lets the app pass any length from {sequence.minimum} to {sequence.maximum}. "
            "Core ML runs range-shaped models on the GPU or CPU, and on the Neural Engine only at the default "
            "length. A list of sizes (e.g. 64,128,256) can use the Neural Engine at each size."
        )
    if sequence.kind == "enumerated":
        return "info", f"The package accepts exactly these lengths: {sequence}. Pad inputs to the next one."
    return "info", f"The package takes exactly {sequence} tokens{capped}; shorter inputs are padded."


def format_sequence_note(text: str, modality: str | None, kv_cache: str | None, config: dict | None,
                         format_name: str | None, task: str | None, keeps_cache: bool) -> tuple[str, str]:
    """sequence_note, for the chosen output format: a format whose text-generation package always
    holds a KV cache that grows with the text (Core AI's LLM bundle; `keeps_cache`: the model's
    family keeps one) takes the text up to its context — the model's maximum, or the sequence
    length with a stateful cache — whatever the sequence length, and its cache's full size is said,
    as the device fit counts it (converters/device_fit.py)."""
    level, note = sequence_note(text, modality, kv_cache, config)
    makes = [format_of(name) for name in format_of(format_name).makes]
    growing = [f for f in makes if device_fit.holds_growing_cache(f, task or "", keeps_cache)]
    if level == "error" or not growing or not config or modality != "text":
        return level, note
    fmt, stateful = growing[0], kv_cache == "stateful"
    context = device_fit.growing_context(config, ConversionOptions.from_strings(kv_cache=kv_cache, sequence_length=text), fmt)
    source = "the sequence length" if stateful else "the model's maximum"
    said = (f"The {fmt.label} package holds a KV cache that grows with the text up to its context, {context:,} tokens "
            f"({source}): {device_fit.gigabytes(device_fit.kv_cache_bytes(config, context))} at its full size.")
    if not stateful:
        said += " It takes any prompt up to there: choose a stateful cache to set a shorter context."
    return ("info", said) if len(growing) == len(makes) else (level, f"{note} {said}")


def device_fit_note(config: dict, modality: str | None, task: str, sizes: dict[str, int] | None,
                    options: ConversionOptions, keeps_cache: bool = True) -> tuple[str, str] | None:
    """(level, message) said before Convert: the memory the package will need while it runs — the
    size estimate of the chosen Size (`sizes`: bytes by choice), the KV cache of the chosen context
    (or of the context it grows to, in a format whose LLM package always holds one; `keeps_cache`:
    the model's family keeps one), the largest activation — and the devices it fits
    (converters/device_fit.py); "warning" when some device cannot hold it. None while the size is
    not known."""
    if not sizes or not sizes.get(options.quantize):
        return None
    footprint = device_fit.from_config(config, task, sizes[options.quantize], options, modality, keeps_cache)
    too_large = any(v.level == device_fit.TOO_LARGE for v in device_fit.verdicts(footprint))
    return ("warning" if too_large else "info"), device_fit.summary(footprint)


@dataclass
class FormValues:
    """What the form holds when Convert is clicked. `option_values`: the engine options as
    entered, by their names in the option table (missing or blank: the default)."""

    model: str
    task: str | None
    option_values: dict[str, Any] = field(default_factory=dict)
    runner: str = ANY_WORKER
    push: str = NEW_REPO
    push_repo: str = ""
    visibility: str = AUTO  # VISIBILITY_CHOICES
    remove_others: bool = False  # remove the target repo's other packages with this push
    push_even_if_invalid: bool = False
    restricted: bool = False  # the model is gated or private (from its summary)
    confirmed_public: bool = False  # CONFIRM_PUBLIC ticked

    def options(self) -> ConversionOptions:
        return ConversionOptions.from_strings(**self.option_values)

    def to_spec(self, token: str | None, user: str | None) -> JobSpec:
        """A checked JobSpec; raises UserInputError with what to fix."""
        if not (self.model or "").strip():
            raise UserInputError("Enter a model first: a Hub ID such as 'openai-community/gpt2' or its URL.")
        if not self.task:
            raise UserInputError("Pick a task: the model's supported tasks appear once it is read from the Hub.")
        options = self.options()
        push_repo = (self.push_repo or "").strip() if self.push != PULL_REQUEST else ""
        if self.visibility == PUBLIC and self.restricted and not self.confirmed_public and self.push != PULL_REQUEST:
            raise UserInputError("This model is gated or private: its copy goes to a public repo only if you confirm "
                                 "that its licence allows it (the box under Visibility), or choose Private.")
        return JobSpec.build(
            self.model,
            token=token,
            task=self.task,
            options=options.to_dict(),
            push=self.push or NEW_REPO,
            push_repo=push_repo or None,
            private={PRIVATE: True, PUBLIC: False}.get(self.visibility),
            remove_others=bool(self.remove_others),
            push_even_if_invalid=bool(self.push_even_if_invalid),
            runner=self.runner or "any",
            user=user,
        )


def adapt_to_model(previous: str | None, repo_id: str | None, tasks, kv_cache: str | None,
                   push_repo: str | None, quantize: str | None = None,
                   target: str | None = None) -> tuple[dict[str, str], list[str]]:
    """What the form changes when another model is chosen (field -> new value), and the
    sentences that say so: choices made for the previous model that don't fit this one. The
    Size was picked from the previous model's sizes; a deployment target raised for a cache or
    a Size set back goes back to the default with them."""
    changes, notes = {}, []
    another = bool(previous and repo_id and previous != repo_id)
    if kv_cache == "stateful" and "text-generation" not in (tasks or ()):
        changes["kv_cache"] = "none"
        notes.append("KV cache set back to None: only text-generation models keep one.")
    if another and quantize and quantize != OPTIONS["quantize"].default:
        changes["quantize"] = OPTIONS["quantize"].default
        notes.append(f"Size set back to Full: the size you chose was for {previous}; "
                     "this model's sizes are listed under its task.")
    default_target = OPTIONS["minimum_deployment_target"].default
    if changes and target and target != default_target:
        changes["minimum_deployment_target"] = default_target
        notes.append(f"Minimum deployment target set back to {default_target}, the default: choose {target} again "
                     "if your app needs it.")
    if (push_repo or "").strip() and previous and repo_id and previous != repo_id:
        changes["push_repo"] = ""
        notes.append(f"The repo name you typed for {previous} was cleared: this model goes to its own repo by default.")
    return changes, notes


def push_target(typed: str | None, user: str | None, model_name: str | None,
                options: ConversionOptions | None = None) -> str | None:
    """The repo a new-repo push goes to, as the job will name it: the typed ID, or the default
    for this user, model and options; None while either is unknown."""
    typed = (typed or "").strip()
    if typed:
        return typed if "/" in typed else (f"{user}/{typed}" if user else None)
    return default_push_repo(user, model_name, options) if user and model_name else None


REMOVE_OTHERS = "Remove the repo's other packages (from earlier conversions)"


def other_packages(packages: list[str], model_name: str | None, options: ConversionOptions | None = None) -> list[str]:
    """The packages of an existing repo (`packages`: models.repo_packages) that a push of this
    model with these options would not replace: every one not named as it names its own — a
    package in the format(s) chosen named after the model (`<model>.mlpackage`, a part's
    `<model>-<part>.mlpackage`, a bundle or variant folder `<model>/…`), or in the exporters
    layout, under the format's own folder (`coreml/<task>/…`; converters/backends/naming.py)."""
    options = options or ConversionOptions()
    chosen = [format_of(name) for name in options.formats]

    def own(path: str) -> bool:
        fmt = next((f for f in chosen if f.package_suffix and path.endswith(f.package_suffix)), None)
        if fmt is None:
            return False
        if options.naming == "exporters":
            return path.startswith(f"{fmt.repo_suffix}/")
        first = path.split("/", 1)[0].removesuffix(fmt.package_suffix)
        return bool(model_name) and (first == model_name or first.startswith(f"{model_name}-"))

    return [path for path in packages if not own(path)]


def existing_target_note(repo_id: str, others: list[str] | None = None, replaced: bool = True) -> str:
    """Said before Convert when the target repo exists: what a push replaces (`replaced`: the repo
    holds a package of the name this push writes) and, when it holds other packages (`others`),
    that they stay unless the box below is ticked."""
    what = "its package of the same name and its model card" if replaced else "its model card, and adds this package"
    text = f"{repo_id} already exists: converting into it replaces {what}."
    if others:
        named = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        one = len(others) == 1
        text += (f" Its other package{'' if one else 's'} ({named}) stay{'s' if one else ''}, and the new card lists "
                 f"{'it' if one else 'them'}, unless you tick the box below to remove {'it' if one else 'them'}.")
    return text + " Type another repo name to keep it as it is."


def default_push_repo(user: str | None, model_name: str | None, options: ConversionOptions | None = None) -> str:
    """The placeholder of the target-repo field: where a new repo goes by default (the
    options' variant in its name, as the job names it)."""
    return default_repo_name(user or "<you>", model_name or "<model>", options or ConversionOptions())


__all__ = [
    "FormValues",
    "existing_target_note",
    "other_packages",
    "push_target",
    "HELP",
    "PUSH_CHOICES",
    "VISIBILITY_CHOICES",
    "restricted_note",
    "runner_field",
    "default_push_repo",
    "device_fit_note",
    "option_field",
    "format_sequence_note",
    "sequence_note",
    "size_choices",
    "task_choices",
]
