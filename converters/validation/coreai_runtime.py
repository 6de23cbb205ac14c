"""Running an .aimodel with coreai-core's own runtime — real execution on this machine's
CPU, on Linux too (Apple ships the runtime in the coreai-core wheel). Validation drives it
exactly as it drives the Core ML reference executor: the same input sets, the same
continuation loop, the same checks; its rows are the `coreai` mode.

The runtime's API is asynchronous; a runner keeps one event loop and one loaded model for
its life (loading lowers the program, the slow part), and `close()` lets both go.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np

MODE = "coreai"  # validation's row label: the Core AI runtime, really executed
# How fast the Linux runtime runs a program, in parameters × tokens per second, measured on this
# 2-core machine with SmolLM2-135M: float32 one 128-token call in 7.2 s; float16 one 8-token call
# in 42 s — the runtime converts every float16 value in software (__truncsfhf2, one thread).
SPEED = {"float32": 135e6 * 128 / 7.2, "float16": 135e6 * 8 / 42}
_DTYPES = {"Float32": "float32", "Float16": "float16", "Int32": "int32", "Int8": "int8", "Int16": "int16",
           "BFloat16": "bfloat16", "Bool": "bool", "UInt8": "uint8"}


class CoreAIRunner:
    """Runs a saved .aimodel's `main` function (the validation Runner of the Core AI backend)."""

    modes = (MODE,)
    op_summary = None  # Core ML's placement analysis does not apply

    def __init__(self, path: Path):
        from coreai.authoring.asset import AIModelAsset

        self.path = Path(path)
        self._loop = asyncio.new_event_loop()
        self._asset = AIModelAsset.load(str(path))
        self._executable = self._asset.executable()
        model = self._loop.run_until_complete(self._executable.__aenter__())
        self._function = model.load_function("main")
        desc = self._function.desc
        self.state_names = list(desc.state_names)
        self._inputs = {name: desc.input_descriptor(name) for name in desc.input_names}
        self._states = {name: desc.state_descriptor(name) for name in self.state_names}

    def make_state(self) -> dict:
        """Fresh zero state (what an app's new generation starts from)."""
        from coreai.runtime import NDArray

        return {name: NDArray(np.zeros([int(d) for d in d_.shape], dtype=_numpy_dtype(d_.dtype)))
                for name, d_ in self._states.items()}

    def predict(self, inputs: dict, mode: str = MODE, state: dict | None = None) -> dict:
        """One call; `state` (from make_state) is updated in place by the runtime."""
        from coreai.runtime import NDArray

        if mode != MODE:
            raise ValueError(f"the Core AI runtime runs the package as it is (mode {MODE!r}), not {mode!r}")
        feed = {}
        for name, value in inputs.items():
            descriptor = self._inputs.get(name)
            if descriptor is None:
                continue  # an input the package does not take (e.g. a mask it has no use for)
            feed[name] = NDArray(np.ascontiguousarray(np.asarray(value).astype(_numpy_dtype(descriptor.dtype))))
        outputs = self._loop.run_until_complete(self._function(feed, state=state or {}))
        return {name: _widened(value.numpy()) for name, value in outputs.items()}

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.run_until_complete(self._executable.__aexit__(None, None, None))
        self._loop.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def validation_seconds(cfg, parameters: int) -> float:
    """About how long validation runs an .aimodel of `parameters` here: the tokens its input
    sets and continuation send (validation/inputs.py, continuation.py), at SPEED."""
    # Deferred: both import torch, and this module is read without it (try_it.py in the web process).
    from .continuation import NEW_TOKENS
    from .inputs import sequence_lengths

    lengths = sequence_lengths(cfg)
    if getattr(cfg, "stateful", False):  # two prefills of a short text plus one-token steps, and the prompt's
        tokens = 2 * min(32, max(lengths)) + 16
    elif cfg.task == "text-generation":  # every continuation step re-sends the whole padded sequence
        tokens = (len(lengths) + NEW_TOKENS) * max(lengths)
    else:
        tokens = sum(lengths) * len(cfg.parts())
    return parameters * tokens / SPEED[cfg.options.precision]


def _dtype_name(name: str) -> str:
    """The runtime's type name ("Float16") as numpy's ("float16")."""
    return _DTYPES.get(name, name.lower())


def _numpy_dtype(name: str) -> np.dtype:
    return np.dtype(_dtype_name(name))


def _widened(array: np.ndarray) -> np.ndarray:
    """float16 outputs compared in float32, as the reference executor returns them."""
    return array.astype(np.float32) if array.dtype == np.float16 else array


def described(path: Path) -> dict:
    """An .aimodel's inputs, outputs, states and metadata in package_info.describe_spec's
    shape, read from the saved file. The format keeps a flexible axis as `?` without bounds:
    those come from the converter's own `coreml_converter_input_shapes` metadata."""
    from coreai.authoring.asset import AIModelAsset

    asset = AIModelAsset.load(str(path))
    metadata = {key: value if isinstance(value, str) else json.dumps(value)
                for key, value in asset.metadata.creator_defined_metadata.items()}
    bounds = json.loads(metadata.get("coreml_converter_input_shapes", "{}"))
    summary = asset.summary(include_statistics=True)
    inputs = [_feature(name, text, bounds.get(name)) for name, text in summary.function_inputs("main")]
    outputs = [_feature(name, text) for name, text in summary.function_outputs("main")]
    states = [dict(_feature(name, text), type="state") for name, text in summary.function_states("main")]
    return {
        "inputs": inputs,
        "outputs": outputs,
        "states": states,
        "metadata": metadata,
        "minimum_os": summary._compatibility_version,  # noqa: SLF001 - the only way the summary names it
        # report.ProgramInfo's keys; Core ML's fused attention op is not in an .aimodel
        "program": {"fused_attention": False, "stateful": bool(states), "weight_bits": None,
                    "op_counts": {op: count for op, count in summary.operation_distribution if op != "constant"},
                    "format": "aimodel"},
    }


def _feature(name: str, text: str, bounds: list | None = None) -> dict:
    """'NDArray (Int32, 1 × ?)' -> name, dtype, shape, flexibility (and ranges from `bounds`)."""
    inner = text[text.index("(") + 1:text.rindex(")")] if "(" in text else text
    dtype_text, _, shape_text = inner.partition(",")
    dims = [d.strip() for d in shape_text.split("×")] if shape_text.strip() else []
    info: dict = {"name": name, "description": "", "type": "tensor", "dtype": _dtype_name(dtype_text.strip())}
    flexible = [i for i, d in enumerate(dims) if not d.isdigit()]
    if not flexible:
        info.update(shape=[int(d) for d in dims], flexibility="fixed")
        return info
    ranges = [[int(d), int(d)] if d.isdigit() else None for d in dims]
    for i in flexible:
        given = bounds[i] if bounds and len(bounds) == len(dims) else None
        ranges[i] = list(given) if isinstance(given, list) else [1, int(given) if given else -1]
    info.update(shape=[r[1] for r in ranges], flexibility="range", ranges=ranges)
    return info
