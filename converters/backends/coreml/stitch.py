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
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from ...chunks import hidden_name

WEIGHT_FILE = "weight.bin"
_ALIGN = 64
_HEADER = struct.Struct("<II56x")
_METADATA = struct.Struct("<IIQQQ32x")
_SENTINEL = 0xDEADBEEF
_COPY_PIECE = 64 << 20
_SHARED_SIZE = 16 << 20  # blobs up to this size are compared by content


class BlobFile:
    """A MILBlob weight file being written, blob by blob."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")
        self._file.write(_HEADER.pack(0, 2))
        self.count = 0
        self._copied: dict[tuple[str, int], int] = {}
        self._by_content: dict[tuple, int] = {}

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
            if size <= _SHARED_SIZE:
                # Each chunk holds its own copy of the same small constants (a causal mask, rotary
                # tables): the package keeps one.
                reader.seek(data_offset)
                content = (dtype, padding, hashlib.sha256(reader.read(size)).digest())
                if content in self._by_content:
                    self._copied[key] = self._by_content[content]
                    return self._copied[key]
                self._by_content[content] = self._aligned()
            here = self._pad()
            data_here = here + _ALIGN
            self._file.write(_METADATA.pack(_SENTINEL, dtype, size, data_here, padding))
            self._file.flush()
            _copy_range(reader, data_offset, self._file, size)
            self._file.seek(0, 2)
        self.count += 1
        self._copied[key] = here
        return here

    def _aligned(self) -> int:
        """Where the next blob's metadata goes."""
        return -(-self._file.tell() // _ALIGN) * _ALIGN

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


def stitch(chunk_packages: list[Path], weights_dir: Path):
    """The Model spec of one program running the chunks in order; its weight file is written
    to `weights_dir` (what ct.models.MLModel(spec, weights_dir=...) takes)."""
    import coremltools as ct

    specs = [ct.utils.load_spec(str(path)) for path in chunk_packages]
    blobs = BlobFile(Path(weights_dir) / WEIGHT_FILE)
    try:
        spec = _stitch_specs(specs, [weight_file(p) for p in chunk_packages], blobs)
    finally:
        blobs.close()
    return spec


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
        if index < len(specs) - 1:
            previous_output = renames[hidden_name(index)]
    block.outputs.extend(final_outputs)
    return stitched


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
    values = list(operation.attributes.values())
    values += [b.value for a in operation.inputs.values() for b in a.arguments if b.WhichOneof("binding") == "value"]
    for value in values:
        if value.WhichOneof("value") == "blobFileValue":
            value.blobFileValue.offset = blobs.copy_from(weights, value.blobFileValue.offset)
    for inner in operation.blocks:
        for nested in inner.operations:
            _move_blobs(nested, weights, blobs)
