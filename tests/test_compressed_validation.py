"""Compressed packages: the executor's weight-decompression kernels against coremltools' own
numpy materialisation, and the quality checks that judge a lossy package on real text
(a 1-bit palettised model fails them with a plain message; an int8 one passes)."""

from __future__ import annotations

import dataclasses

import math
import os
from pathlib import Path

import coremltools as ct
import coremltools.optimize.coreml as C
import numpy as np
import pytest
from coremltools.converters.mil.frontend.milproto.load import load as load_milproto
from coremltools.optimize.coreml._quantization_passes import WeightDecompressor

from converters.export import convert
from converters.options import ConversionOptions
from converters.backends.coreml.executor import ReferenceExecutor
from converters.validation import quality
from converters.backends.coreml.ops import CONSTEXPR_OPS

LINEAR, PALETTE, PRUNE = C.linear_quantize_weights, C.palettize_weights, C.prune_weights
ALL = dict(weight_threshold=0)  # the tiny model's weights are below coremltools' default 2048

# name -> (target, [(compress function, op config, extra keyword arguments)], expected op types)
SCHEMES = {
    "int8-per-channel": ("iOS18", [(LINEAR, C.OpLinearQuantizerConfig(mode="linear_symmetric", **ALL), {})], {"constexpr_blockwise_shift_scale"}),
    "int8-asymmetric": ("iOS18", [(LINEAR, C.OpLinearQuantizerConfig(mode="linear", **ALL), {})], {"constexpr_blockwise_shift_scale"}),
    "int8-per-tensor": ("iOS18", [(LINEAR, C.OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_tensor", **ALL), {})], {"constexpr_blockwise_shift_scale"}),
    "int4-per-block-16": ("iOS18", [(LINEAR, C.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=16, **ALL), {})], {"constexpr_blockwise_shift_scale"}),
    "lut4-per-tensor": ("iOS18", [(PALETTE, C.OpPalettizerConfig(nbits=4, mode="kmeans", **ALL), {})], {"constexpr_lut_to_dense"}),
    "lut6-per-tensor": ("iOS18", [(PALETTE, C.OpPalettizerConfig(nbits=6, mode="kmeans", **ALL), {})], {"constexpr_lut_to_dense"}),
    "lut4-grouped-16": ("iOS18", [(PALETTE, C.OpPalettizerConfig(nbits=4, mode="kmeans", granularity="per_grouped_channel", group_size=16, **ALL), {})], {"constexpr_lut_to_dense"}),
    "lut2-vector-2": ("iOS18", [(PALETTE, C.OpPalettizerConfig(nbits=2, mode="kmeans", cluster_dim=2, **ALL), {})], {"constexpr_lut_to_dense"}),
    "lut4-channel-scale": ("iOS18", [(PALETTE, C.OpPalettizerConfig(nbits=4, mode="kmeans", enable_per_channel_scale=True, **ALL), {})], {"constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"}),
    "lut4-int8-lut": ("iOS18", [
        (PALETTE, C.OpPalettizerConfig(nbits=4, mode="kmeans", **ALL), {}),
        (LINEAR, C.OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_tensor", **ALL), {"joint_compression": True}),
    ], {"constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"}),
    "sparse": ("iOS18", [(PRUNE, C.OpMagnitudePrunerConfig(target_sparsity=0.5, **ALL), {})], {"constexpr_sparse_to_dense"}),
    "sparse-lut4": ("iOS18", [
        (PRUNE, C.OpMagnitudePrunerConfig(target_sparsity=0.5, **ALL), {}),
        (PALETTE, C.OpPalettizerConfig(nbits=4, mode="kmeans", **ALL), {"joint_compression": True}),
    ], {"constexpr_lut_to_sparse", "constexpr_sparse_to_dense"}),
    "sparse-int8": ("iOS18", [
        (PRUNE, C.OpMagnitudePrunerConfig(target_sparsity=0.5, **ALL), {}),
        (LINEAR, C.OpLinearQuantizerConfig(mode="linear_symmetric", **ALL), {"joint_compression": True}),
    ], {"constexpr_sparse_blockwise_shift_scale", "constexpr_sparse_to_dense"}),
    "ios16-int8": ("iOS16", [(LINEAR, C.OpLinearQuantizerConfig(mode="linear_symmetric", **ALL), {})], {"constexpr_affine_dequantize"}),
    "ios16-uint8": ("iOS16", [(LINEAR, C.OpLinearQuantizerConfig(mode="linear", dtype="uint8", **ALL), {})], {"constexpr_affine_dequantize"}),
    "ios16-lut4": ("iOS16", [(PALETTE, C.OpPalettizerConfig(nbits=4, mode="kmeans", **ALL), {})], {"constexpr_lut_to_dense"}),
    "ios16-lut6": ("iOS16", [(PALETTE, C.OpPalettizerConfig(nbits=6, mode="kmeans", **ALL), {})], {"constexpr_lut_to_dense"}),
    "ios16-sparse": ("iOS16", [(PRUNE, C.OpMagnitudePrunerConfig(target_sparsity=0.5, **ALL), {})], {"constexpr_sparse_to_dense"}),
}


@pytest.fixture(scope="module")
def float_packages(tiny_model, tmp_path_factory):
    """The tiny llama as float16 text-generation packages, one per target (not validated)."""
    built = {}

    def get(target: str) -> Path:
        if target not in built:
            out = tmp_path_factory.mktemp(f"llama-{target}")
            options = ConversionOptions.from_strings(sequence_length=12, minimum_deployment_target=target)
            built[target] = convert(str(tiny_model("llama")), "text-generation", out, options, validate=False).packages[0]
        return built[target]

    return get


def _compress(package: Path, steps, out: Path) -> Path:
    model = ct.models.MLModel(str(package), skip_model_load=True)
    for function, op_config, kwargs in steps:
        model = function(model, C.OptimizationConfig(global_config=op_config), **kwargs)
    model.save(str(out))
    return out


def _program(package: Path):
    spec = ct.utils.load_spec(str(package))
    weights = os.path.join(str(package), "Data", "com.apple.CoreML", "weights")
    return load_milproto(model_spec=spec, specification_version=spec.specificationVersion, file_weights_dir=weights)


def _coremltools_weights(package: Path) -> tuple[set[str], dict[str, np.ndarray]]:
    """The constexpr op types in the package, and coremltools' own decompression of every
    constexpr output (its `materialized_val_inference`, by output var name)."""
    prog = _program(package)
    func = prog.functions["main"]
    op_types = {op.op_type for op in func.operations if op.op_type.startswith("constexpr_")}
    names = {v.name for op in func.operations if op.op_type.startswith("constexpr_") for v in op.outputs}
    WeightDecompressor(op_selector=lambda op: True).apply(prog)
    values = {v.name: np.asarray(v.val) for op in prog.functions["main"].operations if op.op_type == "const" for v in op.outputs if v.name in names}
    return op_types, values


def test_table_indices_by_search_are_coremltools_own(monkeypatch):
    """A palettized weight's indices (lut_indices.py, what coremltools' torch frontend reads GPTQ's
    weights with) equal coremltools' find_indices_for_lut: on the table's own values (GPTQ's
    case), off them, with repeated entries and exact midpoints (ties to the lowest index), per
    grouped channel and for a rank-4 weight; and the patched search is the one a conversion uses."""
    from coremltools.optimize import _utils as optimize_utils
    from coremltools.optimize._utils import find_indices_for_lut, repeat_data_as

    from converters.backends.coreml import lut_indices
    from converters.backends.coreml.lut_indices import nearest_lut_indices
    from converters.backends.coreml.patches import SEARCHED_FROM, lut_indices_by_search

    draw = np.random.default_rng(0)
    for shape, blocks, entries in [((96, 48), (96, 3), 64), ((32, 16), (32, 1), 16), ((8, 12, 3, 3), (4, 1, 1, 1), 16),
                                   ((40, 24), (1, 1), 4)]:
        lut = draw.standard_normal(blocks + (entries, 1)).astype(np.float32)
        lut[..., 1, 0] = lut[..., 3, 0]  # a repeated entry: the lower index is named
        picked = draw.integers(0, entries, size=shape)
        on_table = np.take_along_axis(np.squeeze(repeat_data_as(lut, shape), -1), picked[..., None], axis=-1)[..., 0]
        for data in (on_table, draw.standard_normal(shape).astype(np.float32)):
            ours, theirs = nearest_lut_indices(data, lut), find_indices_for_lut(data, lut)
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), shape
    lut = np.array([[[0.0], [1.0], [2.0], [1.0]]], dtype=np.float32)
    data = np.array([0.5, 1.5, 1.0, 3.0, -1.0, 0.0], dtype=np.float32)  # midpoints, a repeat, past both ends
    assert nearest_lut_indices(data, lut).tolist() == find_indices_for_lut(data, lut).tolist() == [0, 1, 1, 2, 0, 0]
    calls = []
    monkeypatch.setattr(lut_indices, "nearest_lut_indices", lambda *a: calls.append(a[0].shape) or nearest_lut_indices(*a))
    big, small, lut = np.zeros((SEARCHED_FROM // 4, 1), np.float32), np.zeros((8, 1), np.float32), lut.reshape(1, 1, 4, 1)
    with lut_indices_by_search():
        searched = optimize_utils.find_indices_for_lut
        assert np.array_equal(searched(big, lut), find_indices_for_lut(big, lut)) and searched(small, lut).shape == (8, 1)
    assert calls == [big.shape]  # the big weight searched, the small one left to coremltools
    assert optimize_utils.find_indices_for_lut is find_indices_for_lut  # restored after the conversion


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_decompression_kernels_match_coremltools(scheme, float_packages, tmp_path):
    target, steps, expected = SCHEMES[scheme]
    package = _compress(float_packages(target), steps, tmp_path / f"{scheme}.mlpackage")
    op_types, want = _coremltools_weights(package)
    assert expected <= op_types <= CONSTEXPR_OPS, op_types
    executor = ReferenceExecutor(package)
    # Every decompressed weight the program reads, against coremltools' value, bit for bit
    # (both hold fp16 values; coremltools' int8 offset arithmetic wraps, so compare where
    # it cannot: all schemes here keep |data - offset| within int8 or use no offset).
    compared = 0
    for name, value in want.items():
        if name in executor._consts:
            got = executor._consts[name].numpy()
            assert got.shape == value.shape, name
            np.testing.assert_array_equal(got.astype(value.dtype), value, err_msg=f"{scheme}: {name}")
            compared += 1
    assert compared >= 1
    # And the package runs: its logits are finite and close to the float package's.
    float_executor = ReferenceExecutor(float_packages(target))
    feed = {"inputIds": np.arange(3, 15, dtype=np.int32)[None], "attentionMask": np.ones((1, 12), np.int32)}
    for mode in ("fp32", "fp16"):
        got = executor.predict(feed, mode=mode)["logits"]
        ref = float_executor.predict(feed, mode=mode)["logits"]
        assert np.all(np.isfinite(got))
        assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > (0.5 if "lut2" in scheme or "sparse" in scheme else 0.9), mode


def test_unpack_bits_lsb_first():
    import torch

    from converters.backends.coreml.ops import _unpack_bits

    # The constexpr_lut_to_dense docstring's example: n_bits = 2, shape (5,): i0..i3 in byte 0
    # from the LSB up (00, 11, 10, 01), i4 in byte 1's low bits (11).
    packed = torch.tensor([0b01101100, 0b00000011], dtype=torch.uint8)
    assert _unpack_bits(packed, 2, 5).tolist() == [0, 3, 2, 1, 3]
    # 6-bit elements straddle bytes.
    values = np.random.default_rng(0).integers(0, 64, 11)
    bits = np.concatenate([[(v >> i) & 1 for i in range(6)] for v in values]).astype(np.uint8)
    packed = torch.from_numpy(np.packbits(np.pad(bits, (0, -len(bits) % 8)), bitorder="little"))
    assert _unpack_bits(packed, 6, 11).tolist() == values.tolist()


# ---------------------------------------------------------------- quality on real text


def _validate_as(package: Path, source: Path, scheme: str, monkeypatch) -> dict:
    import converters.validate_package as validate_cli

    read = validate_cli.options_from_package
    # The packages are compressed by hand here; their options say which scheme they carry.
    monkeypatch.setattr(validate_cli, "options_from_package", lambda info: dataclasses.replace(read(info), quantize=scheme))
    return validate_cli.validate_package(package, str(source), "text-generation")["validation"]


def test_passage_is_real_prose_of_about_128_tokens():
    from transformers import AutoTokenizer

    from tests.real_models import smollm2_135m

    text = quality.passage()
    assert text.startswith("It is a truth universally acknowledged") and "Bennet" in text
    assert "Pride and Prejudice" in quality.PASSAGE_FILE.read_text().splitlines()[0]
    tokens = AutoTokenizer.from_pretrained(str(smollm2_135m()))(text)["input_ids"]
    assert 110 <= len(tokens) <= 140, len(tokens)


def test_token_metrics_definitions():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 10))
    ids = rng.integers(0, 10, 6)
    same = quality.token_metrics(ref, ref, ids)
    assert same["top1_agreement"] == 1.0 and abs(same["mean_kl_divergence"]) < 1e-12 and same["perplexity_ratio"] == pytest.approx(1.0)
    flat = quality.token_metrics(ref, np.zeros_like(ref), ids)  # a uniform package
    logp = ref - np.log(np.exp(ref).sum(-1, keepdims=True))
    assert flat["mean_kl_divergence"] == pytest.approx(np.mean(np.sum(np.exp(logp) * (logp + math.log(10)), -1)))
    assert flat["perplexity_package"] == pytest.approx(10.0)
    assert quality.token_metrics(ref, np.full_like(ref, np.nan), ids)["top1_agreement"] == 0.0


def test_one_bit_palettisation_fails_with_a_plain_message(float_packages, tiny_model, tmp_path, monkeypatch):
    steps = [(PALETTE, C.OpPalettizerConfig(nbits=1, mode="kmeans", **ALL), {})]
    package = _compress(float_packages("iOS18"), steps, tmp_path / "lut1.mlpackage")
    validation = _validate_as(package, tiny_model("llama"), "lut4", monkeypatch)
    assert validation["passed"] is False
    # A random tiny model's next-token distributions are near uniform, so 1 bit shows as
    # lost top-1 agreement on the passage (a real model also loses KL and perplexity).
    failed = {(c["inputs"].split(",")[0], c["metric"]) for c in validation["checks"] if not c["passed"]}
    assert ("passage", "top1_agreement") in failed, failed
    assert not {"max_abs_diff", "psnr_db"} & {c["metric"] for c in validation["checks"]}
    message = validation["message"]
    assert message.startswith("the lut4 compression loses too much quality to ship: "), message
    assert "passage" in message and "top-1 agreement" in message and "needs ≥ 70.0%" in message
    assert validation["quality"]["scheme"] == "lut4"
    assert set(validation["quality"]["packages"]["model"]) == {"fp32", "fp16"}


def test_int8_passes_the_quality_checks(float_packages, tiny_model, tmp_path, monkeypatch):
    steps = [(LINEAR, C.OpLinearQuantizerConfig(mode="linear_symmetric", **ALL), {})]
    package = _compress(float_packages("iOS18"), steps, tmp_path / "int8.mlpackage")
    validation = _validate_as(package, tiny_model("llama"), "int8", monkeypatch)
    assert validation["passed"], validation["message"]
    metrics = {c["metric"] for c in validation["checks"]}
    assert {"top1_agreement", "mean_kl_divergence", "perplexity_ratio", "continuation_runs"} <= metrics
    assert not {"max_abs_diff", "psnr_db"} & metrics
    numbers = validation["quality"]["packages"]["model"]["fp16"]
    assert numbers["perplexity_ratio"] < 1.05 and numbers["mean_kl_divergence"] < 0.05


def test_a_scheme_without_a_quality_bar_cannot_be_judged(float_packages, tiny_model, monkeypatch):
    # A scheme added to the option table but not to COMPRESSED_QUALITY must fail, not pass.
    monkeypatch.setattr(quality, "bar_for", lambda cfg: None)
    validation = _validate_as(float_packages("iOS18"), tiny_model("llama"), "int8", monkeypatch)
    assert validation["passed"] is False and "no quality bar for compression scheme 'int8'" in validation["message"]


def test_float_package_keeps_element_wise_checks(float_packages, tiny_model):
    import converters.validate_package as validate_cli

    validation = validate_cli.validate_package(float_packages("iOS18"), str(tiny_model("llama")), "text-generation")["validation"]
    metrics = {c["metric"] for c in validation["checks"]}
    assert {"max_abs_diff", "psnr_db"} <= metrics and "quality" not in validation
    assert "perplexity_ratio" not in metrics


def _tiny_classifier(folder: Path) -> Path:
    """A tiny BERT checkpoint with its own classification head (the tiny test checkpoints are
    masked-LM ones: a head missing from the checkpoint is freshly random at each load), its
    head scaled so the labels are decided (clear margins), not near-ties."""
    import torch
    import transformers as tf

    from tests.models import MODELS, build_tokenizer

    config = MODELS["bert"][0]()
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(0)
    model = tf.BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(100.0)
    model.save_pretrained(folder)
    build_tokenizer(folder, "bert")
    return folder


# distilbert for embeddings: it has no pooler (BERT's would be missing from the masked-LM
# checkpoint, so freshly random at each load).
@pytest.mark.parametrize("model_type,task,metrics", [
    ("bert-classifier", "text-classification", {"label_agreement", "cosine_similarity"}),
    ("distilbert", "feature-extraction", {"cosine_similarity", "finite_share"}),
])
def test_classifier_and_embedder_quality_rows(model_type, task, metrics, tiny_model, tmp_path, monkeypatch):
    import converters.validate_package as validate_cli

    options = ConversionOptions.from_strings(sequence_length=12, minimum_deployment_target="iOS18")
    source = _tiny_classifier(tmp_path / "classifier") if model_type == "bert-classifier" else tiny_model(model_type)
    package = convert(str(source), task, tmp_path / "float", options, validate=False).packages[0]
    # Weight matrices only: the random model's all-zero biases would quantise with a zero
    # scale (coremltools writes garbage for them: the pooler then points elsewhere).
    steps = [(LINEAR, C.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=512), {})]
    package = _compress(package, steps, tmp_path / "int8.mlpackage")
    read = validate_cli.options_from_package
    monkeypatch.setattr(validate_cli, "options_from_package", lambda info: dataclasses.replace(read(info), quantize="int8"))
    validation = validate_cli.validate_package(package, str(source), task)["validation"]
    assert validation["passed"], validation["message"]
    seen = {c["metric"] for c in validation["checks"]}
    assert metrics <= seen and not {"max_abs_diff", "psnr_db"} & seen, seen
    assert {c["mode"] for c in validation["checks"]} == {"fp32", "fp16"}
    if task == "text-classification":  # the labels are decided, so agreement means something
        import transformers as tf

        model = tf.AutoModelForSequenceClassification.from_pretrained(source).eval()
        import torch

        with torch.no_grad():
            probabilities = model(torch.arange(3, 13)[None]).logits.softmax(-1)[0]
        assert float(probabilities.max()) > 0.6
