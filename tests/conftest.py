"""Shared fixtures: tiny models built once per test session."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tests never reach huggingface.co: anything that tries fails fast instead of hanging.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
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
