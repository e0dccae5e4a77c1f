"""POST /v1/embeddings without the framework: inputs -> embedder -> floats or base64 (little-endian float32).

Validates before anything runs: the configured batch bound, token ids inside the vocabulary, each input within the
model's context (400 context_length_exceeded, never silent truncation), `dimensions` equal to the native size.
Admits with the meter (prompt tokens) and settles afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import Sequence

from llmaas import log
from llmaas.api.deps import Call
from llmaas.api.protocol.embeddings import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from llmaas.api.serving.generation import check_token_ids, kind_of, not_found
from llmaas.engine.protocol import Embedder
from llmaas.errors import ContextLengthExceeded, InvalidRequest, LlmaasError, ModelNotFound
from llmaas.ids import new_id

ROUTE = "/v1/embeddings"


def resolve_embedder(name: str, call: Call) -> Embedder:
    if not call.principal.may_use(name):
        raise not_found(name)
    if kind_of(call.models, name) == "chat":
        raise InvalidRequest(f"`{name}` is a chat model; /v1/embeddings needs an embedding model.", param="model")
    try:
        return call.models.embedder(name)
    except ModelNotFound:
        raise not_found(name) from None


async def create_embeddings(req: EmbeddingRequest, call: Call) -> tuple[EmbeddingList, dict[str, str]]:
    """The embeddings and the rate-limit headers to send with them."""
    req.check_limits(call.settings.limits)
    embedder = resolve_embedder(req.model, call)
    if req.dimensions is not None and req.dimensions != embedder.dimensions:
        raise InvalidRequest(
            f"This model only produces {embedder.dimensions}-dimensional embeddings; `dimensions` must be "
            f"{embedder.dimensions} or absent.",
            param="dimensions",
        )
    inputs = req.inputs()
    many = not isinstance(req.input, str) and not (req.input and isinstance(req.input[0], int))
    counted = await asyncio.to_thread(count_tokens, embedder, inputs, many)  # off the event loop

    log.note(model=req.model)  # the request's model, for the access log and the request metrics
    reservation = await call.meter.admit(
        call.principal, model=req.model, route=ROUTE, request_id=new_id("emb"), tokens=counted
    )
    started, status, used = time.monotonic(), 200, 0
    try:
        vectors, used = await embedder.embed(inputs)
    except BaseException as exc:
        status = exc.status if isinstance(exc, LlmaasError) else 500
        raise
    finally:
        if call.metrics is not None:
            call.metrics.usage(req.model, prompt_tokens=used, completion_tokens=0)
        await call.meter.settle(
            reservation, prompt_tokens=used, completion_tokens=0, status=status, latency_s=time.monotonic() - started
        )
    data = [Embedding(index=i, embedding=_encode(v, req.encoding_format)) for i, v in enumerate(vectors)]
    result = EmbeddingList(data=data, model=req.model, usage=EmbeddingUsage(prompt_tokens=used, total_tokens=used))
    return result, dict(reservation.headers)


def count_tokens(embedder: Embedder, inputs: Sequence[str | list[int]], many: bool) -> int:
    """Tokens in all inputs, as the embedder counts them (no specials); 400 for one past the context or vocabulary."""
    counted = 0
    for i, item in enumerate(inputs):
        param = f"input[{i}]" if many else "input"
        if isinstance(item, str):
            length = len(embedder.tokenizer.encode(item, add_special_tokens=False))
        else:
            check_token_ids(item, embedder.tokenizer.vocab_size, param)
            length = len(item)
        if length > embedder.max_model_len:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {embedder.max_model_len} tokens, however you requested "
                f"{length} tokens in {param}. Please reduce its length.",
                param=param,
            )
        counted += length
    return counted


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return [float(x) for x in vector]
