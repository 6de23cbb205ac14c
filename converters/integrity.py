"""Damaged input is the user's: every file of a model folder that conversion reads is checked
before anything is loaded, and a damaged one is named with what to do (UserInputError, exit
2), instead of surfacing later as a library's traceback ("Error while deserializing header:
header too large") that reads as our failure.

Checked here, in a model folder (a local one, or a Hub repo once downloaded), for the files
conversion reads (READ_FILES at the top level, the weights, the sentence-transformers Pooling
config; a repo's other files, such as training checkpoints or evaluation data, are not ours):
- every file conversion reads, and every file name the repo supplies (a shard in the index, a
  module folder in modules.json), stays inside the folder (`inside`): the service is shared,
  and a name like `../../models--other--repo/...` or a link out of the folder would make us
  read another user's files;
- each `*.safetensors` file opens with the safetensors library (header, offsets, length);
  an empty file, a Git LFS pointer, a pickle or other non-safetensors file, and a truncated
  download are each said as what they are;
- the shard index (`model.safetensors.index.json`) names shards that are there;
- every JSON file read (config, generation config, tokenizer, tokenizer config, special tokens,
  preprocessor, sentence-transformers modules) parses, with the top-level type it must have;
- `tokenizer.json` loads with the tokenizers library (a JSON file that is no tokenizer);
- the preprocessor fields the vision packages read have the types they must have.
What only loading can tell (weights that do not fit config.json, a config transformers
rejects) is turned into the same kind of message where the model is loaded (loading.py).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from pathlib import Path

from .errors import UserInputError

LFS_POINTER = b"version https://git-lfs"
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")  # pickle protocols, torch's zip
# Top-level JSON type each known file must have (any other *.json must merely parse).
JSON_SHAPES = {"modules.json": list}
JSON_OBJECTS = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "added_tokens.json", "vocab.json", "preprocessor_config.json",
                "image_processor_config.json", "processor_config.json", "model.safetensors.index.json",
                "chat_template.json")
WEIGHTS, SHARD_INDEX = "model.safetensors", "model.safetensors.index.json"
# The top-level files conversion reads besides the weights: the config, transformers' tokenizer
# and processor files, the chat template a pushed repo carries (worker/hub.py), and
# sentence-transformers' module list (loading.sentence_pooling). Downloads take these and no more.
READ_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
              "chat_template.jinja", "chat_template.json", "preprocessor_config.json",
              "image_processor_config.json", "processor_config.json", "modules.json")
READ_SUFFIXES = (".model", ".tiktoken")  # sentencepiece and tiktoken vocabularies, named per model
OUTSIDE_REMEDY = ("Name files by their place inside the repo (like model-00001-of-00002.safetensors), "
                  "without absolute paths, '..' or backslashes, and try again.")


def damaged(where: str, file: str, what: str, remedy: str = "") -> UserInputError:
    remedy = remedy or "Upload it again (or fix it) and try again."
    return UserInputError(f"{where} has a damaged {file}: {what}. {remedy}")


def reads(name: str) -> bool:
    """Whether conversion reads the top-level file `name` (besides model.safetensors and the
    index's shards): what a download takes."""
    return name in READ_FILES or name.endswith(READ_SUFFIXES)


def check_folder(path: Path, where: str) -> None:
    """Every file conversion reads is inside the folder, readable and of the kind its name says.
    Only those: a JSON-lines file in eval/ or a checkpoint-1000/ folder is not ours to judge."""
    path = Path(path)
    # A local folder's model card is read for its pipeline tag (source.card_pipeline_tag);
    # every top-level *.safetensors is read (chunks.py, loading._first_mismatch).
    files = [f for f in sorted(path.iterdir())
             if f.is_file() and (reads(f.name) or f.suffix == ".safetensors" or f.name == "README.md")]
    for file in files:
        check_inside(file, path, where)
    for file in files:
        if file.suffix == ".json":
            read_json(file, where, path)
    pooling = pooling_config(path, where)
    if pooling is not None and pooling.is_file():
        read_json(pooling, where, path)
    for file in files:
        if file.suffix == ".safetensors":
            check_safetensors(file, where, path)
    index = path / SHARD_INDEX
    if index.is_file():
        check_shard_index(index, where, path)
    tokenizer = path / "tokenizer.json"
    if tokenizer.is_file():
        check_tokenizer(tokenizer, where)
    for name in ("preprocessor_config.json", "image_processor_config.json"):
        if (path / name).is_file():
            check_preprocessor(read_json(path / name, where, path), where, name)


# ---------------------------------------------------------------- containment


def storage_root(folder: Path) -> Path:
    """Where the files of `folder` may really live. A Hub download's folder is a snapshot
    (models--owner--name/snapshots/<sha>) whose files are links into the same repo's blobs
    (models--owner--name/blobs): that repo's cache folder. Any other folder: itself."""
    folder = Path(folder).absolute()
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent
    return folder


def check_inside(file: Path, folder: Path, where: str) -> None:
    """Refuse a file of `folder` that resolves outside its storage root (a link out of it)."""
    if Path(file).resolve().is_relative_to(storage_root(folder).resolve()):
        return
    name = _name(Path(file), Path(folder))
    target = f" ({os.readlink(file)})" if Path(file).is_symlink() else ""
    raise UserInputError(
        f"{where} has {name}, a link to a file outside the model folder{target}: we read only files that are "
        "inside the folder. Copy the file itself into the folder (instead of a link) and try again."
    )


def inside(folder: Path, name, where: str, named_in: str) -> Path:
    """`folder / name` for a file name a repo supplies (a shard in `named_in` = the index, a
    module's folder in modules.json), refused (a damaged `named_in`) unless it is a relative
    name whose file stays inside the folder's storage (check_inside)."""
    if not plain_name(name):
        raise damaged(where, named_in, f"it names {json.dumps(name)[:120]}, which is not a file inside the model folder",
                      OUTSIDE_REMEDY)
    path = Path(folder) / name
    check_inside(path, folder, where)
    return path


def plain_name(name) -> bool:
    """A relative, forward-slash name with no '..' part: no absolute path, drive or backslash."""
    return (isinstance(name, str) and bool(name.strip()) and not name.startswith("/") and "\\" not in name
            and "\0" not in name and not re.match(r"[A-Za-z]:", name) and ".." not in name.split("/"))


def shard_names(index: dict, where: str) -> list[str]:
    """The shard files a parsed model.safetensors.index.json names, each a plain relative name."""
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise damaged(where, SHARD_INDEX, "it has no 'weight_map' of tensor names to shard files")
    bad = next((name for name in weight_map.values() if not plain_name(name)), None)
    if bad is not None:
        raise damaged(where, SHARD_INDEX, f"it names {json.dumps(bad)[:120]} as a shard, which is not a file "
                      "inside the model folder", OUTSIDE_REMEDY)
    return sorted({posixpath.normpath(name) for name in weight_map.values()})


def pooling_config_name(modules, where: str) -> str | None:
    """The sentence-transformers Pooling module's config.json as a repo path, from a parsed
    modules.json (the one module file conversion reads: loading.sentence_pooling); None
    without a Pooling module. A module path leading out of the folder is refused."""
    kinds = {str(m.get("type", "")).rsplit(".", 1)[-1]: m.get("path", "") for m in modules if isinstance(m, dict)}
    if "Pooling" not in kinds:
        return None
    name = posixpath.join(kinds["Pooling"], "config.json") if isinstance(kinds["Pooling"], str) else kinds["Pooling"]
    if not plain_name(name):
        raise damaged(where, "modules.json", f"its Pooling module's path {json.dumps(kinds['Pooling'])[:120]} is "
                      "not a folder inside the model folder", OUTSIDE_REMEDY)
    return posixpath.normpath(name)


def pooling_config(folder: Path, where: str) -> Path | None:
    """The Pooling module's config.json in `folder` (checked to stay inside), or None."""
    modules = Path(folder) / "modules.json"
    if not modules.is_file():
        return None
    name = pooling_config_name(read_json(modules, where, folder), where)
    return None if name is None else inside(folder, name, where, "modules.json")


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
    """The index names shards that are inside the folder and there (transformers loads each)."""
    shards = [inside(root, name, where, index.name) for name in shard_names(read_json(index, where, root), where)]
    missing = [str(shard.relative_to(root)) for shard in shards if not shard.is_file()]
    if missing:
        raise damaged(where, index.name, f"it names shard files that are not there ({', '.join(missing[:3])})",
                      "Upload the missing shards, or an index that matches the shards you have.")
    for shard in shards:
        if shard.parent != Path(root):  # a top-level one is checked with the folder's files
            check_safetensors(shard, where, root)


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
