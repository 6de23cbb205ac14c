"""GPTQ across a chunked conversion: each chunk's decoder layers calibrated while its weights are loaded.

Why: from about 500 M parameters a text-generation model converts a chunk of layers at a time
(chunks.py), and its 4-bit weights were compressed data-free, the path that misses the 4-bit
quality bar (SmolLM2-135M: data-free int4 1.48x perplexity, GPTQ 1.2-1.3x).

How: GPTQ (calibrate.py, coremltools' LayerwiseCompressor) is already layer-sequential: it
catches the first decoder layer's inputs (the calibration text embedded, and the attention mask
and rotary tables as keyword arguments), then for each layer accumulates its linear layers'
Hessians on those inputs, quantizes them, runs the quantized layer again and hands its outputs to
the next layer. Here that walk is cut where the chunks are: the first chunk (which loads the
embeddings) catches the inputs; each chunk walks its own layers from the hidden states the chunk
before it left — computed with that chunk's weights already quantized — and leaves its last
layer's outputs to the next. Same inputs, same order, same arithmetic: the same weights as the
whole-model walk (tests/test_chunked_conversion.py), with one chunk's weights resident plus the
carried hidden states, samples x tokens x hidden in float32, held twice (the walk's inputs and
outputs): SmolLM2-135M 17 x 128 x 576 (5 MB), a 7 B Llama 35 MB.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from .calibrate import (_say_each_layer, batched, calibrated_weights, calibration_samples, compressor_config, decoder_layers, entry,
                        return_freed_memory, unbatched, walking)

# The layers of one chunk, as a model of their own: named "0", "1", ... (coremltools' regex).
CHUNK_LAYERS = r"\d+"
METADATA_PREFIX = "_COREML_"  # coremltools' compression metadata buffers (scales, zero points, tables)


def _carried_compressor():
    """coremltools' LayerwiseCompressor fed the carried hidden states (not the model's own
    first-layer inputs), keeping what its last layer returns (defined on first use: coremltools'
    optimize.torch is heavy to import)."""
    from coremltools.optimize.torch.layerwise_compression import LayerwiseCompressor

    class CarriedCompressor(LayerwiseCompressor):
        def __init__(self, layers: torch.nn.ModuleList, config, inputs: list, kwargs: dict):
            super().__init__(layers, config)
            self._carried = (inputs, kwargs)
            self.outputs: list | None = None

        def _get_cached_inputs(self, dataloader, device):
            return self._carried

        def _forward_layer(self, layer, inputs, kwarg_inputs, outputs):
            # The walk's last call is the last layer run again with its quantized weights: its
            # outputs are what the next chunk starts from.
            self.outputs = LayerwiseCompressor._forward_layer(layer, inputs, kwarg_inputs, outputs)
            return self.outputs

        def walk(self) -> list:
            # Not `compress`: it deep-copies the model first (a second copy of the chunk's weights
            # that nothing here reads). The layers are already in eval mode.
            self._compress_impl(None, "cpu")
            return self.outputs

    return CarriedCompressor


def first_layer_inputs(model: torch.nn.Module, first_layer: torch.nn.Module, samples: list) -> tuple[list, dict]:
    """The first decoder layer's inputs for each sample, and its keyword arguments (mask, rotary
    tables: the same for every sample of one length), by coremltools' own cacher: the model runs
    up to that layer and stops (only the embeddings need weights)."""
    from coremltools.optimize.torch.layerwise_compression.input_cacher import GPTFirstLayerInputCacher

    return GPTFirstLayerInputCacher(model, [first_layer]).cache(samples, len(samples), "cpu")


class ChunkCalibration:
    """GPTQ over a chunked conversion's decoder layers, one chunk at a time in the chunks' order,
    carrying the hidden states from each chunk to the next."""

    def __init__(self, plan, tokenizer):
        self.plan = plan
        self.samples = calibration_samples(tokenizer, getattr(plan.hf_config, "max_position_embeddings", None))
        self.count = plan.hf_config.num_hidden_layers
        self.layers = ""  # the decoder layers' names, as the whole-model entry says them
        self.inputs: list | None = None  # the next layer's input per sample (the carried hidden states)
        self.kwargs: dict = {}
        self.weights = 0
        self.seconds = 0.0

    def calibrate(self, model: torch.nn.Module, layers: list[torch.nn.Module], first: int,
                  step: Callable[[float, int, str], None] | None = None) -> dict:
        """GPTQ, in place, on `layers` (decoder layers `first`, `first + 1`, ... of the model,
        their weights loaded; the first chunk's embeddings loaded too). Returns the report's
        calibration entry so far."""
        started = time.perf_counter()
        stack = torch.nn.ModuleList(layers)
        hooks = _say_each_layer(stack, step, first, self.count) if step else []
        try:
            with walking(self.plan, model):
                if self.inputs is None:
                    self.layers = decoder_layers(model, self.count)
                    self.inputs, self.kwargs = first_layer_inputs(model, layers[0], self.samples)
                config = compressor_config(self.plan, stack, CHUNK_LAYERS, len(self.samples))
                # the chunk's layers walk the samples as one batch, as the whole model's do
                inputs, kwargs = batched(self.inputs, self.kwargs)
                self.inputs = unbatched(_carried_compressor()(stack, config, inputs, kwargs).walk(), len(self.inputs))
        finally:
            for handle in hooks:
                handle.remove()
        self.weights += calibrated_weights(stack)
        return_freed_memory()
        self.seconds += time.perf_counter() - started
        return self.entry()

    def entry(self) -> dict:
        return {**entry(self.plan, self.weights, self.samples, self.layers, self.seconds), "in_chunks": True}

    @staticmethod
    def forget(layers: list[torch.nn.Module]) -> None:
        """Drop the compression metadata GPTQ registered on `layers` once their chunk is converted
        (the weights go back to the meta device; int4 scales alone are 1/8 of the float32 weights)."""
        for layer in layers:
            for module in layer.modules():
                for name in [n for n in module._buffers if n.startswith(METADATA_PREFIX)]:
                    del module._buffers[name]
