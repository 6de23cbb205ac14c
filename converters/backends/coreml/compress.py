"""Weight compression, data-free, with coremltools.optimize.coreml: the `quantize` option.

Schemes (the option's choices), one function per family:
- `int8`: linear symmetric int8, one scale per output channel (iOS16+) — `quantize_linear`;
- `int4`: linear symmetric int4, one scale per `block_size` input channels (iOS18+) — `quantize_linear`;
  the embeddings and output head (most sensitive, and not calibrated) per `EMBEDDING_BLOCK`;
- `lut8`, `lut6`, `lut4`: k-means palettization (1-D, transforms/kmeans.py), one lookup table per `group_size` output
  channels on iOS18+ (by default 16, and 1 for lut4: `lut_group_size`), one per weight below (iOS16+) —
  `palettize`; lut4's embeddings and output head are int8 per channel (4-bit tables ruin them);
- `mixed`: int4 per block for the layers, int8 per channel for the embeddings and the output
  head (a tied embedding/head matrix is one weight in the program: 8 bits) — `quantize_mixed`.

For text generation, int4, mixed, lut6 and lut4 layers are GPTQ-calibrated before capture
(transforms/calibrate.py; lut onto k-means tables, transforms/lut_gptq.py): those weights arrive here already compressed,
and only the rest is compressed here.

Only the weights of linear, matmul, conv, conv_transpose and gather (embedding) ops are
compressed, each named explicitly (`OptimizationConfig(op_name_configs=...)`): constants such
as a causal mask or rotary tables stay as they are, and so do weights of `WEIGHT_THRESHOLD`
elements or fewer (coremltools' own default `weight_threshold`: not worth a lookup table).

The schemes and their shared settings are transforms/schemes.py's, the deployment targets
they need (refused at plan time) targets.py's; an .aimodel is compressed by
backends/coreai/compress.py. Each backend calls its own compressor (`Backend.compress`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...options import meets
from ...transforms.schemes import EMBEDDING_BLOCK, IOS18, SCHEMES, WEIGHT_THRESHOLD, Scheme, lut_group_size

_LAYER_OPS = ("linear", "matmul", "conv", "conv_transpose")
_SPEC_IOS16 = 7  # the oldest specification compression writes (coremltools._SPECIFICATION_VERSION_IOS_16)


# ---------------------------------------------------------------------- the transform


def compress_coreml(plan, part: str, artifact):
    """Core ML's compressor (its backend's `compress`, which the transform `transforms_for`
    gives calls): the Core ML model with its weights compressed as `plan.options` asks; what
    it did goes to `plan.compression[part]` for the report."""
    options = plan.options
    scheme = SCHEMES[options.quantize]
    grouped = meets(options.minimum_deployment_target, IOS18)
    chunk = plan.cfg.chunk  # a chunk of a big decoder's layers (chunks.py): no output head before the last
    with_head = chunk is None or chunk.last
    before = program_weights(_program(artifact), with_head)
    if scheme.family == "linear":
        compressed = quantize_linear(artifact, before, scheme.bits, options.block_size)
    elif scheme.family == "lut":
        compressed = palettize(artifact, before, scheme.bits, lut_group_size(options) if grouped else None)
    else:
        compressed = quantize_mixed(artifact, before, options.block_size)
    summary = summarize(scheme, options, grouped, before, program_weights(_program(compressed), with_head))
    if chunk is not None and not chunk.first:
        summary = _merged(plan.compression[part], summary)
    plan.compression[part] = summary
    if not with_head:
        return compressed  # the warnings, once, from the last chunk's (whole) summary
    if plan.calibration and plan.calibration["weights"]:  # calibrate.py quantized the decoder layers before capture
        summary["method"] += f"; decoder layers calibrated: {plan.calibration['method']}"
    if chunk is None:  # chunks: the stitch says it, counting a weight they share (a tied embedding) once
        warn_float_left(plan, summary)
    if scheme.family == "lut" and not grouped:
        plan.warnings.append(
            f"Weight compression {scheme.name} uses one lookup table per weight below iOS18/macOS15 "
            f"(per grouped channel from iOS18): expect lower quality than on iOS18."
        )
    return compressed


def warn_float_left(plan, summary: dict) -> None:
    """The package's warning about the weights its compression left float, if any."""
    if summary["float_weights_left"]:
        scheme = SCHEMES[plan.options.quantize]
        plan.warnings.append(
            f"Weight compression {scheme.name}: {summary['float_weights_left']} weight(s) stayed float "
            f"(their shape does not divide into {_units(scheme, plan.options)})."
        )


def _merged(earlier: dict, summary: dict) -> dict:
    """The summary of a package made of chunks, from the earlier chunks' and this one's. The
    share of compressed weights is weighted by their dense bytes (every float weight of a
    program has one width, so that is weighting by elements)."""
    before = earlier["weight_bytes_before"] + summary["weight_bytes_before"]
    shares = earlier["compressed_share"] * earlier["weight_bytes_before"] + summary["compressed_share"] * summary["weight_bytes_before"]
    return {
        **summary,
        "weights_compressed": earlier["weights_compressed"] + summary["weights_compressed"],
        "float_weights_left": earlier["float_weights_left"] + summary["float_weights_left"],
        "compressed_share": round(shares / before, 4) if before else 0.0,
        "weight_bytes_before": before,
        "weight_bytes_after": earlier["weight_bytes_after"] + summary["weight_bytes_after"],
    }


def quantize_linear(mlmodel, weights: "Weights", bits: int, block_size: int = 32):
    """int8: per channel (iOS16+); int4: per block of `block_size` input channels (iOS18+), the
    embeddings and output head per block of `EMBEDDING_BLOCK` (or `block_size` if smaller)."""
    config = _linear_config(bits, block_size)
    fine = _linear_config(bits, min(block_size, EMBEDDING_BLOCK)) if bits == 4 else config
    return _linear_quantize(mlmodel, {w.name: fine if w.roles & {"embedding", "head"} else config
                                      for w in weights.compressible})


def palettize(mlmodel, weights: "Weights", bits: int, group_size: int | None = 16):
    """k-means LUT of 2**bits entries: per `group_size` output channels, or per tensor (None).
    At 4 bits the embeddings and output head are int8 per channel instead: a 4-bit table ruins
    a tied embedding/head (SmolLM2-135M, importance-weighted 4-bit layer tables: 3.8x perplexity
    with the embedding/head on 4-bit tables too, 1.9x with it int8)."""
    import coremltools.optimize.coreml as cto

    outer = [w for w in weights.compressible if w.roles & {"embedding", "head"}] if bits == 4 else []
    steps = [(LINEAR_PASS, {w.name: _linear_config(8, block_size=0) for w in outer})] if outer else []
    tables = [w for w in weights.compressible if w not in outer]
    if not tables:
        return _with_passes(mlmodel, steps)

    # k-means per table: coremltools' "kmeans" mode is scikit-learn's below 10 000 weights per
    # table (a group of 16 x 576: over 20 minutes for a 135 M LLM) and kmeans1d above; ours
    # (kmeans.py) takes seconds and stays within 1.1x of the exact optimum at 4 and 6 bits.
    tables_by_group = TablesByGroup(bits, group_size)
    kmeans = {"mode": "custom", "lut_function": tables_by_group}
    if group_size is None:
        config = cto.OpPalettizerConfig(**kmeans, granularity="per_tensor", weight_threshold=WEIGHT_THRESHOLD)
    else:
        config = cto.OpPalettizerConfig(**kmeans, granularity="per_grouped_channel", group_size=group_size,
                                        weight_threshold=WEIGHT_THRESHOLD)
    return _with_passes(mlmodel, [*steps, (PALETTIZE_PASS, {w.name: config for w in tables})], tables_by_group.prepare)


class TablesByGroup:
    """The palettizer's `lut_function`: a table of 2**bits entries for one group of output
    channels (or one weight) and each weight's index in it.

    coremltools asks for one group at a time: SmolLM2's tied embedding/head alone is 3072 groups
    of 16 channels, and k-means group by group took about 35 s of per-call work for its 6-bit
    tables (data-free lut6 of the whole model: over 2 minutes). kmeans.py makes all of a weight's
    groups at once, so `prepare` computes every weight's tables before the pass, and each call
    looks its group up by content (a group not prepared, e.g. grouped along another axis, is
    computed on its own: the same tables either way)."""

    CHUNK_ELEMENTS = 1 << 24  # groups per k-means call, bounded: a 7 B model's embedding would take GBs at once

    def __init__(self, bits: int, group_size: int | None):
        self.bits, self.group_size = bits, group_size
        self.prepared: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def prepare(self, prog, names) -> None:
        """Tables for every const op in `names` (grouped along the output channels, axis 0)."""
        if not self.group_size:
            return  # one table per weight: one call each already
        for function in prog.functions.values():
            for op in function.find_ops(op_type="const"):
                value = op.outputs[0].val
                if op.name in names and isinstance(value, np.ndarray) and value.ndim >= 2 and len(value) % self.group_size == 0:
                    self._prepare_weight(value)

    def _prepare_weight(self, value: np.ndarray) -> None:
        import torch  # deferred, as kmeans.py (torch) is: loaded only when a weight is palettized

        from ...transforms.kmeans import assign, weighted_tables

        groups = value.reshape(len(value) // self.group_size, -1)  # each row: one group, in C order
        per_call = max(1, self.CHUNK_ELEMENTS // groups.shape[1])
        for start in range(0, len(groups), per_call):
            chunk = np.ascontiguousarray(groups[start:start + per_call])
            values = torch.from_numpy(chunk.astype(np.float32))
            tables = weighted_tables(values, torch.ones(values.shape[1]), self.bits, group_size=1)
            indices = assign(values, tables).numpy().astype(np.uint8)
            tables = tables.numpy().astype(value.dtype)
            for row, group in enumerate(chunk):
                self.prepared[_content_key(group)] = (tables[row], indices[row])

    def __call__(self, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = self.prepared.pop(_content_key(weight), None) if self.prepared else None
        if found is not None:
            return found
        import torch

        from ...transforms.kmeans import assign, weighted_tables

        values = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)).reshape(1, -1)
        table = weighted_tables(values, torch.ones(values.shape[1]), self.bits, group_size=1)
        return table[0].numpy().astype(weight.dtype), assign(values, table)[0].numpy().astype(np.uint8)


def _content_key(values: np.ndarray) -> bytes:
    """A group's values in C order (its shape aside: prepared flat, asked for as rows x columns)."""
    import hashlib

    array = np.ascontiguousarray(values).reshape(-1)
    return hashlib.blake2b(array.view(np.uint8), digest_size=16).digest() + array.dtype.str.encode()


def quantize_mixed(mlmodel, weights: "Weights", block_size: int = 32):
    """int4 per block for the layers; int8 per channel for embeddings and the output head
    (a tied embedding/head matrix is one constant in the program, fed to both gather and
    the head's linear: it gets the 8 bits)."""
    layers, eight = _linear_config(4, block_size), _linear_config(8, block_size)
    names = {w.name: eight if w.roles & {"embedding", "head"} else layers for w in weights.compressible}
    return _linear_quantize(mlmodel, names)


def _linear_config(bits: int, block_size: int):
    import coremltools.optimize.coreml as cto

    if bits == 8:
        return cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                           weight_threshold=WEIGHT_THRESHOLD)
    return cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                       block_size=block_size, weight_threshold=WEIGHT_THRESHOLD)


def _linear_quantize(mlmodel, names: dict):
    return _with_passes(mlmodel, [(LINEAR_PASS, names)])


LINEAR_PASS, PALETTIZE_PASS = "compression::linear_quantize_weights", "compression::palettize_weights"


def _with_passes(mlmodel, steps: list[tuple[str, dict]], prepare=None):
    """The model with coremltools' compression passes applied, each with its per-weight configs
    ({const op name: op config}), in order.

    Why not coremltools' linear_quantize_weights / palettize_weights, which apply the same passes:
    each loads the program, applies one pass, and converts it back through the whole default
    pipeline (95 passes, each followed by a validation of the whole program) — a program that
    pipeline optimised a moment ago. On a 135 M LLM that is about 20 s per call, and lut4 made
    two calls. Here every pass runs on one loaded program, and only the cleanup passes follow
    (the ones that fold what compression leaves: dead constants, duplicates, dequantize merges),
    as coremltools' own `_apply_graph_pass` does it otherwise (models/utils.py). `prepare(prog,
    names)` sees the loaded program and the last step's weight names first."""
    if not steps:
        return mlmodel
    import coremltools.optimize.coreml as cto
    from coremltools.converters.mil.converter import mil_convert
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load
    from coremltools.converters.mil.mil.passes.pass_pipeline import PassPipeline
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models import utils as model_utils

    spec = mlmodel.get_spec()
    version = max(spec.specificationVersion, _SPEC_IOS16)
    prog = model_utils._convert_model_spec_to_pymil_prog(mlmodel, version, milproto_load)
    if prepare is not None:
        prepare(prog, set(steps[-1][1]))
    for name, configs in steps:
        graph_pass = PASS_REGISTRY[name]
        graph_pass.set_options([PassOption("config", cto.OptimizationConfig(op_name_configs=configs)),
                                PassOption("joint_compression", False)])
        graph_pass.apply(prog)
    return mil_convert(prog, convert_from="milinternal", convert_to="mlprogram", specification_version=version,
                       compute_units=mlmodel.compute_unit, model_description=spec.description,
                       skip_model_load=True, pass_pipeline=PassPipeline.CLEANUP)


# ---------------------------------------------------------------------- the program's weights


@dataclass(frozen=True)
class Weight:
    name: str  # the const op's name
    shape: tuple[int, ...]
    roles: frozenset  # "layer", "embedding", "head"


@dataclass
class Weights:
    compressible: list[Weight]  # float weights of layer/gather ops above the threshold (after compression: those left float)
    elements: int  # all weights' elements (float constants and the dense outputs of constexpr ops)
    bytes: float  # all constants' storage in bytes, at each one's own bit width
    dense_bytes: float  # the same weights all stored float (the package before compression)
    float_elements: int  # elements still stored float, of any size
    compressed_weights: int  # weights stored compressed (each decompressed by constexpr ops)


def program_weights(prog, with_head: bool = True) -> Weights:
    """The program's constants: which weights can be compressed, with their roles, and the
    storage all constants take (what the package's weight file holds, bar alignment). Weights
    already compressed when the program was made (GPTQ's, calibrate.py) count by their dense
    size, with their storage at its own bit width."""
    from coremltools.converters.mil.mil import types

    compressible, elements, storage, dense, float_elements, compressed_count = [], 0, 0.0, 0.0, 0, 0
    for function in prog.functions.values():
        head = _head_ops(function) if with_head else set()
        for op in function.operations:
            if op.op_type.startswith("constexpr_") and not any(c.op_type.startswith("constexpr_") for c in op.outputs[0].child_ops):
                out = op.outputs[0]  # a compressed weight, decompressed at load: count it dense
                compressed_count += 1
                size = int(np.prod(out.shape))
                elements += size
                dense += size * out.dtype.get_bitwidth() / 8
        for op in function.find_ops(op_type="const"):
            var = op.outputs[0]
            value = var.val
            if not isinstance(value, np.ndarray) or value.size == 0:
                continue
            dtype = types.numpy_type_to_builtin_type(value.dtype) if not hasattr(var.dtype, "get_bitwidth") else var.dtype
            bits = dtype.get_bitwidth() if hasattr(dtype, "get_bitwidth") else 8 * value.itemsize
            storage += value.size * bits / 8
            if not np.issubdtype(value.dtype, np.floating) or any(c.op_type.startswith("constexpr_") for c in var.child_ops):
                continue
            elements += value.size
            float_elements += value.size
            dense += value.size * bits / 8
            roles = _roles(var, head)
            if not roles or value.ndim < 2 or value.size <= WEIGHT_THRESHOLD:
                continue
            compressible.append(Weight(op.name, tuple(value.shape), frozenset(roles)))
    return Weights(compressible, elements, storage, dense, float_elements, compressed_count)


def _roles(var, head: set) -> set[str]:
    roles = set()
    for child in var.child_ops:
        if child.op_type == "gather" and child.x is var:
            roles.add("embedding")
        elif child.op_type in _LAYER_OPS:
            roles.add("head" if child in head else "layer")
    return roles


def _head_ops(function) -> set:
    """The layer op(s) producing the outputs (the logits' linear/matmul), found by walking
    back from each output through ops that only reshape, cast or scale."""
    heads, seen = set(), set()
    stack = [var.op for var in function.outputs if var.op is not None]
    while stack:
        op = stack.pop()
        if op is None or id(op) in seen:
            continue
        seen.add(id(op))
        if op.op_type in _LAYER_OPS:
            heads.add(op)
            continue
        if op.op_type in ("cast", "reshape", "squeeze", "expand_dims", "transpose", "mul", "add", "real_div",
                          "slice_by_index", "slice_by_size", "identity", "softmax", "tanh"):
            stack.extend(v.op for v in op.inputs.values() if hasattr(v, "op") and v.op is not None and v.op.op_type != "const")
    return heads


def _program(mlmodel):
    """The MIL program of an in-memory or saved Core ML model."""
    if getattr(mlmodel, "_mil_program", None) is not None:
        return mlmodel._mil_program
    from coremltools.converters.mil.frontend.milproto import load as milproto
    from coremltools.models.utils import _convert_model_spec_to_pymil_prog

    return _convert_model_spec_to_pymil_prog(mlmodel, mlmodel.get_spec().specificationVersion, milproto.load)


def summarize(scheme: Scheme, options, grouped: bool, before: Weights, after: Weights) -> dict:
    """The report's compression entry (without the package sizes: `finish` adds them)."""
    if scheme.family == "lut":
        group = lut_group_size(options)
        granularity = ("per channel" if group == 1 else f"per grouped channel (group {group})") if grouped else "per tensor"
        if scheme.bits == 4:
            granularity += "; embeddings and output head int8 per channel"
    elif scheme.family == "mixed":
        granularity = f"int4 per block ({options.block_size}); embeddings and output head int8 per channel"
    elif scheme.bits == 8:
        granularity = "per channel"
    else:
        granularity = f"per block ({options.block_size}); embeddings and output head per block ({min(options.block_size, EMBEDDING_BLOCK)})"
    return {
        "scheme": scheme.name,
        "method": "palettization (k-means LUT)" if scheme.family == "lut" else "linear symmetric quantization",
        "granularity": granularity,
        "weights_compressed": after.compressed_weights,
        "float_weights_left": len(after.compressible),
        "compressed_share": round(1 - after.float_elements / after.elements, 4) if after.elements else 0.0,
        "weight_bytes_before": int(before.dense_bytes),
        "weight_bytes_after": int(math.ceil(after.bytes)),
    }


def _units(scheme: Scheme, options) -> str:
    """What a weight's shape must divide into under `scheme`, for the warning."""
    if scheme.family == "lut":
        return f"groups of {lut_group_size(options)} output channels"
    return f"blocks of {options.block_size} input channels"


def finish(summary: dict | None, size_bytes: int, weight_bits: float | None) -> dict | None:
    """The compression entry with the saved package's figures: its bits per weight (the
    program section's `weight_bits`, package_info.py: one definition for both), and its size
    after (as saved) and before (the same package with its weights as they were before
    compression: saved size − weight bytes saved)."""
    if summary is None:
        return None
    before = size_bytes - summary["weight_bytes_after"] + summary["weight_bytes_before"]
    return {**summary, "bits_per_weight": weight_bits, "size_before_bytes": before, "size_after_bytes": size_bytes,
            "size_ratio": round(size_bytes / before, 4) if before else None}
