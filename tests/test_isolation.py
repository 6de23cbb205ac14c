"""One service, many users (issue 23): every file name a repo supplies, and every file conversion
reads, stays inside that job's own snapshot — inside its repo's cache folder for a Hub download
(whose snapshot files are links into the repo's blobs), inside the folder itself for a local one.
Also here: float16's norm rewrite leaves gated RMSNorms (forward(hidden_states, gate)) alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from converters.errors import UserInputError
from converters.integrity import check_folder, check_shard_index, inside, storage_root


def _cache_snapshot(model: Path, cache: Path, repo: str = "models--alice--tiny") -> Path:
    """`model` laid out as huggingface_hub's cache does: snapshots/<sha>/<file> -> ../../blobs/<hash>."""
    snapshot = cache / repo / "snapshots" / ("a" * 40)
    (cache / repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for number, file in enumerate(sorted(model.iterdir())):
        blob = cache / repo / "blobs" / f"{number:064x}"
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return snapshot


def test_a_hub_snapshot_may_link_into_its_own_repos_blobs_only(tiny_model, tmp_path):
    snapshot = _cache_snapshot(tiny_model("llama"), tmp_path)
    assert storage_root(snapshot) == tmp_path / "models--alice--tiny"
    check_folder(snapshot, "The model 'alice/tiny'")  # every file is a link into ../../blobs: fine

    other = _cache_snapshot(tiny_model("llama"), tmp_path, "models--bob--private")
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(other / "model.safetensors")  # bob's weights, in the same cache
    with pytest.raises(UserInputError) as error:
        check_folder(snapshot, "The model 'alice/tiny'")
    assert "The model 'alice/tiny' has model.safetensors, a link to a file outside the model folder" in str(error.value)


def test_a_local_folder_that_merely_looks_like_a_snapshot_part_is_itself_the_limit(tmp_path):
    folder = tmp_path / "snapshots" / "mine"  # its grandparent is no models--owner--name folder
    folder.mkdir(parents=True)
    assert storage_root(folder) == folder


@pytest.mark.parametrize("name", ["/etc/passwd", "../other/model.safetensors", "a/../../b.safetensors",
                                  "..\\other\\model.safetensors", "C:/models/x.safetensors", "c:x.safetensors",
                                  "x\0.safetensors", "", "  ", 3, None, ["a"]])
def test_names_out_of_the_folder_or_not_names_at_all_are_refused(tmp_path, name):
    with pytest.raises(UserInputError) as error:
        inside(tmp_path, name, "The folder f", "model.safetensors.index.json")
    assert "The folder f has a damaged model.safetensors.index.json: it names" in str(error.value)
    assert "which is not a file inside the model folder" in str(error.value)


@pytest.mark.parametrize("name", ["model-00001-of-00002.safetensors", "weights/model.safetensors", "./model.safetensors"])
def test_plain_names_inside_the_folder_are_fine(tmp_path, name):
    assert inside(tmp_path, name, "The folder f", "modules.json") == tmp_path / name


def test_a_name_inside_that_is_a_link_out_is_refused(tmp_path):
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights").symlink_to(tmp_path)  # a folder link: the name is plain, the file is not inside
    with pytest.raises(UserInputError, match="has weights/outside.safetensors, a link to a file outside the model folder"):
        inside(folder, "weights/outside.safetensors", "The folder f", "model.safetensors.index.json")


@pytest.mark.parametrize("weight_map, words", [
    ({"w": ["model.safetensors"]}, 'it names ["model.safetensors"] as a shard, which is not a file inside'),
    ({"w": {"a": 1}}, 'it names {"a": 1} as a shard'),
    ({}, "it has no 'weight_map' of tensor names to shard files"),
])
def test_an_index_of_the_wrong_kinds_of_names_is_damaged_not_a_crash(tmp_path, weight_map, words):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(UserInputError, match="damaged model.safetensors.index.json") as error:
        check_shard_index(index, "The folder f", tmp_path)
    assert words in str(error.value)


# ------------------------------------------------ float16: gated RMSNorms are left alone


class GatedRMSNorm(torch.nn.Module):
    """The shape of Qwen3-Next's gated norm: norm(x) * silu(gate), the gate required."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.rand(width) + 0.5)
        self.variance_epsilon = eps

    def forward(self, hidden_states, gate):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * hidden_states * torch.rsqrt(variance + self.variance_epsilon) * torch.nn.functional.silu(gate)


def _gated_norms():
    from transformers.models.olmo_hybrid.modeling_olmo_hybrid import OlmoHybridRMSNormGated
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5RMSNormGated
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextRMSNormGated

    return [GatedRMSNorm, Qwen3NextRMSNormGated, Qwen3_5RMSNormGated, OlmoHybridRMSNormGated]


class Block(torch.nn.Module):
    """A plain RMSNorm (rewritten) feeding a gated one (left as it is), as a linear-attention layer does."""

    def __init__(self, gated_class, width: int = 16):
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        super().__init__()
        self.norm = LlamaRMSNorm(width)
        self.gated = gated_class(width)
        self.gate = torch.nn.Linear(width, width)

    def forward(self, x):
        return self.gated(self.norm(x), self.gate(x))


@pytest.mark.parametrize("gated_class", _gated_norms(), ids=lambda c: c.__name__)
def test_a_gated_rms_norm_is_not_rewritten_and_does_not_break_the_float16_probe(gated_class):
    from converters.float16_safe import float16_safe, is_rms_norm

    torch.manual_seed(0)
    block = Block(gated_class).eval()
    assert is_rms_norm(block.gated)  # it is one by name and epsilon: the probe is what must spare it
    x = torch.randn(2, 3, 16) * 1000.0
    with torch.no_grad():
        expected = block(x)
        with float16_safe(block) as rewritten:
            assert rewritten == 1  # the plain norm only
            assert "forward" in vars(block.norm) and "forward" not in vars(block.gated)
            actual = block(x)
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-5)
    assert "forward" not in vars(block.norm)  # restored afterwards
