"""One Batch API line through the same serving code as the interactive request: `execute(url, body, call)`.

The body is validated by the endpoint's own request model (as FastAPI validates an interactive body: the same
strictness, the same 400 messages), then handed to the endpoint's own serving function (`prepare_chat`,
`prepare_completion`, `create_embeddings`, `prepare_response`) and its answer dumped as the route would send it. So
a line's body is exactly what the same request returns interactively; only `call.priority` (BATCH) differs.

A client error becomes (status, OpenAI error body) — that line fails, the batch goes on. Errors that say "not now"
rather than "not this" (`RETRY`: the engine's queue is full, the batch rate limit, a model restarting or the server
stopping) are raised for the runner to wait and run the line again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from llmaas.api.deps import Call
from llmaas.api.errors import error_payload
from llmaas.api.protocol.chat import ChatCompletionRequest
from llmaas.api.protocol.completions import CompletionRequest
from llmaas.api.protocol.embeddings import EmbeddingRequest
from llmaas.api.protocol.responses import ResponseCreateRequest
from llmaas.api.serving.chat import prepare_chat
from llmaas.api.serving.completions import prepare_completion
from llmaas.api.serving.embeddings import create_embeddings
from llmaas.api.serving.responses import ResponseStore, prepare_response
from llmaas.errors import LlmaasError, Overloaded, RateLimited, Unavailable

log = logging.getLogger("llmaas.batches")

RETRY = (Overloaded, RateLimited, Unavailable)


async def _chat(req: Any, call: Call, _: ResponseStore) -> dict[str, Any]:
    run = await prepare_chat(req, call)
    return (await run.complete()).model_dump(mode="json")


async def _completion(req: Any, call: Call, _: ResponseStore) -> dict[str, Any]:
    run = await prepare_completion(req, call)
    return (await run.complete()).model_dump(mode="json")


async def _embeddings(req: Any, call: Call, _: ResponseStore) -> dict[str, Any]:
    result, _headers = await create_embeddings(req, call)
    return result.model_dump(mode="json")


async def _response(req: Any, call: Call, responses: ResponseStore) -> dict[str, Any]:
    run = await prepare_response(req, call, responses)
    return await run.complete()


Handler = Callable[[Any, Call, ResponseStore], Awaitable[dict[str, Any]]]
HANDLERS: dict[str, tuple[type[BaseModel], Handler]] = {
    "/v1/chat/completions": (ChatCompletionRequest, _chat),
    "/v1/completions": (CompletionRequest, _completion),
    "/v1/embeddings": (EmbeddingRequest, _embeddings),
    "/v1/responses": (ResponseCreateRequest, _response),
}


async def execute(url: str, body: dict[str, Any], call: Call, responses: ResponseStore) -> tuple[int, dict[str, Any]]:
    """(HTTP status, response body) of one line; raises a RETRY error when the line should run again later."""
    model, handler = HANDLERS[url]
    try:
        try:
            req = model.model_validate(body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        return 200, await handler(req, call, responses)
    except RETRY:
        raise
    except Exception as exc:  # every other failure is this line's answer, as the route would send it
        status, payload, _headers = error_payload(exc)
        if not isinstance(exc, (LlmaasError, RequestValidationError)):
            log.exception("a batch line failed unexpectedly")
        return status, payload
