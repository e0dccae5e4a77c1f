"""Every id the server makes up, in one place: resources, Responses API items, tool calls, request ids.

All of them are random (`secrets`), never derived from client input, and each shape is what clients already see:

| function        | shape                          | for                                                         |
|-----------------|--------------------------------|-------------------------------------------------------------|
| `new_id(p)`     | `p-` + 32 hex (128 bits)       | resources and responses: `key-…`, `proj-…`, `chatcmpl-…`     |
| `item_id(p)`    | `p_` + 48 hex (192 bits)       | the Responses API: `resp_…`, `msg_…`, `fc_…`, `fco_…`         |
| `call_id()`     | `call_` + 24 hex (96 bits)     | tool calls the model makes (OpenAI's length)                |
| `request_id()`  | `req_` + 32 hex (128 bits)     | X-Request-ID when the client sent none (or an unsafe one)   |
| `sortable_id(p)`| `p-` + 16 hex ns + 32 hex      | what lists page by creation: `ftjob-…`, `file-…`, `batch_…`  |
| `line_id()`     | `batch_req_` + 32 hex          | one line of a batch's output (OpenAI's shape)               |

Not here: API key secrets (`llmaas.tenancy.keys`, which are credentials, not ids). This module imports nothing of llmaas: every layer may use it.
"""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    """A server-generated, unguessable id such as `key-3f9a…` or `chatcmpl-…`: 128 random bits."""
    return f"{prefix}-{secrets.token_hex(16)}"


def item_id(prefix: str) -> str:
    """A Responses API id (`resp_…`, `msg_…`, `fc_…`); ids the client sent are display text, replaced by ours."""
    return f"{prefix}_{secrets.token_hex(24)}"


def call_id() -> str:
    """The id of a tool call the model made (`call_…`, as long as OpenAI's)."""
    return f"call_{secrets.token_hex(12)}"


def request_id() -> str:
    """A request id for logs and the X-Request-ID header."""
    return f"req_{secrets.token_hex(16)}"


def sortable_id(prefix: str, sep: str = "-") -> str:
    """An id that sorts by creation time (ties within a second stay ordered), then 128 random bits: `ftjob-…`,
    `file-…`, and `batch_…` (`sep="_"`, OpenAI's shape for batches)."""
    return f"{prefix}{sep}{time.time_ns():016x}{secrets.token_hex(16)}"


def line_id() -> str:
    """The id of one line of a batch's output file (`batch_req_…`)."""
    return f"batch_req_{secrets.token_hex(16)}"
