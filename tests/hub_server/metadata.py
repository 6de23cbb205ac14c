"""What the Hub derives from a repo's files, in the JSON shapes huggingface_hub parses.

- which files go through LFS (.gitattributes patterns, size, binary content);
- model info: card data (README front matter), config summary, pipeline tag,
  library, tags, safetensors parameter counts, siblings;
- tree entries for list_repo_tree / get_paths_info.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from fnmatch import fnmatch

import yaml

from .store import BlobStore, Commit, FileEntry, Repo

# The patterns of the .gitattributes the Hub writes into new repos (abridged).
DEFAULT_LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gguf", "*.gz", "*.h5",
    "*.joblib", "*.lfs.*", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx",
    "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar",
    "*.safetensors", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst",
    "*tfevents*",
)
DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS)

# Architecture suffix -> pipeline tag, the way the Hub guesses a task from config.json.
_PIPELINE_BY_SUFFIX = (
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForMaskedLM", "fill-mask"),
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForImageClassification", "image-classification"),
    ("ForObjectDetection", "object-detection"),
    ("ForSemanticSegmentation", "image-segmentation"),
    ("ForDepthEstimation", "depth-estimation"),
    ("ForSpeechSeq2Seq", "automatic-speech-recognition"),
    ("ForCTC", "automatic-speech-recognition"),
    ("ForAudioClassification", "audio-classification"),
    ("ForSeq2SeqLM", "text2text-generation"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("Model", "feature-extraction"),
)
_PIPELINE_BY_MODEL_TYPE = {"whisper": "automatic-speech-recognition", "wav2vec2": "automatic-speech-recognition", "llava": "image-text-to-text"}
_TOKENIZER_CONFIG_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "chat_template")


# ---------------------------------------------------------------- LFS decision


def lfs_patterns(gitattributes: bytes | None) -> list[str]:
    """The `filter=lfs` patterns of a .gitattributes file (the Hub's defaults if there is none)."""
    if gitattributes is None:
        return list(DEFAULT_LFS_PATTERNS)
    lines = gitattributes.decode("utf-8", "replace").splitlines()
    return [line.split()[0] for line in lines if "filter=lfs" in line and line.split()]


def looks_binary(sample: bytes) -> bool:
    if b"\0" in sample:
        return True
    try:
        sample[:-4].decode("utf-8")  # the sample may end inside a multi-byte character
    except UnicodeDecodeError:
        return True
    return False


def wants_lfs(path: str, sample: bytes, size: int, *, threshold: int, patterns: list[str]) -> bool:
    """Whether the Hub would store this file in LFS: big, binary or matched by .gitattributes."""
    if size == 0:
        return False  # the client never sends empty files through LFS
    if size >= threshold:
        return True
    name = path.rsplit("/", 1)[-1]
    if any(fnmatch(name, p) or fnmatch(path, p) for p in patterns):
        return True
    return looks_binary(sample)


# ------------------------------------------------------- derived model metadata


def _read_json(blobs: BlobStore, files: dict[str, FileEntry], path: str) -> dict | None:
    entry = files.get(path)
    if entry is None or entry.size > 5_000_000:
        return None
    try:
        data = json.loads(blobs.read(entry.sha256))
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def card_data(blobs: BlobStore, files: dict[str, FileEntry]) -> dict | None:
    """The YAML front matter of README.md, which the Hub serves as cardData."""
    entry = files.get("README.md")
    if entry is None:
        return None
    text = blobs.read(entry.sha256).decode("utf-8", "replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(?:\n|$)", text, re.S)
    if match is None:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def config_summary(blobs: BlobStore, files: dict[str, FileEntry]) -> dict | None:
    """The subset of config.json (and tokenizer_config.json) the Hub exposes as `config`."""
    config = _read_json(blobs, files, "config.json")
    if config is None:
        return None
    summary = {k: config[k] for k in ("architectures", "model_type") if k in config}
    tokenizer_config = _read_json(blobs, files, "tokenizer_config.json")
    if tokenizer_config:
        summary["tokenizer_config"] = {
            k: v for k, v in tokenizer_config.items() if k in _TOKENIZER_CONFIG_KEYS and isinstance(v, str)
        }
    return summary


def pipeline_tag(card: dict | None, config: dict | None) -> str | None:
    if card and isinstance(card.get("pipeline_tag"), str):
        return card["pipeline_tag"]
    if not config:
        return None
    if config.get("model_type") in _PIPELINE_BY_MODEL_TYPE:
        return _PIPELINE_BY_MODEL_TYPE[config["model_type"]]
    for arch in config.get("architectures") or []:
        for suffix, tag in _PIPELINE_BY_SUFFIX:
            if isinstance(arch, str) and arch.endswith(suffix):
                return tag
    return None


def library_name(card: dict | None, config: dict | None) -> str | None:
    if card and isinstance(card.get("library_name"), str):
        return card["library_name"]
    return "transformers" if config else None


def safetensors_parameters(blobs: BlobStore, files: dict[str, FileEntry]) -> dict | None:
    """Parameter counts per dtype over the root-level .safetensors files, as the Hub reports them."""
    counts: dict[str, int] = {}
    for path, entry in files.items():
        if "/" in path or not path.endswith(".safetensors"):
            continue
        for dtype, shape in _safetensors_tensors(blobs, entry):
            counts[dtype] = counts.get(dtype, 0) + math.prod(shape)
    if not counts:
        return None
    return {"parameters": counts, "total": sum(counts.values())}


def _safetensors_tensors(blobs: BlobStore, entry: FileEntry) -> list[tuple[str, list[int]]]:
    # Format: 8-byte little-endian header length, then a JSON header {name: {dtype, shape, ...}}.
    try:
        with open(blobs.path(entry.sha256), "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                return []
            header = json.loads(f.read(length))
    except (OSError, struct.error, ValueError):
        return []
    return [(v["dtype"], v["shape"]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]


def tags(card: dict | None, config: dict | None, files: dict[str, FileEntry]) -> list[str]:
    """Hub-style tags: library, file formats, model type, task, card tags, licence, region."""
    found: list[str] = []
    library = library_name(card, config)
    if library:
        found.append(library)
    if any(p.endswith(".safetensors") for p in files):
        found.append("safetensors")
    if any(p.endswith((".mlmodel", ".mlpackage")) or ".mlpackage/" in p for p in files):
        found.append("coreml")
    if config and config.get("model_type"):
        found.append(config["model_type"])
    task = pipeline_tag(card, config)
    if task:
        found.append(task)
    card_tags = (card or {}).get("tags") or []
    found.extend(t for t in (card_tags if isinstance(card_tags, list) else [card_tags]) if isinstance(t, str))
    if card and isinstance(card.get("license"), str):
        found.append(f"license:{card['license']}")
    found.append("region:us")
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------- JSON shapes


def sibling(path: str, entry: FileEntry, with_blobs: bool) -> dict:
    """One `siblings` item of model info (size/blobId/lfs only with ?blobs=true)."""
    item: dict = {"rfilename": path}
    if with_blobs:
        item.update(size=entry.size, blobId=entry.git_oid)
        if entry.lfs:
            item["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return item


def file_entry(path: str, entry: FileEntry) -> dict:
    """One file of list_repo_tree / get_paths_info."""
    item: dict = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
    if entry.lfs:
        item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return item


def folder_entry(path: str, files: dict[str, FileEntry]) -> dict:
    """One folder of list_repo_tree, with an oid derived from its content."""
    prefix = path + "/"
    listing = "".join(f"{p}:{e.git_oid}\n" for p, e in sorted(files.items()) if p.startswith(prefix))
    return {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}


def folders(files: dict[str, FileEntry]) -> set[str]:
    out = set()
    for path in files:
        parts = path.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def tree(files: dict[str, FileEntry], path: str, recursive: bool) -> list[dict] | None:
    """Entries under `path` ('' = root), folders included; None if `path` does not exist."""
    path = path.strip("/")
    all_folders = folders(files)
    if path and path not in all_folders:
        return [file_entry(path, files[path])] if path in files else None
    prefix = path + "/" if path else ""

    def wanted(p: str) -> bool:
        return p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])

    entries = [folder_entry(p, files) for p in sorted(all_folders) if wanted(p)]
    entries += [file_entry(p, files[p]) for p in sorted(files) if wanted(p)]
    return entries


def model_info(repo: Repo, commit: Commit, blobs: BlobStore, *, with_blobs: bool) -> dict:
    """The full /api/models/{id} answer for one revision."""
    files = commit.files
    card = card_data(blobs, files)
    config = config_summary(blobs, files)
    info = {
        "_id": hashlib.sha1(repo.id.encode()).hexdigest()[:24],
        "id": repo.id,
        "modelId": repo.id,
        "author": repo.owner,
        "sha": commit.oid,
        "lastModified": commit.date,
        "createdAt": repo.created_at,
        "private": repo.private,
        "gated": repo.gated,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "library_name": library_name(card, config),
        "tags": tags(card, config, files),
        "pipeline_tag": pipeline_tag(card, config),
        "config": config,
        "cardData": card,
        "siblings": [sibling(p, e, with_blobs) for p, e in sorted(files.items())],
        "spaces": [],
        "safetensors": safetensors_parameters(blobs, files),
        "usedStorage": sum(e.size for e in files.values()),
    }
    return {k: v for k, v in info.items() if v is not None}


def select_expanded(info: dict, expand: list[str]) -> dict:
    """With ?expand=..., the Hub returns only the asked properties (plus the ids)."""
    keep = {"_id", "id", *expand}
    return {k: v for k, v in info.items() if k in keep}


def list_item(info: dict, *, full: bool, with_config: bool, with_card: bool) -> dict:
    """The short form list_models returns, widened by full/config/cardData."""
    keys = {"_id", "id", "modelId", "author", "likes", "downloads", "private", "tags", "pipeline_tag",
            "library_name", "createdAt"}
    if full:
        keys |= {"sha", "lastModified", "gated", "disabled", "siblings"}
    if with_config:
        keys.add("config")
    if with_card:
        keys.add("cardData")
    return {k: v for k, v in info.items() if k in keys}
