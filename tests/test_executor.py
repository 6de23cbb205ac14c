"""Reference executor tests: convert small models with coremltools, save the packages,
run them on Linux and compare with PyTorch (or, for single MIL ops, with coremltools'
own numpy ``value_inference`` and small numpy references)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import coremltools as ct
import coremltools.optimize as cto
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from converters.backends.coreml.executor import ReferenceExecutor
from converters.errors import UnsupportedOpError
from converters.backends.coreml import ops as kernels

IOS16, IOS17, IOS18 = ct.target.iOS16, ct.target.iOS17, ct.target.iOS18
FP32, FP16 = ct.precision.FLOAT32, ct.precision.FLOAT16

# fp16 programs keep ~3 significant digits per op: compare loosely.
FP32_TOL = dict(atol=1e-4, rtol=1e-4)
FP16_TOL = dict(atol=2e-2, rtol=2e-2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def _convert(model, args, tmp_path, target, precision, *, names, states=None, shapes=None, export=False):
    """Convert ``model`` (traced, or exported if ``export``), save it, load the executor."""
    if export:
        source = torch.export.export(model, args, strict=False).run_decompositions({})
    else:
        source = torch.jit.trace(model, args, check_trace=False)
    inputs = [
        ct.TensorType(name=n, shape=s or a.shape, dtype=np.float32 if a.is_floating_point() else np.int32)
        for n, a, s in zip(names, args, shapes or [None] * len(args))
    ]
    mlmodel = ct.convert(
        source, inputs=inputs, states=states, minimum_deployment_target=target, compute_precision=precision
    )
    return _save(mlmodel, tmp_path)


def _save(mlmodel, tmp_path, name="model"):
    path = tmp_path / f"{name}.mlpackage"
    mlmodel.save(str(path))
    return path, ReferenceExecutor(path)


def _op_types(path) -> set[str]:
    fn = ct.utils.load_spec(str(path)).mlProgram.functions["main"]
    return {op.type for block in fn.block_specializations.values() for op in block.operations}


def _check(ex, inputs, expected, precision, **kwargs):
    """fp32 mode matches tightly for fp32 programs; fp16 mode always loosely."""
    feed = {k: v.numpy() for k, v in inputs.items()}
    expected = [t.detach().numpy() for t in expected]
    out32 = ex.predict(feed, mode="fp32", **kwargs)
    for name, want in zip(ex.output_names, expected):
        np.testing.assert_allclose(out32[name], want, **(FP32_TOL if precision == FP32 else FP16_TOL))
    out16 = ex.predict(feed, mode="fp16", **kwargs)
    for name, want in zip(ex.output_names, expected):
        np.testing.assert_allclose(out16[name], want, **FP16_TOL)


# ---------------------------------------------------------------- torch models


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 8)

    def forward(self, x):
        h = F.gelu(self.fc1(self.norm(x)))
        h = F.silu(self.fc2(h)) + F.gelu(h, approximate="tanh")
        return torch.softmax(self.fc3(h), dim=-1), h.mean(-1)


@pytest.mark.parametrize("target,precision", [(IOS16, FP32), (IOS17, FP16), (IOS18, FP16)])
def test_mlp_gelu_silu_layer_norm(tmp_path, target, precision):
    model, x = MLP().eval(), torch.randn(2, 5, 16)
    path, ex = _convert(model, (x,), tmp_path, target, precision, names=["x"])
    assert {"layer_norm", "gelu", "silu", "softmax"} <= _op_types(path)
    assert ex.input_names == ["x"] and len(ex.output_names) == 2 and ex.state_names == []
    _check(ex, {"x": x}, model(x), precision)


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.bn.running_mean.uniform_(-0.5, 0.5)
        self.bn.running_var.uniform_(0.5, 2.0)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.same = nn.Conv2d(8, 8, 4, padding="same")  # even kernel: asymmetric padding
        self.down = nn.Conv2d(8, 4, 2, stride=2)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)

    def forward(self, x):
        h = self.same(self.depthwise(F.relu(self.bn(self.conv1(x)))))
        p = F.max_pool2d(h, 2) + F.avg_pool2d(h, 3, stride=2, padding=1)
        up = (
            F.interpolate(p, scale_factor=2, mode="nearest")
            + F.interpolate(p, scale_factor=2, mode="bilinear", align_corners=False)
            + F.interpolate(p, size=(12, 12), mode="bilinear", align_corners=True)
        )
        y = self.up(self.down(up))
        return y, F.adaptive_avg_pool2d(y, 1).flatten(1)


@pytest.mark.parametrize("target,precision", [(IOS16, FP32), (IOS17, FP16)])
def test_conv_net_batch_norm_pooling_upsample(tmp_path, target, precision):
    model, x = ConvNet().eval(), torch.randn(1, 3, 12, 12)
    path, ex = _convert(model, (x,), tmp_path, target, precision, names=["x"])
    ops = _op_types(path)
    assert {"conv", "conv_transpose", "max_pool", "avg_pool", "upsample_nearest_neighbor"} <= ops
    assert {"upsample_bilinear", "resize_bilinear"} & ops
    _check(ex, {"x": x}, model(x), precision)


class Attention(nn.Module):
    def __init__(self, length):
        super().__init__()
        self.qkv, self.out = nn.Linear(32, 96), nn.Linear(32, 32)
        self.register_buffer("causal", torch.ones(length, length, dtype=torch.bool).tril())

    def forward(self, x, mask):
        n = x.shape[1]
        q, k, v = self.qkv(x).view(1, n, 3, 4, 8).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=self.causal)  # bool mask
        b = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # additive mask
        return self.out((a + b).transpose(1, 2).reshape(1, n, 32))


@pytest.mark.parametrize("precision", [FP32, FP16])
def test_scaled_dot_product_attention_ios18(tmp_path, precision):
    model, x = Attention(6).eval(), torch.randn(1, 6, 32)
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., 4:] = -1e4
    path, ex = _convert(model, (x, mask), tmp_path, IOS18, precision, names=["x", "mask"])
    assert "scaled_dot_product_attention" in _op_types(path)
    _check(ex, {"x": x, "mask": mask}, [model(x, mask)], precision)


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 64), nn.Linear(64, 64)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize(
    "target,expected_ops",
    [
        (IOS16, {"constexpr_affine_dequantize", "constexpr_lut_to_dense"}),
        (IOS18, {"constexpr_blockwise_shift_scale", "constexpr_lut_to_dense"}),
    ],
)
def test_compressed_weights(tmp_path, target, expected_ops):
    model, x = TwoLayers().eval(), torch.randn(2, 64)
    source = torch.jit.trace(model, (x,))
    mlmodel = ct.convert(
        source,
        inputs=[ct.TensorType(name="x", shape=x.shape)],
        minimum_deployment_target=target,
        compute_precision=FP32,
    )
    int8 = cto.coreml.linear_quantize_weights(
        mlmodel, cto.coreml.OptimizationConfig(cto.coreml.OpLinearQuantizerConfig(mode="linear_symmetric"))
    )
    lut4 = cto.coreml.palettize_weights(
        mlmodel, cto.coreml.OptimizationConfig(cto.coreml.OpPalettizerConfig(nbits=4, mode="kmeans"))
    )
    want = model(x).detach().numpy()
    seen = set()
    # Quantisation error bounds: int8 per channel is ~1%, 4-bit k-means ~10% of the range.
    for name, compressed, bound in (("int8", int8, 0.03), ("lut4", lut4, 0.2)):
        path, ex = _save(compressed, tmp_path, name)
        seen |= _op_types(path)
        got = ex.predict({"x": x.numpy()})[ex.output_names[0]]
        assert np.abs(got - want).max() < bound * np.abs(want).max(), name
    assert expected_ops <= seen


class KVBuffer(nn.Module):
    """A KV-cache-like buffer: a slot write, a decay and an accumulation per call."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.register_buffer("kv", torch.zeros(1, 2, 4, 8))

    def forward(self, x):
        k = self.proj(x)
        self.kv[:, :, 1:2, :] = k
        self.kv.mul_(0.5)
        self.kv.add_(k)
        return self.kv.sum(2)


@pytest.mark.parametrize("precision", [FP32, FP16])
def test_stateful_buffer_ios18(tmp_path, precision):
    model, x1, x2 = KVBuffer().eval(), torch.randn(1, 2, 1, 8), torch.randn(1, 2, 1, 8)
    # Core ML states are always fp16; an fp32 program casts around them.
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=(1, 2, 4, 8), dtype=np.float16), name="kv")]
    # Tracing runs forward once; convert from a copy so the reference buffer starts at zero.
    traced_copy = KVBuffer().eval()
    traced_copy.load_state_dict(model.state_dict())
    path, ex = _convert(traced_copy, (x1,), tmp_path, IOS18, precision, names=["x"], states=states)
    assert {"read_state", "slice_update"} <= _op_types(path)
    assert ex.state_names == ["kv"]

    tol = FP32_TOL if precision == FP32 else FP16_TOL
    for mode in ("fp32", "fp16"):
        ref = KVBuffer().eval()
        ref.load_state_dict(model.state_dict())
        state = ex.make_state()
        np.testing.assert_array_equal(state["kv"], 0)
        for x in (x1, x2):
            with torch.no_grad():
                want = ref(x).numpy()
            got = ex.predict({"x": x.numpy()}, mode=mode, state=state)[ex.output_names[0]]
            np.testing.assert_allclose(got, want, **(tol if mode == "fp32" else FP16_TOL))
            np.testing.assert_allclose(state["kv"], ref.kv.numpy(), **(tol if mode == "fp32" else FP16_TOL))
        assert not np.allclose(state["kv"], 0)


class Overflow(nn.Module):
    def forward(self, x):
        return (x * 60000.0).mean(-1)


def test_fp16_mode_overflows_where_fp32_does_not(tmp_path):
    x = torch.full((1, 4), 2.0)  # 120000 > fp16 max (65504)
    _, ex = _convert(Overflow(), (x,), tmp_path, IOS16, FP16, names=["x"])
    name = ex.output_names[0]
    out32 = ex.predict({"x": x.numpy()}, mode="fp32")[name]
    np.testing.assert_allclose(out32, [120000.0], rtol=1e-3)
    assert not np.isfinite(ex.predict({"x": x.numpy()}, mode="fp16")[name]).all()


class Flexible(nn.Module):
    def forward(self, x):
        b, s, _ = x.shape
        h = x.view(b, s, 2, 4).transpose(1, 2)
        pos = torch.arange(s, dtype=torch.float32)
        return (h * pos[None, None, :, None]).sum(2)


def test_flexible_input_shape(tmp_path):
    x = torch.randn(1, 4, 8)
    shape = (1, ct.RangeDim(1, 16, default=4), 8)
    _, ex = _convert(Flexible(), (x,), tmp_path, IOS16, FP32, names=["x"], shapes=[shape])
    for length in (3, 7):
        x = torch.randn(1, length, 8)
        _check(ex, {"x": x}, [Flexible()(x)], FP32)


class CausalLM(nn.Module):
    """Passes a ready-made 4-D additive mask, so transformers builds none itself."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        n = input_ids.shape[1]
        mask = torch.full((n, n), -1e4).triu(1)[None, None]
        return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits


@pytest.mark.parametrize("target,precision", [(IOS16, FP32), (IOS18, FP16)])
def test_tiny_llama_via_torch_export(tmp_path, monkeypatch, target, precision):
    from coremltools.converters.mil.frontend.torch.ops import noop
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
    from transformers import LlamaConfig, LlamaForCausalLM

    # torch 2.13's export emits aten.alias (an identity view) that coremltools 9.0 lacks;
    # monkeypatch restores the registry afterwards, so the mapping never leaks.
    registry = _TORCH_OPS_REGISTRY.name_to_func_mapping
    if "alias" not in registry:
        monkeypatch.setitem(registry, "alias", noop)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
    )
    model = CausalLM(LlamaForCausalLM(config)).eval()
    ids = torch.randint(0, 128, (1, 8), dtype=torch.int32)
    with torch.no_grad():
        want = model(ids)
    _, ex = _convert(model, (ids,), tmp_path, target, precision, names=["input_ids"], export=True)
    _check(ex, {"input_ids": ids}, [want], precision)


def test_a_slice_update_never_writes_into_a_constant_or_a_view_of_one(tmp_path):
    """The executor writes a slice_update into its `x` when nothing else reads it (a KV cache's
    chain); a constant (or a slice of one) is every call's: written into, the next call's
    earlier readers would see the last call's values."""
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 4))], opset_version=IOS18)
    def prog(u):
        table, tens = mb.const(val=base), mb.const(val=base * 10)
        before = mb.add(x=table, y=u), mb.add(x=tens, y=u)  # read first: the updates are the last readers
        whole = mb.slice_update(x=table, update=u, begin=[0, 0, 0], end=[1, 3, 4])
        row = mb.slice_by_index(x=tens, begin=[1, 0, 0], end=[2, 3, 4])
        half = mb.slice_by_index(x=u, begin=[0, 0, 0], end=[1, 3, 2])
        return (*before, whole, mb.slice_update(x=row, update=half, begin=[0, 0, 0], end=[1, 3, 2]))

    mlmodel = ct.convert(prog, minimum_deployment_target=IOS18, compute_precision=FP32, pass_pipeline=ct.PassPipeline.EMPTY)
    _, ex = _save(mlmodel, tmp_path)
    for call in range(3):  # the constants are as the program has them, call after call
        u = np.full((1, 3, 4), -1.0 - call, dtype=np.float32)
        plus, plus_tens, whole, row = (ex.predict({"u": u})[name] for name in ex.output_names)
        want_whole, want_row = base.copy(), base[1:2] * 10
        want_whole[0:1], want_row[..., 0:2] = u, u[..., 0:2]
        np.testing.assert_array_equal(plus, base + u)
        np.testing.assert_array_equal(plus_tens, base * 10 + u)
        np.testing.assert_array_equal(whole, want_whole)
        np.testing.assert_array_equal(row, want_row)


def test_a_state_read_but_never_written_back_keeps_its_value(tmp_path):
    """A cache chain writes into the caller's state only when the program writes that state back
    (a KV cache); a state it reads, updates for its own use and never writes back stays as it was."""

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4)), mb.StateTensorSpec(shape=(2, 4), dtype=types.fp16)],
                opset_version=IOS18)
    def prog(u, kept):
        cache = mb.read_state(input=kept)
        scratch = mb.slice_update(x=cache, update=mb.cast(x=u, dtype="fp16"), begin=[0, 0], end=[1, 4])
        return mb.cast(x=scratch, dtype="fp32")

    mlmodel = ct.convert(prog, minimum_deployment_target=IOS18, pass_pipeline=ct.PassPipeline.EMPTY)
    _, ex = _save(mlmodel, tmp_path)
    for mode in ("fp32", "fp16"):
        state = ex.make_state()
        for call in range(2):
            u = np.full((1, 4), 1.0 + call, dtype=np.float32)
            out = ex.predict({"u": u}, mode=mode, state=state)[ex.output_names[0]]
            np.testing.assert_array_equal(out, np.concatenate([u, np.zeros((1, 4), np.float32)]))
            np.testing.assert_array_equal(state[ex.state_names[0]], 0)


class CumulativeSums(nn.Module):
    """A Mamba-2 mixer's sums (Bamba, Falcon-H1): along an axis counted from the end, not the last."""

    def forward(self, x):
        return torch.cumsum(x, dim=-2), torch.logcumsumexp(x, dim=-3), torch.cumsum(x, dim=-1)


def test_cumulative_sums_along_any_axis_convert_and_run(tmp_path):
    from converters.backends.coreml.patches import op_patches

    model, x = CumulativeSums().eval(), torch.randn(2, 3, 5, 4)
    with op_patches():  # coremltools 9.0's cumsum takes -1 as its only negative axis
        _, ex = _convert(model, (x,), tmp_path, IOS16, FP32, names=["x"], export=True)
    _check(ex, {"x": x}, model(x), FP32)


# ---------------------------------------------------------------- errors


def test_unknown_op_type_raises_at_construction(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3))], opset_version=IOS16)
    def prog(x):
        return mb.add(x=x, y=mb.random_uniform(shape=np.array([2, 3], dtype=np.int32)))

    mlmodel = ct.convert(prog, minimum_deployment_target=IOS16, pass_pipeline=ct.PassPipeline.EMPTY)
    with pytest.raises(UnsupportedOpError, match="random_uniform"):
        _save(mlmodel, tmp_path)


def test_all_missing_kernels_are_listed(tmp_path, monkeypatch):
    model, x = MLP().eval(), torch.randn(2, 5, 16)
    source = torch.jit.trace(model, (x,))
    mlmodel = ct.convert(source, inputs=[ct.TensorType(name="x", shape=x.shape)], minimum_deployment_target=IOS16)
    monkeypatch.delitem(kernels.KERNELS, "silu")
    monkeypatch.delitem(kernels.KERNELS, "layer_norm")
    with pytest.raises(UnsupportedOpError) as err:
        _save(mlmodel, tmp_path)
    assert err.value.op_types == ["layer_norm", "silu"]


def test_bad_inputs_and_mode(tmp_path):
    model, x = MLP().eval(), torch.randn(2, 5, 16)
    _, ex = _convert(model, (x,), tmp_path, IOS16, FP32, names=["x"])
    with pytest.raises(ValueError, match="mode"):
        ex.predict({"x": x.numpy()}, mode="int8")
    with pytest.raises(ValueError, match="missing"):
        ex.predict({})
    with pytest.raises(ValueError, match="shape"):
        ex.predict({"x": np.zeros((2, 5, 15), np.float32)})


# ---------------------------------------------------------------- single MIL ops


@dataclass
class Case:
    """``build`` makes MIL ops from named inputs; the oracle is coremltools' value_inference
    on constant inputs unless a numpy ``reference`` is given."""

    id: str
    build: Callable
    inputs: list
    reference: Callable | None = None
    opset: object = IOS17


def _f32(*shape):
    return np.random.randn(*shape).astype(np.float32)


def _np_scatter(data, idx, upd, axis, mode):
    out = np.moveaxis(data.copy(), axis, 0)
    upd = np.moveaxis(upd, axis, 0)
    for i, j in enumerate(idx):
        ops = {"update": lambda a, b: b, "add": np.add, "mul": np.multiply, "div": np.divide, "min": np.minimum}
        out[j] = ops[mode](out[j], upd[i])
    return np.moveaxis(out, 0, axis)


def _np_depth_to_space(x, bs):
    n, c, h, w = x.shape
    co = c // (bs * bs)
    out = np.zeros((n, co, h * bs, w * bs), x.dtype)
    for i in range(bs):
        for j in range(bs):
            out[:, :, i::bs, j::bs] = x[:, (i * bs + j) * co : (i * bs + j + 1) * co]
    return out


def _np_pool(x, k, pads, reducer):
    """2-D pooling, stride 1, with NaN padding that ``reducer`` (nanmax/nanmean) ignores."""
    (t, b), (l, r) = pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=np.nan)
    h, w = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    return np.stack(
        [np.stack([reducer(xp[:, :, i : i + k, j : j + k], axis=(2, 3)) for j in range(w)], -1) for i in range(h)], -2
    )


def _scatter_case(mode):
    return Case(
        f"scatter_{mode}",
        lambda d, u: mb.scatter(data=d, indices=np.array([1, 3], np.int32), updates=u, axis=1, mode=mode),
        [_f32(3, 4), _f32(3, 2)],
        lambda d, u: _np_scatter(d, [1, 3], u, 1, mode),
    )


def _resize_case(case_id, mode, size, inputs, reference):
    return Case(
        case_id,
        lambda x: mb.resize_bilinear(x=x, target_size_height=size[0], target_size_width=size[1], sampling_mode=mode),
        inputs,
        reference,
    )


CASES = [
    Case(
        "slice_by_index_masks",
        lambda x: mb.slice_by_index(
            x=x,
            begin=[1, -1, 0],
            end=[0, 0, 4],
            stride=[1, -1, 2],
            begin_mask=[False, False, True],
            end_mask=[True, True, False],
            squeeze_mask=[True, False, False],
        ),
        [_f32(2, 3, 4)],
    ),
    Case("slice_by_size", lambda x: mb.slice_by_size(x=x, begin=[1, -3], size=[-1, 2]), [_f32(4, 5)]),
    Case(
        "gather_batch_dims",
        lambda x: mb.gather(x=x, indices=np.array([[0, 2], [1, 1]], np.int32), axis=1, batch_dims=1),
        [_f32(2, 3, 4)],
    ),
    Case("gather_scalar_index", lambda x: mb.gather(x=x, indices=np.int32(2), axis=0), [_f32(3, 4)]),
    Case(
        "gather_along_axis",
        lambda x: mb.gather_along_axis(x=x, indices=np.array([[2, 0, 1]], np.int32), axis=1),
        [_f32(1, 3)],
    ),
    Case(
        "gather_nd_batch_dims",
        lambda x: mb.gather_nd(x=x, indices=np.array([[[2], [0]], [[1], [1]]], np.int32), batch_dims=1),
        [_f32(2, 3, 4)],
        lambda x: np.stack([x[0, [2, 0]], x[1, [1, 1]]]),
    ),
    *[_scatter_case(mode) for mode in ("update", "add", "mul", "div", "min")],
    Case(
        "scatter_along_axis_update",
        lambda d, u: mb.scatter_along_axis(
            data=d, indices=np.array([[1, 0], [2, 1]], np.int32), updates=u, axis=1, mode="update"
        ),
        [_f32(2, 3), _f32(2, 2)],
    ),
    Case(
        "scatter_along_axis_add",
        lambda d, u: mb.scatter_along_axis(data=d, indices=np.array([[1, 1], [2, 0]], np.int32), updates=u, axis=1),
        [_f32(2, 3), _f32(2, 2)],
        lambda d, u: d + np.array([[0, u[0].sum(), 0], [u[1, 1], 0, u[1, 0]]], np.float32),
    ),
    Case(
        "scatter_nd_add",
        lambda d, u: mb.scatter_nd(data=d, indices=np.array([[0, 1], [2, 0], [0, 1]], np.int32), updates=u, mode="add"),
        [_f32(3, 2, 4), _f32(3, 4)],
        lambda d, u: _np_scatter(d.reshape(6, 4), [1, 4, 1], u, 0, "add").reshape(3, 2, 4),
    ),
    Case("pad_reflect", lambda x: mb.pad(x=x, pad=[1, 2, 2, 1], mode="reflect"), [_f32(1, 2, 4, 5)]),
    Case("pad_replicate", lambda x: mb.pad(x=x, pad=[0, 2, 3, 1], mode="replicate"), [_f32(2, 4, 5)]),
    Case("pad_constant", lambda x: mb.pad(x=x, pad=[1, 0], constant_val=2.5), [_f32(2, 3)]),
    Case("band_part", lambda x: mb.band_part(x=x, lower=1, upper=0), [_f32(2, 4, 4)]),
    Case(
        "cumsum_exclusive_reverse",
        lambda x: mb.cumsum(x=x, axis=1, exclusive=True, reverse=True),
        [_f32(2, 5)],
        lambda x: np.flip(np.cumsum(np.flip(x, 1), 1), 1) - x,
    ),
    Case("topk_ascending", lambda x: mb.topk(x=x, k=2, axis=-1, ascending=True), [_f32(3, 5)]),
    Case("argsort", lambda x: mb.argsort(x=x, axis=0), [_f32(4, 3)]),
    Case(
        "one_hot_axis0",
        lambda i: mb.one_hot(indices=i, one_hot_vector_size=4, axis=0, on_value=2.0, off_value=-1.0),
        [np.array([0, 2, 5], np.int32)],
        lambda i: np.where(np.arange(4)[:, None] == i[None, :], 2.0, -1.0),
    ),
    Case(
        "layer_norm_channel_axis",
        lambda x: mb.layer_norm(x=x, axes=[1], gamma=np.arange(1.0, 4.0, dtype=np.float32), epsilon=1e-5),
        [_f32(2, 3, 4)],
    ),
    Case("l2_norm", lambda x: mb.l2_norm(x=x, epsilon=1e-6), [_f32(2, 2, 3, 4)]),
    Case(
        "instance_norm",
        lambda x: mb.instance_norm(x=x, gamma=np.array([1.0, 2.0], np.float32), beta=np.array([0.5, -1.0], np.float32)),
        [_f32(1, 2, 3, 4)],
        lambda x: (x - x.mean((2, 3), keepdims=True)) / np.sqrt(x.var((2, 3), keepdims=True) + 1e-5)
        * np.array([1.0, 2.0]).reshape(1, 2, 1, 1)
        + np.array([0.5, -1.0]).reshape(1, 2, 1, 1),
    ),
    Case(
        "einsum_broadcast",
        lambda x, y: mb.einsum(values=(x, y), equation="nchw,nwhu->nchu"),
        [_f32(1, 2, 3, 4), _f32(2, 4, 1, 5)],
    ),
    Case(
        "depth_to_space",
        lambda x: mb.depth_to_space(x=x, block_size=2),
        [_f32(1, 8, 2, 3)],
        lambda x: _np_depth_to_space(x, 2),
    ),
    Case(
        "space_to_depth_inverts_depth_to_space",
        lambda x: mb.space_to_depth(x=mb.depth_to_space(x=x, block_size=2), block_size=2),
        [_f32(1, 8, 2, 3)],
        lambda x: x,
    ),
    Case(
        "conv_same_lower",
        lambda x: mb.conv(x=x, weight=np.ones((1, 1, 2, 2), np.float32), pad_type="same_lower"),
        [_f32(1, 1, 3, 4)],
        lambda x: _np_pool(x, 2, ((1, 0), (1, 0)), np.nansum),
    ),
    Case(
        "max_pool_same",
        lambda x: mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[1, 1], pad_type="same"),
        [_f32(1, 2, 3, 4)],
        lambda x: _np_pool(x, 2, ((0, 1), (0, 1)), np.nanmax),
    ),
    Case(
        "avg_pool_same_exclude_padding",
        lambda x: mb.avg_pool(
            x=x, kernel_sizes=[2, 2], strides=[1, 1], pad_type="same", exclude_padding_from_average=True
        ),
        [_f32(1, 2, 3, 4)],
        lambda x: _np_pool(x, 2, ((0, 1), (0, 1)), np.nanmean),
    ),
    Case("reduce_log_sum_exp", lambda x: mb.reduce_log_sum_exp(x=x, axes=[0, 2], keep_dims=True), [_f32(2, 3, 4)]),
    Case("reduce_prod_two_axes", lambda x: mb.reduce_prod(x=x, axes=[-1, 0]), [_f32(2, 3, 4)]),
    Case("reduce_argmax", lambda x: mb.reduce_argmax(x=x, axis=1, keep_dims=True), [_f32(2, 5)]),
    Case(
        "concat_interleave",
        lambda x, y: mb.concat(values=(x, y), axis=1, interleave=True),
        [_f32(2, 3), _f32(2, 3)],
        lambda x, y: np.stack([x, y], 2).reshape(2, 6),
    ),
    Case("split_uneven", lambda x: mb.split(x=x, split_sizes=[1, 3], axis=1), [_f32(2, 4)]),
    Case(
        "quantize_dequantize",
        lambda x: mb.dequantize(
            input=mb.quantize(input=x, scale=np.float32(0.05), zero_point=np.int8(3), output_dtype="int8"),
            scale=np.float32(0.05),
            zero_point=np.int8(3),
        ),
        [_f32(3, 4) * 4],
        lambda x: (np.clip(np.round(x / 0.05) + 3, -128, 127) - 3) * np.float32(0.05),
    ),
    Case(
        "sliding_windows",
        lambda x: mb.sliding_windows(x=x, axis=1, size=3, stride=2),
        [_f32(2, 7)],
        lambda x: np.stack([x[:, 2 * i : 2 * i + 3] for i in range(3)], 1),
    ),
    Case(
        "reverse_sequence",
        lambda x: mb.reverse_sequence(x=x, lengths=np.array([2, 5, 0], np.int32), seq_axis=1, batch_axis=0),
        [_f32(3, 5)],
        lambda x: np.stack([np.concatenate([r[:n][::-1], r[n:]]) for r, n in zip(x, (2, 5, 0))]),
    ),
    Case(
        "crop",
        lambda x: mb.crop(x=x, crop_height=[1, 0], crop_width=[2, 1]),
        [_f32(1, 2, 4, 5)],
        lambda x: x[..., 1:, 2:4],
    ),
    Case(
        "int_mod_floor_div",
        lambda x, y: (mb.mod(x=x, y=y), mb.floor_div(x=x, y=y)),
        [np.array([7, -7, 5, -3], np.int32), np.array([3, 3, -2, -2], np.int32)],
    ),
    Case(
        "activations",
        lambda x: (
            mb.leaky_relu(x=x, alpha=0.1),
            mb.elu(x=x, alpha=0.7),
            mb.clamped_relu(x=x, alpha=0.2, beta=0.8),
            mb.sigmoid_hard(x=x, alpha=0.3, beta=0.4),
            mb.scaled_tanh(x=x, alpha=1.5, beta=0.5),
            mb.linear_activation(x=x, alpha=2.0, beta=-1.0),
            mb.softplus_parametric(x=x, alpha=np.array([1.0, 2.0], np.float32), beta=np.array([0.5, 3.0], np.float32)),
            mb.threshold(x=x, alpha=0.25),
        ),
        [_f32(1, 2, 3, 4)],
    ),
    Case(
        "thresholded_relu",
        lambda x: mb.thresholded_relu(x=x, alpha=0.3),
        [_f32(2, 5)],
        lambda x: np.where(x >= 0.3, x, 0),
    ),
    Case(
        "conv_transpose_pad_output_shape",
        lambda x: mb.conv_transpose(
            x=x,
            weight=np.linspace(-1, 1, 2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3),
            bias=np.array([0.5, -0.5, 1.0], np.float32),
            pad_type="custom",
            pad=[1, 1, 1, 1],
            strides=[2, 2],
            output_shape=[1, 3, 8, 10],
        ),
        [_f32(1, 2, 4, 5)],
        lambda x: F.conv_transpose2d(
            torch.from_numpy(x),
            torch.linspace(-1, 1, 54).reshape(2, 3, 3, 3),
            torch.tensor([0.5, -0.5, 1.0]),
            stride=2,
            padding=1,
            output_padding=1,
        ).numpy(),
    ),
    Case(
        "l2_pool",
        lambda x: mb.l2_pool(x=x, kernel_sizes=[2, 2], strides=[1, 1], pad_type="valid"),
        [_f32(1, 2, 3, 4)],
        lambda x: np.sqrt(_np_pool(x * x, 2, ((0, 0), (0, 0)), np.nansum)),
    ),
    Case(
        "resize_nearest_neighbor",
        lambda x: mb.resize_nearest_neighbor(x=x, target_size_height=5, target_size_width=2),
        [_f32(1, 2, 3, 4)],
        lambda x: F.interpolate(torch.from_numpy(x), size=(5, 2), mode="nearest").numpy(),
    ),
    Case("reverse_flatten2d", lambda x: mb.flatten2d(x=mb.reverse(x=x, axes=[0, -1]), axis=-2), [_f32(2, 3, 4)]),
    Case(
        "int_matmul_real_div",
        lambda x, y: (mb.matmul(x=x, y=y), mb.real_div(x=x, y=mb.add(x=y, y=np.int32(10)))),
        [np.array([[1, -2], [3, 4]], np.int32), np.array([[5, 6], [-7, 8]], np.int32)],
        lambda x, y: (x @ y, np.trunc(x / (y + 10)).astype(np.int32)),
    ),
    Case(
        "elementwise_unary",
        lambda x: mb.add(
            x=mb.add(x=mb.erf(x=x), y=mb.inverse(x=x, epsilon=0.5)),
            y=mb.add(x=mb.log(x=mb.abs(x=x), epsilon=0.1), y=mb.clip(x=x, alpha=-0.5, beta=0.3)),
        ),
        [_f32(3, 4)],
    ),
    Case("prelu", lambda x: mb.prelu(x=x, alpha=np.array([0.1, 0.2, 0.3], np.float32)), [_f32(1, 3, 2, 2)]),
    Case(
        "sdpa_bool_mask",
        lambda q, k, v: mb.scaled_dot_product_attention(
            query=q, key=k, value=v, attn_mask=np.tril(np.ones((3, 5), bool), 2)
        ),
        [_f32(1, 2, 3, 4), _f32(1, 2, 5, 4), _f32(1, 2, 5, 6)],
        opset=IOS18,
    ),
    *[
        # Grid points documented in resize_bilinear's docstring, for a 2-pixel [0, 1] ramp.
        _resize_case(
            f"resize_bilinear_{mode}_{len(grid)}",
            mode,
            (1, len(grid)),
            [np.array([[[[0.0, 1.0]]]], np.float32)],
            lambda x, grid=grid: np.array(grid, np.float32).reshape(1, 1, 1, -1),
        )
        for mode, grid in [
            ("DEFAULT", [0.0, 0.4, 0.8, 1.0, 1.0]),
            ("DEFAULT", [0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0]),
            ("OFFSET_CORNERS", [0.1, 0.3, 0.5, 0.7, 0.9]),
            ("OFFSET_CORNERS", [1 / 12, 3 / 12, 5 / 12, 7 / 12, 9 / 12, 11 / 12]),
            ("UNALIGN_CORNERS", [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]),
            ("STRICT_ALIGN_CORNERS", [0.0, 0.25, 0.5, 0.75, 1.0]),
        ]
    ],
    *[
        _resize_case(
            f"resize_bilinear_matches_torch_{mode}",
            mode,
            (6, 3),
            [_f32(1, 2, 3, 5)],
            lambda x, align=align: F.interpolate(
                torch.from_numpy(x), size=(6, 3), mode="bilinear", align_corners=align
            ).numpy(),
        )
        for mode, align in [("STRICT_ALIGN_CORNERS", True), ("UNALIGN_CORNERS", False)]
    ],
]


def _value_inference(case):
    """Run ``case.build`` on constants: coremltools folds it with its numpy value_inference."""
    result = {}

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,))], opset_version=case.opset)
    def prog(dummy):
        out = case.build(*[mb.const(val=a) for a in case.inputs])
        result["val"] = [v.val for v in (out if isinstance(out, (tuple, list)) else (out,))]
        return dummy

    assert all(v is not None for v in result["val"]), f"{case.id}: no value_inference, give a reference"
    return result["val"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_single_mil_op(tmp_path, case):
    specs = [
        mb.TensorSpec(shape=a.shape, dtype=types.int32 if a.dtype.kind == "i" else types.fp32) for a in case.inputs
    ]
    prog = mb.program(input_specs=specs, opset_version=case.opset)(case.build)
    mlmodel = ct.convert(
        prog, minimum_deployment_target=case.opset, compute_precision=FP32, pass_pipeline=ct.PassPipeline.EMPTY
    )
    _, ex = _save(mlmodel, tmp_path)
    names = list(inspect.signature(case.build).parameters)[: len(case.inputs)]
    got = ex.predict(dict(zip(names, case.inputs)))
    if case.reference is not None:
        want = case.reference(*case.inputs)
        want = list(want) if isinstance(want, tuple) else [want]
    else:
        want = _value_inference(case)
    assert len(want) == len(ex.output_names)
    for name, w in zip(ex.output_names, want):
        np.testing.assert_allclose(got[name], np.asarray(w), rtol=1e-5, atol=1e-5, err_msg=f"{case.id}: {name}")
