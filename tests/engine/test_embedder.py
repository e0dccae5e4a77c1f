"""TransformersEmbedder on the built-in all-MiniLM-L6-v2: shape, normalization, meaning, order, limits."""

from __future__ import annotations

import asyncio
import math

import pytest

from llmaas.engine.embedder import TransformersEmbedder
from llmaas.engine.models.loader import builtin_path
from llmaas.engine.protocol import Embedder
from llmaas.errors import ContextLengthExceeded, InvalidRequest


@pytest.fixture(scope="module")
def emb() -> TransformersEmbedder:
    try:
        folder = builtin_path("all-minilm-l6-v2")
    except ValueError as e:
        pytest.skip(str(e))
    return TransformersEmbedder("all-MiniLM-L6-v2", folder)


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def test_shape_norm_and_meaning(emb: TransformersEmbedder) -> None:
    assert isinstance(emb, Embedder) and emb.dimensions == 384 and emb.max_model_len == 254
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    vecs, n = asyncio.run(emb.embed(texts))
    assert len(vecs) == 3 and all(len(v) == 384 for v in vecs) and n > 10
    assert all(math.isclose(math.sqrt(cos(v, v)), 1.0, rel_tol=1e-4) for v in vecs)
    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2]) + 0.3


def test_batching_keeps_order_and_values(emb: TransformersEmbedder) -> None:
    texts = [("word " * (i % 7 + 1)) + str(i) for i in range(34)]  # > one batch of 32, mixed lengths
    batched, _ = emb.embed_sync(texts)
    for i in (0, 13, 33):
        alone, _ = emb.embed_sync([texts[i]])
        assert cos(batched[i], alone[0]) > 0.9999


def test_token_id_inputs_equal_text(emb: TransformersEmbedder) -> None:
    text = "token arrays are embedded like their text"
    ids = emb.tokenizer.encode(text)
    (a, b), n = emb.embed_sync([text, ids])
    assert cos(a, b) > 0.99999 and n == 2 * len(ids)


def test_limits_are_clear_errors(emb: TransformersEmbedder) -> None:
    with pytest.raises(ContextLengthExceeded, match="at most 254"):
        emb.embed_sync(["word " * 300])
    with pytest.raises(InvalidRequest, match="outside this model's vocabulary"):
        emb.embed_sync([[1, 2, 10**9]])


def test_matches_sentence_transformers(emb: TransformersEmbedder) -> None:
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(builtin_path("all-minilm-l6-v2")), device="cpu")
    texts = ["hello world", "Paris is the capital of France, and a long sentence follows here."]
    ours, _ = emb.embed_sync(texts)
    theirs = ref.encode(texts, normalize_embeddings=True).tolist()
    assert all(cos(a, b) > 0.9999 for a, b in zip(ours, theirs))
