"""Damaged input is the user's, not ours: every damaged file a repo can carry ends in exit 2 (a
job: a user error) with a message naming the file and what to do — never a traceback, never
"the conversion failed" — and nothing is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from converters.__main__ import main


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _edit_json(file: Path, **changes) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


# name -> (how the copy of a tiny llama is damaged, the words the message must hold)
DAMAGES = {
    "weights-truncated": (lambda d: _truncate(d / "model.safetensors"),
                          ["damaged model.safetensors", "not a complete safetensors file", "cut-off download"]),
    "weights-empty": (lambda d: (d / "model.safetensors").write_bytes(b""), ["damaged model.safetensors", "the file is empty"]),
    "weights-not-safetensors": (lambda d: (d / "model.safetensors").write_bytes(b"hello, not weights" * 20),
                                ["damaged model.safetensors", "not a safetensors file"]),
    "weights-lfs-pointer": (lambda d: (d / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 54624\n"), ["a Git LFS pointer, not the weights"]),
    "weights-pickle-renamed": (lambda d: (d / "model.safetensors").write_bytes(b"\x80\x04\x95" + b"\0" * 64),
                               ["a pickle (PyTorch .bin) file renamed to .safetensors"]),
    "weights-of-another-shape": (lambda d: _edit_json(d / "config.json", hidden_size=64),
                                 ["weights (*.safetensors) do not fit its config.json", "[128, 32] in model.safetensors"]),
    "shard-index-names-a-missing-shard": (
        lambda d: (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-00002-of-00002.safetensors"}})),
        ["damaged model.safetensors.index.json", "model-00002-of-00002.safetensors"]),
    "config-not-json": (lambda d: (d / "config.json").write_text("{not json"), ["damaged config.json", "not valid JSON"]),
    "config-a-list": (lambda d: (d / "config.json").write_text("[1, 2]"), ["damaged config.json", "must hold a JSON object"]),
    "config-field-of-wrong-type": (lambda d: _edit_json(d / "config.json", hidden_size="big"),
                                   ["config.json does not describe a valid llama model", "'hidden_size' expected int"]),
    "config-contradicting-itself": (lambda d: _edit_json(d / "config.json", num_attention_heads=5),
                                    ["config.json does not describe a valid llama model", "not a multiple of the number of attention heads"]),
    "tokenizer-not-json": (lambda d: (d / "tokenizer.json").write_text("{garbage"), ["damaged tokenizer.json", "not valid JSON"]),
    "tokenizer-not-a-tokenizer": (lambda d: (d / "tokenizer.json").write_text('{"hello": 1}'),
                                  ["damaged tokenizer.json", "tokenizers library cannot read it"]),
    "tokenizer-config-not-json": (lambda d: (d / "tokenizer_config.json").write_text("{garbage"), ["damaged tokenizer_config.json"]),
    "special-tokens-not-json": (lambda d: (d / "special_tokens_map.json").write_text("nope"), ["damaged special_tokens_map.json"]),
    "generation-config-not-json": (lambda d: (d / "generation_config.json").write_text("{"), ["damaged generation_config.json"]),
    "sentence-transformers-modules-not-a-list": (lambda d: (d / "modules.json").write_text('{"a": 1}'),
                                                 ["damaged modules.json", "must hold a JSON list"]),
}


# Names and links leading out of the folder: in a shared service, another user's files (the bug of
# issue 23: an index naming "/abs/path" or "../x" was accepted, and transformers loaded that file).
def _another_model(d: Path) -> Path:
    """A readable copy of the weights outside the model folder, as another user's cache would hold."""
    other = d.parent / "another-users-model"
    other.mkdir(exist_ok=True)
    shutil.copy(d / "model.safetensors", other / "model.safetensors")
    shutil.copy(d / "config.json", other / "config.json")
    return other


def _index_naming(name_of) -> callable:
    def damage(d: Path) -> None:
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": name_of(d)}}))
    return damage


def _link_out(file: str):
    def damage(d: Path) -> None:
        target = _another_model(d) / file
        if not target.exists():
            shutil.copy(d / file, target)
        (d / file).unlink()
        (d / file).symlink_to(target)
    return damage


OUTSIDE = ["damaged model.safetensors.index.json", "which is not a file inside the model folder",
           "without absolute paths, '..' or backslashes"]
ESCAPES = {
    "shard-index-names-an-absolute-path": (_index_naming(lambda d: str(_another_model(d) / "model.safetensors")),
                                           OUTSIDE + ["another-users-model"]),
    "shard-index-names-a-parent-path": (_index_naming(lambda d: _another_model(d) and "../another-users-model/model.safetensors"),
                                        OUTSIDE + ["../another-users-model/model.safetensors"]),
    "shard-index-names-a-backslash-path": (_index_naming(lambda d: "..\\another-users-model\\model.safetensors"), OUTSIDE),
    "shard-index-names-a-drive": (_index_naming(lambda d: "C:/models/model.safetensors"), OUTSIDE),
    "weights-a-link-out-of-the-folder": (_link_out("model.safetensors"),
                                         ["has model.safetensors, a link to a file outside the model folder",
                                          "Copy the file itself into the folder"]),
    "config-a-link-out-of-the-folder": (_link_out("config.json"), ["has config.json, a link to a file outside the model folder"]),
    "tokenizer-a-link-out-of-the-folder": (_link_out("tokenizer.json"),
                                           ["has tokenizer.json, a link to a file outside the model folder"]),
    "pooling-module-out-of-the-folder": (
        lambda d: (d / "modules.json").write_text(json.dumps([{"path": "../another-users-model", "type": "sentence_transformers.models.Pooling"}])),
        ["damaged modules.json", "Pooling module's path \"../another-users-model\"", "not a folder inside the model folder"]),
}
DAMAGES.update(ESCAPES)
VISION_DAMAGES = {
    "preprocessor-not-json": (lambda d: (d / "preprocessor_config.json").write_text("{"), ["damaged preprocessor_config.json"]),
    "preprocessor-size-not-a-number": (lambda d: _edit_json(d / "preprocessor_config.json", size="large"),
                                       ["damaged preprocessor_config.json", "'size' is \"large\""]),
    "preprocessor-std-of-zero": (lambda d: _edit_json(d / "preprocessor_config.json", image_std=[0, 0, 0]),
                                 ["damaged preprocessor_config.json", "'image_std'", "three positive numbers"]),
}


def _damaged_copy(tiny_model, tmp_path: Path, model_type: str, damage) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model(model_type), folder)
    damage(folder)
    return folder


def _run(folder: Path, tmp_path: Path, capsys) -> tuple[int, str]:
    code = main([str(folder), "--output", str(tmp_path / "out"), "--sequence-length", "8"])
    return code, capsys.readouterr().err


# (model type damaged, damage name): text damages on a tiny llama, image-processor ones on a tiny vit.
CASES = [("llama", name) for name in sorted(DAMAGES)] + [("vit", name) for name in sorted(VISION_DAMAGES)]


@pytest.mark.parametrize("model_type, name", CASES, ids=[name for _, name in CASES])
def test_a_damaged_file_is_named_with_exit_2(model_type, name, tiny_model, tmp_path, capsys):
    damage, words = {**DAMAGES, **VISION_DAMAGES}[name]
    code, err = _run(_damaged_copy(tiny_model, tmp_path, model_type, damage), tmp_path, capsys)
    assert code == 2, err
    for word in words:
        assert word in err
    assert "Traceback" not in err and "the conversion failed" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_checkpoint_the_task_class_cannot_use_is_refused_rather_than_converted_random(tiny_model, tmp_path, capsys):
    # LlamaForQuestionAnswering keeps the decoder as `transformer`; a causal-LM checkpoint names it `model`.
    code = main([str(tiny_model("llama")), "--task", "question-answering", "--output", str(tmp_path / "out"),
                 "--sequence-length", "8"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "does not hold the weights LlamaForQuestionAnswering needs for 'question-answering'" in err
    assert "it would be a random model" in err and "choose that" in err


def test_files_conversion_does_not_read_are_not_judged(tiny_model, tmp_path):
    """A JSON-lines eval/samples.json, a checkpoint folder's broken config or an unrelated top-level
    file are not the model: the folder opens (they were once refused as "damaged")."""
    from converters.source import open_local

    folder = _damaged_copy(tiny_model, tmp_path, "llama", lambda d: None)
    (d := folder / "eval").mkdir()
    (d / "samples.json").write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    (folder / "checkpoint-1000").mkdir()
    (folder / "checkpoint-1000" / "config.json").write_text("{garbage")
    (folder / "checkpoint-1000" / "model.safetensors").write_bytes(b"not weights")
    (folder / "trainer_state.json").write_text("{not json")
    assert open_local(folder).config["model_type"] == "llama"


def test_links_inside_the_folder_are_fine(tiny_model, tmp_path):
    from converters.source import open_local

    folder = _damaged_copy(tiny_model, tmp_path, "llama", lambda d: None)
    (folder / "weights").mkdir()
    (folder / "model.safetensors").rename(folder / "weights" / "model.safetensors")
    (folder / "model.safetensors").symlink_to(Path("weights") / "model.safetensors")
    assert open_local(folder).path == folder
