"""The iOS static-shape Core AI LLM bundle: what Apple's `CoreAILanguageModel` runs through its
`StaticShapeEngine` (the Neural Engine path), from any Hub decoder the registry converts. The
macOS bundle (bundle.py: one dynamic `main`) is the default; this variant is asked for with the
LLM bundle option. The folder and metadata.json are the macOS bundle's (Apple writes one schema
for both: export/bundle.py:49-70), with max_context_length the top rung of the ladder.

Read from apple/coreai-models at 86b363d (`py/` = python/src/coreai_models/, `engine` =
swift/Sources/CoreAILanguageModels/InferenceEngines/CoreAIStaticShapeEngine.swift); the whole
contract, with every line, is in docs/core-ai.md ("The iOS static-shape bundle"):
- the functions `load_embeddings`, `gather_embeddings_<q>`, `extend_<ctx>_<q>`, `prompt_opt_<ctx>_<q>`
  (py/_constants.py:36-54; py/models/base.py:880-1038; py/export/ios.py:80-89): the engine is chosen
  by these names (shared/Runtime/ModelStructure.swift:240-248);
- q in {8, 16, 64}, ctx 256 doubling up to the context (base.py:864-867, 1007-1030), the default context
  min(4096, max_position_embeddings) (_constants.py:29);
- extend's inputs transformer_input float16 [1, q, 1, H], position_ids uint16 [1, q], in_step int32 [1],
  causal_mask float16 [1, ctx, 1, q] (additive: axis 1 the cache slot, axis 3 the query row), the
  embedding table [V, 1, H]; output out_logits float16 [1, 1, q, V]; states key_cache/value_cache
  float16 [L, 1, kv·hd, 1, ctx] (py/primitives/ios/cache.py:13-20), written at
  [l, 0, 0:kv·hd, 0, in_step : in_step + q] and read as the whole row (cache.py:95-118);
- prompt_opt: the same, prefill only: out_logits the scalar k[0,0,0,0,0] + v[0,0,0,0,0], no head (qwen3.py:217-218);
- the hardware constraints of base.py:1040-1070 (IOSurface; the caches interleaved by 8).

The cache write with a runtime offset is our own functional op (`cache_slot_update`), lowered to
`coreai.slice_update` as Apple's `immutable_slice_update` is (py/export/mlir_ops.py:41-70, 452-456):
torch.export records the copy into the cache input as an input mutation, a Core AI state.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

LOAD, GATHER, EXTEND, PROMPT = "load_embeddings", "gather_embeddings", "extend", "prompt_opt"  # _constants.py:36-39
QUERIES = (8, 16, 64)  # base.py:864 IOS_STATIC_QUERY_LENS
MIN_CONTEXT = 256  # base.py:866 IOS_STATIC_MIN_CACHE_LEN
DEFAULT_CONTEXT = 4096  # _constants.py:29 IOS_DEFAULT_MAX_CONTEXT_LENGTH
KV_INTERLEAVE = 8  # base.py:869
TABLE, TOKEN_IDS, GATHERED = "embedding_table", "in_new_token_ids", "gathered_embeddings"  # _constants.py:41-44
TRANSFORMER_INPUTS = ("transformer_input", "position_ids", "in_step", "causal_mask", TABLE)  # base.py:889-895
STATES = ("key_cache", "value_cache")  # _constants.py:49-50; engine:20-21
LOGITS = "out_logits"  # _constants.py:53; engine:19
OP = "coreml_converter::cache_slot_update"


# ------------------------------------------------------------------ the ladder and the contract


def rungs(context: int) -> list[int]:
    """The cache lengths: 256 doubling while within `context` (base.py:1007-1030)."""
    out, length = [], MIN_CONTEXT
    while length <= context:
        out.append(length)
        length *= 2
    return out


def context_for(cfg) -> int:
    """The bundle's max_context_length: min(4096, the model's context), rounded down to a rung —
    the engine finds the function whose cache is exactly that long, else it throws (engine:92-105)."""
    from .bundle import context_length

    wanted = min(DEFAULT_CONTEXT, context_length(cfg))
    found = rungs(wanted)
    return found[-1] if found else wanted


def function_names(context: int) -> list[str]:
    """Every function of the asset, as set_static_shape_config names them (`<entrypoint>_<key>`)."""
    names = [LOAD] + [f"{GATHER}_{q}" for q in QUERIES]
    for base in (EXTEND, PROMPT):
        names += [f"{base}_{ctx}_{q}" for ctx in rungs(context) for q in QUERIES]
    return names


def kv_width(cfg) -> int:
    a = cfg.attributes
    return int(a.num_kv_heads) * int(a.head_dim)


def contract(cfg, context: int) -> dict[str, dict]:
    """Each function's inputs, outputs and states: {name: {"inputs": [(name, dtype, shape)], ...}}
    (the table in docs/core-ai.md; base.py:880-1038)."""
    a = cfg.attributes
    vocab, hidden, layers = int(a.vocab_size), int(a.hidden_size), int(a.num_layers)
    table = (TABLE, "float16", [vocab, 1, hidden])
    found = {LOAD: {"inputs": [], "outputs": [table], "states": []}}
    for q in QUERIES:
        found[f"{GATHER}_{q}"] = {"inputs": [(TOKEN_IDS, "int32", [1, q]), table],
                                  "outputs": [(GATHERED, "float16", [1, q, 1, hidden])], "states": []}
    for ctx in rungs(context):
        cache = [layers, 1, kv_width(cfg), 1, ctx]
        for q in QUERIES:
            inputs = [("transformer_input", "float16", [1, q, 1, hidden]), ("position_ids", "uint16", [1, q]),
                      ("in_step", "int32", [1]), ("causal_mask", "float16", [1, ctx, 1, q]), table]
            states = [(name, "float16", cache) for name in STATES]
            found[f"{EXTEND}_{ctx}_{q}"] = {"inputs": inputs, "outputs": [(LOGITS, "float16", [1, 1, q, vocab])], "states": states}
            found[f"{PROMPT}_{ctx}_{q}"] = {"inputs": inputs, "outputs": [(LOGITS, "float16", [])], "states": states}
    return found


def refusal(cfg, options) -> str | None:
    """Why this model and these options cannot become the iOS bundle, or None."""
    a = cfg.attributes
    if options.quantize != "none":
        return ("The iOS Core AI LLM bundle is made at float16 weights for now (its compressed form is not measured "
                "yet); choose no weight compression, or the macOS bundle.")
    if options.precision != "float16":
        return ("The iOS Core AI LLM bundle runs on the Neural Engine, which computes in float16, and Apple's engine "
                "feeds it float16 inputs: choose float16, or the macOS bundle for float32.")
    window = a.sliding_window
    if isinstance(window, int) and window > 0:
        return (f"This model attends over a sliding window of {window} tokens, which the iOS bundle's mask (the "
                "causal mask Apple's engine fills) does not express; choose the macOS bundle.")
    from .bundle import context_length

    context = min(DEFAULT_CONTEXT, context_length(cfg))
    floor = max(MIN_CONTEXT, int(a.num_layers), kv_width(cfg))
    if context < floor:
        return (f"The iOS bundle needs a context of at least {floor} tokens (Apple's engine sizes the cache from its "
                f"largest axis, and the smallest cache holds 256), and this model's is {context}; choose the macOS bundle.")
    return None


# ------------------------------------------------------------------ the cache write: our own functional op

_OPS: dict = {}


def slot_update():
    """`cache_slot_update(cache, update, begin, end)`: the cache with `update` written at
    [begin, end) — functional (Apple's immutable_slice_update, mlir_ops.py:41-70), so torch.export
    takes it as it is; begin and end are int32 tensors, the offset a runtime value (in_step)."""
    if "op" not in _OPS:
        import torch

        # The schema given: this module's annotations are strings (`from __future__ import annotations`).
        @torch.library.custom_op(OP, mutates_args=(), schema="(Tensor cache, Tensor update, Tensor begin, Tensor end) -> Tensor")
        def cache_slot_update(cache, update, begin, end):
            result = cache.clone()
            result[tuple(slice(int(b), int(e)) for b, e in zip(begin.tolist(), end.tolist()))] = update
            return result

        @cache_slot_update.register_fake
        def _(cache, update, begin, end):
            return torch.empty_like(cache)

        _OPS["op"] = cache_slot_update
    return _OPS["op"]


def lower_slot_update(values_map, node, location):
    """cache_slot_update → coreai.slice_update(cache, begin, end, strides 1, update) (mlir_ops.py:452-456)."""
    import numpy as np
    from coreai._compiler.dialects import coreai
    from coreai_torch._utils import get_operands

    cache, update, begin, end = get_operands(values_map, node, [0, 1, 2, 3])
    strides = coreai.constant(np.ones(cache.type.rank, dtype=np.int32))
    return coreai.slice_update(cache, begin, end, strides, update)


# ------------------------------------------------------------------ the programs


def _modules(model, cfg, context: int):
    """The three callables of base.py:880-1038 over the Hub model: the table, the gather, and the
    transformer (traced twice, prefill off and on: ios.py:80-89)."""
    import torch

    from transformers.cache_utils import Cache

    a = cfg.attributes
    kv_heads, head_dim, layers = int(a.num_kv_heads), int(a.head_dim), int(a.num_layers)
    width = kv_heads * head_dim
    update = slot_update()
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    with torch.no_grad():  # the rows the model adds up: a scaled embedding's scale included (Gemma's x √H)
        rows = embedding(torch.arange(embedding.weight.shape[0])).float()
    tied, head_scale = head is not None and head.weight is embedding.weight, 1.0
    if tied:  # the head reads the table input: the rows over their scale, else the head keeps its own weight
        weight = embedding.weight.detach().float()
        ratio = float(rows.abs().sum() / weight.abs().sum().clamp(min=1e-12))
        tied = bool(ratio > 0 and torch.allclose(rows, weight * ratio, rtol=1e-3, atol=1e-6))
        head_scale = 1.0 / ratio if tied else 1.0

    class Table(torch.nn.Module):  # load_embeddings: none -> [V, 1, H] (embedding.py:30-39)
        def __init__(self):
            super().__init__()
            self.register_buffer("table", rows.to(torch.float16)[:, None, :].clone())

        def forward(self):
            return self.table

    class Gather(torch.nn.Module):  # gather_embeddings: [1, q] ids -> [1, q, 1, H] (embedding.py:48-54)
        def forward(self, in_new_token_ids, embedding_table):
            return torch.nn.functional.embedding(in_new_token_ids, embedding_table[:, 0, :]).unsqueeze(2)

    class StaticSlotCache(Cache):
        """Each layer's keys and values written into the [L, 1, kv·hd, 1, ctx] cache at in_step
        with cache_slot_update (cache.py:95-118), and the layer's whole row read back as
        [1, kv, ctx, hd]: the caller's mask decides which slots count."""

        def __init__(self, keys, values, in_step, query):
            super().__init__(layers=[])
            self.keys, self.values = keys, values
            zero, one = torch.zeros(1, dtype=torch.int32), torch.ones(1, dtype=torch.int32)
            self._begin = lambda layer: torch.cat([torch.full((1,), layer, dtype=torch.int32), zero, zero, zero, in_step])
            self._end = lambda layer: torch.cat([torch.full((1,), layer + 1, dtype=torch.int32), one,
                                                 torch.full((1,), width, dtype=torch.int32), one, in_step + query])

        def _write(self, cache, states, layer):
            query = states.shape[2]
            rows = states.permute(0, 1, 3, 2).reshape(1, width, 1, query)[None].to(cache.dtype)  # [1, 1, kv·hd, 1, q]
            cache = update(cache, rows, self._begin(layer), self._end(layer))
            row = cache[layer].reshape(1, kv_heads, head_dim, cache.shape[-1]).permute(0, 1, 3, 2)  # [1, kv, ctx, hd]
            return cache, row.to(states.dtype)

        def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
            self.keys, k = self._write(self.keys, key_states, layer_idx)
            self.values, v = self._write(self.values, value_states, layer_idx)
            return k, v

        def get_seq_length(self, layer_idx: int = 0) -> int:
            return 0  # positions and the mask come from the inputs

        def __len__(self) -> int:
            return layers

    class TableHead(torch.nn.Module):
        """A tied output head read from the table input, so the weights are stored once (qwen3.py:220-236)."""

        def __init__(self):
            super().__init__()
            self.table = None

        def forward(self, hidden):
            if head_scale != 1.0:
                hidden = hidden * head_scale
            return hidden @ self.table[:, 0, :].to(hidden.dtype).T

    class Transformer(torch.nn.Module):  # extend / prompt_opt (qwen3.py:195-236)
        def __init__(self, prefill: bool):
            super().__init__()
            self.model, self.prefill = model, prefill
            self.head = TableHead() if tied else None

        def forward(self, transformer_input, position_ids, in_step, causal_mask, key_cache, value_cache, embedding_table):
            query = transformer_input.shape[1]
            cache = StaticSlotCache(key_cache, value_cache, in_step, query)
            # float16 in (the contract), float32 inside until coreai-opt's float16 pass (norms and rotary kept float32)
            given = dict(inputs_embeds=transformer_input[:, :, 0, :].float(), attention_mask=causal_mask.permute(0, 2, 3, 1).float(),
                         position_ids=position_ids.to(torch.int32), past_key_values=cache, use_cache=True)
            if self.prefill:  # no head: the scalar keeps the cache writes (qwen3.py:217-218)
                getattr(self.model, self.model.base_model_prefix)(**given)
                result = cache.keys[0, 0, 0, 0, 0] + cache.values[0, 0, 0, 0, 0]
            elif self.head is None:
                result = self.model(**given).logits.to(torch.float16)[:, None]  # [1, 1, q, V]
            else:  # the model's own head code (any scaling or softcap) over the table input
                original, self.head.table = self.model.get_output_embeddings(), embedding_table
                self.model.set_output_embeddings(self.head)
                try:
                    result = self.model(**given).logits.to(torch.float16)[:, None]
                finally:
                    self.model.set_output_embeddings(original)
            key_cache.copy_(cache.keys)
            value_cache.copy_(cache.values)
            return result.to(torch.float16)

    return Table().eval(), Gather().eval(), Transformer, tied


def trace_query(cfg) -> int:
    """The q the transformer is traced at: Apple's 8 (base.py:860), else one no other axis equals."""
    a = cfg.attributes
    taken = {int(v) for v in (a.num_layers, a.num_kv_heads, a.head_dim, a.hidden_size, a.num_heads, kv_width(cfg)) if v}
    return next(q for q in (8, 16, 64, 12, 24, 40) if q not in taken)


@dataclass
class StaticCapture:
    """capture.Captured's fields, for the iOS bundle's four programs."""

    part: str
    programs: dict  # entrypoint -> ExportedProgram
    context: int
    tied: bool
    exporter: str
    float16_safe_norms: int
    seconds: float


def capture(plan, model, part: str) -> StaticCapture:
    """torch.export of the four programs, the transformer at q and ctx dynamic (base.py:936-992)."""
    return _capture(plan.cfg, model, part, context_for(plan.cfg))


def _capture(cfg, model, part: str, context: int) -> StaticCapture:
    import torch

    from ...configs.complex_rotary import real_rotary
    from ...configs.moe import dense_experts

    started = time.perf_counter()
    a = cfg.attributes
    table_module, gather, transformer, tied = _modules(model, cfg, context)
    q = trace_query(cfg)
    table = table_module()
    ids = torch.randint(1, int(a.vocab_size), (1, q), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    cache = torch.zeros(int(a.num_layers), 1, kv_width(cfg), 1, context, dtype=torch.float16)
    query = torch.export.Dim("query", min=1, max=context)
    slots = torch.export.Dim("cache", min=2, max=context)
    programs = {}
    with torch.no_grad(), dense_experts(model), real_rotary(model):
        programs[LOAD] = torch.export.export(table_module, (), strict=False)
        programs[GATHER] = torch.export.export(gather, (ids, table), dynamic_shapes=({1: query}, None), strict=False)
        inputs = (gather(ids, table), torch.arange(q).to(torch.uint16)[None], torch.zeros(1, dtype=torch.int32),
                  torch.zeros(1, context, 1, q, dtype=torch.float16), cache, cache.clone(), table)
        dynamic = ({1: query}, {1: query}, None, {1: slots, 3: query}, {4: slots}, {4: slots}, None)
        for name, prefill in ((EXTEND, False), (PROMPT, True)):
            programs[name] = torch.export.export(transformer(prefill).eval(), inputs, dynamic_shapes=dynamic, strict=False)
    return StaticCapture(part, programs, context, tied, "torch.export", 0, time.perf_counter() - started)


def _kept_float32(node) -> bool:
    """What coreai-opt's float16 pass leaves in float32: every op of a norm module (as backend.py's
    `_inside_a_norm`: a real LLM's activations square past float16's range) and of the rotary
    embedding (position × frequency past 2048 loses its angle in float16, whose step there is 2)."""
    stack = node.meta.get("nn_module_stack") or {}
    return any("Norm" in str(kind) or "Rotary" in str(kind) for _, kind in stack.values())


def constraints(context: int) -> dict[str, dict]:
    """The hardware constraints of base.py:1040-1070, by entrypoint."""
    from coreai.authoring.types import AllocationType, HardwareConstraints

    table = HardwareConstraints(AllocationType.IOSurface, interleave=[8, 1, 1], alignments=[1, 1, 1, 1])
    cache = HardwareConstraints(AllocationType.IOSurface, interleave=[1, 1, KV_INTERLEAVE, 1, 1],
                                alignments=[1, 1, 1, 1, KV_INTERLEAVE * context, 1])
    transformer = {TABLE: table, **{name: cache for name in STATES}}
    return {LOAD: {TABLE: table}, GATHER: {TABLE: table}, EXTEND: transformer, PROMPT: transformer}


def static_shapes(cfg, context: int) -> dict[str, dict]:
    """set_static_shape_config's keys and shapes (base.py:995-1038); the keys quoted, as the
    compiler's attribute parser needs a name that starts with a digit to be."""
    a = cfg.attributes
    hidden, layers = int(a.hidden_size), int(a.num_layers)
    transformer = {}
    for ctx in rungs(context):
        for q in QUERIES:
            cache = (layers, 1, kv_width(cfg), 1, ctx)
            transformer[f'"{ctx}_{q}"'] = {"transformer_input": (1, q, 1, hidden), "position_ids": (1, q),
                                           "causal_mask": (1, ctx, 1, q), STATES[0]: cache, STATES[1]: cache}
    return {GATHER: {f'"{q}"': {TOKEN_IDS: (1, q)} for q in QUERIES}, EXTEND: transformer, PROMPT: transformer}


def convert(plan, captured: StaticCapture):
    """The four programs into one AIProgram (converter.py:193-240, 884-955), constrained, then
    specialized into the ladder's static functions (asset.py:348-445)."""
    return _convert(plan.cfg, captured, hardware=True)


def _convert(cfg, captured: StaticCapture, hardware: bool):
    import coreai_torch

    from ...errors import ConversionError
    from .decompositions import decomposition_table

    converter = coreai_torch.TorchConverter()
    converter.register_torch_lowering(OP + ".default")(lower_slot_update)
    names = {LOAD: ([], [TABLE], []), GATHER: ([TOKEN_IDS, TABLE], [GATHERED], []),
             EXTEND: (list(TRANSFORMER_INPUTS), [LOGITS], list(STATES)), PROMPT: (list(TRANSFORMER_INPUTS), [LOGITS], list(STATES))}
    for entry, program in captured.programs.items():
        program = program.run_decompositions(decomposition_table())
        if entry in (EXTEND, PROMPT):
            from coreai_opt.casting import cast_fp32_to_fp16

            from .cast_speedups import faster_float16_cast

            with faster_float16_cast():
                program = cast_fp32_to_fp16(program, ignored_ops=_kept_float32)
        inputs, outputs, states = names[entry]
        converter.add_exported_program(program, input_names=inputs or None, output_names=outputs,
                                       state_names=states or None, entrypoint_name=entry)
    try:
        program = converter.to_coreai()
    except Exception as error:  # coreai-torch raises plain exceptions for ops it lacks
        raise ConversionError(f"coreai-torch could not convert this {cfg.hf_config.model_type} model for the iOS bundle: "
                              f"{str(error).splitlines()[0][:300]}") from error
    if hardware:  # before the specialization: the base graphs are gone after it (asset.py:364-369)
        for entry, given in constraints(captured.context).items():
            program.set_hardware_constraints(entry, given)
    for entry, shapes in static_shapes(cfg, captured.context).items():
        program.set_static_shape_config(entry, shapes)
    return program


# ------------------------------------------------------------------ the folder's own rule, and the asset's interface

LAYOUT_NOTE = ("the iOS bundle's programs were driven here without their Neural Engine buffer layouts (the IOSurface "
               "interleave of the caches and the embedding table), which coreai-core's Linux runtime mishandles; the file "
               "itself was loaded and its functions checked against Apple's contract")
DRIVEN_AS = ("StaticShapeEngine (CoreAILanguageModel's iOS engine, apple/coreai-models): metadata.json read, load_embeddings "
             "run once, the prompt through prompt_opt/extend as the engine picks them, then one token per call on the "
             "q-aligned batch, uint16 positions and its float16 causal mask, greedy, Apple's stop tokens")


def is_static(aimodel) -> bool:
    """Whether a saved .aimodel is an iOS bundle's: Apple's factory picks StaticShapeEngine for any
    `extend…` function plus `load_embeddings` (ModelStructure.swift:240-248)."""
    from pathlib import Path

    from coreai.authoring.asset import AIModelAsset

    if not (Path(aimodel) / "main.mlirb").exists():
        return False
    names = AIModelAsset.load(str(aimodel)).summary(include_statistics=False).function_names
    return LOAD in names and any(name.startswith(EXTEND) for name in names)


def interface(aimodel) -> dict[str, dict]:
    """Each function's inputs, outputs and states as saved: {name: {"inputs": [(name, dtype, shape)], ...}}."""
    from coreai.authoring.asset import AIModelAsset

    from .runtime import _feature

    summary = AIModelAsset.load(str(aimodel)).summary(include_statistics=False)

    def read(pairs) -> list[tuple]:
        found = []
        for name, text in pairs:
            feature = _feature(name, text)
            found.append((name, feature["dtype"], feature["shape"]))
        return found

    return {name: {"inputs": read(summary.function_inputs(name)), "outputs": read(summary.function_outputs(name)),
                   "states": read(summary.function_states(name))} for name in summary.function_names}


def problems(aimodel, cfg, context: int) -> list[str]:
    """Where the asset breaks the iOS contract: exactly the ladder's functions, an extend whose cache
    is max_context_length long (engine:92-105), and each function's names, dtypes and shapes."""
    saved, wanted = interface(aimodel), contract(cfg, context)
    found = []
    missing, extra = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
    if missing:
        found.append(f"functions missing: {', '.join(missing)}")
    if extra:
        found.append(f"functions the ladder does not have: {', '.join(extra)}")
    if not any(name.startswith(f"{EXTEND}_{context}_") for name in saved):
        found.append(f"no extend function with the max context length of {context} (the engine throws)")
    for name in sorted(set(saved) & set(wanted)):
        for kind in ("inputs", "outputs", "states"):
            got, want = saved[name][kind], [tuple(x) for x in wanted[name][kind]]
            if kind == "inputs":  # read by name; order is not part of the contract
                got, want = sorted(got), sorted(want)
            if [tuple(x) for x in got] != want:
                found.append(f"{name} {kind}: {got}, the contract {want}")
    return found


def twin(cfg, model, context: int, folder) -> "Path":
    """The bundle's programs converted again without the hardware constraints, saved in `folder`: what
    validation drives. coreai-core 1.0.0b3's Linux runtime mishandles an interleaved buffer (measured on
    the tiny Llama: a cache of [2, 1, 16, 1, 256] written and read back through a function whose state
    has the interleave [1, 1, 8, 1, 1] loses its last 7 values, [1, 0, 9…15, 0, 255], and a call reads
    whatever memory holds there: NaN logits at random), and its Python API cannot write into such a
    buffer at all (`NDArray.numpy()` copies; the buffer protocol refuses). The constraints change only
    the buffers' layout at the functions' edges (coreaix copy ops), not what they compute."""
    from pathlib import Path

    captured = _capture(cfg, model, "model", context)
    path = Path(folder) / "unconstrained.aimodel"
    _convert(cfg, captured, hardware=False).save_asset(path)
    return path


# ------------------------------------------------------------------ validation, driven as StaticShapeEngine drives it


def validate(plan, model, part: str, aimodel, earlier: dict | None, kind: str, progress=None) -> dict:
    """bundle.validate for the iOS bundle: metadata.json against Apple's loader, the asset against the
    contract, then driven as StaticShapeEngine drives it (static_runtime): each next-token row
    against PyTorch's, and the greedy continuation token by token."""
    from pathlib import Path

    from ...report import Check
    from . import bundle
    from .runtime import MODE
    from .static_runtime import StaticShapeEngine

    started = time.perf_counter()
    progress = progress or (lambda done, total, detail: None)
    cfg, folder = plan.cfg, Path(aimodel).parent
    checks, errors, run, reference = [], [], None, None
    found = bundle.problems(folder)
    checks.append(Check(part, "metadata.json, Apple's loader rules", "metadata.json", MODE, "bundle_loads", float(not found), 1.0,
                        not found, True))
    errors += [f"{part}: metadata.json: {problem}" for problem in found]
    if not found:
        meta = bundle.read(folder)
        context = int(meta["language"]["max_context_length"])
        wrong = problems(aimodel, cfg, context)
        checks.append(Check(part, "the functions, StaticShapeEngine's contract", "all", MODE, "engine_accepts", float(not wrong),
                            1.0, not wrong, True))
        errors += [f"{part}: {problem}" for problem in wrong]
        tokenizer, tokenizer_dir = bundle._bundle_tokenizer(folder)  # noqa: SLF001 - the app's tokenizer/, as bundle.validate reads it
        engine, scratch = None, tempfile.TemporaryDirectory(prefix="ios-bundle-")
        vocab = int(meta["language"]["vocab_size"])
        try:
            StaticShapeEngine(folder / meta["assets"]["main"], context, vocab).close()  # the engine's init on the file itself
            progress(0, 3, "the programs without their Neural Engine layouts, to drive here")
            engine = StaticShapeEngine(twin(cfg, model, context, scratch.name), context, vocab)
            progress(1, 3, "PyTorch's greedy continuation of the prompt")
            reference = bundle.pytorch_reference(cfg, model, tokenizer, tokenizer_dir)
            progress(2, 3, f"driving {Path(aimodel).name}'s programs as StaticShapeEngine does")
            rows, run = drive(cfg, part, engine, reference)
            checks += rows
        except ValueError as error:  # the engine's own refusal
            errors.append(f"{part}: {error}")
            checks.append(Check(part, "the program, StaticShapeEngine's checks", "all", MODE, "engine_accepts", 0.0, 1.0, False, True))
        finally:
            if engine is not None:
                engine.close()
            scratch.cleanup()
    notes = [f"{part}: {caution}" for caution in bundle.cautions(folder)] + [f"{part}: {LAYOUT_NOTE}"]
    return bundle._joined(earlier, checks, errors, run, reference, kind, {}, None, None,  # noqa: SLF001 - the same section
                          time.perf_counter() - started, notes)


def generate(engine, prompt: list[int], budget: int, eos: set[int]) -> tuple[list[int], list, str]:
    """The engine's generation loop (engine:692-735): inference over all tokens so far, greedy, the
    token appended; at most max_context_length − len(prompt) tokens (:685-688). Returns the new
    tokens, each one's float16 logits row, and why it stopped."""
    import numpy as np

    engine.reset()
    tokens, rows, stopped = [], [], "new_tokens"
    limit = min(budget, max(0, engine.max_context_length - len(prompt)))
    while len(tokens) < limit:
        row = engine.inference(prompt + tokens)
        rows.append(row.astype(np.float32))
        tokens.append(int(np.asarray(row, dtype=np.float64).argmax()))
        if tokens[-1] in eos:
            stopped = "eos"
            break
    if stopped != "eos" and len(tokens) < budget:
        stopped = "length"
    return tokens, rows, stopped


def drive(cfg, part: str, engine, ref):
    """Rows for the next-token logits against PyTorch's and the continuation (float16 tolerances)."""
    import numpy as np

    from ...validation import continuation
    from ...validation.compare import Rows, finite_share, max_abs_diff, top1_agreement
    from .runtime import MODE

    entry = {"package": part, "mode": MODE, "driven_as": DRIVEN_AS}
    try:
        tokens, got, stopped = generate(engine, list(ref.prompt_ids), len(ref.tokens), ref.eos)
    except ValueError as error:
        run = {**entry, "text": None, "token_ids": [], "matching_tokens": 0, "tokens_compared": len(ref.tokens), "value": 0.0,
               "passed": False, "stopped": "error", "error": f"{type(error).__name__}: {error}"}
        from ...report import Check

        return [Check(part, f"continuation, {ref.new_tokens} tokens", "logits", MODE, "continuation_match", 0.0, 1.0, False, True)], run
    tol = cfg.validation_tolerances()
    atol = tol.atol["float16"]
    rows = []
    compared = min(len(got), len(ref.logits))
    if compared:
        want, have = np.stack(ref.logits[:compared]), np.stack(got[:compared])
        steps = Rows(part, f"{compared} next-token rows (the prompt, then one token per call)", MODE)
        scale = max(1.0, float(np.abs(want).max()))
        steps.add("logits", "finite_share", finite_share(have), 1.0, True)
        steps.add("logits", "max_abs_diff", max_abs_diff(want, have), atol * scale, False)
        steps.add("logits", "top1_agreement", top1_agreement(want, have, atol * scale), tol.min_top1["float16"], True)
        rows = list(steps)
    run = {**entry, "text": ref.text(tokens), "token_ids": tokens, "stopped": stopped}
    result = continuation.compare(ref, tokens, atol)
    if stopped == "length" and len(tokens) < len(ref.tokens):
        result.setdefault("note", f"the {engine.max_context_length}-token context allowed only {len(tokens)} new tokens")
    run.update(result, **continuation.split_texts(ref, tokens, result["matching_tokens"]))
    row = continuation.check_row(ref, run)
    return rows + ([row] if row else []), run
