"""Calibrated low-bit weights for text-generation models: GPTQ on a real text held out from validation.

Why: data-free int4 (round each weight to the nearest of 16 levels per block of 32) costs a real
135 M LLM (SmolLM2-135M) 1.48x perplexity on the evaluation passage — over the 4-bit bar of
1.40x. GPTQ (coremltools.optimize.torch's `LayerwiseCompressor`) quantizes each decoder layer's
linear weights column by column and folds each rounding error into the columns not yet
quantized, weighted by the layer's real inputs on calibration text: the same model reaches
1.21x with 8-bit embeddings (mixed) at the same 4.5 bits per layer weight.

lut6 and lut4 take the same walk with GPTQ onto per-group k-means tables (lut_gptq.py): the
same model's lut4 goes from 13.6x (data-free) to 1.17x, its lut6 to 1.02x.

Where the time goes (SmolLM2-135M): the walk runs each decoder layer twice (to collect its
linear layers' inputs, then with its weights quantized, to feed the next layer), and each of
its linear weights is swept column by column. The walk runs all calibration samples as one
batch (`batched`); the sweeps are lut_gptq.py's (one Hessian and one sweep per input shared
by q/k/v and by gate/up; int4 gives coremltools' GPTQ's weights). Measured in one run
against the previous code: bench/speedups.py.

How it meets the package: GPTQ leaves each quantized weight on its grid and registers the grid
(scale, zero point, bits; or the tables) as compression metadata buffers; coremltools' converter
writes those weights straight as `constexpr_blockwise_shift_scale` (or `constexpr_lut_to_dense`)
with GPTQ's own grid. The compression transform (compress.py) then finds them already compressed
and handles only what is left float (embeddings, the output head).

The calibration text (calibration.txt: the Declaration of Independence, the Gettysburg Address,
the openings of "A Tale of Two Cities" and "Moby-Dick", all public domain) never overlaps the
evaluation passage (validation/passage.txt, "Pride and Prejudice").

Calibration changes the model's weights in place: the pipeline loads the model again for
validation, so the package is still judged against the original weights.

A model converted a chunk of layers at a time takes the same walk a chunk at a time
(calibrate_chunks.py, with this module's settings and report entry).
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from ..options import meets
from .schemes import CALIBRATED_SCHEMES, IOS18, SCHEMES, WEIGHT_THRESHOLD, lut_group_size

CALIBRATION_FILE = Path(__file__).with_name("calibration.txt")
SAMPLE_TOKENS = 128  # tokens per calibration sample (the text gives ~17 of them)
HESSIAN_DAMPENING = 0.01  # coremltools' default


def calibrates(plan) -> bool:
    """Whether this conversion's weights are calibrated before capture: 4-bit linear and 6/4-bit
    table schemes for iOS18+ (or Core AI alone, whose schemes are per block or channel too) on a
    text-generation model (the family whose layers GPTQ walks in sequence). Below iOS18, tables
    are per tensor and stay data-free."""
    grouped = meets(plan.options.minimum_deployment_target, IOS18) or not plan.options.deployment_target_applies
    return plan.options.quantize in CALIBRATED_SCHEMES and plan.task == "text-generation" and grouped


def calibration_text() -> str:
    lines = CALIBRATION_FILE.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("#")).strip()


def calibration_samples(tokenizer, max_tokens: int | None = None) -> list[torch.Tensor]:
    """The calibration text as [1, SAMPLE_TOKENS] token-id tensors (the tail that does not fill
    a sample is dropped)."""
    ids = tokenizer(calibration_text())["input_ids"]
    length = min(SAMPLE_TOKENS, max_tokens or SAMPLE_TOKENS)
    return [torch.tensor([ids[i:i + length]]) for i in range(0, len(ids) - length + 1, length)]


def decoder_layers(model: torch.nn.Module, layer_count: int) -> str:
    """The qualified name of the model's stack of decoder layers (the ModuleList holding
    `layer_count` blocks), as the regex coremltools' LayerwiseCompressor takes."""
    return re.escape(_decoder_stack(model, layer_count)[0]) + r"\.\d+"


def _decoder_stack(model: torch.nn.Module, layer_count: int) -> tuple[str, torch.nn.ModuleList]:
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == layer_count and name:
            return name, module
    raise ValueError(f"no list of {layer_count} decoder layers in {type(model).__name__}")


def _say_each_layer(stack, step: Callable[[float, int, str], None], first: int = 0, count: int | None = None) -> list:
    """step(index, count, "layer i of n") as GPTQ reaches each layer (its first forward call:
    the compressor walks them in order); `stack` may be a chunk's layers, the model's from
    `first` of `count`. Returns the hooks' handles, to remove."""
    reached: set[int] = set()
    count = count or len(stack)

    def hook(index: int):
        def before_forward(module, args):
            if index not in reached:
                reached.add(index)
                step(index, count, f"layer {index + 1} of {count}")

        return before_forward

    return [layer.register_forward_pre_hook(hook(first + index)) for index, layer in enumerate(stack)]


def _let_go_of_the_checkpoint_file(model: torch.nn.Module) -> None:
    """The model's weights are views of the memory-mapped checkpoint file, and the file stays
    mapped, its pages resident, while any tensor views it. GPTQ replaced the layers' weights with
    new ones, so without this the old pages stay alongside them (SmolLM2-135M: 0.5 GB, the
    difference between the int4 and the float16 conversion's peak). Copying the tensors still
    on the file (embeddings, norms) into memory lets the mapping go."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.data = parameter.data.clone()
        for module in model.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = buffer.clone()


def return_freed_memory() -> None:
    """GPTQ frees most of what it allocated, but glibc keeps the freed heap: the conversion that
    follows then peaks on top of it. malloc_trim hands it back to the system (Linux; elsewhere
    a no-op)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def algorithm(options) -> dict:
    """The LayerwiseCompressor's settings for the scheme: int4 per block of `block_size` input
    channels, symmetric, as the package stores int4; or k-means tables per group of output
    channels. Both are lut_gptq.py's sweeps (int4: coremltools' GPTQ's very weights, faster)."""
    from . import lut_gptq  # registers the algorithms with coremltools (loaded only here: it is heavy)

    scheme = SCHEMES[options.quantize]
    if scheme.family == "lut":
        return {"algorithm": lut_gptq.ALGORITHM, "bits": scheme.bits, "group_size": lut_group_size(options),
                "hessian_dampening": HESSIAN_DAMPENING}
    return {"algorithm": lut_gptq.BLOCKS_ALGORITHM, "weight_dtype": "uint4", "granularity": "per_block",
            "block_size": options.block_size, "hessian_dampening": HESSIAN_DAMPENING, "grid": int4_grid(options)}


def int4_grid(options) -> str:
    """The grid int4's GPTQ rounds onto. An .aimodel alone (no Core ML package, so no deployment
    target): coreai-opt's, because the Core AI compressor's data-free pass re-derives every block's
    scale from the weights it is given and rounds them again onto its own grid; GPTQ onto that
    grid leaves it nothing to move (lut_gptq.COREAI_OPT_GRID; SmolLM2-135M: docs/core-ai.md).
    Else coremltools', which the Core ML converter writes as GPTQ left it (with `both` the
    .aimodel's pass re-rounds those weights)."""
    from .lut_gptq import COREAI_OPT_GRID, COREMLTOOLS_GRID

    return COREMLTOOLS_GRID if options.deployment_target_applies else COREAI_OPT_GRID


def compressor_settings(plan, model: torch.nn.Module, layers: str, samples: int) -> dict:
    """coremltools' LayerwiseCompressor settings, as plain data: the scheme's algorithm on the
    linear weights of the layers named by the regex `layers`, except those small enough to stay float."""
    # The rule the compression transform keeps: weights of at most WEIGHT_THRESHOLD elements stay float.
    small = {re.escape(name): None for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module.weight.numel() <= WEIGHT_THRESHOLD}
    return {
        "module_name_configs": small,
        "global_config": algorithm(plan.options),
        "layers": [layers],
        "input_cacher": "gpt",
        "calibration_nsamples": samples,
    }


def compressor_config(plan, model: torch.nn.Module, layers: str, samples: int):
    """`compressor_settings` as coremltools' LayerwiseCompressorConfig."""
    from coremltools.optimize.torch.layerwise_compression import LayerwiseCompressorConfig

    return LayerwiseCompressorConfig.from_dict(compressor_settings(plan, model, layers, samples))


@contextmanager
def walking(plan, model: torch.nn.Module):
    """While GPTQ walks the layers: no KV cache (coremltools feeds the layers one by one), its
    per-weight INFO lines silenced; after: the sweeps let go of the last input they held."""
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    quiet = logging.getLogger("coremltools.optimize.torch")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        yield
    finally:
        from .lut_gptq import LutGPTQ

        LutGPTQ.forget_inputs()
        quiet.setLevel(level)
        model.config.use_cache = use_cache


def calibrated_weights(model: torch.nn.Module) -> int:
    """How many weights carry GPTQ's grid (scales or tables) as compression metadata."""
    return sum(1 for name, _ in model.named_buffers()
               if name.endswith(("_COREML_/weight/quantization_scale", "_COREML_/weight/lut")))


def entry(plan, weights: int, samples: list, layers: str, seconds: float) -> dict:
    """The report's calibration entry."""
    tables = plan.options.quantize.startswith("lut")
    return {
        "method": "GPTQ onto k-means tables (coremltools.optimize.torch)" if tables else "GPTQ (coremltools.optimize.torch)",
        "weights": weights,  # 0 when the layers hold no torch.nn.Linear (e.g. GPT-2's Conv1D)
        "text": f"{CALIBRATION_FILE.name}: {len(samples)} samples of {samples[0].shape[1]} tokens" if samples else "",
        "layers": layers,
        "seconds": round(seconds, 1),
    }


def batched(inputs: list, kwargs: dict) -> tuple[list, dict]:
    """The first layer's inputs, one per sample as coremltools' cacher catches them (each a tensor,
    or a tuple of it and positional Nones), as one batch: the walk then runs each decoder layer
    once on all samples instead of once per sample (each sample's outputs the same bit for bit,
    tested for every decoder family). The keyword arguments (mask, rotary tables) have a batch of one and broadcast. Samples
    of different shapes stay as they are."""
    firsts = [args[0] if isinstance(args, tuple) and args else args for args in inputs]
    rests = [args[1:] if isinstance(args, tuple) else () for args in inputs]
    if len(inputs) < 2 or not all(isinstance(x, torch.Tensor) and x.shape == firsts[0].shape and x.shape[0] == 1
                                  for x in firsts) \
            or not all(len(rest) == len(rests[0]) and all(v is None for v in rest) for rest in rests):
        return inputs, kwargs
    batch = torch.cat(firsts)
    return [(batch, *rests[0]) if rests[0] else batch], kwargs


def unbatched(outputs: list, samples: int) -> list:
    """A batched walk's last outputs, one per sample again (what the next chunk's walk starts from)."""
    if len(outputs) != 1 or samples == 1:
        return outputs
    output = outputs[0][0] if isinstance(outputs[0], tuple) else outputs[0]
    return list(output.split(1))


def _batched_compressor():
    """coremltools' LayerwiseCompressor walking the samples as one batch (`batched`)."""
    from coremltools.optimize.torch.layerwise_compression import LayerwiseCompressor

    class BatchedCompressor(LayerwiseCompressor):
        def _get_cached_inputs(self, dataloader, device):
            return batched(*super()._get_cached_inputs(dataloader, device))

        def _get_model_for_compression(self, inplace: bool):
            # The model itself (compress(inplace=True) deep-copies it first, for a report nothing
            # reads: 0.5 GB and seconds for SmolLM2-135M)
            return self._model

    return BatchedCompressor


def calibrate(plan, model: torch.nn.Module, tokenizer, step: Callable[[float, int, str], None] | None = None,
              cache: Path | None = None) -> dict:
    """GPTQ, in place, on the linear weights of every decoder layer (`algorithm`). Returns the
    report's calibration entry. `step(done, total, detail)` hears of each layer as it starts.
    `cache`: a directory where GPTQ's results are kept by what made them (calibration_cache.py);
    an entry made from the same weights and settings is taken instead of walking the layers."""
    started = time.perf_counter()
    layers = decoder_layers(model, plan.hf_config.num_hidden_layers)
    max_positions = getattr(plan.hf_config, "max_position_embeddings", None)
    samples = calibration_samples(tokenizer, max_positions)
    settings = compressor_settings(plan, model, layers, len(samples))
    config = compressor_config(plan, model, layers, len(samples))
    if cache is None:
        return _walk(plan, model, samples, config, layers, step, started)
    from . import calibration_cache

    entry_key = calibration_cache.key(model, samples, settings)
    with calibration_cache.held(cache, entry_key):
        kept = calibration_cache.load(cache, entry_key, model)
        if kept is not None:
            _let_go_of_the_checkpoint_file(model)
            return {**kept, "seconds": round(time.perf_counter() - started, 1), "reused": True,
                    "walked_seconds": kept["seconds"]}
        made = _walk(plan, model, samples, config, layers, step, started)
        calibration_cache.save(cache, entry_key, model, made)
        return made


def _walk(plan, model: torch.nn.Module, samples: list, config, layers: str, step, started: float) -> dict:
    """coremltools' layer walk with GPTQ's sweeps; the report's calibration entry."""
    stack = _decoder_stack(model, plan.hf_config.num_hidden_layers)[1]
    hooks = _say_each_layer(stack, step) if step else []
    try:
        with walking(plan, model):
            _batched_compressor()(model, config).compress(samples, device="cpu", inplace=True)
    finally:
        for handle in hooks:
            handle.remove()
    _let_go_of_the_checkpoint_file(model)
    return_freed_memory()
    return entry(plan, calibrated_weights(model), samples, layers, time.perf_counter() - started)
