"""Where a conversion failed, in words a user can act on: the op and the model layer it sits
in ("the op 'aten::roll' in model.encoder.layers.0.blocks.0 (SwinLayer)"), or else the line
of transformers' modeling code that could not be captured.

coremltools says which op failed only in a log line; backends/coreml/patches.py records the
failing node on the exception (`coreml_node`), and its torch.export metadata names the
module (`nn_module_stack`).
"""

from __future__ import annotations

import re
import traceback

from .errors import ArchitectureNotConvertible, ConversionError

_MODELING_FILE = re.compile(r"[\\/]transformers[\\/]models[\\/][^\\/]+[\\/](modeling_[^\\/]+\.py)$")
_UNSUPPORTED_OP = re.compile(r"convert function for op '([^']+)' not implemented")
_UNSUPPORTED_NODE = re.compile(r"Unsupported fx node (\S+), kind (\S+)")  # coremltools' graph import


def where_it_failed(error: BaseException, program=None) -> str:
    """"the op 'X' in layer (Class)", "modeling_x.py line N (in f)", or "" when unknown.
    `program`: the torch.export program being converted, to find a node named in the message."""
    current: BaseException | None = error
    while current is not None:
        node = getattr(current, "coreml_node", None)
        if node is not None:
            layer = layer_of(getattr(node, "meta", None) or {})
            return f"the op '{node.kind}'" + (f" in {layer}" if layer else "")
        current = current.__cause__ or current.__context__
    match = _UNSUPPORTED_OP.search(str(error))
    if match:
        return f"the op '{match.group(1)}'"
    match = _UNSUPPORTED_NODE.search(str(error))
    if match:
        node = next((n for n in getattr(getattr(program, "graph", None), "nodes", ()) if n.name == match.group(1)), None)
        layer = layer_of(node.meta) if node is not None else ""
        return f"the op '{match.group(2)}'" + (f" in {layer}" if layer else "")
    return modeling_line(error)


def layer_of(meta: dict) -> str:
    """The innermost module of a torch.export node: "model.layers.0.mlp (LlamaMLP)"."""
    stack = meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, kind = list(stack.values())[-1]
    path = re.sub(r"^L\['self'\]\.?", "", str(path)).replace("._modules['", ".").replace("']", "")
    path = re.sub(r"^model\.(?=model\.)", "", path)  # our wrapper's own attribute
    name = getattr(kind, "__name__", None) or str(kind).rsplit(".", 1)[-1].strip("'>")
    return f"{path} ({name})" if path else name


def modeling_line(error: BaseException) -> str:
    """The innermost frame in a transformers modeling file: "modeling_x.py line N (in f)"."""
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        match = _MODELING_FILE.search(frame.filename)
        if match:
            return f"{match.group(1)} line {frame.lineno} (in {frame.name})"
    return ""


def reason(error: BaseException) -> str:
    """The error's first line, without coremltools' boilerplate."""
    text = (str(error).strip() or type(error).__name__).splitlines()[0]
    return text[:300]


def conversion_failure(cfg, part: str, error: BaseException, program=None) -> Exception:
    """The error to raise for a part that could not be captured or converted: for an
    architecture outside the tested list a request to change (ArchitectureNotConvertible,
    exit 2) that names the op or layer and what to try; else our own ConversionError."""
    model_type = cfg.hf_config.model_type
    where = where_it_failed(error, program)
    # The backend's ConversionError wraps coremltools' own error: its reason is the one to show.
    cause = error.__cause__ if isinstance(error, ConversionError) and error.__cause__ is not None else error
    what = f"{where}: {reason(cause)}" if where else reason(cause)
    if cfg.tested:
        return ConversionError(f"The {part} of this {model_type} model could not be converted ({what}).")
    return ArchitectureNotConvertible(
        model_type,
        f"The architecture '{model_type}' is not in the tested list; it was converted as a {cfg.family} model, "
        f"and its {part} could not be converted: {what}. You can try another task or a newer minimum deployment "
        "target (iOS18 / macOS15 convert more ops), or ask for this architecture in an issue, quoting this message.",
    )
