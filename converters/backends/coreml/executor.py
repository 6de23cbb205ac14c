"""Reference executor: run a saved Core ML ML Program (.mlpackage) on Linux, op by op.

Core ML predicts only on macOS, so a Linux worker cannot check a converted package with
``MLModel.predict``. This module rebuilds the package's MIL program with coremltools'
own milproto loader and runs the ops of its main function in order with torch kernels
(``ops.py``), to compare against the source PyTorch model.

Numeric modes:

* ``"fp32"``: every floating tensor is float32, fp16 constants are widened and casts
  to fp16 are no-ops; this checks the graph's semantics.
* ``"fp16"``: device emulation. Each op computes in float32 and, where the program
  declares an fp16 result, rounds it to float16 (so overflow gives inf/NaN, as on the
  GPU and Neural Engine). Program casts are honoured; ops the program declares fp32
  (fp32 programs, or fp32 islands of mixed-precision ones) stay fp32, as Core ML runs
  those in fp32 on the CPU/GPU. A fused op (iOS 18's scaled_dot_product_attention) also
  rounds each of its stages, as the separate ops it replaces would be rounded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Callable

import coremltools as ct
import numpy as np
import torch
from coremltools.converters.mil.frontend.milproto.load import load as _load_milproto
from coremltools.converters.mil.mil import types
from coremltools.converters.mil.mil.var import ListVar
from coremltools.optimize.coreml._quantization_passes import WeightDecompressor

from ...errors import UnsupportedOpError
from .ops import CONSTEXPR_OPS, KERNELS, VALUE_PRESERVING, Args, _has_negative_stride, _index_tensors, _slice_plan

MODES = ("fp32", "fp16")

# Torch dtype each MIL dtype is held in while running; floats are always float32
# (exact for fp16 values, and torch's fast CPU path).
_TORCH_DTYPES = {
    types.fp16: torch.float32,
    types.fp32: torch.float32,
    types.fp64: torch.float32,
    types.bool: torch.bool,
    types.int8: torch.int8,
    types.uint8: torch.uint8,
    # Sub-byte types of compressed weights: the milproto loader unpacks them, one per byte.
    types.int4: torch.int8,
    types.uint1: torch.uint8,
    types.uint2: torch.uint8,
    types.uint3: torch.uint8,
    types.uint4: torch.uint8,
    types.uint6: torch.uint8,
    types.int16: torch.int16,
    types.uint16: torch.int32,
    types.int32: torch.int32,
    types.uint32: torch.int64,
    types.int64: torch.int64,
}

# Constants up to this many elements also get a Python value, for kernel parameters.
_SMALL_CONST = 4096
# Compressed weights decompressed (float32) past this size are decompressed per call (lazy_weights).
LAZY_WEIGHT_BYTES = 4 << 30


@dataclass(frozen=True)
class _Tensor:
    """What the executor keeps of a MIL var (not the var: that would pin the program)."""

    name: str
    dtype: torch.dtype
    is_fp16: bool  # declared fp16: rounded in fp16 mode
    shape: tuple  # declared shape, may hold symbols
    static: tuple | None  # the shape if fully known, else None

    @classmethod
    def of(cls, var) -> _Tensor:
        shape = tuple(var.shape)
        static = shape if all(isinstance(d, (int, np.integer)) for d in shape) else None
        return cls(var.name, _torch_dtype(var.dtype), var.dtype == types.fp16, shape, static)

    @property
    def np_dtype(self) -> np.dtype:
        return torch.empty((), dtype=self.dtype).numpy().dtype


@dataclass(frozen=True)
class _Step:
    op_type: str
    op_name: str
    kernel: Callable[[Args], Any]
    names: dict  # input name -> var name or tuple of var names
    consts: dict  # input name -> Python value, for small constant inputs
    outputs: tuple[_Tensor, ...]
    rounds: bool  # False for ops that only move fp16 values around
    release: tuple[str, ...] = ()  # vars nobody reads after this step
    weight: bool = False  # decompresses a weight: an fp16 constant in both modes, as at load


def _torch_dtype(dtype) -> torch.dtype:
    if dtype not in _TORCH_DTYPES:
        raise NotImplementedError(f"dtype {types.builtin_to_string(dtype)}")
    return _TORCH_DTYPES[dtype]


def _py(val):
    if isinstance(val, np.ndarray):
        return val.tolist()
    if isinstance(val, np.generic):
        return val.item()
    return val


def _read_vars(step: _Step):
    for n in step.names.values():
        yield from n if isinstance(n, tuple) else (n,)


def _is_const(var) -> bool:
    # Consts, and ops coremltools already folded while loading (their .val is known).
    return var.val is not None


class ReferenceExecutor:
    """Runs a saved .mlpackage with torch on Linux.

    >>> ex = ReferenceExecutor("model.mlpackage")
    >>> out = ex.predict({"input_ids": ids}, mode="fp16")
    """

    def __init__(self, package_path: str | os.PathLike, lazy_weights: bool | None = None, function: str | None = None):
        """`lazy_weights`: decompress each compressed weight when a call first reads it and let
        it go after its last reader, instead of all at load (a 7 B int4 model's weights are
        27 GB decompressed); None: when they pass LAZY_WEIGHT_BYTES."""
        package_path = os.fspath(package_path)
        spec = ct.utils.load_spec(package_path)
        if spec.WhichOneof("Type") != "mlProgram":
            raise ValueError(f"{package_path} is not an ML Program (type {spec.WhichOneof('Type')})")
        prog = _load_milproto(
            model_spec=spec,
            specification_version=spec.specificationVersion,
            file_weights_dir=os.path.join(package_path, "Data", "com.apple.CoreML", "weights"),
        )
        # constexpr_* ops (quantised, palettised, sparse weights) run once, at load, with our
        # kernels (ops.py); any other constexpr op is materialised by coremltools.
        WeightDecompressor(op_selector=lambda op: op.op_type not in CONSTEXPR_OPS).apply(prog)
        func = prog.functions[function or spec.description.defaultFunctionName or "main"]  # `function`: one of a multifunction package's
        self.op_summary = _op_summary(func)
        # A classifier ends with `classify` (a label and a {label: probability} dict, not
        # tensors): it is applied after the tensor program, to the probabilities it links.
        self._classifier = _Classifier.of(func)

        missing = _unsupported_op_types(func)
        if missing:
            raise UnsupportedOpError(missing)
        inputs = [_Tensor.of(v) for v in func.inputs.values() if not types.is_state(v.sym_type)]
        states = [_Tensor.of(v) for v in func.inputs.values() if types.is_state(v.sym_type)]
        self._inputs = {t.name: t for t in inputs}
        self._states = {t.name: t for t in states}
        classified = self._classifier.output_names if self._classifier else ()
        self._outputs = [_Tensor.of(v) for v in func.outputs if v.name not in classified]
        self.input_names = [t.name for t in inputs]
        self.state_names = [t.name for t in states]
        self.output_names = [t.name for t in self._outputs] + list(classified)
        self._keep = {t.name for t in self._outputs} | ({self._classifier.probabilities} if self._classifier else set())
        decompress, steps = self._plan(func)
        if lazy_weights is None:
            lazy_weights = _float32_weight_bytes(func, decompress) > LAZY_WEIGHT_BYTES
        self.lazy_weights = lazy_weights
        if lazy_weights:
            decompress, steps = [], _each_before_its_first_reader([replace(d, weight=True) for d in decompress], steps)
        self._decompress, self._steps = decompress, self._with_releases(steps)
        self._consts = self._load_consts(func)
        # What a slice_update must never write into: a constant, or memory a constant owns
        # (a view of one). Known once, so a call checks only its own live results (_sole_reader).
        # A state read once and written back may be updated where it lies (the caller's array).
        reads = [step.names.get("input") for step in self._steps if step.op_type == "read_state"]
        written = {step.names.get("state") for step in self._steps if step.op_type == "coreml_update_state"}
        self._constant = _Constants(frozenset(self._consts),
                                    frozenset(t.untyped_storage().data_ptr() for t in self._consts.values()),
                                    frozenset(name for name in written if reads.count(name) == 1))

    # ------------------------------------------------------------------ building

    def _plan(self, func) -> tuple[list[_Step], list[_Step]]:
        """(weight decompression steps, run once at load; the program's steps, run per call)."""
        decompress, steps = [], []
        for op in func.operations:
            if all(_is_const(v) for v in op.outputs) or op.op_type == "classify":
                continue
            names, consts = {}, {}
            for name, inp in op.inputs.items():
                is_tuple = isinstance(inp, (list, tuple))
                vars_ = inp if is_tuple else (inp,)
                names[name] = tuple(v.name for v in vars_) if is_tuple else inp.name
                if all(_is_const(v) and np.size(v.val) <= _SMALL_CONST for v in vars_):
                    vals = [_py(v.val) for v in vars_]
                    consts[name] = vals if is_tuple else vals[0]
            try:
                outputs = tuple(_Tensor.of(v) for v in op.outputs)
            except NotImplementedError as e:
                raise UnsupportedOpError([op.op_type], f"op {op.name!r}: {e}") from e
            rounds = op.op_type not in VALUE_PRESERVING
            step = _Step(op.op_type, op.name, KERNELS[op.op_type], names, consts, outputs, rounds)
            (decompress if op.op_type in CONSTEXPR_OPS else steps).append(step)
        return decompress, steps

    def _with_releases(self, steps: list[_Step]) -> list[_Step]:
        """Drop each intermediate var after its last reader, to bound memory."""
        last_use = {var: i for i, step in enumerate(steps) for var in _read_vars(step)}
        releases = [[] for _ in steps]
        for var, i in last_use.items():
            if var not in self._keep:
                releases[i].append(var)
        return [replace(step, release=tuple(r)) for step, r in zip(steps, releases)]

    def _load_consts(self, func) -> dict[str, torch.Tensor]:
        used = {var for step in self._steps for var in _read_vars(step)} | self._keep
        compressed = {var for step in self._decompress for var in _read_vars(step)}
        consts = {}
        for op in func.operations:
            for var in op.outputs:
                # A classifier's class names are a list (named by a process-wide counter, so a second
                # load of the package may give them the name of another constant): never a tensor.
                if isinstance(var, ListVar) or not (var.name in used | compressed and _is_const(var)):
                    continue
                if var.dtype != types.str:
                    dtype = _Tensor.of(var).np_dtype
                    if self.lazy_weights and var.dtype == types.fp16 and np.size(var.val) > _SMALL_CONST:
                        dtype = np.float16  # a big package's float16 weights stay float16, widened per use (ops.Args)
                    # No copy where the loader's array already has the type (compressed data).
                    arr = np.asarray(var.val).astype(dtype, copy=False)
                    if not (arr.flags.c_contiguous and arr.flags.writeable):  # torch takes no negative strides
                        arr = arr.copy()
                    consts[var.name] = torch.from_numpy(arr)
        # Decompress the weights once: a decompressed weight is a constant of its declared
        # type (fp16 values stay fp16 values in both modes, like any fp16 constant).
        with torch.inference_mode():
            for step in self._decompress:
                _run(step, consts, {}, fp16=True)
        return {name: value for name, value in consts.items() if name in used}

    # ------------------------------------------------------------------ running

    def make_state(self) -> dict[str, np.ndarray]:
        """Zero-filled state arrays (float states as float32, which holds fp16 values exactly)."""
        return {name: np.zeros(t.shape, dtype=t.np_dtype) for name, t in self._states.items()}

    def predict(
        self,
        inputs: dict[str, np.ndarray],
        mode: str = "fp32",
        state: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the program. ``state`` arrays (see ``make_state``) are updated in place;
        a stateful program run without ``state`` starts from zeros and the state is dropped."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        fp16 = mode == "fp16"
        unknown, missing = set(inputs) - set(self._inputs), set(self._inputs) - set(inputs)
        if unknown or missing:
            raise ValueError(f"inputs: missing {sorted(missing)}, unexpected {sorted(unknown)}")
        state = self.make_state() if state is None else state
        if set(state) != set(self._states):
            raise ValueError(f"state must have exactly the keys {self.state_names}")

        with torch.inference_mode():
            env = dict(self._consts)
            env.update({name: _feed(t, inputs[name], fp16) for name, t in self._inputs.items()})
            states = {name: _state_feed(t, state[name], fp16, name in self._constant.states) for name, t in self._states.items()}
            initial = dict(states)
            for step in self._steps:
                _run(step, env, states, fp16 or step.weight, self._constant)
            for name, tensor in states.items():
                if tensor is not initial[name] or not np.shares_memory(state[name], tensor.numpy()):
                    np.copyto(state[name], tensor.numpy(), casting="unsafe")
            outputs = {t.name: _fetch(t, env[t.name], fp16) for t in self._outputs}
            if self._classifier:
                outputs.update(self._classifier.apply(env[self._classifier.probabilities]))
            return outputs


@dataclass(frozen=True)
class _Classifier:
    probabilities: str  # the var holding the class probabilities
    classes: tuple
    label_output: str
    dict_output: str

    @property
    def output_names(self) -> tuple[str, str]:
        return self.label_output, self.dict_output

    @classmethod
    def of(cls, func) -> _Classifier | None:
        ops = [op for op in func.operations if op.op_type == "classify"]
        if not ops:
            return None
        op = ops[0]
        classes = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in op.inputs["classes"].val)
        return cls(op.inputs["probabilities"].name, classes, op.outputs[0].name, op.outputs[1].name)

    def apply(self, probabilities: torch.Tensor) -> dict:
        values = probabilities.reshape(-1).tolist()
        best = max(range(len(values)), key=values.__getitem__)
        return {self.label_output: self.classes[best], self.dict_output: dict(zip(self.classes, values))}


def _float32_weight_bytes(func, decompress: list[_Step]) -> int:
    """What the program's weights take held as float32: the decompressed ones and the float constants."""
    total = sum(4 * int(np.prod(o.static or (1,))) for step in decompress for o in step.outputs)
    for op in func.operations:
        var = op.outputs[0] if op.op_type == "const" else None  # a classifier's labels are a list, not a tensor
        if var is not None and types.is_tensor(var.sym_type) and var.sym_type.get_primitive() in (types.fp16, types.fp32):
            total += 4 * int(np.prod(var.shape))
    return total


def _each_before_its_first_reader(weights: list[_Step], steps: list[_Step]) -> list[_Step]:
    """`steps` with each weight-decompression step placed just before the first step that reads
    its output, so a call holds a decompressed weight only while its layer runs."""
    first_reader: dict[str, int] = {}
    for index, step in enumerate(steps):
        for var in _read_vars(step):
            first_reader.setdefault(var, index)
    before: dict[int, list[_Step]] = {}
    for weight in reversed(weights):  # a weight another one decompresses from goes just before it
        index = min((first_reader[o.name] for o in weight.outputs if o.name in first_reader), default=len(steps))
        before.setdefault(index, []).insert(0, weight)
        for var in _read_vars(weight):
            first_reader[var] = min(first_reader.get(var, index), index)
    ordered = []
    for index, step in enumerate(steps):
        ordered += before.get(index, [])
        ordered.append(step)
    return ordered + before.get(len(steps), [])


def _op_summary(func) -> list[tuple[str, list[tuple[str, tuple]]]]:
    """(op type, [(output dtype, shape)]) for every computing op, nested blocks included,
    for the compute-unit analysis (which must not keep the program alive either)."""
    summary = []

    def visit(block):
        for op in block.operations:
            if op.op_type != "const":
                outs = [(types.builtin_to_string(v.dtype) if v.dtype is not None else "?", tuple(v.shape) if hasattr(v, "shape") and v.sym_type is not None and types.is_tensor(v.sym_type) else ()) for v in op.outputs]
                summary.append((op.op_type, outs))
            for inner in op.blocks:
                visit(inner)

    visit(func)
    return summary


def _unsupported_op_types(block) -> set[str]:
    missing = set()
    for op in block.operations:
        if not all(_is_const(v) for v in op.outputs) and op.op_type not in KERNELS and op.op_type != "classify":
            missing.add(op.op_type)
        for inner in op.blocks:  # control flow: report its ops too
            missing |= _unsupported_op_types(inner)
    return missing


def _feed(t: _Tensor, value, fp16: bool) -> torch.Tensor:
    arr = np.asarray(value)
    if arr.ndim != len(t.shape) or (t.static is not None and arr.shape != t.static):
        raise ValueError(f"{t.name}: expected shape {t.shape}, got {arr.shape}")
    tensor = torch.from_numpy(np.array(arr, dtype=t.np_dtype))
    return tensor.half().float() if fp16 and t.is_fp16 else tensor


def _fetch(t: _Tensor, tensor: torch.Tensor, fp16: bool) -> np.ndarray:
    arr = tensor.numpy().copy()
    return arr.astype(np.float16) if fp16 and t.is_fp16 else arr


def _fp16_values(y: torch.Tensor, step: _Step, env: dict, states: dict) -> torch.Tensor:
    """`y` rounded to float16 values (held as float32). In place when the kernel made `y` afresh,
    as most do: no float32 copy per op, which was half of a float16 package's run time on
    SmolLM2. A result that shares memory with an input or a state (a kernel may hand an input
    back, or a view of one) is copied, so nothing else sees it change."""
    if y.dtype != torch.float32 or y._base is not None or not y.is_contiguous():
        return y.half().float()
    memory = y.untyped_storage().data_ptr()
    for var in _read_vars(step):
        tensor = env.get(var)
        if tensor is not None and tensor.untyped_storage().data_ptr() == memory:
            return y.half().float()
    if any(tensor.untyped_storage().data_ptr() == memory for tensor in states.values()):
        return y.half().float()
    return y.copy_(y.half())


@dataclass(frozen=True)
class _Constants:
    names: frozenset  # the program's constants, which every call's env starts with
    memory: frozenset  # the storage each of them owns
    states: frozenset = frozenset()  # states read once and written back: updated where they lie


NO_CONSTANTS = _Constants(frozenset(), frozenset())


def _state_feed(t: _Tensor, value, fp16: bool, in_place: bool) -> torch.Tensor:
    """A state's tensor for one call. A state the program reads once and writes back is the
    caller's own array (`make_state`'s float32), so its cache chain updates it where it lies:
    copying it in, cloning it at the chain's first link and copying it back moved 280 MB per
    token of SmolLM2 at a 2048-token context. fp16 emulation rounds it where it lies too (a
    state written in fp16 emulation already holds fp16 values)."""
    if not (in_place and isinstance(value, np.ndarray) and value.dtype == t.np_dtype == np.float32
            and value.flags.c_contiguous and value.flags.writeable and (t.static is None or value.shape == t.static)):
        return _feed(t, value, fp16)
    tensor = torch.from_numpy(value)
    if fp16 and t.is_fp16:
        tensor.copy_(tensor.half())
    return tensor


def _sole_reader(step: _Step, env: dict, states: dict, constant: _Constants = NO_CONSTANTS) -> bool:
    """Whether a slice_update may write into its `x` instead of a copy: this step is x's last
    reader and nothing still live (another var, a view of x, a state) shares x's memory.

    A stateful package chains one slice_update per layer on the whole cache (read_state ->
    update layer 0 -> layer 1 ... -> coreml_update_state); a copy per link copied the cache
    twice per layer per call — at a 2048-token context SmolLM2's is 47 MB a state in float32.
    The first link reads the state itself: it writes into it only for a state the program
    reads once and writes back (`_state_feed`), whose new value is that chain's."""
    var = step.names.get("x")
    if not isinstance(var, str) or var not in step.release or var in constant.names:
        return False
    x = env.get(var)
    if x is None or x.dtype != torch.float32 or x._base is not None or not x.is_contiguous():
        return False
    memory = x.untyped_storage().data_ptr()
    if memory in constant.memory or any(t.untyped_storage().data_ptr() == memory and not (t is x and name in constant.states)
                                        for name, t in states.items()):
        return False
    # Only this call's results can share x's memory now: the constants (most of env) were ruled
    # out above, and scanning them for every update was a fifth of a stateful step's time.
    return not any(isinstance(t := env[name], torch.Tensor) and t.untyped_storage().data_ptr() == memory
                   for name in env.keys() - constant.names if name != var)


def _slice_update_in_place(step: _Step, env: dict, states: dict) -> torch.Tensor:
    a = Args(step.names, step.consts, env, states, len(step.outputs))
    x, update = env[step.names["x"]], a.t("update")
    plan = _slice_plan(x.shape, a)
    index = _index_tensors(x.shape, plan) if _has_negative_stride(plan) else tuple(plan)
    x[index] = update.reshape(x[index].shape).to(x.dtype)
    return x


def _run(step: _Step, env: dict, states: dict, fp16: bool, constant: _Constants = NO_CONSTANTS) -> None:
    try:
        if step.op_type == "slice_update" and _sole_reader(step, env, states, constant):
            result = _slice_update_in_place(step, env, states)
        else:
            result = step.kernel(Args(step.names, step.consts, env, states, len(step.outputs), fp16 and any(o.is_fp16 for o in step.outputs)))
    except NotImplementedError as e:
        raise UnsupportedOpError([step.op_type], f"op {step.op_name!r}: {e}") from e
    except Exception as e:
        raise RuntimeError(f"op {step.op_name!r} ({step.op_type}) failed: {e}") from e
    results = result if isinstance(result, (tuple, list)) else (result,)
    for out, y in zip(step.outputs, results):
        if y.dtype != out.dtype:
            y = y.to(out.dtype)
        if fp16 and out.is_fp16 and step.rounds:
            y = _fp16_values(y, step, env, states)
        if out.static is not None and tuple(y.shape) != out.static:
            if out.static != () or y.numel() != 1:
                raise RuntimeError(
                    f"op {step.op_name!r} ({step.op_type}) produced shape {tuple(y.shape)}, "
                    f"program declares {out.static}"
                )
            y = y.reshape(())
        env[out.name] = y
    for name in step.release:
        env.pop(name, None)
