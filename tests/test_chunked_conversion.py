"""A big decoder converts a chunk of layers at a time (converters/chunks.py), and the chunks'
programs are stitched into one package with one weight file (backends/coreml/stitch.py).

Evidence that the stitched package is the same model: tiny 3-layer decoders of every
registry family, converted whole and one layer per chunk, give the same outputs in the
reference executor (fp32 and fp16 emulation), and the chunked package passes the same
validation (stateful ones driven as swift-transformers drives them). Memory is measured by
bench/convert.py, not here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters import chunks
from converters.backends.coreml.stitch import WEIGHT_FILE, BlobFile, weight_file
from converters.export import convert
from converters.options import ConversionOptions
from converters.backends.coreml.executor import ReferenceExecutor
from tests.models import ALL_MODELS, build_model

LAYERS = 3  # one layer per chunk: a first chunk (embeddings), a middle one and a last one (the head)
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox", "gpt_bigcode", "falcon"]


def _build(model_type: str, folder, tokenizer: bool = True, **overrides):
    config = ALL_MODELS[model_type][0]()
    overrides["num_hidden_layers"] = LAYERS
    types = getattr(config, "layer_types", None)
    if types:  # one entry per layer (sliding or full attention)
        overrides["layer_types"] = [types[i % len(types)] for i in range(LAYERS)]
    build_model(model_type, folder, **overrides)
    if not tokenizer:  # 4-bit schemes then compress data-free in both modes (GPTQ reads text)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (folder / name).unlink(missing_ok=True)
    return folder


def _inputs(executor: ReferenceExecutor, length: int) -> dict:
    rng = np.random.default_rng(0)
    if "causalMask" in executor.input_names:  # a prefill of 5 tokens
        return {"inputIds": rng.integers(3, 128, (1, 5)).astype(np.int32), "causalMask": np.zeros((1, 1, 1, 5), np.float16)}
    ids, mask = executor.input_names
    padded = np.ones((1, length), np.int32)
    padded[:, -3:] = 0
    return {ids: rng.integers(3, 128, (1, length)).astype(np.int32), mask: padded}


def _assert_same_outputs(whole, chunked, length: int) -> None:
    a, b = ReferenceExecutor(whole.packages[0]), ReferenceExecutor(chunked.packages[0])
    assert (a.input_names, a.output_names, a.state_names) == (b.input_names, b.output_names, b.state_names)
    inputs = _inputs(a, length)
    # fp32: the same graph; fp16: coremltools may fuse ops across a layer boundary in the whole
    # program, not across chunks: a float16 rounding (1e-3 relative) apart at most
    for mode, tolerance in (("fp32", 1e-5), ("fp16", 2e-3)):
        state_a, state_b = a.make_state(), b.make_state()
        out_a, out_b = a.predict(inputs, mode, state_a), b.predict(inputs, mode, state_b)
        for name in out_a:
            scale = float(np.abs(out_a[name]).max())
            np.testing.assert_allclose(out_b[name], out_a[name], rtol=0, atol=tolerance * scale, err_msg=f"{mode} {name}")
        for name in state_a:  # the KV cache each chunk wrote is the whole model's
            scale = float(np.abs(state_a[name]).max())
            np.testing.assert_allclose(state_b[name], state_a[name], rtol=0, atol=tolerance * scale, err_msg=f"{mode} {name}")


def _assert_lazy_weights_change_nothing(package) -> None:
    """The executor of a big package decompresses each weight when a call reaches it and keeps
    float16 weights float16 (validation of a 7 B model): same outputs as all weights at load."""
    eager, lazy = ReferenceExecutor(package, lazy_weights=False), ReferenceExecutor(package, lazy_weights=True)
    assert lazy.lazy_weights and not eager.lazy_weights
    held = lambda executor: sum(t.numel() * t.element_size() for t in executor._consts.values())  # noqa: E731
    assert held(lazy) < held(eager)
    inputs = _inputs(eager, 128)
    for mode in ("fp32", "fp16"):
        a, b = eager.predict(inputs, mode), lazy.predict(inputs, mode)
        for name in a:
            np.testing.assert_array_equal(b[name], a[name], err_msg=f"{mode} {name}")


def _convert_both(folder, out, options: ConversionOptions, progress=None):
    whole = convert(str(folder), "text-generation", out / "whole", options, validate=False, layers_per_chunk=0)
    chunked = convert(str(folder), "text-generation", out / "chunked", options, layers_per_chunk=1, progress=progress)
    return whole, chunked


def _check_chunked(report: dict) -> None:
    package = report["packages"][0]
    assert package["chunks"] == [{"layers": [i, i + 1]} for i in range(LAYERS)]
    assert report["validation"]["passed"], report["validation"]["message"]
    assert not any(io["name"].startswith("chunk") for io in package["inputs"] + package["outputs"]), package


@pytest.mark.parametrize("model_type", FAMILIES)
def test_a_chunked_package_computes_what_the_whole_conversion_computes(model_type, tmp_path):
    folder = _build(model_type, tmp_path / "model")
    messages = []
    whole, chunked = _convert_both(folder, tmp_path, ConversionOptions(), lambda stage, fraction, message: messages.append(message))
    assert "chunks" not in whole.report_json["packages"][0]
    _check_chunked(chunked.report_json)
    _assert_same_outputs(whole, chunked, 128)
    # the job view's progress names each chunk as it converts
    for index in range(LAYERS):
        assert any(f"layers {index + 1}–{index + 1} of {LAYERS} (chunk {index + 1} of {LAYERS})" in m for m in messages), messages


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "gemma"])
def test_a_chunked_stateful_package_fills_its_cache_as_the_whole_one_does(model_type, tmp_path):
    """Each chunk writes its own layers' slots of keyCache/valueCache, and tells written slots
    from fresh ones by a layer of its own (the earlier chunks have written theirs)."""
    folder = _build(model_type, tmp_path / "model")
    options = ConversionOptions.from_strings(kv_cache="stateful", minimum_deployment_target="iOS18", sequence_length="64")
    whole, chunked = _convert_both(folder, tmp_path, options)
    _check_chunked(chunked.report_json)
    continuation = [c for c in chunked.report_json["validation"]["checks"] if "continuation" in json.dumps(c).lower()]
    assert continuation, "a stateful package's validation drives it as swift-transformers does"
    _assert_same_outputs(whole, chunked, 64)


@pytest.mark.parametrize("scheme, extra", [("int8", {}), ("int4", {"minimum_deployment_target": "iOS18"}),
                                           ("lut6", {"minimum_deployment_target": "iOS18"})])
def test_chunks_are_compressed_one_by_one_into_the_whole_conversions_package(scheme, extra, tmp_path):
    """Weights big enough to compress (64 x 64), no tokenizer: data-free in both modes. The
    output head is compressed as a head only in the last chunk; the report adds the chunks up.
    The embedding and head are tied: the first chunk's embedding and the last chunk's head are
    compressed alike, and stored once. Under lut6 the tied matrix stays float (4088 rows: no
    group of 16 divides them): the report and its warning count it once, as the whole one does."""
    folder = _build("llama", tmp_path / "model", tokenizer=False, hidden_size=64, intermediate_size=128,
                    vocab_size=4088 if scheme == "lut6" else 4096, tie_word_embeddings=True)
    whole, chunked = _convert_both(folder, tmp_path, ConversionOptions.from_strings(quantize=scheme, **extra))
    _assert_tied_matrix_stored_once(whole, chunked)
    _check_chunked(chunked.report_json)
    _assert_same_outputs(whole, chunked, 128)
    _assert_lazy_weights_change_nothing(chunked.packages[0])
    a, b = (r.report_json["packages"][0]["compression"] for r in (whole, chunked))
    assert (b["weights_compressed"], b["float_weights_left"]) == (a["weights_compressed"], a["float_weights_left"])
    assert b["weights_compressed"] > 0
    # each chunk's program has its own small constants (mask, rotary tables) and the tied matrix
    # is in two chunks: the package stores them once, and the report counts them once
    assert b["size_after_bytes"] == pytest.approx(a["size_after_bytes"], rel=0.05)
    for key in ("weight_bytes_before", "weight_bytes_after", "compressed_share"):
        assert b[key] == pytest.approx(a[key], rel=0.02), key
    assert sum(w.count(scheme) for w in chunked.report_json["warnings"]) <= sum(w.count(scheme) for w in whole.report_json["warnings"])
    if scheme == "lut6":
        assert a["float_weights_left"] == 1
        assert "lut6: 1 weight(s) stayed float" in " ".join(chunked.report_json["warnings"])


def test_a_float32_chunked_package_computes_what_the_whole_conversion_computes(tmp_path):
    folder = _build("qwen2", tmp_path / "model")
    whole, chunked = _convert_both(folder, tmp_path, ConversionOptions.from_strings(precision="float32"))
    _check_chunked(chunked.report_json)
    _assert_same_outputs(whole, chunked, 128)
    assert chunked.report_json["packages"][0]["inputs"] == whole.report_json["packages"][0]["inputs"]


@pytest.mark.parametrize("length", ["16,32,64", "8-64"])
def test_a_list_or_range_of_lengths_converts_whole_and_says_why(length, tmp_path):
    """A chunk's hidden input would get a flexible dimension of its own, which Core ML does not
    tie to the tokens' (its package failed validation): such a conversion is not chunked."""
    folder = _build("qwen2", tmp_path / "model")
    options = ConversionOptions.from_strings(sequence_length=length, minimum_deployment_target="iOS18")
    result = convert(str(folder), "text-generation", tmp_path / "out", options, layers_per_chunk=1)
    assert "chunks" not in result.report_json["packages"][0]
    assert result.report_json["validation"]["passed"]
    assert any("chunks need one fixed sequence length" in w for w in result.report_json["warnings"])


def _blobs(package) -> list[tuple[int, int, int]]:
    """(metadata offset, data type, size) of each blob in a package's weight file."""
    from converters.backends.coreml import stitch

    data = weight_file(package).read_bytes()
    count = stitch._HEADER.unpack(data[:64])[0]
    found, offset = [], 64
    while len(found) < count:
        sentinel, dtype, size, data_offset, _ = stitch._METADATA.unpack(data[offset:offset + 64])
        assert sentinel == stitch._SENTINEL
        found.append((offset, dtype, size))
        offset = -(-(data_offset + size) // 64) * 64
    return found


def _readers_of_blob(package, offset: int) -> list[str]:
    """The ops of a package's program that read the blob at `offset` of its weight file."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(package))
    readers = []
    for block in spec.mlProgram.functions["main"].block_specializations.values():
        for op in block.operations:
            values = list(op.attributes.values()) + [b.value for a in op.inputs.values() for b in a.arguments
                                                     if b.WhichOneof("binding") == "value"]
            if any(v.WhichOneof("value") == "blobFileValue" and v.blobFileValue.offset == offset for v in values):
                readers.append(op.outputs[0].name)
    return readers


def _assert_tied_matrix_stored_once(whole, chunked) -> None:
    """A tied embedding/head: the chunked package is no bigger than the whole one (within 2%),
    and holds the matrix once, read by one constant, as the whole program does (the first
    chunk's embedding and the last chunk's head are the same bytes)."""
    from converters.package_info import directory_size

    a, b = whole.packages[0], chunked.packages[0]
    assert directory_size(b) <= 1.02 * directory_size(a), (directory_size(b), directory_size(a))
    biggest = max(size for _, _, size in _blobs(a))
    for package in (a, b):
        matrix = [offset for offset, _, size in _blobs(package) if size == biggest]
        assert len(matrix) == 1, package
        assert len(_readers_of_blob(package, matrix[0])) == 1, package


def test_the_stitched_package_has_one_weight_file_with_every_chunks_weights(tmp_path):
    # tied embedding and head, big enough to be most of the package (as in SmolLM2)
    folder = _build("llama", tmp_path / "model", vocab_size=4096, tie_word_embeddings=True)
    whole, chunked = _convert_both(folder, tmp_path, ConversionOptions())
    _check_chunked(chunked.report_json)  # validated against PyTorch
    _assert_same_outputs(whole, chunked, 128)
    _assert_tied_matrix_stored_once(whole, chunked)
    package = chunked.packages[0]
    files = sorted(p.name for p in (package / "Data" / "com.apple.CoreML" / "weights").iterdir())
    assert files == [WEIGHT_FILE]
    assert not list((tmp_path / "chunked").glob(".chunks-*")), "the chunks' scratch packages are removed"
    header = weight_file(package).read_bytes()[:8]
    stitched_count = int.from_bytes(header[:4], "little")
    whole_count = int.from_bytes(weight_file(whole.packages[0]).read_bytes()[:4], "little")
    # the same weights; identical constants are stored once (the whole program repeats some), and
    # each chunk adds a few small ones of its own (a tiny model's are a few % of its weights)
    assert 0 < stitched_count <= whole_count + 8 * LAYERS
    whole_size = weight_file(whole.packages[0]).stat().st_size
    assert abs(weight_file(package).stat().st_size - whole_size) < 0.05 * whole_size


def test_a_big_float16_package_keeps_its_weights_float16_in_the_executor(tmp_path):
    folder = _build("llama", tmp_path / "model", hidden_size=64, intermediate_size=128)
    result = convert(str(folder), "text-generation", tmp_path / "out", validate=False, layers_per_chunk=2)
    _assert_lazy_weights_change_nothing(result.packages[0])


def test_the_streamed_model_computes_what_the_loaded_one_does_and_lets_its_weights_go(tmp_path):
    """Validation of a chunked conversion runs PyTorch with each layer's weights read as it runs."""
    import torch

    from converters.capture import load
    from converters.plan import make_plan
    from converters.source import open_source

    folder = _build("gemma", tmp_path / "model")  # tied embedding and head, scaled embeddings
    plan = make_plan(open_source(str(folder)), "text-generation", ConversionOptions())
    lazy = chunks.chunked_model(plan, layers_per_chunk=1)
    streamed, loaded = lazy.streaming(), load(plan)
    ids = torch.randint(3, 128, (1, 12))
    with torch.no_grad():
        expected = loaded(input_ids=ids, use_cache=False).logits
        for _ in range(2):  # weights come back for every forward
            torch.testing.assert_close(streamed(input_ids=ids, use_cache=False).logits, expected, rtol=0, atol=1e-5)
            assert all(p.device.type == "meta" for p in streamed.parameters()), "no weights stay after a forward"


def test_blob_file_copies_a_blob_byte_for_byte_and_once(tmp_path):
    source = tmp_path / "a.bin"
    copy = BlobFile(source)
    copy._file.close()
    # a one-blob file: header, metadata at 64, data at 128
    data = bytes(range(200))
    from converters.backends.coreml import stitch as stitch

    with open(source, "wb") as f:
        f.write(stitch._HEADER.pack(1, 2))
        f.write(stitch._METADATA.pack(stitch._SENTINEL, 5, len(data), 128, 4))
        f.write(data)
    out = BlobFile(tmp_path / "out" / "b.bin")
    first = out.copy_from(source, 64)
    again = out.copy_from(source, 64)
    out.close()
    written = (tmp_path / "out" / "b.bin").read_bytes()
    assert first == again == 64 and stitch._HEADER.unpack(written[:64]) == (1, 2)
    sentinel, dtype, size, offset, padding = stitch._METADATA.unpack(written[64:128])
    assert (sentinel, dtype, size, padding) == (stitch._SENTINEL, 5, 200, 4)
    assert written[offset:offset + size] == data and len(written) % 64 == 0
    with pytest.raises(ValueError, match="no weight blob"):
        BlobFile(tmp_path / "c.bin").copy_from(source, 0)


def test_blob_file_stores_equal_blobs_once_at_any_size(tmp_path):
    """A tied embedding (the first chunk's) and output head (the last chunk's) are the same bytes
    in two chunks' files: SmolLM2-135M's is 28 MB at int8, 57 MB at float16. Blobs that differ
    past their first bytes, or in their type, stay apart."""
    from converters.backends.coreml import stitch as stitch

    size = (17 << 20) + 5  # past the 16 MB below which blobs were compared before
    matrix = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    other = matrix[:-1] + bytes([matrix[-1] ^ 1])  # the same but for its last byte

    def blob_file(path, dtype, data):
        with open(path, "wb") as f:
            f.write(stitch._HEADER.pack(1, 2))
            f.write(stitch._METADATA.pack(stitch._SENTINEL, dtype, len(data), 128, 0))
            f.write(data)
        return path

    first, last, changed, typed = (blob_file(tmp_path / f"{i}.bin", dtype, data)
                                   for i, (dtype, data) in enumerate([(4, matrix), (4, matrix), (4, other), (3, matrix)]))
    out = BlobFile(tmp_path / "out.bin")
    offsets = [out.copy_from(path, 64) for path in (first, last, changed, typed)]
    out.close()
    assert offsets[0] == offsets[1] and len(set(offsets)) == 3
    written = (tmp_path / "out.bin").read_bytes()
    assert stitch._HEADER.unpack(written[:64])[0] == 3 and len(written) < 3 * size + 1024
    for offset, data in zip(offsets, (matrix, matrix, other, matrix)):
        _, _, length, data_offset, _ = stitch._METADATA.unpack(written[offset:offset + 64])
        assert written[data_offset:data_offset + length] == data


def test_layers_are_grouped_by_size_or_count():
    assert [(c.start, c.stop) for c in chunks.chunks_for([3, 3, 3, 3, 3], budget=7)] == [(0, 2), (2, 4), (4, 5)]
    assert [(c.start, c.stop) for c in chunks.chunks_for([10, 1, 1], budget=4)] == [(0, 1), (1, 3)]
    grouped = chunks.chunks_for([1] * 5, layers_per_chunk=2)
    assert [(c.start, c.stop) for c in grouped] == [(0, 2), (2, 4), (4, 5)]
    assert grouped[0].first and grouped[-1].last and not grouped[1].first and not grouped[1].last
    assert grouped[1].describe() == "layers 3–4 of 5 (chunk 2 of 3)"


def test_only_a_model_past_the_size_converts_in_chunks(tmp_path, monkeypatch):
    folder = _build("llama", tmp_path / "model")
    small = convert(str(folder), "text-generation", tmp_path / "small", validate=False)
    assert "chunks" not in small.report_json["packages"][0]
    monkeypatch.setattr(chunks, "WHOLE_MODEL_BYTES", 1000)  # this model's float32 weights are ~100 KB
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 2 * 4 * 10_000)  # about two of its layers
    big = convert(str(folder), "text-generation", tmp_path / "big", validate=False)
    assert big.report_json["packages"][0]["chunks"] == [{"layers": [0, 2]}, {"layers": [2, LAYERS]}]


def test_a_4bit_chunked_conversion_is_calibrated_to_the_whole_model_walks_weights(tmp_path, monkeypatch):
    """GPTQ chunk by chunk (transforms/calibrate_chunks.py), each chunk fed the hidden states the
    chunks before it computed with their quantized weights: the very weights and grids the
    whole-model walk gives, with only the chunk's own layers holding weights while it calibrates."""
    import torch

    import converters.export as export
    from converters.capture import load
    from converters.plan import make_plan
    from converters.source import open_source
    from converters.source_tokenizer import load_tokenizer
    from converters.transforms.calibrate import calibrate, calibration_samples

    folder = _build("llama", tmp_path / "model", hidden_size=64, intermediate_size=128)
    options = ConversionOptions.from_strings(quantize="int4", minimum_deployment_target="iOS18")
    plan = make_plan(open_source(str(folder)), "text-generation", options)
    tokenizer = load_tokenizer(plan.source.path, plan.cfg.attributes.vocab_size)
    model = load(plan)
    whole_entry = calibrate(plan, model, tokenizer)
    whole = {name: tensor for name, tensor in model.state_dict().items() if ".layers." in name}
    del model

    seen, resident, models = {}, [], []
    calibrate_chunk = export.ChunkCalibration.calibrate

    def watched(self, lazy_model, layers, first, step=None):
        models.append(lazy_model)
        resident.append({name.split(".layers.")[1].split(".")[0] for name, p in lazy_model.named_parameters()
                         if p.device.type != "meta" and ".layers." in name})
        entry = calibrate_chunk(self, lazy_model, layers, first, step)
        seen.update({name: t.clone() for name, t in lazy_model.state_dict().items() if f".layers.{first}." in name})
        carried = self.inputs
        samples = calibration_samples(tokenizer)
        assert len(carried) == len(samples) and carried[0].shape == (1, samples[0].shape[1], 64)
        return entry

    monkeypatch.setattr(export.ChunkCalibration, "calibrate", watched)
    calls = []
    result = convert(str(folder), "text-generation", tmp_path / "out", options, validate=False, layers_per_chunk=1,
                     progress=lambda *call: calls.append(call))
    assert resident == [{str(i)} for i in range(LAYERS)], "a chunk calibrates with its own layers' weights only"
    assert sorted(seen) == sorted(whole)
    for name, tensor in whole.items():
        torch.testing.assert_close(seen[name], tensor, rtol=0, atol=0, msg=name)
    compression = result.report_json["packages"][0]["compression"]
    entry = compression["calibration"]
    assert entry["weights"] == whole_entry["weights"] > 0 and entry["in_chunks"] and "GPTQ" in compression["method"]
    assert result.report_json["timings"]["calibrate"] > 0
    assert not any("GPTQ" in w for w in result.report_json["warnings"]), result.report_json["warnings"]
    steps = [m for stage, f, m in calls if m.startswith("Calibrating 4-bit weights (GPTQ): layer")]
    assert steps == [f"Calibrating 4-bit weights (GPTQ): layer {i} of {LAYERS}" for i in range(1, LAYERS + 1)]
    assert all(a[1] <= b[1] for a, b in zip(calls, calls[1:]))
    # GPTQ's grids leave with their chunk's weights (int4 scales are 1/8 of the float32 weights)
    assert not any("_COREML_" in name for name, _ in models[0].named_buffers())


@pytest.mark.parametrize("layers_per_chunk", [0, 2])
def test_a_conversion_leaves_no_temporary_package_behind(layers_per_chunk, tmp_path, monkeypatch):
    """coremltools deletes the temporary package of each in-memory model only at exit, which a
    worker's job process never reaches: a chunked int8 conversion made 3 per chunk (GBs each
    for a 7 B model)."""
    import tempfile

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    folder = _build("llama", tmp_path / "model", hidden_size=64, intermediate_size=128)
    convert(str(folder), "text-generation", tmp_path / "out", ConversionOptions.from_strings(quantize="int8"),
            validate=False, layers_per_chunk=layers_per_chunk)
    assert sorted(p.name for p in temporary.glob("*.mlpackage")) == []
