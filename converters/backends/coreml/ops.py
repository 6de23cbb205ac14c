"""Torch kernels for MIL ops, one function per op type, registered in ``KERNELS``.

Each kernel takes an ``Args`` view of one op's inputs and returns a tensor (or a tuple
for multi-output ops). Floating tensors always arrive and leave as float32; the
executor casts results to the declared dtype and does any fp16 rounding, so kernels
only implement the maths of the op as documented in coremltools'
``mil/ops/defs`` (iOS15..iOS18 variants differ only in dtypes and defaults there).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F


class Args:
    """One op's inputs: tensors from the run environment, Python values for parameters."""

    __slots__ = ("names", "consts", "env", "states", "n_outputs", "fp16")

    def __init__(self, names, consts, env, states, n_outputs, fp16=False):
        self.names = names  # input name -> var name, or tuple of var names
        self.consts = consts  # input name -> Python value, for constant inputs
        self.env = env  # var name -> tensor
        self.states = states  # state name -> tensor
        self.n_outputs = n_outputs
        # fp16 device emulation of an op the program declares fp16: a fused op whose stages
        # are ops of their own elsewhere rounds each stage, as those ops would be (see _sdpa).
        self.fp16 = fp16

    def has(self, name: str) -> bool:
        return name in self.names

    def t(self, name: str) -> torch.Tensor | None:
        var = self.names.get(name)
        return None if var is None else _widened(self.env[var])

    def ts(self, name: str) -> list[torch.Tensor]:
        return [_widened(self.env[var]) for var in self.names[name]]

    def v(self, name: str, default: Any = None) -> Any:
        """Python value of an input (ints, floats, lists, strings); ``default`` if absent."""
        if name not in self.names:
            return default
        if name in self.consts:
            return self.consts[name]
        return self.env[self.names[name]].tolist()


def _widened(tensor: torch.Tensor) -> torch.Tensor:
    """Floats run as float32; a big package's float16 weights are kept float16 (executor.py's
    lazy_weights) and widened here, for the one op reading them."""
    return tensor.float() if tensor.dtype == torch.float16 else tensor


KERNELS: dict[str, Callable[[Args], Any]] = {}

# Ops whose outputs are a selection of input elements: in fp16 mode their results are
# already fp16 values, so the executor skips re-rounding them.
VALUE_PRESERVING = frozenset(
    """reshape transpose expand_dims squeeze slice_by_index slice_by_size slice_update
    concat split stack tile identity gather gather_along_axis gather_nd read_state
    coreml_update_state reshape_like flatten2d pixel_shuffle pixel_unshuffle
    depth_to_space space_to_depth reverse reverse_sequence sliding_windows crop select
    band_part max_pool reduce_max reduce_min relu upsample_nearest_neighbor
    resize_nearest_neighbor""".split()
)


def kernel(*op_types: str):
    def register(fn):
        for op_type in op_types:
            KERNELS[op_type] = fn
        return fn

    return register


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# ---------------------------------------------------------------- elementwise


def _real_div(x, y):
    return torch.true_divide(x, y)


def _floor_div(x, y):
    return torch.div(x, y, rounding_mode="floor")


_BINARY = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "real_div": _real_div,  # ints: the executor truncates the float result, as numpy does
    "floor_div": _floor_div,
    "mod": torch.remainder,  # Python/numpy sign convention
    "pow": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "equal": torch.eq,
    "not_equal": torch.ne,
    "less": torch.lt,
    "less_equal": torch.le,
    "greater": torch.gt,
    "greater_equal": torch.ge,
    "logical_and": torch.logical_and,
    "logical_or": torch.logical_or,
    "logical_xor": torch.logical_xor,
}


def _binary(fn):
    return lambda a: fn(a.t("x"), a.t("y"))


for _name, _fn in _BINARY.items():
    KERNELS[_name] = _binary(_fn)

_UNARY = {
    "abs": torch.abs,
    "acos": torch.acos,
    "asin": torch.asin,
    "atan": torch.atan,
    "atanh": torch.atanh,
    "ceil": torch.ceil,
    "cos": torch.cos,
    "cosh": torch.cosh,
    "erf": torch.erf,
    "exp": torch.exp,
    "exp2": torch.exp2,
    "floor": torch.floor,
    "round": torch.round,  # half to even, like numpy's value_inference
    "sign": torch.sign,
    "sin": torch.sin,
    "sinh": torch.sinh,
    "sqrt": torch.sqrt,
    "square": torch.square,
    "tan": torch.tan,
    "tanh": torch.tanh,
    "logical_not": torch.logical_not,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "softsign": F.softsign,
    "softplus": F.softplus,
    "identity": lambda x: x,
    # The executor converts to the declared dtype (and rounds to fp16 in fp16 mode).
    "cast": lambda x: x,
}


def _unary(fn):
    return lambda a: fn(a.t("x"))


for _name, _fn in _UNARY.items():
    KERNELS[_name] = _unary(_fn)


@kernel("inverse")
def _inverse(a):
    return torch.reciprocal(a.t("x") + a.v("epsilon"))


@kernel("log")
def _log(a):
    return torch.log(a.t("x") + a.v("epsilon"))


@kernel("rsqrt")
def _rsqrt(a):
    return torch.rsqrt(a.t("x") + a.v("epsilon"))


@kernel("clip")
def _clip(a):
    return torch.clamp(torch.clamp(a.t("x"), min=a.v("alpha")), max=a.v("beta"))


@kernel("threshold")
def _threshold(a):
    return torch.clamp(a.t("x"), min=a.v("alpha"))


@kernel("select")
def _select(a):
    return torch.where(a.t("cond").bool(), a.t("a"), a.t("b"))


# ---------------------------------------------------------------- activations


@kernel("relu6")
def _relu6(a):
    return torch.clamp(a.t("x"), 0.0, 6.0)


@kernel("gelu")
def _gelu(a):
    x, mode = a.t("x"), a.v("mode", "EXACT")
    if mode == "EXACT":
        return F.gelu(x)
    if mode == "TANH_APPROXIMATION":
        return F.gelu(x, approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    raise NotImplementedError(f"gelu mode {mode}")


@kernel("softmax")
def _softmax(a):
    return torch.softmax(a.t("x"), dim=a.v("axis", -1))


@kernel("leaky_relu")
def _leaky_relu(a):
    return F.leaky_relu(a.t("x"), a.v("alpha"))


@kernel("elu")
def _elu(a):
    return F.elu(a.t("x"), a.v("alpha"))


@kernel("clamped_relu")
def _clamped_relu(a):
    x, alpha, beta = a.t("x"), a.v("alpha"), a.v("beta")
    return torch.clamp(torch.relu(x), max=beta) + torch.clamp(torch.clamp(x, max=0) * alpha, max=beta)


@kernel("linear_activation")
def _linear_activation(a):
    return a.t("x") * a.v("alpha") + a.v("beta")


def _per_channel(p: torch.Tensor, rank: int) -> torch.Tensor:
    """A [C] parameter broadcast along axis 1 of a rank-``rank`` tensor."""
    return p.reshape([1, -1] + [1] * (rank - 2))


@kernel("prelu")
def _prelu(a):
    x = a.t("x")
    return torch.where(x > 0, x, x * _per_channel(a.t("alpha"), x.dim()))


@kernel("scaled_tanh")
def _scaled_tanh(a):
    return a.v("alpha") * torch.tanh(a.t("x") * a.v("beta"))


@kernel("sigmoid_hard")
def _sigmoid_hard(a):
    return torch.clamp(a.v("alpha") * a.t("x") + a.v("beta"), 0.0, 1.0)


@kernel("softplus_parametric")
def _softplus_parametric(a):
    x = a.t("x")
    alpha, beta = _per_channel(a.t("alpha"), x.dim()), _per_channel(a.t("beta"), x.dim())
    return alpha * F.softplus(beta * x)


@kernel("thresholded_relu")
def _thresholded_relu(a):
    x = a.t("x")
    return torch.where(x >= a.v("alpha"), x, torch.zeros_like(x))


# ---------------------------------------------------------------- linear algebra


def _as_float(*ts):
    """Integer matmuls run in float64 (torch CPU has no int32 GEMM); the executor casts back."""
    return [t.double() if not t.is_floating_point() else t for t in ts]


@kernel("matmul")
def _matmul(a):
    x, y = _as_float(a.t("x"), a.t("y"))
    if a.v("transpose_x", False) and x.dim() > 1:
        x = x.transpose(-1, -2)
    if a.v("transpose_y", False) and y.dim() > 1:
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


@kernel("linear")
def _linear(a):
    x, w = _as_float(a.t("x"), a.t("weight"))
    b = a.t("bias")
    return F.linear(x, w, None if b is None else b.to(w.dtype))


@kernel("einsum")
def _einsum(a):
    x, y = a.ts("values")
    # MIL only allows broadcasting of the batch dims (-2 and -4), which torch.einsum lacks.
    bx, by = list(x.shape), list(y.shape)
    for d in (-2, -4)[: x.dim() - 2]:
        bx[d] = by[d] = max(x.shape[d], y.shape[d])
    return torch.einsum(a.v("equation"), x.expand(bx), y.expand(by))


def _to_fp16(x: torch.Tensor) -> torch.Tensor:
    return x.half().float()


@kernel("scaled_dot_product_attention")
def _sdpa(a):
    """iOS 18's fused attention (coremltools mil/ops/defs/iOS18/transformers.py):
    softmax(Q @ K^T / sqrt(E) + mask) @ V over the last two dims. Query, key and value share
    their batch dims; the mask ([*?, S]) broadcasts numpy-style to [B, *?, L, S]: a bool mask
    says which keys may be attended (False: -inf, so a fully masked row is NaN, as the op's
    definition computes it), a float mask is added to the scores.

    fp16 emulation rounds every stage to float16 exactly as the ops this one replaces
    (coremltools' decomposition: query * 1/sqrt(E), matmul, add the mask, softmax, matmul)
    are rounded, so fusing attention never hides a float16 overflow of the scores that the
    matmul + softmax program would show; the last rounding is the executor's, as for any op."""
    query, key, value, mask = a.t("query"), a.t("key"), a.t("value"), a.t("attn_mask")
    rounded = _to_fp16 if a.fp16 else (lambda x: x)
    scale = rounded(torch.tensor(1.0 / math.sqrt(query.shape[-1])))
    scores = rounded(torch.matmul(rounded(query * scale), key.transpose(-1, -2)))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = rounded(scores + mask)
    return torch.matmul(rounded(torch.softmax(scores, dim=-1)), value)


# ---------------------------------------------------------------- normalisation


@kernel("layer_norm")
def _layer_norm(a):
    x, gamma, beta, eps = a.t("x"), a.t("gamma"), a.t("beta"), a.v("epsilon")
    rank = x.dim()
    axes = sorted({_axis(ax, rank) for ax in a.v("axes", list(range(rank)))})
    norm_shape = [x.shape[i] for i in axes]
    if axes == list(range(rank - len(axes), rank)):
        gamma = None if gamma is None else gamma.reshape(norm_shape)
        beta = None if beta is None else beta.reshape(norm_shape)
        return F.layer_norm(x, norm_shape, gamma, beta, eps)
    # Non-trailing axes (e.g. channel-first layouts): same formula, spelled out.
    mean = x.mean(dim=axes, keepdim=True)
    centred = x - mean
    y = centred * torch.rsqrt(centred.square().mean(dim=axes, keepdim=True) + eps)
    bshape = [x.shape[i] if i in axes else 1 for i in range(rank)]
    if gamma is not None:
        y = y * gamma.reshape(bshape)
    if beta is not None:
        y = y + beta.reshape(bshape)
    return y


@kernel("batch_norm")
def _batch_norm(a):
    return F.batch_norm(
        a.t("x"), a.t("mean"), a.t("variance"), a.t("gamma"), a.t("beta"), training=False, eps=a.v("epsilon")
    )


@kernel("instance_norm")
def _instance_norm(a):
    return F.instance_norm(a.t("x"), weight=a.t("gamma"), bias=a.t("beta"), eps=a.v("epsilon"))


@kernel("l2_norm")
def _l2_norm(a):
    # Normalises over the last three dims; leading dims are batch.
    x = a.t("x")
    return x / torch.sqrt(x.square().sum(dim=(-3, -2, -1), keepdim=True) + a.v("epsilon"))


@kernel("local_response_norm")
def _local_response_norm(a):
    return F.local_response_norm(a.t("x"), a.v("size"), a.v("alpha"), a.v("beta"), a.v("k"))


# ---------------------------------------------------------------- reductions


def _reduce_axes(a, rank):
    axes = a.v("axes")
    return list(range(rank)) if axes is None else sorted({_axis(ax, rank) for ax in axes})


def _reducer(fn):
    def run(a):
        x = a.t("x")
        axes, keep = _reduce_axes(a, x.dim()), a.v("keep_dims", False)
        return x if not axes else fn(x, axes, keep)

    return run


def _prod(x, axes, keep):
    for ax in reversed(axes):  # highest first, so lower axis numbers stay valid
        x = x.prod(dim=ax, keepdim=keep)
    return x


_REDUCTIONS = {
    "reduce_sum": lambda x, ax, k: x.sum(dim=ax, keepdim=k),
    "reduce_mean": lambda x, ax, k: (x if x.is_floating_point() else x.double()).mean(dim=ax, keepdim=k),
    "reduce_max": lambda x, ax, k: x.amax(dim=ax, keepdim=k),
    "reduce_min": lambda x, ax, k: x.amin(dim=ax, keepdim=k),
    "reduce_prod": _prod,
    "reduce_l1_norm": lambda x, ax, k: x.abs().sum(dim=ax, keepdim=k),
    "reduce_l2_norm": lambda x, ax, k: x.square().sum(dim=ax, keepdim=k).sqrt(),
    "reduce_sum_square": lambda x, ax, k: x.square().sum(dim=ax, keepdim=k),
    "reduce_log_sum": lambda x, ax, k: x.sum(dim=ax, keepdim=k).log(),
    "reduce_log_sum_exp": lambda x, ax, k: torch.logsumexp(x, dim=ax, keepdim=k),
}
for _name, _fn in _REDUCTIONS.items():
    KERNELS[_name] = _reducer(_fn)


@kernel("reduce_argmax")
def _reduce_argmax(a):
    return torch.argmax(a.t("x"), dim=a.v("axis", -1), keepdim=a.v("keep_dims", False))


@kernel("reduce_argmin")
def _reduce_argmin(a):
    return torch.argmin(a.t("x"), dim=a.v("axis", -1), keepdim=a.v("keep_dims", False))


# ---------------------------------------------------------------- shape and layout


@kernel("reshape")
def _reshape(a):
    x, shape = a.t("x"), list(a.v("shape"))
    if 0 in shape and len(shape) == x.dim():  # 0 copies the input dim
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@kernel("reshape_like")
def _reshape_like(a):
    shape = []
    for ref, begin, end, end_mask in zip(a.ts("ref_tensors"), a.v("begins"), a.v("ends"), a.v("end_masks")):
        shape += ref.shape[begin:] if end_mask else ref.shape[begin:end]
    return a.t("x").reshape(shape)


@kernel("flatten2d")
def _flatten2d(a):
    x = a.t("x")
    axis = _axis(a.v("axis", 1), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), -1)


@kernel("transpose")
def _transpose(a):
    return a.t("x").permute(a.v("perm"))


@kernel("expand_dims")
def _expand_dims(a):
    x, axes = a.t("x"), a.v("axes")
    out_rank = x.dim() + len(axes)
    for ax in sorted(_axis(ax, out_rank) for ax in axes):
        x = x.unsqueeze(ax)
    return x


@kernel("squeeze")
def _squeeze(a):
    x, axes = a.t("x"), a.v("axes")
    # torch.squeeze keeps non-1 dims among ``axes``, which is also MIL's (PyTorch) rule.
    return x.squeeze() if axes is None else x.squeeze(tuple(axes))


@kernel("shape")
def _shape(a):
    return torch.tensor(a.t("x").shape, dtype=torch.int32)


@kernel("concat")
def _concat(a):
    values, axis = a.ts("values"), a.v("axis")
    if values[0].dim() == 0:
        return torch.stack(values)
    if a.v("interleave", False):
        axis = _axis(axis, values[0].dim())
        return torch.stack(values, dim=axis + 1).flatten(axis, axis + 1)
    return torch.cat(values, dim=axis)


@kernel("split")
def _split(a):
    x, axis = a.t("x"), a.v("axis")
    sizes = a.v("split_sizes")
    if sizes is None:
        sizes = x.shape[axis] // a.v("num_splits")
    return tuple(torch.split(x, sizes, dim=axis))


@kernel("stack")
def _stack(a):
    return torch.stack(a.ts("values"), dim=a.v("axis"))


@kernel("tile")
def _tile(a):
    return a.t("x").repeat(a.v("reps"))


@kernel("reverse")
def _reverse(a):
    x, axes = a.t("x"), a.v("axes")
    return torch.flip(x, dims=list(range(x.dim())) if axes is None else axes)


@kernel("reverse_sequence")
def _reverse_sequence(a):
    x, lengths = a.t("x"), a.t("lengths").long()
    seq, batch = _axis(a.v("seq_axis", 0), x.dim()), _axis(a.v("batch_axis", 0), x.dim())
    pos = torch.arange(x.shape[seq])
    view = [1] * x.dim()
    view[seq], view[batch] = -1, 1
    pos = pos.reshape(view)
    view[seq], view[batch] = 1, -1
    lengths = lengths.reshape(view)
    index = torch.where(pos < lengths, lengths - 1 - pos, pos).expand(x.shape)
    return torch.gather(x, seq, index)


@kernel("sliding_windows")
def _sliding_windows(a):
    x = a.t("x")
    axis = _axis(a.v("axis"), x.dim())
    return x.unfold(axis, a.v("size"), a.v("stride", 1)).movedim(-1, axis + 1)


@kernel("pixel_shuffle")
def _pixel_shuffle(a):
    return F.pixel_shuffle(a.t("x"), a.v("upscale_factor"))


@kernel("pixel_unshuffle")
def _pixel_unshuffle(a):
    return F.pixel_unshuffle(a.t("x"), a.v("downscale_factor"))


@kernel("depth_to_space")
def _depth_to_space(a):
    # TensorFlow (DCR) channel order, unlike pixel_shuffle.
    x, bs = a.t("x"), a.v("block_size")
    n, c, h, w = x.shape
    y = x.reshape(n, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (bs * bs), h * bs, w * bs)


@kernel("space_to_depth")
def _space_to_depth(a):
    x, bs = a.t("x"), a.v("block_size")
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * bs * bs, h // bs, w // bs)


# ---------------------------------------------------------------- slicing


def _slice_plan(shape, a):
    """Per-dim int (squeezed) or Python slice, following MIL's mask rules."""
    rank = len(shape)
    begin, end = a.v("begin"), a.v("end")
    stride = a.v("stride") or [1] * rank
    begin_mask = a.v("begin_mask") or [False] * rank
    end_mask = a.v("end_mask") or [False] * rank
    squeeze_mask = a.v("squeeze_mask") or [False] * rank
    plan = []
    for d in range(rank):
        b = None if begin_mask[d] else begin[d]
        if squeeze_mask[d]:
            plan.append(0 if b is None else b)
        else:
            plan.append(slice(b, None if end_mask[d] else end[d], stride[d]))
    return plan


def _index_tensors(shape, plan):
    """Broadcastable index tensors for a plan; handles negative strides (torch slices can't)."""
    kept = [d for d, p in enumerate(plan) if isinstance(p, slice)]
    out = []
    for d, p in enumerate(plan):
        idx = [p % shape[d]] if not isinstance(p, slice) else list(range(*p.indices(shape[d])))
        view = [1] * len(kept)
        if isinstance(p, slice):
            view[kept.index(d)] = -1
        out.append(torch.tensor(idx, dtype=torch.long).reshape(view))
    return tuple(out)


def _has_negative_stride(plan):
    return any(isinstance(p, slice) and p.step < 0 for p in plan)


@kernel("slice_by_index")
def _slice_by_index(a):
    x = a.t("x")
    plan = _slice_plan(x.shape, a)
    if _has_negative_stride(plan):
        return x[_index_tensors(x.shape, plan)]
    return x[tuple(plan)]


@kernel("slice_update")
def _slice_update(a):
    x, update = a.t("x"), a.t("update")
    plan = _slice_plan(x.shape, a)
    index = _index_tensors(x.shape, plan) if _has_negative_stride(plan) else tuple(plan)
    out = x.clone()
    out[index] = update.reshape(out[index].shape).to(out.dtype)
    return out


@kernel("slice_by_size")
def _slice_by_size(a):
    x = a.t("x")
    index = []
    for d, (b, size) in enumerate(zip(a.v("begin"), a.v("size"))):
        b = b + x.shape[d] if b < 0 else b
        index.append(slice(b, None if size == -1 else b + size))
    return x[tuple(index)]


@kernel("crop")
def _crop(a):
    x = a.t("x")
    (top, bottom), (left, right) = a.v("crop_height"), a.v("crop_width")
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


def _torch_pad(pairs):
    """[(before, after) per dim, first dim first] -> F.pad's last-dim-first flat list."""
    return [p for pair in reversed(pairs) for p in pair]


@kernel("pad")
def _pad(a):
    x, pad, mode = a.t("x"), a.v("pad"), a.v("mode", "constant")
    pairs = list(zip(pad[0::2], pad[1::2]))
    if mode == "constant":
        return F.pad(x, _torch_pad(pairs), value=a.v("constant_val", 0.0))
    # reflect / replicate via index maps, so any rank and any number of dims work.
    np_mode = {"reflect": "reflect", "replicate": "edge"}[mode]
    for d, pair in zip(range(x.dim() - len(pairs), x.dim()), pairs):
        if any(pair):
            idx = np.pad(np.arange(x.shape[d]), pair, mode=np_mode)
            x = x.index_select(d, torch.from_numpy(idx))
    return x


# ---------------------------------------------------------------- gather / scatter


def _wrap(idx: torch.Tensor, size) -> torch.Tensor:
    """Negative indices count from the end (iOS15/16 rule; undefined from iOS17 on)."""
    idx = idx.long()
    return torch.where(idx < 0, idx + size, idx)


@kernel("gather")
def _gather(a):
    x = a.t("x")
    axis = _axis(a.v("axis", 0), x.dim())
    batch_dims = a.v("batch_dims", 0)
    idx = _wrap(a.t("indices"), x.shape[axis])
    pre, post = list(x.shape[batch_dims:axis]), list(x.shape[axis + 1 :])
    if batch_dims == 0:
        return x.index_select(axis, idx.reshape(-1)).reshape(pre + list(idx.shape) + post)
    batch = list(x.shape[:batch_dims])
    nb = math.prod(batch)
    # Gather per batch row with advanced indexing, then restore D[:axis] + N + D[axis+1:].
    rows = x.reshape([nb] + list(x.shape[batch_dims:])).movedim(axis - batch_dims + 1, 1)
    picked = rows[torch.arange(nb)[:, None], idx.reshape(nb, -1)]
    n_shape = list(idx.shape[batch_dims:])
    picked = picked.reshape([nb] + n_shape + pre + post)
    n_dims = list(range(1, 1 + len(n_shape)))
    pre_dims = list(range(1 + len(n_shape), 1 + len(n_shape) + len(pre)))
    rest = list(range(1 + len(n_shape) + len(pre), picked.dim()))
    return picked.permute([0] + pre_dims + n_dims + rest).reshape(batch + pre + n_shape + post)


@kernel("gather_along_axis")
def _gather_along_axis(a):
    x = a.t("x")
    axis = _axis(a.v("axis", 0), x.dim())
    return torch.gather(x, axis, _wrap(a.t("indices"), x.shape[axis]))


def _nd_rows(x_shape, indices, batch_dims):
    """gather_nd/scatter_nd index tensor -> tuple of per-dim index tensors over x."""
    depth = indices.shape[-1]
    nb = math.prod(x_shape[:batch_dims])
    idx = indices.long().reshape(nb, -1, depth)
    dims = torch.tensor(x_shape[batch_dims : batch_dims + depth])
    idx = torch.where(idx < 0, idx + dims, idx)
    batch = torch.arange(nb)[:, None].expand(nb, idx.shape[1])
    return (batch,) + tuple(idx[..., k] for k in range(depth))


@kernel("gather_nd")
def _gather_nd(a):
    x, indices = a.t("x"), a.t("indices")
    batch_dims, depth = a.v("batch_dims", 0), indices.shape[-1]
    rows = x.reshape([math.prod(x.shape[:batch_dims])] + list(x.shape[batch_dims:]))
    picked = rows[_nd_rows(x.shape, indices, batch_dims)]
    return picked.reshape(list(indices.shape[:-1]) + list(x.shape[batch_dims + depth :]))


def _scatter_rows(data, idx, updates, mode):
    """Scatter ``updates`` rows into ``data`` rows ``idx`` (dim 0) with a MIL mode."""
    out = data.clone()
    if mode == "update":
        out[idx] = updates
        return out
    if mode in ("add", "sub"):
        return out.index_add_(0, idx, updates if mode == "add" else -updates)
    if mode == "mul":
        return out.index_reduce_(0, idx, updates, "prod")
    if mode == "div":
        return out / torch.ones_like(out).index_reduce_(0, idx, updates, "prod")
    if mode in ("max", "min"):
        return out.index_reduce_(0, idx, updates, "a" + mode)
    raise NotImplementedError(f"scatter mode {mode}")


@kernel("scatter")
def _scatter(a):
    data, indices, updates = a.t("data"), a.t("indices"), a.t("updates")
    axis = _axis(a.v("axis", 0), data.dim())
    idx = _wrap(indices, data.shape[axis]).reshape(-1)
    shape = list(data.shape)
    updates = updates.reshape(shape[:axis] + [idx.numel()] + shape[axis + 1 :]).movedim(axis, 0)
    out = _scatter_rows(data.movedim(axis, 0), idx, updates, a.v("mode", "add"))
    return out.movedim(0, axis)


@kernel("scatter_along_axis")
def _scatter_along_axis(a):
    data, updates, mode = a.t("data"), a.t("updates"), a.v("mode", "add")
    axis = _axis(a.v("axis", 0), data.dim())
    idx = _wrap(a.t("indices"), data.shape[axis])
    if mode == "update":
        return data.scatter(axis, idx, updates)
    if mode in ("add", "sub"):
        return data.scatter_add(axis, idx, updates if mode == "add" else -updates)
    if mode == "div":
        return data / torch.ones_like(data).scatter_reduce(axis, idx, updates, "prod")
    reduce = {"mul": "prod", "max": "amax", "min": "amin"}.get(mode)
    if reduce is None:
        raise NotImplementedError(f"scatter_along_axis mode {mode}")
    return data.scatter_reduce(axis, idx, updates, reduce)


@kernel("scatter_nd")
def _scatter_nd(a):
    data, indices, updates = a.t("data"), a.t("indices"), a.t("updates")
    depth = indices.shape[-1]
    lead, rest = list(data.shape[:depth]), list(data.shape[depth:])
    # Flatten the indexed dims into one row index, then scatter rows.
    _, *per_dim = _nd_rows(data.shape, indices, 0)
    strides = [math.prod(lead[k + 1 :]) for k in range(depth)]
    row = sum(i * s for i, s in zip(per_dim, strides)).reshape(-1)
    flat = data.reshape([math.prod(lead)] + rest)
    out = _scatter_rows(flat, row, updates.reshape([-1] + rest), a.v("mode", "add"))
    return out.reshape(data.shape)


# ---------------------------------------------------------------- tensor creation and misc


@kernel("fill")
def _fill(a):
    return torch.full(a.v("shape"), a.v("value", 0.0))


@kernel("fill_like")
def _fill_like(a):
    return torch.full(a.t("ref_tensor").shape, a.v("value", 0.0))


@kernel("range_1d")
def _range_1d(a):
    return torch.arange(a.v("start"), a.v("end"), a.v("step"))


@kernel("one_hot")
def _one_hot(a):
    indices = a.t("indices").long()
    depth = a.v("one_hot_vector_size")
    hot = indices.unsqueeze(-1) == torch.arange(depth)  # out-of-range rows stay all "off"
    out = torch.where(hot, torch.tensor(a.v("on_value", 1)), torch.tensor(a.v("off_value", 0)))
    return out.movedim(-1, _axis(a.v("axis", -1), indices.dim() + 1))


@kernel("band_part")
def _band_part(a):
    x, lower, upper = a.t("x"), a.v("lower", -1), a.v("upper", -1)
    m = torch.arange(x.shape[-2])[:, None]
    n = torch.arange(x.shape[-1])[None, :]
    keep = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype))


@kernel("cumsum")
def _cumsum(a):
    x = a.t("x")
    axis = _axis(a.v("axis", 0), x.dim())
    if a.v("reverse", False):
        x = x.flip(axis)
    y = x.cumsum(axis)
    if a.v("exclusive", False):  # y[i] = sum(x[:i])
        y = y - x
    return y.flip(axis) if a.v("reverse", False) else y


@kernel("topk")
def _topk(a):
    x = a.t("x")
    values, indices = torch.topk(
        x, a.v("k", 1), dim=a.v("axis", -1), largest=not a.v("ascending", False), sorted=a.v("sort", True)
    )
    return (values, indices) if a.n_outputs == 2 else values


@kernel("argsort")
def _argsort(a):
    return torch.argsort(a.t("x"), dim=a.v("axis", -1), descending=not a.v("ascending", False), stable=True)


@kernel("non_zero")
def _non_zero(a):
    return torch.nonzero(a.t("x"))


def _quant_param(p: torch.Tensor, x: torch.Tensor, axis) -> torch.Tensor:
    if p.dim() == 0:
        return p
    view = [1] * x.dim()
    view[_axis(axis, x.dim())] = -1
    return p.reshape(view)


@kernel("quantize")
def _quantize(a):
    x = a.t("input")
    info = torch.iinfo({"int8": torch.int8, "uint8": torch.uint8}[a.v("output_dtype")])
    q = torch.round(x / _quant_param(a.t("scale"), x, a.v("axis")))
    if a.has("zero_point"):
        q = q + _quant_param(a.t("zero_point"), x, a.v("axis"))
    return q.clamp(info.min, info.max)


@kernel("dequantize")
def _dequantize(a):
    x = a.t("input").float()
    if a.has("zero_point"):
        x = x - _quant_param(a.t("zero_point"), x, a.v("axis"))
    return x * _quant_param(a.t("scale"), x, a.v("axis"))


# ---------------------------------------------------------------- states


@kernel("read_state")
def _read_state(a):
    return a.states[a.names["input"]]


@kernel("coreml_update_state")
def _update_state(a):
    # The state holds the value itself: only a slice_update that is its input's last reader
    # writes in place (executor._sole_reader), never into a value something else still reads.
    value = a.t("value")
    a.states[a.names["state"]] = value
    return value


# ---------------------------------------------------------------- convolution and pooling


def _spatial_pads(pad_type, sizes, kernel_sizes, strides, dilations, custom):
    """(before, after) per spatial dim; "same" puts the odd extra pixel after, "same_lower" before."""
    n = len(sizes)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        return list(zip(custom[0::2], custom[1::2]))
    if pad_type not in ("same", "same_lower"):
        raise NotImplementedError(f"pad_type {pad_type}")
    pads = []
    for size, k, s, d in zip(sizes, kernel_sizes, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        pads.append((small, big) if pad_type == "same" else (big, small))
    return pads


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _conv_params(a, n):
    return a.v("strides") or [1] * n, a.v("dilations") or [1] * n, a.v("groups", 1)


@kernel("conv")
def _conv(a):
    x, w = a.t("x"), a.t("weight")
    n = x.dim() - 2
    strides, dilations, groups = _conv_params(a, n)
    pads = _spatial_pads(a.v("pad_type", "valid"), x.shape[2:], w.shape[2:], strides, dilations, a.v("pad"))
    if any(lo != hi for lo, hi in pads):  # torch convs only pad symmetrically
        x, pads = F.pad(x, _torch_pad(pads)), [(0, 0)] * n
    return _CONV[n](x, w, a.t("bias"), strides, [lo for lo, _ in pads], dilations, groups)


@kernel("conv_transpose")
def _conv_transpose(a):
    x, w, b = a.t("x"), a.t("weight"), a.t("bias")
    n = x.dim() - 2
    strides, dilations, groups = _conv_params(a, n)
    full = _CONV_T[n](x, w, None, strides, 0, 0, groups, dilations)
    pad_type, custom = a.v("pad_type", "valid"), a.v("pad") or [0] * 2 * n
    out_shape = a.v("output_shape")
    # Crop the un-padded result to the requested size (zero-fill if it is too short).
    index = [slice(None), slice(None)]
    for d in range(n):
        size = full.shape[2 + d]
        if pad_type == "same":
            length = x.shape[2 + d] * strides[d]
            begin = max(0, size - length) // 2
        else:
            begin = custom[2 * d] if pad_type == "custom" else 0
            length = size - begin - (custom[2 * d + 1] if pad_type == "custom" else 0)
        if out_shape is not None:
            length = out_shape[2 + d]
        if begin + length > size:
            full = F.pad(full, [0, 0] * (n - 1 - d) + [0, begin + length - size])
        index.append(slice(begin, begin + length))
    y = full[tuple(index)]
    return y if b is None else y + _per_channel(b, y.dim())


def _window_sum(x, kernel_sizes, strides, ceil_mode):
    """Sum over pooling windows of an already padded input."""
    if x.dim() == 3:  # avg_pool1d has no divisor_override
        return _window_sum(x.unsqueeze(2), [1] + kernel_sizes, [1] + strides, ceil_mode).squeeze(2)
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    return pool(x, kernel_sizes, strides, 0, ceil_mode, True, divisor_override=1)


def _pool(a, kind):
    x = a.t("x")
    n = x.dim() - 2
    k = a.v("kernel_sizes")
    s = a.v("strides") or [1] * n
    ceil_mode = a.v("ceil_mode", False)
    pads = _spatial_pads(a.v("pad_type", "valid"), x.shape[2:], k, s, [1] * n, a.v("pad"))
    symmetric = all(lo == hi and lo <= kk // 2 for (lo, hi), kk in zip(pads, k))
    padding = [lo for lo, _ in pads]
    if kind == "max":
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
        if not symmetric:
            x, padding = F.pad(x, _torch_pad(pads), value=-math.inf), 0
        return pool(x, k, s, padding, ceil_mode=ceil_mode)
    if kind == "avg" and symmetric:
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
        return pool(x, k, s, padding, ceil_mode, not a.v("exclude_padding_from_average", False))
    # Asymmetric padding (or l2_pool): explicit zero padding and window sums.
    flat = _torch_pad(pads)
    if kind == "l2":
        return _window_sum(F.pad(x.square(), flat), k, s, ceil_mode).sqrt()
    sums = _window_sum(F.pad(x, flat), k, s, ceil_mode)
    # Divisor: how many cells of each window count (padding only if not excluded).
    pad_value = 0.0 if a.v("exclude_padding_from_average", False) else 1.0
    counts = _window_sum(F.pad(torch.ones_like(x[:1, :1]), flat, value=pad_value), k, s, ceil_mode)
    return sums / counts


KERNELS["max_pool"] = lambda a: _pool(a, "max")
KERNELS["avg_pool"] = lambda a: _pool(a, "avg")
KERNELS["l2_pool"] = lambda a: _pool(a, "l2")


# ---------------------------------------------------------------- resampling


def _grid(mode: str, n_in: int, n_out: int) -> np.ndarray:
    """Source coordinates of the output samples, per MIL's resize_bilinear sampling modes."""
    i = np.arange(n_out, dtype=np.float64)
    if mode == "ALIGN_CORNERS" and n_out == 1:
        g = np.full(1, (n_in - 1) / 2)
    elif mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        g = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    elif mode == "DEFAULT":
        g = i * ((n_in - n_in / n_out) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":  # half-pixel centres
        g = (i + 0.5) * (n_in / n_out) - 0.5
    elif mode == "ASYMMETRIC":  # upsample_bilinear with neither align_corners nor half pixels
        g = i * (n_in / n_out)
    else:
        raise NotImplementedError(f"sampling mode {mode}")
    return np.clip(g, 0, n_in - 1)


def _lerp_axis(x: torch.Tensor, axis: int, grid: np.ndarray) -> torch.Tensor:
    lo = np.floor(grid).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    view = [1] * x.dim()
    view[axis] = -1
    w = torch.from_numpy((grid - lo).astype(np.float32)).reshape(view)
    x0 = x.index_select(axis, torch.from_numpy(lo))
    x1 = x.index_select(axis, torch.from_numpy(hi))
    return x0 * (1 - w) + x1 * w


def _bilinear(x, out_h, out_w, mode):
    x = _lerp_axis(x, x.dim() - 2, _grid(mode, x.shape[-2], out_h))
    return _lerp_axis(x, x.dim() - 1, _grid(mode, x.shape[-1], out_w))


def _nearest(x, out_h, out_w, step_h, step_w):
    """Output pixel i reads input floor(i * step), as torch's "nearest" does."""
    rows = np.minimum(np.floor(np.arange(out_h) * step_h), x.shape[-2] - 1).astype(np.int64)
    cols = np.minimum(np.floor(np.arange(out_w) * step_w), x.shape[-1] - 1).astype(np.int64)
    x = x.index_select(x.dim() - 2, torch.from_numpy(rows))
    return x.index_select(x.dim() - 1, torch.from_numpy(cols))


# MIL resample's padding modes -> torch grid_sample's (coremltools maps torch's reflection without
# align_corners to symmetric, and with it to reflection: frontend/torch/ops.py, grid_sampler).
_RESAMPLE_PADDING = {"constant": "zeros", "border": "border", "reflection": "reflection", "symmetric": "reflection"}


@kernel("resample")
def _resample(a):
    """Sampling x at given coordinates (torch's grid_sample, which coremltools converts to it)."""
    x, coordinates = a.t("x"), a.t("coordinates")
    align = bool(a.v("align_corners", False))
    mode = a.v("coordinates_mode", "normalized_minus_one_to_one")
    if mode == "normalized_zero_to_one":
        coordinates = coordinates * 2 - 1
    elif mode == "unnormalized":
        size = torch.tensor([x.shape[-1], x.shape[-2]], dtype=coordinates.dtype)
        coordinates = 2 * coordinates / (size - 1) - 1 if align else (2 * coordinates + 1) / size - 1
    elif mode != "normalized_minus_one_to_one":
        raise NotImplementedError(f"resample coordinates_mode {mode}")
    padding = a.v("padding_mode", "constant")
    if padding == "constant" and float(a.v("padding_value", 0.0)) != 0.0:
        raise NotImplementedError("resample with a non-zero padding value")
    return torch.nn.functional.grid_sample(x, coordinates, mode=a.v("sampling_mode", "bilinear"),
                                           padding_mode=_RESAMPLE_PADDING[padding], align_corners=align)


@kernel("upsample_bilinear")
def _upsample_bilinear(a):
    x = a.t("x")
    out_h = math.floor(x.shape[-2] * a.v("scale_factor_height", 1))
    out_w = math.floor(x.shape[-1] * a.v("scale_factor_width", 1))
    align = a.v("align_corners", True)
    half_pixel = a.v("half_pixel_centers", not align)
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half_pixel else "ASYMMETRIC")
    return _bilinear(x, out_h, out_w, mode)


@kernel("resize_bilinear")
def _resize_bilinear(a):
    height, width = a.v("target_size_height", 1), a.v("target_size_width", 1)
    return _bilinear(a.t("x"), height, width, a.v("sampling_mode", "DEFAULT"))


@kernel("upsample_nearest_neighbor")
def _upsample_nearest(a):
    x = a.t("x")
    sh, sw = a.v("scale_factor_height", 1), a.v("scale_factor_width", 1)
    return _nearest(x, math.floor(x.shape[-2] * sh), math.floor(x.shape[-1] * sw), 1 / sh, 1 / sw)


@kernel("resize_nearest_neighbor")
def _resize_nearest(a):
    x = a.t("x")
    out_h, out_w = a.v("target_size_height"), a.v("target_size_width")
    return _nearest(x, out_h, out_w, x.shape[-2] / out_h, x.shape[-1] / out_w)


# ---------------------------------------------------------------- compressed weights
# constexpr_* ops rebuild a constant weight from its compressed form (coremltools.optimize:
# linear quantisation, palettisation, pruning, and their joint forms). The executor runs
# them once, when it loads a package, and keeps their outputs as constants; semantics as in
# coremltools' mil/ops/defs/iOS16/constexpr_ops.py and iOS18/compression.py. Sub-byte
# inputs (int4, uint1..uint6) arrive unpacked, one element per byte, as the milproto loader
# gives them; iOS16's packed `indices`/`mask` bytes are unpacked here.

CONSTEXPR_OPS = frozenset(
    """constexpr_affine_dequantize constexpr_cast constexpr_lut_to_dense
    constexpr_sparse_to_dense constexpr_blockwise_shift_scale constexpr_lut_to_sparse
    constexpr_sparse_blockwise_shift_scale""".split()
)


def _unpack_bits(packed: torch.Tensor, nbits: int, count: int) -> torch.Tensor:
    """`count` unsigned `nbits`-bit elements packed one byte at a time, least significant
    bit first (an element may straddle two bytes)."""
    shifts = torch.arange(8, dtype=torch.uint8)
    bits = ((packed.to(torch.uint8).reshape(-1, 1) >> shifts) & 1).reshape(-1)[: nbits * count]
    weights = torch.tensor([1 << i for i in range(nbits)], dtype=torch.int64)
    return (bits.reshape(count, nbits).to(torch.int64) * weights).sum(-1)


def _along_axis(p: torch.Tensor, rank: int, axis: int) -> torch.Tensor:
    """A scalar or a vector along `axis`, shaped to broadcast against a rank-`rank` tensor."""
    if p.dim() in (0, rank):
        return p
    shape = [1] * rank
    shape[_axis(axis, rank)] = -1
    return p.reshape(shape)


def _blocked(x: torch.Tensor, blocks: list[int]) -> torch.Tensor:
    """[n0*b0, n1*b1, ...] viewed as [n0, b0, n1, b1, ...]: one (n, b) pair per axis, so a
    per-block parameter [n0, 1, n1, 1, ...] broadcasts against it without being repeated."""
    return x.reshape([d for size, b in zip(x.shape, blocks) for d in (size // b, b)])


def _block_sizes(data_shape, param_shape) -> list[int]:
    if len(data_shape) != len(param_shape) or any(p == 0 or d % p for d, p in zip(data_shape, param_shape)):
        raise NotImplementedError(f"parameter shape {tuple(param_shape)} does not tile data shape {tuple(data_shape)}")
    return [d // p for d, p in zip(data_shape, param_shape)]


def _shift_scale(data: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    """output[i] = scale[i // block] * (data[i] - offset[i // block]), block = data.shape / scale.shape."""
    blocks = _block_sizes(data.shape, scale.shape)
    x = _blocked(data.float(), blocks)
    one = [1] * len(blocks)
    if offset is not None:
        x = x - _blocked(offset.float(), one)
    return (x * _blocked(scale.float(), one)).reshape(data.shape)


def _lut_lookup(indices: torch.Tensor, lut: torch.Tensor, vector_axis: int | None) -> torch.Tensor:
    """iOS18 palettisation: `lut` [g0, g1, ..., PALETTES, VECTOR] holds one table per block of
    `indices` (block = indices.shape / lut.shape[:-2]); each index picks a VECTOR-long entry,
    laid along `vector_axis` (so that axis of the output is VECTOR times longer)."""
    rank = indices.dim()
    palettes, vector = lut.shape[-2], lut.shape[-1]
    blocks = _block_sizes(indices.shape, lut.shape[:-2])
    index = _blocked(indices.long(), blocks)  # [n0, b0, n1, b1, ...]
    table = lut.float().reshape([d for g in lut.shape[:-2] for d in (g, 1)] + [palettes, vector])  # [n0, 1, n1, 1, ..., P, V]
    # Gather over the palette axis from the broadcast tables (an expanded view: no copy).
    table = table.expand(*index.shape, palettes, vector)
    picked = torch.gather(table, -2, index[..., None, None].expand(*index.shape, 1, vector))
    out = picked.reshape(*indices.shape, vector)
    if vector == 1:
        return out[..., 0]
    axis = _axis(vector_axis, rank)
    out = out.movedim(-1, axis + 1)  # each entry's VECTOR values right after its position
    shape = list(indices.shape)
    shape[axis] *= vector
    return out.reshape(shape)


def _bits_to_mask(a, shape) -> torch.Tensor:
    return _unpack_bits(a.t("mask"), 1, math.prod(shape)).reshape(shape).bool()


def _scatter_nonzero(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(mask.shape, dtype=values.dtype)
    out[mask] = values.reshape(-1)
    return out


@kernel("constexpr_affine_dequantize")
def _constexpr_affine_dequantize(a):
    q = a.t("quantized_data")
    rank, axis = q.dim(), a.v("axis")
    zero_point = _along_axis(a.t("zero_point").float(), rank, axis)
    return (q.float() - zero_point) * _along_axis(a.t("scale").float(), rank, axis)


@kernel("constexpr_cast")
def _constexpr_cast(a):
    return a.t("source_val").float()


@kernel("constexpr_lut_to_dense")
def _constexpr_lut_to_dense(a):
    lut = a.t("lut")
    if a.has("shape"):  # iOS16: packed indices into one flat table
        shape = [int(s) for s in a.t("shape").tolist()]
        nbits = int(math.log2(lut.shape[0]))
        indices = _unpack_bits(a.t("indices"), nbits, math.prod(shape))
        return lut.float()[indices].reshape(shape)
    return _lut_lookup(a.t("indices"), lut, a.v("vector_axis"))


@kernel("constexpr_sparse_to_dense")
def _constexpr_sparse_to_dense(a):
    if a.has("shape"):  # iOS16: the mask packed as bits
        mask = _bits_to_mask(a, [int(s) for s in a.t("shape").tolist()])
    else:  # iOS18: a uint1 mask of the output's shape
        mask = a.t("mask") != 0
    return _scatter_nonzero(a.t("nonzero_data"), mask)


@kernel("constexpr_blockwise_shift_scale")
def _constexpr_blockwise_shift_scale(a):
    return _shift_scale(a.t("data"), a.t("scale"), a.t("offset"))


@kernel("constexpr_lut_to_sparse")
def _constexpr_lut_to_sparse(a):
    mask = a.t("indices_mask") != 0
    indices = _scatter_nonzero(a.t("indices_nonzero_data"), mask)
    vector_axis = a.v("vector_axis")
    dense = _lut_lookup(indices, a.t("lut"), vector_axis)
    if a.t("lut").shape[-1] > 1:
        mask = mask.repeat_interleave(a.t("lut").shape[-1], _axis(vector_axis, mask.dim()))
    return mask.to(torch.uint8), dense[mask]


@kernel("constexpr_sparse_blockwise_shift_scale")
def _constexpr_sparse_blockwise_shift_scale(a):
    mask = a.t("data_mask") != 0
    dense = _shift_scale(_scatter_nonzero(a.t("nonzero_data"), mask), a.t("scale"), a.t("offset"))
    return mask.to(torch.uint8), dense[mask]
