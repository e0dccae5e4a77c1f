"""Fixtures shared by the whole suite: tiny random models on disk, settings pointing at a temp data dir."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Converting the default GGUF takes ~40 s; every test (and every server a test starts) shares one cache of it.
os.environ.setdefault(
    "LLMAAS_MODEL_CACHE_DIR",
    os.environ.get("LLMAAS_TEST_MODEL_CACHE", os.path.join(tempfile.gettempdir(), "llmaas-test-models")),
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with a byte-level tokenizer and a ChatML template (built once per session)."""
    from tests.support.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model_dir_no_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same shape, but the tokenizer has no chat template (chat must be refused clearly)."""
    from tests.support.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-notemplate"), chat_template=None, seed=1)
