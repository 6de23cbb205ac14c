"""Core ML's fused attention (iOS 18 / macOS 15): torch's scaled_dot_product_attention becomes
the MIL `scaled_dot_product_attention` op for every decoder family that runs sdpa attention,
stateful or not, and for encoders; below iOS 18 programs keep matmul + softmax as before.
The reference executor runs the op as its iOS 18 definition says, in fp32 and in fp16
emulation; each package's program summary (the report's `program`) says what it computes."""

from __future__ import annotations

import math

import coremltools as ct
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb

from converters.backends.coreml import CoreMLBackend
from converters.backends.coreml.patches import op_patches
from converters.configs import ARCHITECTURES, config_class_for
from converters.configs.text import DecoderConfig
from converters.export import convert
from converters.options import ConversionOptions
from converters.report import PackageReport
from converters.backends.coreml.executor import ReferenceExecutor
from tests.models import MODELS, build_model

CONTEXT = 16
STATEFUL = ConversionOptions.from_strings(sequence_length=CONTEXT, minimum_deployment_target="iOS18", kv_cache="stateful")
IOS18 = ConversionOptions.from_strings(sequence_length=CONTEXT, minimum_deployment_target="iOS18")
DECODERS = [m for m, cls in ARCHITECTURES.items() if issubclass(cls, DecoderConfig)]
SDPA = "scaled_dot_product_attention"


@pytest.fixture(scope="module")
def one_layer(tmp_path_factory):
    """one_layer("llama") -> a tiny checkpoint with one attention layer (fast to convert)."""
    built = {}

    def get(model_type: str):
        if model_type not in built:
            config = MODELS[model_type][0]()
            overrides = {"num_hidden_layers": 1}
            if getattr(config, "layer_types", None):
                overrides["layer_types"] = config.layer_types[:1]
            built[model_type] = build_model(model_type, tmp_path_factory.mktemp("one-layer") / model_type, **overrides)
        return built[model_type]

    return get


def _program(result, index: int = 0) -> dict:
    """The package's program summary, as the backend describes it (and the report, once it
    carries the entry, says the same)."""
    program = CoreMLBackend().describe(result.packages[index])["program"]
    assert result.report_json["packages"][index].get("program", program) == program
    return program


def _fusable(model_type: str) -> bool:
    """Whether transformers runs this family's attention through torch's sdpa."""
    config = MODELS[model_type][0]()
    return config_class_for(model_type)(config, "text-generation", STATEFUL)._model_class_supports_sdpa()


def test_only_gemma2_keeps_its_own_attention():
    # Gemma 2 soft-caps its attention scores (tanh), which sdpa cannot: transformers runs it eager.
    assert len(DECODERS) == 11
    assert [m for m in DECODERS if not _fusable(m)] == ["gemma2"]


def assert_fused_attention_program(result, model_type: str, layers: int) -> None:
    """A stateful decoder's program (the report's `program`): float16, one fused attention op a
    layer where transformers runs sdpa (grouped-query, multi-query and plain heads alike), matmul +
    softmax where it does not (Gemma 2). Every decoder family is converted so once, by the stateful
    contract's sweep (tests/test_stateful_kv_cache.py), which asserts this with its validation rows."""
    program = _program(result)
    counts = program["op_counts"]
    assert program["stateful"] and program["weight_bits"] == 16.0
    assert "const" not in counts and list(counts.values()) == sorted(counts.values(), reverse=True)
    if _fusable(model_type):
        assert program["fused_attention"] and counts[SDPA] == layers
        assert "softmax" not in counts
    else:  # the report says so, and the package still converts and validates
        assert not program["fused_attention"] and SDPA not in counts and counts["softmax"] == layers


@pytest.mark.parametrize("model_type", ["llama", "falcon"])
def test_a_package_without_kv_cache_runs_fused_attention_too(model_type, one_layer, tmp_path):
    result = convert(str(one_layer(model_type)), "text-generation", tmp_path, IOS18)
    program = _program(result)
    assert program["fused_attention"] and not program["stateful"]
    assert program["op_counts"][SDPA] == 1 and "softmax" not in program["op_counts"]
    validation = result.report_json["validation"]
    assert validation["passed"], validation["message"]
    # Driven as swift-transformers drives it: right-padded with an attentionMask, re-run per token.
    runs = validation["continuation"]["runs"]
    assert {run["mode"] for run in runs} == {"fp32", "fp16"}
    assert all(run["passed"] and "right-padded" in run["driven_as"] for run in runs)


@pytest.mark.parametrize("model_type", ["bert", "t5"])
def test_encoders_run_fused_attention(model_type, one_layer, tiny_model, tmp_path):
    # T5 passes scale=1 (its scores are not scaled): the op's 1/sqrt(d) is undone on the query.
    folder = one_layer(model_type) if model_type == "bert" else tiny_model(model_type)
    result = convert(str(folder), "auto", tmp_path, IOS18)
    for index in range(len(result.packages)):
        program = _program(result, index)
        assert program["fused_attention"] and program["op_counts"][SDPA] >= 1
    assert result.report_json["validation"]["passed"], result.report_json["validation"]["message"]


def test_below_ios18_attention_stays_matmul_and_softmax(one_layer, tmp_path):
    options = ConversionOptions.from_strings(sequence_length=8, minimum_deployment_target="iOS17", precision="float32")
    result = convert(str(one_layer("llama")), "text-generation", tmp_path, options, validate=False)
    program = _program(result)
    assert program == {**program, "fused_attention": False, "stateful": False, "weight_bits": 32.0}
    assert SDPA not in program["op_counts"]
    assert program["op_counts"]["softmax"] == 1 and program["op_counts"]["matmul"] == 2
    # The model loads as it always did below iOS 18; from iOS 18 it is asked for sdpa attention.
    config = MODELS["llama"][0]()
    assert "attn_implementation" not in config_class_for("llama")(config, "text-generation", options).model_kwargs()
    assert config_class_for("llama")(config, "text-generation", IOS18).model_kwargs()["attn_implementation"] == "sdpa"
    gemma2 = MODELS["gemma2"][0]()
    assert "attn_implementation" not in config_class_for("gemma2")(gemma2, "text-generation", IOS18).model_kwargs()


def test_compressed_weights_take_fewer_bits(one_layer, tmp_path):
    options = ConversionOptions.from_strings(sequence_length=8, minimum_deployment_target="iOS18", quantize="int8")
    result = convert(str(one_layer("llama")), "text-generation", tmp_path, options, validate=False)
    program = _program(result)
    assert program["fused_attention"]
    # Only weights above 2048 elements are compressed (in this tiny model: the embedding).
    assert 8 < program["weight_bits"] < 16


def test_the_program_entry_round_trips_in_the_typed_report():
    program = {"fused_attention": True, "stateful": True, "weight_bits": 16.0, "op_counts": {"linear": 7, SDPA: 1}}
    entry = {"part": "model", "path": "m.mlpackage", "exporter": "torch.export", "float16_safe_norms": 3,
             "size_bytes": 10, "inputs": [], "outputs": [], "states": [], "program": program,
             "compression": {"scheme": "int8"}}
    typed = PackageReport.from_json(entry)
    assert typed.program.fused_attention and typed.program.op_counts[SDPA] == 1
    assert list(typed.to_json().items()) == list(entry.items())  # same keys, order and values
    older = {k: v for k, v in entry.items() if k != "program"}
    assert PackageReport.from_json(older).program is None and PackageReport.from_json(older).to_json() == older
    newer = {**entry, "program": {**program, "ane_ops": 3}}
    assert PackageReport.from_json(newer).to_json() == newer


# ---------------------------------------------------------------- the torch op's conversion


class Attention(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, query, key, value, mask=None):
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, **self.kwargs)


@pytest.mark.parametrize(
    "target,kwargs,fused",
    [
        ("iOS18", {}, True),
        ("iOS18", {"scale": 1 / math.sqrt(8)}, True),  # transformers' usual scale: dropped
        ("iOS18", {"scale": 1.0}, True),  # any other: folded into the query
        ("iOS18", {"scale": 0.5, "enable_gqa": True}, True),  # key/value heads repeated
        ("iOS18", {"scale": 0.5, "is_causal": True}, True),  # coremltools makes the causal mask
        ("iOS17", {"scale": 0.5}, False),  # coremltools' own matmul + softmax, unchanged
    ],
)
def test_torch_sdpa_converts_to_the_fused_op_from_ios18(target, kwargs, fused, tmp_path):
    generator = torch.Generator().manual_seed(0)
    kv_heads = 2 if kwargs.get("enable_gqa") else 4
    args = (torch.randn(1, 4, 5, 8, generator=generator), torch.randn(1, kv_heads, 5, 8, generator=generator),
            torch.randn(1, kv_heads, 5, 8, generator=generator), torch.triu(torch.full((1, 1, 5, 5), -1e4), 1))
    if kwargs.get("is_causal"):
        args = args[:3]
    module = Attention(**kwargs).eval()
    program = torch.export.export(module, args, strict=False).run_decompositions({})
    with op_patches(fused_attention=target == "iOS18"):
        mlmodel = ct.convert(program, inputs=[ct.TensorType(name=n, shape=a.shape) for n, a in zip("qkvm", args)],
                             minimum_deployment_target=getattr(ct.target, target), compute_precision=ct.precision.FLOAT32)
    path = tmp_path / "attention.mlpackage"
    mlmodel.save(str(path))
    ops = CoreMLBackend().describe(path)["program"]["op_counts"]
    assert (SDPA in ops) == fused and ("softmax" in ops) != fused
    out = ReferenceExecutor(path).predict({n: a.numpy() for n, a in zip("qkvm", args)})
    np.testing.assert_allclose(next(iter(out.values())), module(*args).numpy(), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the executor's kernel

Q, K, V = (1, 2, 4, 8), (1, 2, 6, 8), (1, 2, 6, 5)
_MASKS = {
    "none": None,
    # [L, S] broadcast to [B, heads, L, S]; additive, as our packages' masks are
    "float": np.where(np.arange(6)[None, :] > np.arange(4)[:, None] + 2, -1e4, 0.0).astype(np.float32),
    "bool": np.arange(6)[None, None, None, :] <= np.arange(4)[None, None, :, None] + 2,  # may attend
}


def _attention_package(tmp_path, mask, precision, decomposed: bool = False):
    """One iOS 18 attention op on inputs q, k, v (or the matmul + softmax program coremltools
    writes for it below iOS 18), saved, in the executor."""
    specs = [mb.TensorSpec(shape=s) for s in (Q, K, V)]

    def attention(q, k, v):
        if not decomposed:
            return mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=mask)
        scores = mb.matmul(x=mb.mul(x=q, y=np.float32(1 / math.sqrt(Q[-1]))), y=k, transpose_y=True)
        if mask is not None:
            scores = mb.add(x=scores, y=mask)
        return mb.matmul(x=mb.softmax(x=scores, axis=-1), y=v)

    program = mb.program(input_specs=specs, opset_version=ct.target.iOS18)(attention)
    mlmodel = ct.convert(program, minimum_deployment_target=ct.target.iOS18, compute_precision=precision)
    path = tmp_path / f"{'decomposed' if decomposed else 'fused'}.mlpackage"
    mlmodel.save(str(path))
    return ReferenceExecutor(path)


def _torch_attention(q, k, v, mask):
    mask = None if mask is None else torch.from_numpy(mask)
    t = [torch.from_numpy(x).double() for x in (q, k, v)]
    return F.scaled_dot_product_attention(*t, attn_mask=None if mask is None else mask if mask.dtype == torch.bool else mask.double()).numpy()


def _qkv(scale: float = 1.0):
    rng = np.random.default_rng(0)
    return [(scale * rng.standard_normal(s)).astype(np.float32) for s in (Q, K, V)]


@pytest.mark.parametrize("mask", list(_MASKS))
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_executor_runs_the_fused_op_as_torch_does(mask, precision, tmp_path):
    fp16 = precision == "float16"
    executor = _attention_package(tmp_path, _MASKS[mask], ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32)
    q, k, v = _qkv()
    feed = dict(zip(executor.input_names, (q, k, v)))
    (exact,) = executor.predict(feed, mode="fp32").values()  # fp32 mode: casts to float16 are no-ops
    np.testing.assert_allclose(exact, _torch_attention(q, k, v, _MASKS[mask]), atol=1e-5, rtol=1e-5)
    (emulated,) = executor.predict(feed, mode="fp16").values()
    if not fp16:  # an fp32 program computes in fp32 in both modes
        np.testing.assert_array_equal(emulated, exact)
        return
    # The program rounds its inputs to float16 and then every stage: float16's precision.
    q, k, v = (x.astype(np.float16).astype(np.float32) for x in (q, k, v))
    reference = _torch_attention(q, k, v, _MASKS[mask])
    np.testing.assert_allclose(emulated, reference, atol=3e-3, rtol=3e-3)
    assert not np.array_equal(emulated, exact)  # it was rounded


@pytest.mark.parametrize("mask", ["none", "float"])
def test_fp16_emulation_rounds_the_fused_op_as_its_matmul_softmax_program(mask, tmp_path):
    """Fusing hides nothing: in fp16 emulation the fused op gives bit for bit what the
    matmul + softmax program does — including scores beyond float16's range (inf, then NaN),
    which an fp32-inside kernel would have kept finite."""
    fused = _attention_package(tmp_path, _MASKS[mask], ct.precision.FLOAT16)
    decomposed = _attention_package(tmp_path, _MASKS[mask], ct.precision.FLOAT16, decomposed=True)
    assert any(op == SDPA for op, _ in fused.op_summary)
    for scale in (1.0, 300.0):  # 300: q.k / sqrt(8) reaches ~1e5, beyond float16's 65504
        feed = dict(zip(fused.input_names, _qkv(scale)))
        (a,) = fused.predict(feed, mode="fp16").values()
        (b,) = decomposed.predict(feed, mode="fp16").values()
        np.testing.assert_array_equal(a, b)
        (exact,) = fused.predict(feed, mode="fp32").values()
        assert np.isfinite(exact).all()
        assert np.isfinite(a).all() == (scale == 1.0)
