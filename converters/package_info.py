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
