"""Read what a saved package actually contains: its inputs, outputs and metadata, from
the spec (works on any OS; no Core ML runtime needed)."""

from __future__ import annotations

from pathlib import Path

_ARRAY_DTYPES = {65552: "float16", 65568: "float32", 65600: "float64", 131104: "int32", 131080: "int8"}


def _array_info(array_type) -> dict:
    info = {"type": "tensor", "shape": list(array_type.shape), "dtype": _ARRAY_DTYPES.get(array_type.dataType, str(array_type.dataType))}
    flexibility = array_type.WhichOneof("ShapeFlexibility")
    if flexibility == "shapeRange":
        info["flexibility"] = "range"
        info["ranges"] = [[r.lowerBound, r.upperBound] for r in array_type.shapeRange.sizeRanges]
    elif flexibility == "enumeratedShapes":
        info["flexibility"] = "enumerated"
        info["shapes"] = [list(s.shape) for s in array_type.enumeratedShapes.shapes]
    else:
        info["flexibility"] = "fixed"
    return info


def feature_info(feature) -> dict:
    kind = feature.type.WhichOneof("Type")
    info: dict = {"name": feature.name, "description": feature.shortDescription}
    if kind == "multiArrayType":
        info.update(_array_info(feature.type.multiArrayType))
    elif kind == "imageType":
        image = feature.type.imageType
        info.update(type="image", shape=[1, 3, image.height, image.width], dtype="image", flexibility="fixed")
    elif kind == "stateType":
        info.update(type="state", **{k: v for k, v in _array_info(feature.type.stateType.arrayType).items() if k != "type"})
    elif kind == "dictionaryType":
        info.update(type="dictionary", shape=[], dtype="dictionary", flexibility="fixed")
    elif kind in ("stringType", "int64Type", "doubleType"):
        info.update(type="scalar", shape=[], dtype=kind.replace("Type", ""), flexibility="fixed")
    else:
        info.update(type=kind or "unknown", shape=[], dtype="unknown", flexibility="fixed")
    return info


def describe_spec(spec) -> dict:
    description = spec.description
    return {
        "inputs": [feature_info(f) for f in description.input],
        "outputs": [feature_info(f) for f in description.output],
        "states": [feature_info(f) for f in description.state],
        "metadata": dict(description.metadata.userDefined),
        "specification_version": spec.specificationVersion,
    }


def describe_package(path: str | Path) -> dict:
    import coremltools as ct

    return describe_spec(ct.utils.load_spec(str(path)))


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# Bits per element of each MIL proto DataType (coremltools.proto.MIL_pb2.DataType) a weight
# may be stored in; sub-byte types are packed in the weight file.
_MIL_BITS = {10: 16, 11: 32, 12: 64, 13: 16, 40: 8, 41: 8, 21: 8, 22: 16, 23: 32, 24: 64, 25: 4,
             31: 8, 32: 16, 33: 32, 34: 64, 35: 4, 36: 2, 37: 1, 38: 6, 39: 3}
_MIL_FLOATS = {10, 11, 12, 13, 40, 41}
_FUSED_ATTENTION_OP = "scaled_dot_product_attention"


def program_summary(spec) -> dict | None:
    """What an ML Program computes, from the spec alone (no weights are read):

    - `op_counts`: op type -> count over the main function (nested blocks too), `const`
      excluded, most frequent first;
    - `fused_attention`: whether attention runs as Core ML's fused
      `scaled_dot_product_attention` op (iOS 18+);
    - `stateful`: whether the package keeps Core ML states (a KV cache);
    - `weight_bits`: mean bits per weight element as stored — 16 for float16 weights, 32 for
      float32, fewer when compressed: the storage of the weights' constants (float tensors —
      not scalar parameters such as epsilons — and the data, scales and tables of
      `constexpr_*` decompression ops) over the elements of the weights the program
      computes with.
    None for a package that is not an ML Program."""
    if spec.WhichOneof("Type") != "mlProgram":
        return None
    program = spec.mlProgram
    name = spec.description.defaultFunctionName or "main"
    function = program.functions[name] if name in program.functions else next(iter(program.functions.values()))
    operations = list(_operations(function.block_specializations[function.opset]))
    counts: dict[str, int] = {}
    for op in operations:
        if op.type != "const":
            counts[op.type] = counts.get(op.type, 0) + 1
    return {
        "fused_attention": counts.get(_FUSED_ATTENTION_OP, 0) > 0,
        "stateful": len(spec.description.state) > 0,
        "weight_bits": _weight_bits(operations),
        "op_counts": dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))),
    }


def _operations(block):
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _operations(inner)


def _tensor(value_type) -> tuple[int, int] | None:
    """(data type, elements) of a tensor value type with a known shape, else None."""
    if value_type.WhichOneof("type") != "tensorType":
        return None
    tensor = value_type.tensorType
    elements = 1
    for dim in tensor.dimensions:
        if dim.WhichOneof("dimension") != "constant":
            return None
        elements *= dim.constant.size
    return tensor.dataType, elements


def _weight_bits(operations) -> float | None:
    consts = {}  # output name -> (data type, elements)
    decompressed = {}  # constexpr outputs -> elements
    read_by_constexpr: set[str] = set()
    inline_bits = 0
    for op in operations:
        if op.type == "const" or op.type.startswith("constexpr_"):
            for output in op.outputs:
                tensor = _tensor(output.type)
                if tensor is not None:
                    (consts if op.type == "const" else decompressed)[output.name] = tensor if op.type == "const" else tensor[1]
        if op.type.startswith("constexpr_"):
            read_by_constexpr.update(b.name for argument in op.inputs.values() for b in argument.arguments if b.name)
            # A saved package carries the data, scales and tables inline in the op, not as consts:
            # as input values (iOS18 ops) or as attributes (iOS16's constexpr_lut_to_dense,
            # constexpr_affine_dequantize)
            inline_bits += sum(_MIL_BITS.get(t[0], 0) * t[1] for argument in op.inputs.values() for a in argument.arguments
                               if a.WhichOneof("binding") == "value" and (t := _tensor(a.value.type)) is not None)
            inline_bits += sum(_MIL_BITS.get(t[0], 0) * t[1] for key, value in op.attributes.items()
                               if key != "name" and (t := _tensor(value.type)) is not None)
    bits, elements = inline_bits, 0
    for name, (dtype, count) in consts.items():
        if name in read_by_constexpr:  # compressed data, scales, offsets, lookup tables
            bits += _MIL_BITS.get(dtype, 0) * count
        elif dtype in _MIL_FLOATS and count > 1:  # a float weight (scalars are op parameters: epsilons, factors)
            bits += _MIL_BITS[dtype] * count
            elements += count
    # The weights the program computes with: constexpr outputs no other constexpr op reads.
    elements += sum(count for name, count in decompressed.items() if name not in read_by_constexpr)
    return round(bits / elements, 3) if elements else None
