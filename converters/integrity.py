"""Damaged input is the user's: every file of a model folder that conversion reads is checked
before anything is loaded, and a damaged one is named with what to do (UserInputError, exit
2), instead of surfacing later as a library's traceback ("Error while deserializing header:
header too large") that reads as our failure.

Checked here, in a model folder (a local one, or a Hub repo once downloaded):
- each `*.safetensors` file opens with the safetensors library (header, offsets, length);
  an empty file, a Git LFS pointer, a pickle or other non-safetensors file, and a truncated
  download are each said as what they are;
- the shard index (`model.safetensors.index.json`) names shards that are there;
- every JSON file (config, generation config, tokenizer, tokenizer config, special tokens,
  preprocessor, sentence-transformers modules) parses, with the top-level type it must have;
- `tokenizer.json` loads with the tokenizers library (a JSON file that is no tokenizer);
- the preprocessor fields the vision packages read have the types they must have.
What only loading can tell (weights that do not fit config.json, a config transformers
rejects) is turned into the same kind of message where the model is loaded (loading.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserInputError

LFS_POINTER = b"version https://git-lfs"
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")  # pickle protocols, torch's zip
# Top-level JSON type each known file must have (any other *.json must merely parse).
JSON_SHAPES = {"modules.json": list}
JSON_OBJECTS = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "added_tokens.json", "vocab.json", "preprocessor_config.json",
                "image_processor_config.json", "processor_config.json", "model.safetensors.index.json",
                "config_sentence_transformers.json", "sentence_bert_config.json")


def damaged(where: str, file: str, what: str, remedy: str = "") -> UserInputError:
    remedy = remedy or "Upload it again (or fix it) and try again."
    return UserInputError(f"{where} has a damaged {file}: {what}. {remedy}")


def check_folder(path: Path, where: str) -> None:
    """Every file conversion reads is readable and of the kind its name says."""
    path = Path(path)
    for file in sorted(path.rglob("*.json")):
        read_json(file, where, path)
    for file in sorted(path.rglob("*.safetensors")):
        check_safetensors(file, where, path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        check_shard_index(index, where, path)
    tokenizer = path / "tokenizer.json"
    if tokenizer.is_file():
        check_tokenizer(tokenizer, where)
    for name in ("preprocessor_config.json", "image_processor_config.json"):
        if (path / name).is_file():
            check_preprocessor(read_json(path / name, where, path), where, name)


def read_json(file: Path, where: str, root: Path | None = None):
    """A JSON file's content; a UserInputError naming it when it does not parse or has the
    wrong top-level type."""
    name = _name(file, root)
    try:
        data = json.loads(file.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise damaged(where, name, f"it is not valid JSON ({error})") from None
    expected = JSON_SHAPES.get(file.name, dict if file.name in JSON_OBJECTS else None)
    if expected is not None and not isinstance(data, expected):
        kind = "a JSON object ({...})" if expected is dict else "a JSON list ([...])"
        raise damaged(where, name, f"it must hold {kind}, not {type(data).__name__}")
    return data


def check_safetensors(file: Path, where: str, root: Path | None = None) -> None:
    """Opens with the safetensors library; when it cannot, says what the file is instead. (A
    real file's first bytes are its header's length, which can look like anything: the kinds
    below are only told apart once the library has refused the file.)"""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as weights:
            weights.keys()
        return
    except Exception as error:  # noqa: BLE001 - the library's own reason is shown
        reason = str(error).removeprefix("Error while deserializing header: ")
    name = _name(file, root)
    size = file.stat().st_size
    with open(file, "rb") as handle:
        start = handle.read(64)
    if size == 0:
        raise damaged(where, name, "the file is empty")
    if start.startswith(LFS_POINTER):
        raise damaged(where, name, "it is a Git LFS pointer, not the weights",
                      "Push the file itself (git lfs push, or upload it with huggingface_hub) and try again.")
    if start.startswith(PICKLE_MAGIC):
        raise damaged(where, name, "it is a pickle (PyTorch .bin) file renamed to .safetensors, which we do not load",
                      "Convert the weights to safetensors (for example with the 'convert to safetensors' Space).")
    if "not fully covered" in reason or _header_length(start) < size:
        what = f"it is not a complete safetensors file ({reason}; {size:,} bytes): probably a cut-off download or upload"
    else:
        what = f"it is not a safetensors file ({reason})"
    raise damaged(where, name, what)


def check_shard_index(index: Path, where: str, root: Path) -> None:
    weight_map = read_json(index, where, root).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise damaged(where, index.name, "it has no 'weight_map' of tensor names to shard files")
    missing = sorted({shard for shard in weight_map.values() if not (index.parent / str(shard)).is_file()})
    if missing:
        raise damaged(where, index.name, f"it names shard files that are not there ({', '.join(missing[:3])})",
                      "Upload the missing shards, or an index that matches the shards you have.")


def check_tokenizer(file: Path, where: str) -> None:
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(file))
    except Exception as error:  # noqa: BLE001 - the library's own reason is shown
        raise damaged(where, file.name, f"the tokenizers library cannot read it ({str(error).splitlines()[0][:200]})",
                      "Save the tokenizer again with tokenizer.save_pretrained and upload it.") from None


# Preprocessor fields the vision packages read, and what they must be.
def _size_ok(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(v, int) and v > 0 for v in value.values())
    return value is None or (isinstance(value, int) and value > 0)


def _triple(value) -> bool:
    return value is None or (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value))


PREPROCESSOR_FIELDS = {
    "size": (_size_ok, "a positive number of pixels or {\"height\": …, \"width\": …}"),
    "crop_size": (_size_ok, "a positive number of pixels or {\"height\": …, \"width\": …}"),
    "rescale_factor": (lambda v: v is None or (isinstance(v, (int, float)) and v > 0), "a positive number"),
    "image_mean": (_triple, "three numbers (R, G, B)"),
    "image_std": (lambda v: _triple(v) and (v is None or all(x > 0 for x in v)), "three positive numbers (R, G, B)"),
}


def check_preprocessor(config: dict, where: str, name: str) -> None:
    for key, (ok, expected) in PREPROCESSOR_FIELDS.items():
        if key in config and not ok(config[key]):
            raise damaged(where, name, f"its '{key}' is {json.dumps(config[key])[:80]}, but must be {expected}")


def _header_length(start: bytes) -> int:
    return int.from_bytes(start[:8], "little") + 8 if len(start) >= 8 else 0


def _name(file: Path, root: Path | None) -> str:
    try:
        return str(file.relative_to(root)) if root else file.name
    except ValueError:
        return file.name
