"""Big decoder LLMs, converted a few layers at a time so their float weights are never all in memory.

Why: converting a whole model holds it in float32 (4 bytes per parameter) while coremltools
makes its own copies (another ~4): 9.9 GB for 1.26 B parameters, about 55 GB for a 7 B model.
Here the model is built with its parameters on the meta device (no memory), and its decoder
layers are taken in chunks whose float32 weights fit `CHUNK_BYTES`:

1. a chunk's weights are read from the safetensors files (as stored: bf16, fp16 or fp32) and
   widened to float32, only those;
2. the package's wrapper is captured with only that chunk's layers (`ChunkModule`): the first
   chunk takes the package's inputs and returns the hidden state after its last layer; the
   next ones take the package's inputs and that hidden state; the last one returns the
   package's outputs;
3. the backend converts (and compresses) the chunk and saves it to a scratch package; the
   weights go back to the meta device;
4. the backend stitches the chunk packages into one program with one weight file
   (backends/coreml/stitch.py), the package swift-transformers loads as it would any other.

The layers' ModuleList is cut to the chunk's layers (each keeps its `layer_idx`, so a
stateful KV cache is written at the right layer); modules registered before the layers
(embeddings) are replaced in later chunks, and those after them (final norm, output head)
in earlier chunks, by stand-ins without weights whose outputs go unused.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

# A chunk's float32 weights stay under this (one 7 B layer is 0.8 GB): what the conversion of
# one chunk holds, about twice that with coremltools' copies. A 1.26 B Llama (bench/convert.py):
# at 1 GiB 5 chunks, peak 3.85 GB (0.39x the whole model's), time 1.19x; bigger chunks cost
# memory, smaller ones time (each chunk is captured and converted on its own).
CHUNK_BYTES = 3 << 29  # 1.5 GiB
# Models whose float32 weights pass this are converted in chunks (conversion="auto"): smaller
# ones convert whole. 4-bit schemes calibrate either way (GPTQ walks the layers in order:
# transforms/calibrate_chunks.py carries its hidden states from chunk to chunk).
WHOLE_MODEL_BYTES = 2 << 30


@dataclass(frozen=True)
class Chunk:
    index: int
    count: int
    start: int  # the first decoder layer in the chunk
    stop: int  # one past its last
    layers: int  # in the whole model

    @property
    def first(self) -> bool:
        return self.index == 0

    @property
    def last(self) -> bool:
        return self.index == self.count - 1

    def describe(self) -> str:
        return f"layers {self.start + 1}–{self.stop} of {self.layers} (chunk {self.index + 1} of {self.count})"


def chunks_for(layer_bytes: list[int], budget: int | None = None, layers_per_chunk: int | None = None) -> list[Chunk]:
    """Consecutive layers grouped so each group's bytes stay within `budget` (CHUNK_BYTES; at
    least one layer each), or `layers_per_chunk` layers each when given."""
    budget = budget or CHUNK_BYTES
    groups: list[tuple[int, int]] = []
    start, total = 0, 0
    for index, size in enumerate(layer_bytes):
        full = (index - start >= layers_per_chunk) if layers_per_chunk else (total + size > budget)
        if index > start and full:
            groups.append((start, index))
            start, total = index, 0
        total += size
    groups.append((start, len(layer_bytes)))
    return [Chunk(i, len(groups), a, b, len(layer_bytes)) for i, (a, b) in enumerate(groups)]


# ------------------------------------------------------------------------ the model's layout


@dataclass
class Layout:
    """Where a decoder's parts are: the layer list, and the modules with weights before it
    (embeddings) and after it (final norm, output head), as (parent, attribute name)."""

    layers: torch.nn.ModuleList
    layers_parent: torch.nn.Module
    layers_name: str
    before: list[tuple[torch.nn.Module, str]]
    after: list[tuple[torch.nn.Module, str]]


def layout_of(model: torch.nn.Module, layer_count: int) -> Layout | None:
    """The layout, by registration order: transformers' decoders register their embeddings,
    then the layer list, then the final norm, and the causal-LM class its base model before
    its head. None when the model is not laid out that way."""
    base = getattr(model, "base_model", model)
    children = list(base.named_children())
    index = next((i for i, (_, m) in enumerate(children)
                  if isinstance(m, torch.nn.ModuleList) and len(m) == layer_count), None)
    if index is None:
        return None
    weighted = lambda m: any(True for _ in m.parameters())  # noqa: E731
    before = [(base, name) for name, m in children[:index] if weighted(m)]
    after = [(base, name) for name, m in children[index + 1:] if weighted(m)]
    if base is not model:
        seen_base = False
        for name, child in model.named_children():
            if child is base:
                seen_base = True
            elif weighted(child):
                (after if seen_base else before).append((model, name))
    name, layers = children[index]
    return Layout(layers, base, name, before, after)


class _EmbeddingStandIn(torch.nn.Module):
    """Stands in for an embedding in chunks after the first: zeros of the hidden size (the
    first layer's input is replaced by the chunk's `hidden` input), or a float input as is."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size

    def forward(self, x, *args, **kwargs):
        if x.is_floating_point():
            return x
        return torch.zeros((*x.shape, self.hidden_size))


class _PassThrough(torch.nn.Module):
    """Stands in for the final norm and output head in chunks before the last (unused output)."""

    def forward(self, x, *args, **kwargs):
        return x


@contextmanager
def chunk_view(model: torch.nn.Module, layout: Layout, chunk: Chunk, hidden_size: int):
    """The model as one chunk sees it, while the block runs; restored after."""
    saved = [(parent, name, getattr(parent, name)) for parent, name in layout.before + layout.after]
    saved.append((layout.layers_parent, layout.layers_name, layout.layers))
    try:
        if not chunk.first:
            for parent, name in layout.before:
                setattr(parent, name, _EmbeddingStandIn(hidden_size))
        if not chunk.last:
            for parent, name in layout.after:
                setattr(parent, name, _PassThrough())
        layers = torch.nn.ModuleList(list(layout.layers)[chunk.start:chunk.stop])
        setattr(layout.layers_parent, layout.layers_name, layers)
        yield layers
    finally:
        for parent, name, module in saved:
            setattr(parent, name, module)


class ChunkModule(torch.nn.Module):
    """The package's wrapper restricted to one chunk (inside `chunk_view`): the package's inputs
    (and, after the first chunk, `hidden`) in; the hidden state after the chunk's last layer
    out, or for the last chunk the package's outputs."""

    def __init__(self, wrapper: torch.nn.Module, layers: torch.nn.ModuleList, chunk: Chunk):
        super().__init__()
        self.wrapper, self.layers, self.chunk = wrapper, layers, chunk
        # The wrapper's states (KV caches) under their own names, as the package declares them:
        # named_buffers() lists these first and skips the same tensors under "wrapper.".
        for name, buffer in list(wrapper.named_buffers(recurse=False)):
            self.register_buffer(name, buffer)

    def forward(self, *inputs):
        hidden = None
        if not self.chunk.first:
            *inputs, hidden = inputs
        captured: list[torch.Tensor] = []
        handles = []
        if hidden is not None:
            def take_hidden(module, args, kwargs):
                if args:
                    return (hidden, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": hidden}
            handles.append(self.layers[0].register_forward_pre_hook(take_hidden, with_kwargs=True))
        if not self.chunk.last:
            def keep_hidden(module, args, output):
                captured.append(output[0] if isinstance(output, tuple) else output)
            handles.append(self.layers[-1].register_forward_hook(keep_hidden))
        try:
            outputs = self.wrapper(*inputs)
        finally:
            for handle in handles:
                handle.remove()
        return outputs if self.chunk.last else (captured[-1],)


# ------------------------------------------------------------------------ weights, one chunk at a time


@contextmanager
def _parameters_on_meta():
    """Parameters made while the block runs live on the meta device (no memory); buffers stay
    real (RoPE's inv_freq is computed in __init__ and saved nowhere). accelerate's
    init_empty_weights does the same; it is not a dependency of ours for ten lines."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None and param.device.type != "meta":  # a tied weight keeps its twin
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=False)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


class LazyModel:
    """The transformers model with its weights on the meta device, and the checkpoint's
    tensors brought in (float32) and sent back module by module."""

    def __init__(self, path: Path, cfg):
        import transformers

        self.path = Path(path)
        self.cfg = cfg
        with _parameters_on_meta():
            model = getattr(transformers, cfg.model_class_name()).from_config(cfg.hf_config, dtype=torch.float32,
                                                                             **cfg.model_kwargs())
        self.model = model.eval()
        self.layout = layout_of(self.model, cfg.attributes.num_layers)
        self.chunks: list[Chunk] = []
        self._sources: dict[str, tuple[Path, str]] = {}

    def layer_bytes(self) -> list[int]:
        return [4 * sum(p.numel() for p in layer.parameters()) for layer in self.layout.layers]

    def find_weights(self) -> list[str]:
        """Find each parameter's tensor in the checkpoint: (file, key) by name. A tied weight
        (an output head that is the embedding) reads the tensor its twin is stored under.
        Returns the names not found (stored under other names, or missing)."""
        keys = self._checkpoint_keys()
        by_object: dict[int, list[str]] = {}
        for name, param in self.model.named_parameters(remove_duplicate=False):
            by_object.setdefault(id(param), []).append(name)
        missing = []
        for names in by_object.values():
            found = next((keys[n] for n in names if n in keys), None)
            if found is None:
                missing.extend(names)
            for name in names:
                self._sources[name] = found
        return missing

    def load(self, modules: list[torch.nn.Module]) -> None:
        """Read the weights of `modules` from the checkpoint, as float32."""
        from safetensors import safe_open

        wanted = self._names_in(modules)
        by_file: dict[Path, list[tuple[str, str]]] = {}
        for name in wanted:
            file, key = self._sources[name]
            by_file.setdefault(file, []).append((name, key))
        for file, pairs in by_file.items():
            with safe_open(str(file), framework="pt") as weights:
                for name, key in pairs:
                    tensor = weights.get_tensor(key).to(torch.float32)
                    self._set(name, torch.nn.Parameter(tensor, requires_grad=False))

    def release(self, modules: list[torch.nn.Module]) -> None:
        """Send the weights of `modules` back to the meta device."""
        for name in self._names_in(modules):
            param = self._get(name)
            self._set(name, torch.nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=False))

    def streaming(self) -> torch.nn.Module:
        """The model for validation: each layer's (and the embeddings', the head's) weights are
        read from the checkpoint as the layer runs and let go after it, so a forward holds one
        layer's weights. Each forward reads the whole checkpoint (the page cache keeps it)."""
        for module in self.units():
            module.register_forward_pre_hook(lambda m, args: self.load([m]))
            module.register_forward_hook(lambda m, args, output: self.release([m]))
        return self.model

    def units(self) -> list[torch.nn.Module]:
        """The modules whose weights are loaded together: each layer, each embedding, the head."""
        return list(self.layout.layers) + [getattr(parent, name) for parent, name in self.layout.before + self.layout.after]

    def chunk_layers(self, chunk: Chunk) -> list[torch.nn.Module]:
        """The chunk's decoder layers, in order."""
        return list(self.layout.layers)[chunk.start:chunk.stop]

    def chunk_modules(self, chunk: Chunk) -> list[torch.nn.Module]:
        """The modules whose weights a chunk computes with."""
        modules = self.chunk_layers(chunk)
        if chunk.first:
            modules += [getattr(parent, name) for parent, name in self.layout.before]
        if chunk.last:
            modules += [getattr(parent, name) for parent, name in self.layout.after]
        return modules

    def _names_in(self, modules: list[torch.nn.Module]) -> list[str]:
        wanted = {id(m) for module in modules for m in module.modules()}
        names = []
        for module_name, module in self.model.named_modules(remove_duplicate=False):
            if id(module) in wanted:
                names += [f"{module_name}.{p}" if module_name else p for p in module._parameters
                          if module._parameters[p] is not None]
        return list(dict.fromkeys(names))

    def _get(self, name: str) -> torch.nn.Parameter:
        module_name, _, leaf = name.rpartition(".")
        return self.model.get_submodule(module_name)._parameters[leaf]

    def _set(self, name: str, value: torch.nn.Parameter) -> None:
        module_name, _, leaf = name.rpartition(".")
        self.model.get_submodule(module_name)._parameters[leaf] = value


    def _checkpoint_keys(self) -> dict[str, tuple[Path, str]]:
        """The model's parameter name of each tensor in the checkpoint -> (file, key), by the
        renaming rules transformers loads with (an old name, the base model's prefix). A tensor
        transformers must convert (split, fuse) is left out: it has no one parameter."""
        from safetensors import safe_open
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key

        transforms = get_model_conversion_mapping(self.model)
        renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
        converters = [t for t in transforms if not isinstance(t, WeightRenaming)]
        meta_state = self.model.state_dict()
        prefix = getattr(self.model, "base_model_prefix", None)
        keys = {}
        for file in sorted(self.path.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as weights:
                for key in weights.keys():
                    name, converted = rename_source_key(key, renamings, converters, prefix, meta_state)
                    if converted is None:
                        keys.setdefault(name, (file, key))
        return keys


def chunked_model(plan, layers_per_chunk: int | None = None) -> LazyModel | None:
    """The model, weights on the meta device and its layers in chunks, when it converts in
    chunks: a text-generation decoder whose float32 weights pass WHOLE_MODEL_BYTES (or any,
    given `layers_per_chunk`). None: it converts whole (0 asks for that)."""
    cfg = plan.cfg
    if layers_per_chunk == 0 or cfg.family != "decoder" or plan.task != "text-generation" or cfg.probe_mask:
        return None  # an untested architecture's mask convention is probed on the whole model
    if layers_per_chunk is None and 4 * stored_elements(plan.source.path) <= WHOLE_MODEL_BYTES:
        return None  # a small model converts whole, as it always has (its files' headers say so)
    lazy = LazyModel(plan.source.path, cfg)
    if lazy.layout is None:
        return None
    if plan.options.sequence_length.kind != "fixed":
        # Each chunk's hidden input gets its own flexible dimension, which Core ML does not tie
        # to the token inputs' one: measured wrong (tests/test_chunked_conversion.py).
        plan.warnings.append("Converted whole, not a chunk of layers at a time: chunks need one fixed sequence length "
                             "(a stateful KV cache has one), and this conversion takes a list or range of lengths.")
        return None
    lazy.chunks = chunks_for(lazy.layer_bytes(), layers_per_chunk=layers_per_chunk)
    missing = lazy.find_weights()
    if missing:  # stored under names transformers maps on loading: its own loader must read them
        plan.warnings.append(f"Converted whole, not a chunk of layers at a time: the checkpoint stores "
                             f"{sorted(missing)[0]} under another name.")
        return None
    return lazy


def stored_elements(path: Path) -> int:
    """How many numbers the checkpoint's safetensors files hold, from their headers alone."""
    from safetensors import safe_open

    total = 0
    for file in Path(path).glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as weights:
            for key in weights.keys():
                shape = weights.get_slice(key).get_shape()
                count = 1
                for size in shape:
                    count *= size
                total += count
    return total


def chunk_config(cfg, chunk: Chunk):
    """The architecture's config as one chunk's conversion sees it (configs/text.py reads `chunk`)."""
    view = copy.copy(cfg)
    view.chunk = chunk
    return view


def hidden_name(index: int) -> str:
    """The hidden state passed from chunk `index` to the next (an output, then an input)."""
    return f"chunk{index}_hidden"
