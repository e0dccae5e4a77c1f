"""The ONE place exceptions become HTTP: `LlmaasError`, validation errors, routing errors and bugs -> OpenAI's error object.

`error_payload()` builds `{"error": {"message","type","param","code"}}` and its status; everything else (the
exception handlers, the body-size guard, SSE error events) calls it. Bugs become a generic 500 that carries
nothing internal (the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmaas import metrics
from llmaas.errors import LlmaasError, NotFound
from llmaas.unicode import has_surrogate

logger = logging.getLogger("llmaas.api")

GENERIC_500 = "The server had an error while processing your request. Sorry about that!"
_HTTP_CODES = {401: "invalid_api_key", 403: "insufficient_permissions", 404: "not_found", 413: "payload_too_large"}
# pydantic puts union-member tags (str, list[int], function-after[...]) into error locations; they are not fields.
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|dict|list|constrained-\w+|.*\[.*\].*)$")


class ClientDisconnected(Exception):
    """The client went away before the answer was ready; nobody reads this response (status 499, nginx's name)."""


def error_payload(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for any exception: the single mapping from errors to OpenAI's wire format."""
    if isinstance(exc, LlmaasError):
        headers = dict(exc.headers)
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        elif exc.status == 429:  # docs/api.md: every 429 carries Retry-After
            headers["Retry-After"] = "1"
        return exc.status, _body(exc.message, exc.type, exc.param, exc.code), headers
    if isinstance(exc, ClientDisconnected):
        return 499, _body("Client closed the request.", "invalid_request_error", None, None), {}
    if isinstance(exc, RequestValidationError):
        message, param = _validation_message(list(exc.errors()))
        return 400, _body(message, "invalid_request_error", param, None), {}
    if isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        if status == 413:
            message = "The request body is too large."
        elif status == 404:
            message = "Not found."
        else:
            message = str(exc.detail)[:200] if isinstance(exc.detail, str) else "The request could not be handled."
        headers = dict(exc.headers or {})
        kind = "invalid_request_error" if status < 500 else "server_error"
        return status, _body(message, kind, None, _HTTP_CODES.get(status)), headers
    return 500, _body(GENERIC_500, "server_error", None, None), {}


def error_response(exc: BaseException) -> JSONResponse:
    status, body, headers = error_payload(exc)
    if status >= 500 and not isinstance(exc, LlmaasError):
        logger.error("unhandled error", exc_info=exc)
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception type through `error_response`."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, NotFound):  # counted per key, so ids cannot be scanned at full speed (tenancy/limits.py)
            await _count_not_found(request)
        if isinstance(exc, LlmaasError) and exc.status == 429:  # every refusal reaches the client through here
            metrics.count_rejection(exc.code)
        return error_response(exc)

    for exc_type in (LlmaasError, RequestValidationError, StarletteHTTPException, ClientDisconnected, Exception):
        app.add_exception_handler(exc_type, handle)


# --- helpers -----------------------------------------------------------------------------------------


async def _count_not_found(request: Request) -> None:
    guard = getattr(request.app.state, "not_found_guard", None)
    principal = getattr(request.state, "principal", None)
    if guard is None or principal is None:
        return
    try:
        await guard.count(principal.key_id)
    except Exception:  # noqa: BLE001 - the 404 is still the answer; a limiter outage must not turn it into a 500
        logger.warning("counting a not-found answer failed", exc_info=True)


def _body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    # Messages may quote client text; one that is not valid Unicode must not turn the answer into a 500.
    return {
        "error": {
            "message": _text(message),
            "type": type_,
            "param": None if param is None else _text(param),
            "code": code,
        }
    }


def _text(value: str) -> str:
    return value.encode("utf-8", "replace").decode("utf-8") if has_surrogate(value) else value


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """OpenAI-style text and the dotted path of the first bad field (`messages[0].content`)."""
    if not errors:
        return "Invalid request.", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return (
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
            "library correctly. The OpenAI API expects a JSON payload.)",
            None,
        )
    param = _param_path(first.get("loc", ()))
    # In a union such as "auto" | int, pydantic reports the literal branch first ("Input should be 'auto'"); the
    # type the client got wrong is more useful.
    first = next(
        (e for e in errors if e.get("type") != "literal_error" and _param_path(e.get("loc", ())) == param), first
    )
    if first.get("type") == "missing":
        return f"Missing required parameter: '{param}'.", param
    if param is None:  # the body itself (absent, or not an object)
        return "The request body must be a JSON object.", None
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"Invalid value for '{param}': {msg}.", param


def _param_path(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    path = ""
    for p in parts:
        if isinstance(p, int):
            path += f"[{p}]"
        elif isinstance(p, str) and _UNION_TAG.match(p):
            continue
        else:
            path += f".{p}" if path else str(p)
    return path or None


def error_sse(exc: BaseException) -> str:
    """An error inside a stream that already started: one SSE event carrying OpenAI's error object."""
    status, body, _ = error_payload(exc)
    if status >= 500 and not isinstance(exc, LlmaasError):
        logger.error("unhandled error in stream", exc_info=exc)
    return f"data: {json.dumps(body)}\n\n"
