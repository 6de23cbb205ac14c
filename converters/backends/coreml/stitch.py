"""One ML Program from the packages of a model's chunks of layers (chunks.py), at the
protobuf level, with one weight file.

Chunk k's program takes the package's inputs (and states) and, after the first, the hidden
state `chunk{k-1}_hidden`; it returns `chunk{k}_hidden`, or the package's outputs for the
last. Stitched, the main function takes the first chunk's inputs and runs every chunk's
operations in order, each chunk's `hidden` input bound to the previous chunk's output;
the names a chunk defines get a suffix so they stay unique.

Weights are copied blob by blob into one new weight file, so no chunk's weights are ever
all in memory. coremltools' storage writer takes numpy arrays per data type (sub-byte
types unpacked); copying the bytes of each blob as stored keeps every type exact and
needs only the file format (MILBlob, StorageFormat.hpp), which this module reads and
writes: a 64-byte header {count u32, version u32 = 2, reserved}, then per blob a 64-byte
metadata {sentinel u32 = 0xDEADBEEF, data type u32, size u64, data offset u64,
padding bits u64, reserved} and the data, each aligned to 64 bytes. A const refers to its
blob by the offset of that metadata.

A weight two chunks both hold is stored once, and read by one constant, as in the whole
model's program: blobs are compared by content at any size (`BlobFile`), and a chunk's
constant equal to an earlier chunk's (same op, type and value, its weights at the same
offset) is left out, its readers pointed at the earlier one (`_constant_key`). The common
case is the small constants every chunk makes (a causal mask, rotary tables), the big one a
tied embedding and output head: the first chunk holds the embedding, the last the head, the
same matrix compressed alike. SmolLM2-135M in 3 chunks stored it twice before: +57 MB at
float16 (1.21x the whole model's package), +28 MB at lut4 (int8 embedding: 0.43x the float16
package where the whole model's is 0.32x). The chunks' compression summaries each counted
it; `counted_once` takes the copies out.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ...chunks import hidden_name
from ...transforms.schemes import WEIGHT_THRESHOLD

WEIGHT_FILE = "weight.bin"
_ALIGN = 64
_HEADER = struct.Struct("<II56x")
_METADATA = struct.Struct("<IIQQQ32x")
_SENTINEL = 0xDEADBEEF
_COPY_PIECE = 64 << 20
_COMPARE_PIECE = 16 << 20
_PROBE = 64 << 10  # a blob's first bytes, hashed: blobs that differ almost always differ here


class BlobFile:
    """A MILBlob weight file being written, blob by blob; a blob whose bytes (and type) are
    already in the file is not written again."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")
        self._file.write(_HEADER.pack(0, 2))
        self.count = 0
        self._copied: dict[tuple[str, int], int] = {}
        self.sizes: dict[int, int] = {}  # a blob's metadata offset here -> its bytes
        # (type, size, padding, hash of the first _PROBE bytes) -> [(here, source, data offset there)]
        self._by_probe: dict[tuple, list[tuple[int, str, int]]] = {}

    def copy_from(self, source: Path, offset: int) -> int:
        """Copy the blob whose metadata is at `offset` in `source`; its metadata's offset here."""
        key = (str(source), offset)
        if key in self._copied:
            return self._copied[key]
        with open(source, "rb") as reader:
            reader.seek(offset)
            sentinel, dtype, size, data_offset, padding = _METADATA.unpack(reader.read(_METADATA.size))
            if sentinel != _SENTINEL:
                raise ValueError(f"{source}: no weight blob at offset {offset}")
            reader.seek(data_offset)
            probe = (dtype, size, padding, hashlib.sha256(reader.read(min(size, _PROBE))).digest())
            for here, earlier, earlier_offset in self._by_probe.get(probe, []):
                # the probe is the whole blob up to _PROBE bytes; a bigger one is compared in full
                if size <= _PROBE or _same_bytes(reader, data_offset, earlier, earlier_offset, size):
                    self._copied[key] = here
                    return here
            here = self._pad()
            data_here = here + _ALIGN
            self._file.write(_METADATA.pack(_SENTINEL, dtype, size, data_here, padding))
            self._file.flush()
            _copy_range(reader, data_offset, self._file, size)
            self._file.seek(0, 2)
        self.count += 1
        self._copied[key] = here
        self.sizes[here] = size
        self._by_probe.setdefault(probe, []).append((here, str(source), data_offset))
        return here

    def _pad(self) -> int:
        position = self._file.tell()
        aligned = -(-position // _ALIGN) * _ALIGN
        self._file.write(b"\0" * (aligned - position))
        return aligned

    def close(self) -> None:
        self._pad()
        self._file.seek(0)
        self._file.write(_HEADER.pack(self.count, 2))
        self._file.close()


def _same_bytes(reader, offset: int, other: str, other_offset: int, size: int) -> bool:
    """Whether `size` bytes at `offset` in `reader` equal those at `other_offset` in file `other`,
    read a piece at a time (a 7 B model's embedding is GBs)."""
    with open(other, "rb") as second:
        reader.seek(offset)
        second.seek(other_offset)
        left = size
        while left:
            piece = min(left, _COMPARE_PIECE)
            if reader.read(piece) != second.read(piece):
                return False
            left -= piece
    return True


def _copy_range(reader, offset: int, writer, size: int) -> None:
    """`size` bytes from `offset` in `reader` to the end of `writer`: in the kernel where it can
    (copy_file_range: no pass through Python's memory, GBs for a 7 B model), else in pieces."""
    position = writer.tell()
    left = size
    try:
        while left:
            copied = os.copy_file_range(reader.fileno(), writer.fileno(), left, offset + size - left, position + size - left)
            if copied == 0:
                break
            left -= copied
    except (AttributeError, OSError):
        pass
    reader.seek(offset + size - left)
    writer.seek(position + size - left)
    while left:
        piece = reader.read(min(left, _COPY_PIECE))
        if not piece:
            raise ValueError(f"{reader.name}: a weight blob is cut short")
        writer.write(piece)
        left -= len(piece)


def weight_file(package: Path) -> Path:
    return Path(package) / "Data" / "com.apple.CoreML" / "weights" / WEIGHT_FILE


@dataclass
class Shared:
    """Weights more than one chunk held, which the package holds once: what the chunks'
    compression summaries counted more than once."""

    compressed: int = 0  # weights stored compressed (a constexpr op's output)
    compressed_dense_bytes: int = 0  # those weights at their float width
    float_left: int = 0  # weights a layer or embedding reads that stayed float (compress.py counted them per chunk)
    dense_bytes: int = 0  # every shared constant at its float width (compressed or not)
    stored_bytes: int = 0  # their blobs' bytes


def stitch(chunk_packages: list[Path], weights_dir: Path):
    """The Model spec of one program running the chunks in order, and what the chunks shared
    (`Shared`); its weight file is written to `weights_dir` (what
    ct.models.MLModel(spec, weights_dir=...) takes)."""
    import coremltools as ct

    specs = [ct.utils.load_spec(str(path)) for path in chunk_packages]
    blobs = BlobFile(Path(weights_dir) / WEIGHT_FILE)
    try:
        spec, dropped = _stitch_specs(specs, [weight_file(p) for p in chunk_packages], blobs)
    finally:
        blobs.close()
    return spec, _shared(dropped, blobs.sizes, _readers(spec.mlProgram.functions["main"]))


def counted_once(summary: dict, shared: Shared) -> dict:
    """A compression summary merged from the chunks' (compress.py) with each shared weight
    counted once, as the package stores it. The compressed share is weighted by dense bytes,
    as there."""
    before = summary["weight_bytes_before"] - shared.dense_bytes
    compressed = summary["compressed_share"] * summary["weight_bytes_before"] - shared.compressed_dense_bytes
    return {
        **summary,
        "weights_compressed": summary["weights_compressed"] - shared.compressed,
        "float_weights_left": summary["float_weights_left"] - shared.float_left,
        "compressed_share": round(compressed / before, 4) if before > 0 else 0.0,
        "weight_bytes_before": before,
        "weight_bytes_after": summary["weight_bytes_after"] - shared.stored_bytes,
    }


def _shared(dropped: list, sizes: dict[int, int], readers: dict[str, set[str]]) -> Shared:
    """What the constants the stitch left out (each the same as an earlier chunk's) amount to,
    once per chunk that held them, as the chunks' summaries counted them. A constant another
    left-out constexpr op reads (its data, its table) is a part of that weight."""
    shared = Shared()
    parts = {b.name for op in dropped for a in op.inputs.values() for b in a.arguments if b.WhichOneof("binding") == "name"}
    for op in dropped:
        blobs = [v.blobFileValue.offset for v in _values(op) if v.WhichOneof("value") == "blobFileValue"]
        shared.stored_bytes += sum(sizes[offset] for offset in blobs)
        compressed = op.type.startswith("constexpr_")
        if op.outputs[0].name in parts or not (compressed or blobs):
            continue
        dense = _dense_bytes(op.outputs[0].type)
        shared.dense_bytes += dense
        if compressed:
            shared.compressed += 1
            shared.compressed_dense_bytes += dense
        elif _float_weight(op, readers):
            shared.float_left += 1
    return shared


# What compress.py's summaries count as a weight (program_weights): a constant a layer op or an
# embedding's gather reads, 2-D or more, of more than WEIGHT_THRESHOLD elements.
_WEIGHT_READERS = frozenset({"linear", "matmul", "conv", "conv_transpose", "gather"})


def _float_weight(op, readers: dict[str, set[str]]) -> bool:
    """Whether a left-out float constant is a weight its chunk's summary counted as left float
    (a tied embedding and output head that did not compress: in the first chunk and the last)."""
    dimensions = [d.constant.size for d in op.outputs[0].type.tensorType.dimensions]
    elements = 1
    for size in dimensions:
        elements *= size
    return len(dimensions) >= 2 and elements > WEIGHT_THRESHOLD and bool(readers.get(op.outputs[0].name, set()) & _WEIGHT_READERS)


def _readers(function) -> dict[str, set[str]]:
    """Each name the function's operations read -> the types of the operations reading it."""
    readers: dict[str, set[str]] = {}

    def walk(block):
        for operation in block.operations:
            for argument in operation.inputs.values():
                for binding in argument.arguments:
                    if binding.WhichOneof("binding") == "name":
                        readers.setdefault(binding.name, set()).add(operation.type)
            for inner in operation.blocks:
                walk(inner)

    for block in function.block_specializations.values():
        walk(block)
    return readers


def _dense_bytes(value_type) -> int:
    """A tensor's bytes at its type's width (FLOAT16: 2), from its type in the program."""
    from coremltools.proto import MIL_pb2

    tensor = value_type.tensorType
    bits = int("".join(c for c in MIL_pb2.DataType.Name(tensor.dataType) if c.isdigit()) or 8)
    elements = 1
    for dimension in tensor.dimensions:
        elements *= dimension.constant.size
    return elements * bits // 8


def _values(operation) -> list:
    """The values an operation holds: its attributes and its inputs given as values."""
    return list(operation.attributes.values()) + [b.value for a in operation.inputs.values() for b in a.arguments
                                                  if b.WhichOneof("binding") == "value"]


def _stitch_specs(specs: list, weight_files: list[Path], blobs: BlobFile):
    first, last = specs[0], specs[-1]
    stitched = type(first)()
    stitched.CopyFrom(first)
    stitched.specificationVersion = max(s.specificationVersion for s in specs)
    del stitched.description.output[:]
    stitched.description.output.extend(last.description.output)

    function = stitched.mlProgram.functions["main"]
    opset = function.opset
    block = function.block_specializations[opset]
    del block.operations[:]
    del block.outputs[:]
    final_outputs = list(last.mlProgram.functions["main"].block_specializations[opset].outputs)
    defined: set[str] = {i.name for i in function.inputs}
    previous_output: str | None = None
    constants: dict[bytes, list[str]] = {}  # a constant's value (and type) -> its outputs' names
    dropped = []  # the constants an earlier chunk defines, left out
    for index, (spec, weights) in enumerate(zip(specs, weight_files)):
        chunk_function = spec.mlProgram.functions["main"]
        if chunk_function.opset != opset:
            raise ValueError(f"chunk {index} is written for opset {chunk_function.opset}, not {opset}")
        chunk_block = chunk_function.block_specializations[opset]
        keep = set(final_outputs) if index == len(specs) - 1 else set()
        renames = {name: name if name in keep else f"{name}__c{index}" for name in _defined_names(chunk_block)}
        if index:
            renames[hidden_name(index - 1)] = previous_output
        clash = {new for old, new in renames.items() if old != hidden_name(index - 1)} & defined
        if clash:
            raise ValueError(f"chunk {index} defines names another chunk defines: {sorted(clash)[:3]}")
        defined |= set(renames.values())
        for operation in chunk_block.operations:
            copied = block.operations.add()
            copied.CopyFrom(operation)
            _rename(copied, renames)
            _move_blobs(copied, weights, blobs)
            key = _constant_key(copied, keep)
            if key in constants:  # an earlier chunk defines it: its ops read that one
                for output, old, earlier in zip(copied.outputs, operation.outputs, constants[key]):
                    renames[old.name] = output.name = earlier  # (named as the constants that read it read it)
                dropped.append(type(copied)())
                dropped[-1].CopyFrom(copied)
                del block.operations[-1]
            elif key is not None:
                constants[key] = [output.name for output in copied.outputs]
        if index < len(specs) - 1:
            previous_output = renames[hidden_name(index)]
    block.outputs.extend(final_outputs)
    return stitched, dropped


def _constant_key(operation, keep: set[str]) -> bytes | None:
    """What makes a constant the same as another (its op type, value and output types; not its
    names), or None for an op that computes. Constants are compared after their weights moved
    into the new file (`_move_blobs`), where equal bytes have one offset: the tied embedding of
    the first chunk and output head of the last become one constant, as in the whole program,
    and so do the small constants every chunk makes (rotary tables, masks)."""
    if operation.blocks or not (operation.type == "const" or operation.type.startswith("constexpr_")):
        return None
    if any(output.name in keep for output in operation.outputs):
        return None
    value = type(operation)()
    value.CopyFrom(operation)
    if "name" in value.attributes:
        del value.attributes["name"]
    for output in value.outputs:
        output.name = ""
    return value.SerializeToString(deterministic=True)


def _defined_names(block) -> set[str]:
    """Names a block's operations (and the blocks nested in them) define."""
    names = set()
    for operation in block.operations:
        names.update(output.name for output in operation.outputs)
        for inner in operation.blocks:
            names.update(i.name for i in inner.inputs)
            names |= _defined_names(inner)
    return names


def _rename(operation, renames: dict[str, str]) -> None:
    for output in operation.outputs:
        output.name = renames.get(output.name, output.name)
    for argument in operation.inputs.values():
        for binding in argument.arguments:
            if binding.WhichOneof("binding") == "name":
                binding.name = renames.get(binding.name, binding.name)
    for inner in operation.blocks:
        for block_input in inner.inputs:
            block_input.name = renames.get(block_input.name, block_input.name)
        outputs = [renames.get(name, name) for name in inner.outputs]
        del inner.outputs[:]
        inner.outputs.extend(outputs)
        for nested in inner.operations:
            _rename(nested, renames)


def _move_blobs(operation, weights: Path, blobs: BlobFile) -> None:
    """Point every weight the operation reads from a file at its copy in the new file."""
    for value in _values(operation):
        if value.WhichOneof("value") == "blobFileValue":
            value.blobFileValue.offset = blobs.copy_from(weights, value.blobFileValue.offset)
    for inner in operation.blocks:
        for nested in inner.operations:
            _move_blobs(nested, weights, blobs)
