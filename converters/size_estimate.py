"""How large a package will be under each weight compression choice (`quantize`), known
before converting: the form shows it next to each choice.

- `weight_shapes(hf_config, task)`: the weights each package holds — the task's transformers
  class built from the config on the meta device (exact shapes and tying; no weight is read,
  nothing is downloaded) — with each weight's role as the compression transform sees it.
- `estimate_bytes(weights, scheme, ...)`: their storage under a scheme, following
  converters/backends/coreml/compress.py:
  * none: 16 bits per weight (float32 packages: 32);
  * int8, per output channel: 8 bits, plus one float scale per channel;
  * int4, per block of B input channels: 4 bits, plus one float scale per B weights (4 + 16/B),
    embeddings and the output head per block of min(B, EMBEDDING_BLOCK); a text-generation
    model's layers are GPTQ-calibrated and carry a 4-bit zero point per block too (4 + 20/B);
  * lutN, per G output channels (iOS18+): N bits, plus a table of 2^N floats per G channels
    (N + 2^N·16/(G·inputs)); below iOS18 one table per weight;
  * mixed: int4 per block for the layers, int8 per channel for embeddings and the output head;
  * weights of WEIGHT_THRESHOLD elements or fewer, weights of other ops (norms, biases, tables
    added as they are) and weights whose shape does not divide into blocks or groups stay float.

A package also holds its program and metadata (some kB per layer), which the estimate leaves
out, and a learned position table (GPT-2, BERT) is counted whole where the program may keep
only the rows the sequence length uses: within a few percent for models of a few million
parameters and more (tests/test_ui_form.py checks it against the engine).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .options import meets
from .transforms.schemes import CALIBRATED_SCHEMES, EMBEDDING_BLOCK, IOS18, SCHEMES, WEIGHT_THRESHOLD, lut_group_size

CHOICES = ("none", *SCHEMES)  # the quantize option's values


@dataclass(frozen=True)
class WeightShape:
    """One weight: `shape` with the output channels first and the input channels second
    (a linear layer's [out, in], an embedding's [rows, width], a convolution's [out, in, k...]);
    `role`: "layer", "embedding", "head", or "other" (stays float)."""

    shape: tuple[int, ...]
    role: str = "layer"

    @property
    def elements(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


def estimate_bytes(weights, scheme: str, *, block_size: int = 32, group_size: int = 16, grouped: bool = True,
                   float_bits: int = 16, calibrated: bool = False) -> int:
    """Bytes the weights take under `scheme` ("none" or a compression scheme). `grouped`:
    LUTs per `group_size` output channels (iOS18+), else one per weight; `float_bits`: 16 for
    float16 packages, 32 for float32 (weights left float, scales and tables); `calibrated`: the
    int4 layers come from GPTQ (calibrate.py), with a zero point per block."""
    total = 0.0
    for weight in weights:
        storage = _storage(weight, scheme)
        outer = weight.role in ("embedding", "head")
        block = min(block_size, EMBEDDING_BLOCK) if scheme == "int4" and outer else block_size
        total += _bits(weight, storage, block, group_size if grouped else None, float_bits)
        if storage == "int4" and calibrated and not outer and weight.shape[-1] % block == 0:
            total += weight.elements / block * 4  # GPTQ's zero point
    return int(total / 8)


def _storage(weight: WeightShape, scheme: str) -> str:
    """How this weight is stored: "float", "int8", "int4" or "lutN"."""
    if scheme == "none" or weight.role == "other" or len(weight.shape) < 2 or weight.elements <= WEIGHT_THRESHOLD:
        return "float"
    if scheme in ("mixed", "lut4"):  # compress.py: 8-bit embeddings and output head
        return "int8" if weight.role in ("embedding", "head") else {"mixed": "int4"}.get(scheme, scheme)
    return scheme


def _bits(weight: WeightShape, storage: str, block_size: int, group_size: int | None, float_bits: int) -> float:
    n, rows, inputs = weight.elements, weight.shape[0], (weight.shape[1] if len(weight.shape) > 1 else 1)
    if storage == "int8":
        return n * 8 + rows * float_bits
    if storage == "int4" and inputs % block_size == 0:
        return n * 4 + n / block_size * float_bits
    if storage.startswith("lut"):
        bits = int(storage[3:])
        if group_size is None:
            return n * bits + 2**bits * float_bits
        if rows % group_size == 0:
            return n * bits + rows / group_size * 2**bits * float_bits
    return n * float_bits


def estimates(weights, options, task: str | None = None) -> dict[str, int]:
    """Expected bytes for every choice of the quantize option, under the other `options`
    (ConversionOptions: precision, deployment target, block and group size) for `task`."""
    settings = dict(block_size=options.block_size, grouped=meets(options.minimum_deployment_target, IOS18),
                    float_bits=32 if options.precision == "float32" else 16)
    return {scheme: estimate_bytes(weights, scheme, **settings,
                                   group_size=lut_group_size(replace(options, quantize=scheme)),
                                   calibrated=task == "text-generation" and scheme in CALIBRATED_SCHEMES)
            for scheme in CHOICES}


# ---------------------------------------------------------------------- the model's weights


def weight_shapes(hf_config, task: str) -> list[WeightShape]:
    """The weights of every package a conversion for `task` writes (encoder-decoder models:
    both halves, each with the embedding it reads), from the task's transformers class built on
    the meta device."""
    # Deferred: torch, transformers and the families (which import them) are heavy, and the
    # web process imports this module for the form's estimates without them.
    import torch
    import transformers

    from .configs import config_class_for

    cfg = config_class_for(hf_config.model_type)(hf_config, task)
    auto = getattr(transformers, cfg.model_class_name())
    with torch.device("meta"):
        model = auto.from_config(hf_config, **cfg.model_kwargs())
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    parts = cfg.parts()
    if parts == ["model"]:
        return _shapes([model], head)
    halves = {"encoder": [model.get_encoder()], "decoder": [model.get_decoder(), head]}
    return [w for part in parts for w in _shapes([m for m in halves[part] if m is not None], head)]


def _shapes(modules, head) -> list[WeightShape]:
    """Each parameter once (a tied embedding and head is one weight: an embedding)."""
    import torch

    seen, shapes = set(), []
    for root in modules:
        for module in root.modules():
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.nn.Parameter) or id(weight) in seen:
                continue
            role = _role(module, head)
            if role is None:
                continue
            seen.add(id(weight))
            shape = tuple(weight.shape)
            if type(module).__name__ == "Conv1D" or "ConvTranspose" in type(module).__name__:
                shape = (shape[1], shape[0], *shape[2:])  # stored [in, out, ...]: GPT-2's Conv1D, transposed convs
            shapes.append(WeightShape(shape, role))
        for parameter in root.parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                shapes.append(WeightShape(tuple(parameter.shape), "other"))
    return shapes


def _role(module, head) -> str | None:
    import torch

    if isinstance(module, torch.nn.Embedding):
        return "embedding"
    if module is head:
        return "head"
    layers = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d,
              torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
    if isinstance(module, layers) or type(module).__name__ == "Conv1D":
        return "layer"
    return None
