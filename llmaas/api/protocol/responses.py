"""/v1/responses schemas, OpenAI field for field: the request, its input items, the response object and its lists.

`ResponseCreateRequest.check_limits()` refuses what we cannot honour with a 400 naming the field (`background: true`,
tool types other than `function`, non-text input parts, `truncation: auto`), and `input_items()` turns `input` (a
string or a list of items) into the normalized wire items that are stored and listed, each with its own id. What
`text.format` and `tools` ask for is validated here and translated for chat by serving/responses_chat.py. Accepted and
ignored: `include`, `reasoning`, `service_tier`, `prompt_cache_key`, `safety_identifier`, any unknown field (its name
is logged). No I/O here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmaas.api.protocol.common import HARD_MAX_TOKENS, OpenAIBaseModel, ResponseModel
from llmaas.config import Limits
from llmaas.errors import InvalidRequest
from llmaas.ids import item_id

HARD_MAX_ITEMS = 100_000  # Limits.max_messages' own ceiling
MAX_TOOLS = 128
MAX_METADATA = 16
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
MESSAGE_ROLES = ("user", "assistant", "system", "developer")


# --- request -----------------------------------------------------------------------------------------


class ContentPart(BaseModel):
    """One part of an input message: `input_text` (or `output_text`/`refusal` in an assistant turn)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    text: str | None = None
    refusal: str | None = None


Parts = Annotated[list[ContentPart], Field(max_length=10_000)]


class InputItem(BaseModel):
    """An input item: a message (`type` may be left out), a `function_call` or a `function_call_output`."""

    model_config = ConfigDict(extra="allow")

    type: str | None = Field(None, max_length=64)
    id: str | None = Field(None, max_length=256)
    role: str | None = Field(None, max_length=32)
    content: str | Parts | None = None
    call_id: str | None = Field(None, max_length=256)
    name: str | None = Field(None, max_length=256)
    arguments: str | None = None
    output: str | Parts | None = None
    status: str | None = Field(None, max_length=32)


class TextFormat(BaseModel):
    """`text.format`: {type: text} | {type: json_object} | {type: json_schema, name, schema, strict, description}."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = Field(None, max_length=4096)


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: TextFormat | None = None
    verbosity: str | None = Field(None, max_length=16)


class ToolSpec(BaseModel):
    """A tool: only `function` tools are served (`web_search`, `file_search`, `computer_use_preview`, `mcp`… are 400)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    name: str | None = Field(None, max_length=64)
    description: str | None = Field(None, max_length=8192)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseCreateRequest(OpenAIBaseModel):
    """A POST /v1/responses body. Unknown fields are ignored (and their names logged)."""

    model: str = Field(max_length=256, description="A model id from GET /v1/models (base or fine-tuned).")
    input: str | Annotated[list[InputItem], Field(max_length=HARD_MAX_ITEMS)] = Field(
        description="A user message as a string, or a list of items (messages, function_call, function_call_output)."
    )
    instructions: str | None = Field(None, description="A system message for this turn only (not carried over).")
    max_output_tokens: int | None = Field(None, ge=1, le=HARD_MAX_TOKENS, description="Cut-off: status `incomplete`.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    text: TextConfig | None = None
    tools: Annotated[list[ToolSpec], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="none | auto | required | {type: function, name}"
    )
    parallel_tool_calls: bool | None = None
    store: bool = Field(True, description="Keep the response for GET, input_items and previous_response_id.")
    previous_response_id: str | None = Field(None, max_length=64, description="Continue this stored response.")
    metadata: dict[str, str] | None = Field(None, max_length=MAX_METADATA)
    user: str | None = Field(None, max_length=256)
    stream: bool = Field(False, description="Server-sent events: response.created … response.completed.")
    background: bool | None = Field(None, description="Not supported: true is refused.")
    truncation: str | None = Field(None, max_length=16, description="Only `disabled` (the default).")

    def check_limits(self, limits: Limits) -> None:
        """The configured bounds and what we refuse; called before anything is stored, tokenized or allocated."""
        if self.background:
            raise InvalidRequest("background responses are not supported by this server.", param="background")
        if self.truncation not in (None, "disabled"):
            raise InvalidRequest("Only truncation 'disabled' is supported.", param="truncation")
        if isinstance(self.input, list) and len(self.input) > limits.max_messages:
            raise InvalidRequest(f"At most {limits.max_messages} input items are allowed.", param="input")
        for key, value in (self.metadata or {}).items():
            if len(key) > 64 or len(value) > 512:
                raise InvalidRequest(
                    "metadata keys are at most 64 characters and values at most 512.", param="metadata"
                )
        fmt = self.text.format if self.text else None
        if fmt is not None and fmt.type == "json_schema":
            if not fmt.name or not FUNCTION_NAME.match(fmt.name):
                raise InvalidRequest(
                    "text.format.name is required: a-z, A-Z, 0-9, _ and - (at most 64).", param="text.format.name"
                )
            if fmt.schema_ is None:
                raise InvalidRequest("text.format.schema is required for json_schema.", param="text.format.schema")
        for i, tool in enumerate(self.tools or []):
            if tool.type != "function":
                raise InvalidRequest(
                    f"Tools of type {tool.type[:64]!r} are not supported; this server serves 'function' tools only.",
                    param=f"tools[{i}].type",
                )
            if not tool.name or not FUNCTION_NAME.match(tool.name):
                raise InvalidRequest(
                    "A function tool needs a name: a-z, A-Z, 0-9, _ and - (at most 64).", param=f"tools[{i}].name"
                )
        self._check_tool_choice()

    def _check_tool_choice(self) -> None:
        choice = self.tool_choice
        if choice is None or choice in ("none", "auto"):
            return
        names = {t.name for t in self.tools or []}
        if choice == "required":
            ok = bool(names)
        elif isinstance(choice, dict):
            ok = choice.get("type") == "function" and choice.get("name") in names
        else:
            ok = False
        if not ok:
            raise InvalidRequest(
                "tool_choice must be none, auto, required or {type: function, name} of a tool given in tools.",
                param="tool_choice",
            )

    def input_items(self) -> list[dict[str, Any]]:
        """`input` as normalized wire items with server ids (what is stored, listed and replayed)."""
        if isinstance(self.input, str):
            return [_message("user", [{"type": "input_text", "text": self.input}])]
        return [_normalize(item, f"input[{i}]") for i, item in enumerate(self.input)]


def _text_of(parts: str | list[ContentPart] | None, param: str, allowed: tuple[str, ...]) -> list[dict[str, Any]]:
    if parts is None:
        return []
    if isinstance(parts, str):
        return [{"type": allowed[0], "text": parts}]
    out: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        if part.type not in allowed or (part.text is None and part.refusal is None):
            raise InvalidRequest(
                f"Content parts of type {part.type[:64]!r} are not supported here; this server accepts {', '.join(allowed)}.",
                param=f"{param}[{j}].type",
            )
        if part.type == "refusal":
            out.append({"type": "refusal", "refusal": part.refusal or ""})
        else:
            out.append(
                {"type": part.type, "text": part.text or ""}
                | ({"annotations": []} if part.type == "output_text" else {})
            )
    return out


def _message(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "message", "id": item_id("msg"), "role": role, "status": "completed", "content": content}


def _normalize(item: InputItem, param: str) -> dict[str, Any]:
    kind = item.type or "message"
    if kind == "message":
        if item.role not in MESSAGE_ROLES:
            raise InvalidRequest(f"A message's role is one of {', '.join(MESSAGE_ROLES)}.", param=f"{param}.role")
        if item.role == "assistant":
            allowed: tuple[str, ...] = ("output_text", "refusal", "input_text")
        else:
            allowed = ("input_text",)
        return _message(item.role, _text_of(item.content, f"{param}.content", allowed))
    if kind == "function_call":
        if not item.call_id or not item.name or item.arguments is None:
            raise InvalidRequest("A function_call item needs call_id, name and arguments.", param=param)
        return {
            "type": "function_call", "id": item_id("fc"), "call_id": item.call_id, "name": item.name,
            "arguments": item.arguments, "status": "completed",
        }  # fmt: skip
    if kind == "function_call_output":
        if not item.call_id or item.output is None:
            raise InvalidRequest("A function_call_output item needs call_id and output.", param=param)
        output = (
            item.output
            if isinstance(item.output, str)
            else "\n".join(p["text"] for p in _text_of(item.output, f"{param}.output", ("input_text", "output_text")))
        )
        return {
            "type": "function_call_output",
            "id": item_id("fco"),
            "call_id": item.call_id,
            "output": output,
            "status": "completed",
        }
    raise InvalidRequest(
        f"Input items of type {kind[:64]!r} are not supported; use message, function_call or function_call_output.",
        param=f"{param}.type",
    )


# --- response ----------------------------------------------------------------------------------------


class InputTokensDetails(ResponseModel):
    cached_tokens: int = Field(0, description="Input tokens served from this tenant's prefix cache.")


class OutputTokensDetails(ResponseModel):
    reasoning_tokens: int = 0


class ResponseUsage(ResponseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(ResponseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(ResponseModel):
    code: str
    message: str


class ResponseObject(ResponseModel):
    """OpenAI's `response` object. `output` holds `message` items (`output_text` parts) and `function_call` items."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    background: bool = False
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    model: str
    output: list[dict[str, Any]] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] = Field(default_factory=lambda: {"effort": None, "summary": None})
    store: bool = True
    temperature: float = 1.0
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_p: float = 1.0
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None


class ResponseDeleted(ResponseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class InputItemList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
