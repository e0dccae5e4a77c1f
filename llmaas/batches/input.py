"""Validation of Batch API input files, line by line, with errors that name the line (OpenAI's `errors.data`).

Each non-blank line is `{"custom_id": str, "method": "POST", "url": <endpoint>, "body": {...}}`; custom_ids are
unique, every line names the batch's endpoint and one model, and the file is bounded in lines and per-line bytes.
Only the envelope is checked here; a body the endpoint refuses fails that line alone when it runs (the serving
layer's validation, the same as for an interactive request). Reads bytes; knows nothing of storage or HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from llmaas.training.files import MAX_LINE_BYTES, FileValidationError, decode_line, iter_lines

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
MAX_CUSTOM_ID = 512
_KEYS = {"custom_id", "method", "url", "body"}


@dataclass(frozen=True, slots=True)
class InputLine:
    custom_id: str
    url: str
    body: dict[str, Any]


def _line(obj: Any, endpoint: str | None) -> InputLine:
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    extra = set(obj) - _KEYS
    if extra:
        raise ValueError(f"unsupported keys: {', '.join(sorted(extra))[:80]}")
    custom_id, method, url, body = obj.get("custom_id"), obj.get("method"), obj.get("url"), obj.get("body")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        raise ValueError(f"'custom_id' must be a non-empty string of at most {MAX_CUSTOM_ID} characters")
    if method != "POST":
        raise ValueError("'method' must be \"POST\"")
    if url not in ENDPOINTS:
        raise ValueError(f"'url' must be one of {', '.join(ENDPOINTS)}")
    if endpoint is not None and url != endpoint:
        raise ValueError(f"'url' is {url} but the batch's endpoint is {endpoint} (one endpoint per batch)")
    if not isinstance(body, dict):
        raise ValueError("'body' must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise ValueError("'body.model' must be a non-empty string")
    if body.get("stream"):
        raise ValueError("'body.stream' is not supported in a batch")
    return InputLine(custom_id, url, body)


def parse_input(
    chunks: Iterable[bytes], *, endpoint: str | None, max_lines: int, max_line_bytes: int
) -> Iterator[InputLine]:
    """Every line of a batch input file; raises FileValidationError naming the first bad line (1-based)."""
    seen: set[str] = set()
    model: str | None = None
    count = 0
    for number, raw in enumerate(iter_lines(chunks), start=1):
        if not raw.strip():
            continue
        if len(raw) > max_line_bytes:
            raise FileValidationError(f"line longer than {max_line_bytes} bytes", number)
        if count >= max_lines:
            raise FileValidationError(f"the file has more than {max_lines} requests", number)
        obj = decode_line(raw, number)
        try:
            line = _line(obj, endpoint)
        except ValueError as exc:
            raise FileValidationError(str(exc), number) from None
        if line.custom_id in seen:
            raise FileValidationError(f"duplicate custom_id {line.custom_id[:64]!r}", number)
        if model is not None and line.body["model"] != model:
            raise FileValidationError("every request of a batch must use the same model", number)
        seen.add(line.custom_id)
        model, endpoint = line.body["model"], endpoint or line.url  # one endpoint and one model per file
        count += 1
        yield line
    if count == 0:
        raise FileValidationError("the file contains no requests")


def check_batch_file(chunks: Iterable[bytes], *, settings: Any, endpoint: str | None) -> list[InputLine]:
    """Every line of a batch input file under the configured bounds (a line is one request body, at most
    `limits.max_body_bytes` and 1 MiB), or FileValidationError naming the first bad line."""
    max_line = min(settings.limits.max_body_bytes, MAX_LINE_BYTES)
    return list(parse_input(chunks, endpoint=endpoint, max_lines=settings.batch_max_lines, max_line_bytes=max_line))
