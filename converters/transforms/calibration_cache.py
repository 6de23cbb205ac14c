"""GPTQ's results kept by what made them, so the same model calibrated the same way is not walked again.

GPTQ is most of a calibrated conversion's time (SmolLM2-135M: 35-45 s of about a minute; a 1-3 B
model: many minutes), and its result depends only on the weights it starts from, the text, the
scheme's settings and the code: not on the context length, the KV cache, the deployment target
beyond the scheme's grid, or the output format's other choices. int4 and mixed calibrate the
decoder layers identically (mixed differs in the embeddings, which GPTQ does not touch). So a
second conversion of the same weights — another context, stateful or not, int4 then mixed — can
take the first one's calibrated layers.

The key is a hash of everything the result depends on: every tensor of the model as loaded
(names, dtypes, shapes, bytes) and its configuration, the calibration samples' token ids, the compressor's settings,
the source of the modules that compute it, and the library versions. A stale entry cannot match:
change any of them and the key changes. Only someone holding the same weights can form the
key, so an entry made for one user's gated model is read only by a job that already has those
weights (the Hub confirmed its access to download them).

What an entry holds: for every module GPTQ compressed, its weight and the compression metadata
buffers GPTQ registered (`_COREML_/…`, which coremltools' converter reads), as safetensors, and
the report's calibration entry as JSON. Written to a temporary name and renamed, so a reader sees
a whole entry or none; a lock per key makes a second job with the same key wait for the first.

Off unless a directory is given (`convert(calibration_cache=...)`; the worker's
`COREML_CONVERTER_CALIBRATION_CACHE`). No eviction here: the operator sizes the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch

METADATA_MARK = "_COREML_"  # coremltools' compression metadata buffers: "_COREML_/weight/…"
_SOURCES = ("calibrate.py", "lut_gptq.py", "kmeans.py", "schemes.py", "calibration_cache.py")


def key(model: torch.nn.Module, samples: list[torch.Tensor], settings: dict) -> str:
    """The hash of what GPTQ's result depends on (module docstring)."""
    import coremltools
    import transformers

    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    # The architecture's settings (an epsilon or a rope scale changes every activation GPTQ
    # measures), less the private entries such as the folder the model was read from.
    architecture = {k: v for k, v in config.to_dict().items() if not k.startswith("_")} if config is not None else None
    digest.update(json.dumps({"settings": settings, "config": architecture, "torch": torch.__version__,
                              "coremltools": coremltools.__version__, "transformers": transformers.__version__},
                             sort_keys=True, default=str).encode())
    here = Path(__file__).parent
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    for sample in samples:
        digest.update(sample.to(torch.int64).contiguous().numpy())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        if tensor.numel():  # the bytes as they are (bfloat16 has no numpy type)
            digest.update(tensor.detach().contiguous().view(torch.uint8).reshape(-1).numpy())
    return digest.hexdigest()


@contextmanager
def held(directory: Path, entry_key: str):
    """One job at a time per key: the second waits, then finds the first one's entry."""
    from filelock import FileLock

    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / f"{entry_key}.lock")):
        yield


def load(directory: Path, entry_key: str, model: torch.nn.Module) -> dict | None:
    """The kept result put on `model` (its compressed weights and their metadata buffers), and
    the report entry it was made with; None when there is none."""
    from safetensors.torch import load_file

    tensors_file, entry_file = directory / f"{entry_key}.safetensors", directory / f"{entry_key}.json"
    if not (tensors_file.is_file() and entry_file.is_file()):
        return None
    entry = json.loads(entry_file.read_text())
    modules = dict(model.named_modules())
    kept = load_file(str(tensors_file))
    for name, tensor in kept.items():
        owner, local = _owner(name)
        if local:
            modules[owner].register_buffer(local, tensor)
        else:
            owner, _, parameter = name.rpartition(".")
            getattr(modules[owner], parameter).data = tensor
    return entry


def _owner(name: str) -> tuple[str, str | None]:
    """A metadata buffer's module ("" for the model itself: coremltools puts its metadata version
    there) and its own name; (name, None) for anything else."""
    at = name.find(METADATA_MARK)
    return (name[:at].rstrip("."), name[at:]) if at >= 0 else (name, None)


def save(directory: Path, entry_key: str, model: torch.nn.Module, entry: dict) -> None:
    """Keep GPTQ's result: each compressed module's weight and its metadata buffers."""
    from safetensors.torch import save_file

    tensors = {name: buffer.detach().contiguous() for name, buffer in model.named_buffers() if METADATA_MARK in name}
    modules = dict(model.named_modules())
    for owner in {_owner(name)[0] for name in tensors} - {""}:
        tensors[f"{owner}.weight"] = modules[owner].weight.detach().contiguous()
    for suffix, write in ((".safetensors", lambda path: save_file(tensors, str(path))),
                          (".json", lambda path: path.write_text(json.dumps(entry)))):
        partial = directory / f".{entry_key}{suffix}.{os.getpid()}"
        write(partial)
        partial.replace(directory / f"{entry_key}{suffix}")
