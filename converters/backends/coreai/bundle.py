"""A Core AI LLM bundle: what Apple's `CoreAILanguageModel(resourcesAt:)` (the coreai-models Swift
package) loads and runs. Text generation with the Core AI format becomes one, from any Hub decoder
the registry converts; embedders and encoders stay bare `.aimodel` files (Apple's Swift package has
no embedder API: Package.swift:15-37, BundleKind.swift:11-17).

Read from apple/coreai-models at 86b363d; each part follows these lines:
- the folder `<name>/{<name>.aimodel, metadata.json, tokenizer/}`: export/pipeline.py:316-343; a
  URL ending in .aimodel throws `pointedAtModelAsset` (CoreAIShared/Bundle/ModelBundle.swift:148-151);
- metadata.json, every field Apple's exporter writes: export/bundle.py:49-70; what the loader
  requires: ModelBundle.swift:178-181 (metadata_version "0.2"), :209-219 (`kind`, `name`; `assets`
  a map of strings), LanguageBundle.swift:36-47 (kind llm or vlm, `assets.main`, `language`),
  LanguageConfig.swift:60-69 (`tokenizer`, `vocab_size`, `max_context_length` required;
  `embedded_tokenizer`, `function_map` — FunctionMap.swift:34-36, a map of name lists — optional);
- tokenizer/: the repo's tokenizer files, loaded when tokenizer/tokenizer.json exists, else
  downloaded from the Hub (LanguageBundle.swift:82-98) — which fails in apps (coreai-models#233);
  Apple writes them with `save_pretrained` (export/bundle.py:36-39), we copy the repo's own;
- the program (`AppleLanguageModel`): function `main`; inputs token ids int32 [1, q] and position ids
  int32 [1, past + q], read by position (CoreAISequentialEngine.swift:110-150, 245-250); float16
  logits [1, q, vocab] (:146-149, else `unsupportedLogitsType`; Apple casts: models/macos/qwen3.py:165);
  states `keyCache`/`valueCache` [layers, 1, kv_heads, S, head_dim] (_constants.py:15-17,
  primitives/macos/cache.py:50-61) with S a dynamic axis (models/base.py:455-460) the app grows from
  256 by doubling (StateHandlerFactory.swift:141-158); no mask input: causal attention inside, the
  cache offset = len(position ids) − len(token ids), RoPE at the last q positions
  (models/macos/qwen3.py:50, 83-101).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from ...configs.complex_rotary import real_rotary
from ...configs.moe import dense_experts

METADATA_VERSION = "0.2"  # export/bundle.py:18; ModelBundle.swift:178-181
FUNCTION = "main"  # CoreAIRunner.swift:74; export/bundle.py:59
INPUT_NAMES = ("input_ids", "position_ids")  # models/base.py:391-394 (the engine reads them by position)
STATE_NAMES = ("keyCache", "valueCache")  # _constants.py:15-17, "KV cache names used by the Swift runner"
OUTPUT_NAMES = ("logits",)  # models/base.py:405-408
DEFAULT_CONTEXT = 2048  # a config without max_position_embeddings
# The repo's files a tokenizer folder holds (what save_pretrained writes, and the vocabularies
# of tokenizers without a tokenizer.json); config.json lets swift-transformers tell the model type.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json", "vocab.json", "vocab.txt", "merges.txt",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "config.json")
DRIVEN_AS = ("CoreAILanguageModel (apple/coreai-models): metadata.json read, the prompt prefilled (512-token chunks "
             "past 1024), then one token per call with growing int32 position ids, greedy, Apple's stop tokens")


def applies(cfg) -> bool:
    """Whether this part becomes an LLM bundle: text generation by a decoder that takes a KV cache."""
    return cfg.task == "text-generation" and bool(getattr(cfg, "supports_kv_cache", False)) and cfg.modality == "text"


def context_length(cfg) -> int:
    """The bundle's max_context_length: the model's max_position_embeddings, as Apple's exporter
    writes it (export/bundle.py:57), or the sequence length when a stateful KV cache was asked for
    (that option's meaning: the context size); never past a sliding attention window (a window
    shorter than the context would need its own mask)."""
    attributes, options = cfg.attributes, cfg.options
    context = options.sequence_length.maximum if options.kv_cache == "stateful" else (attributes.max_positions or DEFAULT_CONTEXT)
    window = attributes.sliding_window
    if isinstance(window, int) and window > 0:
        context = min(context, window)
    return int(context)


# ------------------------------------------------------------------ the program


def language_model(model):
    """The transformers model behind Apple's interface (see the module docstring)."""
    import torch

    from ...configs.base import MASK_VALUE

    # The Core ML stateful wrapper's cache: this call's keys and values written at [past, end) in
    # place, and only slots [0, end) read back, so what a grown cache holds past them is never attended.
    from ...configs.text import SliceUpdateCache as slot_cache

    class AppleLanguageModel(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model = inner

        def forward(self, input_ids, position_ids, keyCache, valueCache):  # noqa: N803 - the states' names
            query, end = input_ids.shape[-1], position_ids.shape[-1]
            torch._check(query <= end)
            torch._check(end <= keyCache.shape[3])
            past = end - query  # models/macos/qwen3.py:83-87: offset = seq_len − query_len
            slots = torch.arange(end)
            rows = torch.arange(query) + past
            mask = ((slots[None, :] > rows[:, None]).float() * MASK_VALUE)[None, None]  # causal, inside the program
            result = self.model(input_ids=input_ids, attention_mask=mask, past_key_values=slot_cache(keyCache, valueCache, past, end),
                                position_ids=position_ids[:, past:], use_cache=True)  # qwen3.py:88: RoPE at the last q positions
            return (result.logits.to(torch.float16),)  # float16 logits always (CoreAISequentialEngine.swift:146-149)

    return AppleLanguageModel(model).eval()


@dataclass
class BundleCapture:
    """capture.Captured's fields, for the bundle's own program."""

    part: str
    program: object
    exporter: str
    float16_safe_norms: int
    seconds: float


def capture(plan, model, part: str) -> BundleCapture:
    """torch.export of the bundle's program, in coreai-torch's decompositions: the token ids' and
    position ids' lengths dynamic (models/base.py:446-449), and the caches' sequence axis dynamic
    up to the context (:455-460)."""
    import torch

    from ...decompose import decomposed_program
    from .decompositions import decomposition_table

    started = time.perf_counter()
    cfg = plan.cfg
    context = context_length(cfg)
    a = cfg.attributes
    trace = min(16, context - 1)  # a cache no other axis equals, below the context
    cache = torch.zeros(a.num_layers, 1, a.num_kv_heads, trace, a.head_dim)
    ids = torch.randint(3, max(a.vocab_size or 8, 8), (1, 4), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(6, dtype=torch.int32)[None]
    slots = torch.export.Dim("cache", min=2, max=context)
    dynamic = ({1: torch.export.Dim("query", min=1, max=context - 1)}, {1: torch.export.Dim("positions", min=1, max=context)},
               {3: slots}, {3: slots})
    # The shared capture's rewrites (capture.py): mixture-of-experts routing evaluated densely
    # (coreai-torch has no histc or sort either), complex rotary in real arithmetic.
    with torch.no_grad(), dense_experts(model), real_rotary(model):
        program = decomposed_program(language_model(model), (ids, positions, cache, cache.clone()), dynamic, decomposition_table())
    return BundleCapture(part, program, "torch.export", 0, time.perf_counter() - started)


def interface(cfg) -> dict:
    """Each input's and state's shape with its flexible axes as [low, high] (the .aimodel keeps `?`)."""
    context, a = context_length(cfg), cfg.attributes
    cache = [a.num_layers, 1, a.num_kv_heads, [1, context], a.head_dim]
    return {"input_ids": [1, [1, context - 1]], "position_ids": [1, [1, context]], "keyCache": cache, "valueCache": cache}


# ------------------------------------------------------------------ the folder


def bundle_path(stem: str) -> str:
    """`<name>/<name>.aimodel` (export/pipeline.py:316-319)."""
    return f"{stem}/{stem}.aimodel"


def metadata(plan, name: str, context: int | None = None) -> dict:
    """metadata.json as Apple's exporter writes it (export/bundle.py:49-70), for this model; `context`:
    max_context_length when it is not the macOS bundle's (the iOS bundle's top rung, static_bundle.py)."""
    cfg = plan.cfg
    scheme = plan.options.quantize
    return {
        "metadata_version": METADATA_VERSION,
        "kind": "llm",
        "name": name,
        "assets": {"main": f"{name}.aimodel"},
        "language": {
            "tokenizer": plan.hub_name,
            "vocab_size": int(cfg.attributes.vocab_size),
            "max_context_length": int(context or context_length(cfg)),
            "embedded_tokenizer": True,
            "function_map": {FUNCTION: [FUNCTION]},
        },
        "source": {"model_definition": "torch", "hf_model_id": plan.hub_name},
        "compression": scheme if scheme != "none" else None,
        "compilation": {"date": datetime.now().astimezone().isoformat(), "targets": []},
    }


def write(plan, aimodel: Path, context: int | None = None) -> None:
    """metadata.json and tokenizer/ beside the saved `aimodel`, in its bundle folder."""
    folder = aimodel.parent
    (folder / "metadata.json").write_text(json.dumps(metadata(plan, aimodel.stem, context), indent=2) + "\n")
    tokenizer = folder / "tokenizer"
    shutil.rmtree(tokenizer, ignore_errors=True)
    tokenizer.mkdir()
    source = Path(plan.source.path)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, tokenizer / name)


def problems(folder: Path) -> list[str]:
    """Where `folder` breaks what Apple's loader requires, field by field (empty: it loads):
    ModelBundle.swift:141-195, 209-219; LanguageBundle.swift:35-54, 82-98; LanguageConfig.swift:60-69;
    FunctionMap.swift:34-36."""
    folder = Path(folder)
    found: list[str] = []
    if folder.suffix.lower() in (".aimodel", ".aimodelc"):
        return [f"{folder.name} is a model asset, not a bundle folder (pointedAtModelAsset)"]
    path = folder / "metadata.json"
    if not path.is_file():
        return ["metadata.json is missing (missingMetadata)"]
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        return [f"metadata.json is not JSON (malformedMetadata): {error}"]
    if not isinstance(data, dict):
        return ["metadata.json is not an object (malformedMetadata)"]
    if data.get("metadata_version", "0.1") != METADATA_VERSION:
        found.append(f"metadata_version {data.get('metadata_version')!r} is not '0.2' (unsupportedVersion)")
    if data.get("kind") not in ("llm", "vlm"):
        found.append(f"kind {data.get('kind')!r} is not llm (kindMismatch)")
    if not isinstance(data.get("name"), str):
        found.append("name is missing or not a string")
    assets = data.get("assets")
    if not isinstance(assets, dict) or not all(isinstance(v, str) for v in assets.values()):
        found.append("assets is not a map of file names")
    elif not assets.get("main"):
        found.append("assets.main is missing (missingField)")
    else:
        main = folder / assets["main"]
        if not main.exists() and not (folder / (assets["main"] + "c")).exists():  # ModelBundle.swift:70-78
            found.append(f"assets.main {assets['main']} is not in the folder (missingAsset)")
    language = data.get("language")
    if not isinstance(language, dict):
        return found + ["language is missing (missingField)"]
    for key, kind in (("tokenizer", str), ("vocab_size", int), ("max_context_length", int)):
        value = language.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            found.append(f"language.{key} is missing or not {kind.__name__}")
    if "embedded_tokenizer" in language and not isinstance(language["embedded_tokenizer"], bool):
        found.append("language.embedded_tokenizer is not a boolean")
    function_map = language.get("function_map")
    if function_map is not None and not (isinstance(function_map, dict)
                                         and all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in function_map.values())):
        found.append("language.function_map is not a map of name lists")
    source = data.get("source")
    if source is not None and not (isinstance(source, dict) and source.get("hf_model_id")):
        found.append("source.hf_model_id is missing")  # ModelConfig.swift:194-200
    return found


def cautions(folder: Path) -> list[str]:
    """What loads but may fail in an app: no tokenizer/tokenizer.json (a repo without tokenizer files)
    makes the app download `language.tokenizer` from the Hub (LanguageBundle.swift:92-98), which
    fails in apps (coreai-models#233)."""
    if (Path(folder) / "tokenizer" / "tokenizer.json").is_file():
        return []
    return ["the bundle has no tokenizer/tokenizer.json: CoreAILanguageModel downloads the tokenizer named in "
            "metadata.json from the Hub instead, which fails in apps (coreai-models#233); add the base model's tokenizer files"]


def read(folder: Path) -> dict:
    return json.loads((Path(folder) / "metadata.json").read_text())


# ------------------------------------------------------------------ validation, driven as Apple drives it


def validate(plan, model, part: str, aimodel: Path, earlier: dict | None, kind: str, progress=None) -> dict:
    """The bundle checked as an app would use it: its metadata.json against Apple's loader, its
    program against the engine's contract, then driven as CoreAILanguageModel drives it
    (runtime.CoreAILanguageModelEngine) — the prompt's logits and each step's against
    PyTorch's, and the greedy continuation token by token; a compressed bundle is judged on the
    passage by its scheme's quality bar. Joined to `earlier` (the other packages' validation, or
    None); returns the report's validation section. `progress(done, total, detail)`."""
    from ...report import Check
    from ...validation import quality
    from .runtime import MODE, CoreAILanguageModelEngine

    started = time.perf_counter()
    progress = progress or (lambda done, total, detail: None)
    cfg, folder = plan.cfg, Path(aimodel).parent
    checks: list[Check] = []
    errors: list[str] = []
    found = problems(folder)
    checks.append(Check(part, "metadata.json, Apple's loader rules", "metadata.json", MODE, "bundle_loads", float(not found), 1.0,
                        not found, True))
    errors += [f"{part}: metadata.json: {problem}" for problem in found]
    run = None
    reference = None
    quality_numbers = {}
    scheme = quality.scheme(cfg)
    bar = quality.bar_for(cfg) if scheme else None
    if not found:
        meta = read(folder)
        tokenizer, tokenizer_dir = _bundle_tokenizer(folder)
        engine = None
        try:
            engine = CoreAILanguageModelEngine(folder / meta["assets"]["main"], meta["language"]["max_context_length"])
            progress(0, 3, "PyTorch's greedy continuation of the prompt")
            reference = pytorch_reference(cfg, model, tokenizer, tokenizer_dir)
            progress(1, 3, f"driving {aimodel.name} as CoreAILanguageModel does")
            rows, run = _drive(cfg, part, model, engine, reference, compressed=bar is not None)
            checks += rows
            if bar is not None and tokenizer is not None:
                progress(2, 3, f"the passage ({scheme})")
                rows, quality_numbers = _passage(cfg, part, model, engine, tokenizer, bar, scheme)
                checks += rows
        except ValueError as error:  # the engine's own refusal: the program breaks its contract
            errors.append(f"{part}: {error}")
            checks.append(Check(part, "the program, CoreAISequentialEngine's checks", "main", MODE, "engine_accepts", 0.0, 1.0, False, True))
        finally:
            if engine is not None:
                engine.close()
    notes = [f"{part}: {caution}" for caution in cautions(folder)]
    return _joined(earlier, checks, errors, run, reference, kind, quality_numbers, scheme, bar, time.perf_counter() - started, notes)


def pytorch_reference(cfg, model, tokenizer, tokenizer_dir):
    """PyTorch's greedy continuation of the validation prompt, stopping on the ids Apple's engines
    stop on (runtime.apple_stop_ids): what a bundle's drive is compared with."""
    from ...validation import continuation
    from .runtime import apple_stop_ids

    ids = continuation.prompt_ids(cfg, tokenizer)
    eos = apple_stop_ids(tokenizer, tokenizer_dir) if tokenizer is not None else continuation.eos_ids(cfg, None)
    tokens, scores = continuation.pytorch_greedy(model, ids, continuation.NEW_TOKENS, eos)
    return continuation.Reference(continuation.PROMPT if tokenizer is not None else None, ids, eos, tokens, scores,
                                  continuation.NEW_TOKENS, tokenizer)


def _bundle_tokenizer(folder: Path):
    """The tokenizer as the app loads it: the bundle's tokenizer/ (LanguageBundle.swift:82-98)."""
    from transformers import AutoTokenizer

    path = folder / "tokenizer"
    if not (path / "tokenizer.json").is_file():
        return None, None
    return AutoTokenizer.from_pretrained(path), path


def _drive(cfg, part: str, model, engine, ref, compressed: bool):
    """Prefill, then one token per call, greedy, stopping on Apple's set; rows for the logits of
    the prompt and of each step against PyTorch's (float16 tolerances: the logits are float16)."""
    import torch

    from ...report import Check
    from ...validation import continuation
    from ...validation.compare import Rows, finite_share, max_abs_diff, psnr_db, top1_agreement
    from .runtime import MODE

    state = engine.make_state()
    prompt = list(ref.prompt_ids)
    budget = len(ref.tokens)
    entry = {"package": part, "mode": MODE, "driven_as": DRIVEN_AS}
    got_rows, tokens, stopped = [], [], "new_tokens"
    context = engine.max_context_length
    if context and len(prompt) > context:  # the app refuses it too (StateHandler+NDArray.swift:101-104)
        run = {**entry, "text": None, "token_ids": [], "matching_tokens": 0, "tokens_compared": 0, "passed": None,
               "stopped": "length", "note": f"the {len(prompt)}-token prompt does not fit the {context}-token context: continuation not checked"}
        return [], run
    try:
        prompt_logits = engine.prefill(prompt, state)[0].astype(np.float32)
        row = prompt_logits[-1]
        while True:
            got_rows.append(row)
            tokens.append(int(np.asarray(row, dtype=np.float64).argmax()))
            if tokens[-1] in ref.eos:
                stopped = "eos"
                break
            if len(tokens) >= budget:
                break
            if context and state.processed + 1 > context:  # the next call would pass the context
                stopped = "length"
                break
            row = engine.process([tokens[-1]], state)[0, -1].astype(np.float32)
    except ValueError as error:  # past the context, or the runtime refused the call
        run = {**entry, "text": None, "token_ids": tokens, "matching_tokens": 0, "tokens_compared": budget, "value": 0.0,
               "passed": False, "stopped": "error", "error": f"{type(error).__name__}: {error}"}
        return [Check(part, f"continuation, {ref.new_tokens} tokens", "logits", MODE, "continuation_match", 0.0, 1.0, False, True)], run
    tol = cfg.validation_tolerances()
    atol = tol.atol["float16"]
    with torch.no_grad():
        want_prompt = model(input_ids=torch.tensor([prompt]), use_cache=False).logits[0].float().numpy()
    rows = Rows(part, f"prompt, {len(prompt)} tokens (one call)", MODE)
    scale = max(1.0, float(np.abs(want_prompt).max()))
    rows.add("logits", "finite_share", finite_share(prompt_logits), 1.0, True)
    if not compressed:
        rows.add("logits", "max_abs_diff", max_abs_diff(want_prompt, prompt_logits), atol * scale, False)
        rows.add("logits", "psnr_db", psnr_db(want_prompt, prompt_logits), tol.min_psnr["float16"], True)
        rows.add("logits", "top1_agreement", top1_agreement(want_prompt, prompt_logits, atol * scale), tol.min_top1["float16"], True)
        compared = min(len(got_rows), len(ref.logits))
        want_steps, got_steps = np.stack(ref.logits[:compared]), np.stack(got_rows[:compared])
        steps = Rows(part, f"{compared} next-token rows (prefill, then one token per call)", MODE)
        scale = max(1.0, float(np.abs(want_steps).max()))
        steps.add("logits", "max_abs_diff", max_abs_diff(want_steps, got_steps), atol * scale, False)
        steps.add("logits", "top1_agreement", top1_agreement(want_steps, got_steps, atol * scale), tol.min_top1["float16"], True)
        rows = list(rows) + list(steps)
    run = {**entry, "text": ref.text(tokens), "token_ids": tokens, "stopped": stopped}
    result = continuation.compare(ref, tokens, atol)
    if stopped == "length" and len(tokens) < len(ref.tokens):
        result.setdefault("note", f"the {context}-token context allowed only {len(tokens)} new tokens")
    run.update(result, **continuation.split_texts(ref, tokens, result["matching_tokens"]))
    if compressed:  # its greedy text may drift: the passage judges it; the row checks that it runs
        run.update(passed=True, note="compressed package: the greedy text may drift from PyTorch's; quality is judged on the passage")
        return list(rows) + [Check(part, f"continuation, {ref.new_tokens} tokens", "logits", MODE, "continuation_runs", 1.0, 1.0, True, True)], run
    row = continuation.check_row(ref, run)
    return list(rows) + ([row] if row else []), run


def _passage(cfg, part: str, model, engine, tokenizer, bar, scheme: str):
    """The quality passage prefilled as the app prefills a prompt, judged by the scheme's bar."""
    import torch

    from ...report import Check
    from ...validation import quality
    from .runtime import MODE

    limit = min(context_length(cfg) - 1, max(cfg.options.sequence_length.maximum, 128))
    ids = [int(i) for i in tokenizer(quality.passage(), add_special_tokens=True)["input_ids"]][:limit]
    actual = engine.prefill(ids, engine.make_state())[0].astype(np.float32)
    with torch.no_grad():
        reference = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
    metrics = quality.token_metrics(reference, actual, np.asarray(ids))
    rows = []
    for metric, threshold, higher in (("top1_agreement", bar.min_top1, True), ("mean_kl_divergence", bar.max_kl, False),
                                      ("perplexity_ratio", bar.max_perplexity_ratio, False)):
        value = metrics[metric]
        ok = value >= threshold if higher else value <= threshold
        rows.append(Check(part, f"passage, {len(ids)} tokens ({scheme})", "logits", MODE, metric, value, threshold, bool(ok), higher))
    return rows, {part: {MODE: metrics}}


def _joined(earlier: dict | None, checks: list, errors: list[str], run: dict | None, ref, kind: str, quality_numbers: dict,
            scheme: str | None, bar, seconds: float, notes: list[str]) -> dict:
    """The bundle's rows and run added to the other packages' validation section."""
    from ...report import METRIC_LABELS, number
    from ...validation import continuation
    from .runtime import MODE

    section = earlier or {"passed": True, "kind": "", "runtime": "", "modes": [], "message": "", "notes": [], "checks": [],
                          "compute_units": {}, "placement": {}}
    section["checks"] = section["checks"] + [c.to_dict() for c in checks]
    section["notes"] = section.get("notes", []) + notes
    if MODE not in section["modes"]:
        section["modes"] = [*section["modes"], MODE]
    kinds = [k for k in section["kind"].split("; ") if k]
    section["kind"] = "; ".join(kinds + ([kind] if kind not in kinds else []))
    failed = [c for c in checks if not c.passed]
    before = earlier is None or earlier.get("passed") is not False
    section["passed"] = bool(before and not failed and not errors)
    if errors:
        message = "; ".join(errors)
        section["message"] = message if before else f"{section['message']}; {message}"
    elif failed:
        worst = next((c for c in failed if c.inputs.startswith("passage")), failed[0])
        bound = "≥" if worst.higher_is_better else "≤"
        message = (f"{len(failed)} of {len(checks)} checks of the Core AI bundle failed, e.g. {worst.output} ({worst.mode}, "
                   f"{worst.inputs}): {METRIC_LABELS.get(worst.metric, worst.metric)} {number(worst.value, worst.metric)}, "
                   f"needs {bound} {number(worst.threshold, worst.metric)}")
        if scheme:
            message = f"the {scheme} compression loses too much quality to ship: {message}"
        section["message"] = message if before else f"{section['message']}; {message}"
    elif before:
        section["message"] = f"all {len(section['checks'])} checks passed"
    if run is not None:
        if section.get("continuation"):
            if section["continuation"]["pytorch"]["token_ids"] != ref.tokens:  # Apple's stop tokens ended PyTorch's text elsewhere
                run["pytorch_token_ids"] = ref.tokens
            runs = section["continuation"]["runs"] + [{k: v for k, v in run.items() if k != "value"}]
            checked = [r for r in runs if r["passed"] is not None]
            section["continuation"].update(runs=runs, passed=all(r["passed"] is not False for r in checked) if checked else None)
        else:
            section["continuation"] = continuation.section(ref, [run])
    if scheme:
        existing = section.get("quality") or {"scheme": scheme, "bar": vars(bar) if bar else None, "packages": {}}
        existing["packages"] = {**existing.get("packages", {}), **quality_numbers}
        section["quality"] = existing
    section["seconds"] = round(section.get("seconds", 0.0) + seconds, 3)
    return section
